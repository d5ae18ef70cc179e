"""Queries stay in ``db/``: the layers above it pass typed parameters, never filters.

Checked on the source of ``iceprod/rest/``, ``iceprod/server/`` and ``iceprod/core/`` with
``ast`` (comments and strings do not count). Forbidden there:

1. **An operator key**: a dict display with a string key starting with ``$`` (``{"$in": ...}``,
   ``{"$set": ...}``, ``{"$or": [...]}``). Allowed: the JSON Schema keywords ``$ref``,
   ``$schema``, ``$id``, ``$defs``, ``$comment`` and ``$anchor`` (schemas and the OpenAPI
   document are built from dicts).
2. **A filter handed to a generic method**: a call of a method named in ``FILTER_METHODS``
   (the store's primitives and the names generic repository methods had) with an argument,
   positional or keyword, that is a dict: a display (``{"dataset_id": d}``), a
   comprehension, a ``dict(...)`` call, or a name bound to one of those in the same function
   (``query = {...}; repo.page(query)``). Other arguments (an id, ``keys``, a ``Paging``)
   are fine: ``db.datasets.find(dataset_id)`` is a lookup by id.
3. **Reaching past a repository**: the attribute ``.coll`` (a repository's collection) or a
   call of ``.collection(...)`` (the store's): every read and write goes through a
   repository method.

And in ``iceprod/db/`` itself, no public method of a repository takes a filter: no parameter
named ``filter``, ``query``, ``scope``, ``criteria``, ``matched`` or ``changing`` (the names
the filter-taking methods used; those are ``_``-prefixed now, for repositories only). So
there is nothing a handler could pass a filter to, and the checks above keep a new one from
appearing. Each rule is tested on a small synthetic case so it is known to fail.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable, Iterator
from pathlib import Path

from iceprod.db import REPOSITORIES

PKG = Path(__file__).resolve().parents[1] / "iceprod"
CHECKED = ("rest", "server", "core")
SCHEMA_KEYWORDS = frozenset({"$ref", "$schema", "$id", "$defs", "$comment", "$anchor"})
FILTER_METHODS = frozenset({
    # the store's primitives
    "find", "find_one", "count", "group_count", "group_stats", "update_one", "update_many",
    "delete_many",
    # what generic repository methods were called (they took a filter)
    "page", "get_in", "listing", "transition", "status_counts", "ids_grouped_by_status",
    # the REST base's pager (it took one)
    "list_page",
})
FILTER_PARAMS = frozenset({"filter", "query", "scope", "criteria", "matched", "changing"})


def _is_dict(node: ast.AST) -> bool:
    if isinstance(node, ast.IfExp):
        return _is_dict(node.body) or _is_dict(node.orelse)
    return isinstance(node, ast.Dict | ast.DictComp) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "dict")


def _dict_names(scope: ast.AST) -> set[str]:
    """Names assigned a dict somewhere in ``scope`` (not in nested functions)."""
    out: set[str] = set()
    for node in _walk_scope(scope):
        if isinstance(node, ast.Assign) and _is_dict(node.value):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and node.value is not None and \
                _is_dict(node.value) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def _walk_scope(scope: ast.AST) -> Iterator[ast.AST]:
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))


def _scopes(tree: ast.Module) -> Iterator[ast.AST]:
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield node


def query_violations(source: str, where: str) -> list[str]:
    """What the rules in the module docstring find in one module's ``source``."""
    tree = ast.parse(source)
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and \
                        key.value.startswith("$") and key.value not in SCHEMA_KEYWORDS:
                    out.append(f"{where}:{key.lineno}: operator key {key.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "coll":
            out.append(f"{where}:{node.lineno}: .coll (use a repository method)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "collection":
            out.append(f"{where}:{node.lineno}: .collection() (use a repository)")
    for scope in _scopes(tree):
        names = _dict_names(scope)
        for node in _walk_scope(scope):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in FILTER_METHODS):
                continue
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if _is_dict(arg) or (isinstance(arg, ast.Name) and arg.id in names):
                    out.append(f"{where}:{node.lineno}: a dict passed to "
                               f".{node.func.attr}() (a filter built outside db/)")
    return out


def package_violations(root: Path) -> list[str]:
    out: list[str] = []
    for sub in CHECKED:
        for path in sorted((root / sub).rglob("*.py")):
            out += query_violations(path.read_text(), str(path.relative_to(root.parent)))
    return out


def filter_parameters(classes: Iterable[type]) -> list[str]:
    """Public methods of ``classes`` that take a filter (see the module docstring)."""
    out = []
    for cls in classes:
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            out += [f"{cls.__name__}.{name}({param})"
                    for param in inspect.signature(fn).parameters if param in FILTER_PARAMS]
    return out


def test_no_filters_are_built_above_db() -> None:
    found = package_violations(PKG)
    assert not found, "queries belong in iceprod/db/ (typed repository methods):\n" + \
        "\n".join(found)


def test_no_public_repository_method_takes_a_filter() -> None:
    assert filter_parameters(REPOSITORIES) == []


# -- the checker, on synthetic sources -----------------------------------------------------


def test_checker_reports_operator_keys_but_not_schema_keywords() -> None:
    src = 'A = {"status": {"$in": ["a"]}}\nB = {"$ref": "#/x", "$schema": "s"}\n'
    assert query_violations(src, "m.py") == ["m.py:1: operator key '$in'"]


def test_checker_reports_dicts_handed_to_generic_methods() -> None:
    src = (
        "async def f(db, d):\n"
        "    await db.tasks.count({'dataset_id': d})\n"
        "    q = {'status': 'x'}\n"
        "    await db.jobs.page(q, keys=None)\n"
        "    await db.jobs.get_in('j', scope=dict(dataset_id=d))\n"
        "    await db.datasets.find(d)\n"
        "    await db.jobs.page(paging, dataset_id=d)\n"
        "    return {k: v for k, v in q.items()}\n"
    )
    assert sorted(query_violations(src, "m.py")) == [
        "m.py:2: a dict passed to .count() (a filter built outside db/)",
        "m.py:4: a dict passed to .page() (a filter built outside db/)",
        "m.py:5: a dict passed to .get_in() (a filter built outside db/)",
    ]


def test_checker_reports_reaching_past_a_repository() -> None:
    src = "async def f(db):\n    await db.tasks.coll.find({})\n    db.store.collection(s)\n"
    found = query_violations(src, "m.py")
    assert "m.py:2: .coll (use a repository method)" in found
    assert "m.py:3: .collection() (use a repository)" in found
    assert "m.py:2: a dict passed to .find() (a filter built outside db/)" in found


def test_checker_reports_a_public_method_taking_a_filter() -> None:
    class Leaky:
        async def page(self, filter: dict, keys: list | None = None) -> None: ...

        async def _page(self, filter: dict) -> None: ...

        async def of_dataset(self, dataset_id: str) -> None: ...

    assert filter_parameters([Leaky]) == ["Leaky.page(filter)"]


def test_checker_scans_every_checked_layer(tmp_path: Path) -> None:
    for sub in CHECKED:
        (tmp_path / "iceprod" / sub).mkdir(parents=True)
        (tmp_path / "iceprod" / sub / "m.py").write_text("X = {'$set': 1}\n")
    (tmp_path / "iceprod" / "db").mkdir()
    (tmp_path / "iceprod" / "db" / "m.py").write_text("X = {'$set': 1}\n")
    found = package_violations(tmp_path / "iceprod")
    assert sorted(found) == [f"iceprod/{s}/m.py:1: operator key '$set'" for s in sorted(CHECKED)]

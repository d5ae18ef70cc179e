"""JSON Schema loading and validation with errors that name the offending field.

Schemas live in `resources/schemas/<name>.schema.json` (shipped as package data through the
`iceprod/resources` symlink). `validate` turns jsonschema's errors into one `Invalid` whose
message reads like `tasks[1].requirements.memory: -1 is less than or equal to the minimum of 0`.
`validate_dataset_config` adds the checks a schema cannot express: unique task names,
dependencies that resolve, no dependency cycles, parameters that exist.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from iceprod.common import params
from iceprod.common.errors import Invalid
from iceprod.common.fieldpath import format_path, join_path
from iceprod.common.schema_compile import NotCompilable, compile_schema

MAX_REPORTED = 5
"""How many problems one `Invalid` message lists."""

MAX_MESSAGE = 200
"""Longest single problem message; jsonschema quotes whole instances, which can be huge."""

_SCHEMA_NAME = re.compile(r"^[a-z0-9_]+$")
_CROSS_DATASET = re.compile(r"^[0-9a-f]{32}:")
_REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "resources" / "schemas"

Problem = tuple[str, str]
"""(field path, message) of one validation problem."""


# -- loading -------------------------------------------------------------------------------


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the schema `name` (e.g. "dataset_config"); cached, so treat it as read-only."""
    if not _SCHEMA_NAME.match(name):
        raise ValueError(f"bad schema name {name!r}")
    filename = f"{name}.schema.json"
    packaged = importlib.resources.files("iceprod").joinpath("resources", "schemas", filename)
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    elif (_REPO_SCHEMAS / filename).is_file():
        # running from a checkout whose symlink was not installed (e.g. a non-editable build)
        text = (_REPO_SCHEMAS / filename).read_text(encoding="utf-8")
    else:
        raise FileNotFoundError(f"no schema {name!r} (looked for {filename})")
    schema: dict[str, Any] = json.loads(text)
    return schema


SCHEMA_BASE = "https://iceprod.icecube.aq/schemas/"
"""Every schema file's ``$id`` is this plus its file name, so one may ``$ref`` another by its
file name (``dataset_config.schema.json#/$defs/...``)."""


def schema_names() -> list[str]:
    """The names of every schema file, for `load_schema`."""
    names = {p.name.removesuffix(".schema.json") for p in _REPO_SCHEMAS.glob("*.schema.json")}
    packaged = importlib.resources.files("iceprod").joinpath("resources", "schemas")
    if packaged.is_dir():
        names.update(p.name.removesuffix(".schema.json") for p in packaged.iterdir()
                     if p.name.endswith(".schema.json"))
    return sorted(names)


def schema_ref(name: str, definition: str) -> dict[str, str]:
    """A schema that is one ``$defs`` entry of schema file ``name``, by reference: what a
    handler passes as its body schema (``schema_ref("api", "tasks_create")``)."""
    if definition not in load_schema(name).get("$defs", {}):
        raise KeyError(f"schema {name!r} has no $defs/{definition}")
    return {"$ref": f"{SCHEMA_BASE}{name}.schema.json#/$defs/{definition}"}


@functools.cache
def registry() -> Registry[Any]:
    """Every schema file by its ``$id``, so ``$ref``s between files resolve."""
    resources = []
    for name in schema_names():
        root = load_schema(name)
        Draft202012Validator.check_schema(root)
        uri = root.get("$id", f"urn:iceprod:schema:{name}")
        resources.append((uri, DRAFT202012.create_resource(root)))
    return Registry().with_resources(resources)


@functools.cache
def _ref_validator(ref: str) -> Validator:
    return Draft202012Validator({"$ref": ref}, registry=registry())


# -- the fast path -------------------------------------------------------------------------
#
# jsonschema resolves every `$ref` through the registry on each use, which costs more than the
# rest of a request body's check. For a valid instance (nearly every request) a schema with its
# `$ref`s inlined, compiled to Python closures, answers the same yes/no without any lookup or
# keyword walk; only an invalid one goes through the original validator, for its messages.

_LITERALS = frozenset({"const", "enum", "default", "examples"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                          "dependentSchemas"})
_ANNOTATIONS = frozenset({"title", "description", "$comment", "default", "examples",
                          "deprecated", "readOnly", "writeOnly"})


class _NotInlinable(Exception):
    """A recursive schema (or a dynamic reference): validate it the ordinary way."""


def _inline(node: Any, resolver: Any, seen: frozenset[int]) -> Any:
    if isinstance(node, list):
        return [_inline(item, resolver, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$dynamicRef" in node or "$recursiveRef" in node:
        raise _NotInlinable
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$ref", "$defs", "definitions", "$id", "$schema"):
            continue
        if key in _LITERALS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _inline(sub, resolver, seen) for name, sub in value.items()}
        else:
            out[key] = _inline(value, resolver, seen)
    if "$ref" not in node:
        return out
    resolved = resolver.lookup(node["$ref"])
    if id(resolved.contents) in seen:
        raise _NotInlinable
    target = _inline(resolved.contents, resolved.resolver, seen | {id(resolved.contents)})
    rest = {k: v for k, v in out.items() if k not in _ANNOTATIONS}
    return {"allOf": [target, rest]} if rest else target


@functools.cache
def _fast_check(ref: str) -> Callable[[Any], bool] | None:
    """``is_valid`` of the same schema as ``_ref_validator(ref)`` with every ``$ref``
    inlined: compiled to Python closures (``schema_compile``), else jsonschema's on the
    inlined schema (None for a recursive schema)."""
    try:
        inlined = _inline({"$ref": ref}, registry().resolver(), frozenset())
    except _NotInlinable:
        return None
    try:
        return compile_schema(inlined)
    except NotCompilable:
        return Draft202012Validator(inlined).is_valid


def _ref_of(schema: Mapping[str, Any] | str) -> str | None:
    """The absolute reference a named schema ("name" or "name#/json/pointer", a part of a
    schema such as one `$defs`) or a `{"$ref": ...}` schema stands for (None for any other
    schema)."""
    if isinstance(schema, str):
        name, _, pointer = schema.partition("#")
        root = load_schema(name)
        return f"{root.get('$id', f'urn:iceprod:schema:{name}')}#{pointer}"
    if set(schema) == {"$ref"}:
        return str(schema["$ref"])
    return None


def _validator(schema: Mapping[str, Any] | str) -> Validator:
    ref = _ref_of(schema)
    if ref is not None:
        return _ref_validator(ref)
    return Draft202012Validator(schema, registry=registry())


# -- field paths ---------------------------------------------------------------------------


# -- validation ----------------------------------------------------------------------------


def validate(instance: Any, schema: Mapping[str, Any] | str, what: str = "") -> None:
    """Raise `Invalid` unless `instance` matches `schema`.

    `schema` is a schema, a schema name for `load_schema`, or "name#/json/pointer" for a part
    of one. `what` names the instance: it prefixes every field path ("requirements" gives
    "requirements.memory") and names problems of the instance as a whole. The message lists
    up to `MAX_REPORTED` problems, most relevant first; `Invalid.field` is the first one's path.
    """
    raise_problems(schema_problems(instance, schema, what))


def schema_problems(instance: Any, schema: Mapping[str, Any] | str,
                    what: str = "") -> list[Problem]:
    """What `validate` would report, as a list (empty when `instance` is valid)."""
    ref = _ref_of(schema)
    fast = _fast_check(ref) if ref is not None else None
    if fast is not None and fast(instance):
        return []
    errors = list(_validator(schema).iter_errors(instance))
    return _problems(errors, what) if errors else []


def raise_problems(problems: Sequence[Problem]) -> None:
    """Raise one `Invalid` for `problems` (if any), naming the first one's field."""
    if not problems:
        return
    shown = [f"{field}: {message}" if field else message for field, message in problems]
    raise Invalid("; ".join(shown[:MAX_REPORTED]), field=problems[0][0])


def _problems(errors: Iterable[ValidationError], what: str) -> list[Problem]:
    # the most relevant first, then the rest in document order (keys alphabetically)
    by_document = sorted(errors, key=lambda error: tuple(error.absolute_path))
    best = max(by_document, key=_rank)
    ordered = [best, *(error for error in by_document if error is not best)]
    problems: list[Problem] = []
    for error in ordered:
        for problem in _describe(error, what):
            if problem not in problems:
                problems.append(problem)
    return problems


def _rank(error: ValidationError) -> tuple[Any, ...]:
    """jsonschema's relevance (shallower errors, strong keywords, matching types first) without
    its preference for later siblings: among equals the first in the document wins."""
    shallower, _later_sibling, *rest = cast(tuple[Any, ...], relevance(error))
    return (shallower, *rest)


def _schema(error: ValidationError) -> Mapping[str, Any]:
    """The (sub)schema an error comes from; ours are never boolean schemas."""
    return cast(Mapping[str, Any], error.schema)


def _describe(error: ValidationError, what: str) -> list[Problem]:
    """The problems behind one top-level error, descending into anyOf/oneOf like best_match."""
    titled: ValidationError | None = None
    while True:
        if error.validator in ("anyOf", "oneOf") and "title" in _schema(error):
            titled = error
        deeper = _best_alternative(error)
        if deeper is None:
            break
        error = deeper
    field = format_path(error.absolute_path, what)
    if error.validator == "additionalProperties" and error.validator_value is False:
        return [(join_path(field, key), "unknown field") for key in _unknown_keys(error)]
    if titled is not None and error.validator in ("type", "pattern", "anyOf", "oneOf"):
        # the failure inside one alternative says little; name what the field accepts instead
        field = format_path(titled.absolute_path, what)
        return [(field, f"{_short_repr(titled.instance)} is not {_schema(titled)['title']}")]
    if error.validator == "pattern" and "title" in _schema(error):
        return [(field, f"{_short_repr(error.instance)} is not {_schema(error)['title']}")]
    return [(field, _message(error))]


def _best_alternative(error: ValidationError) -> ValidationError | None:
    """The error within an anyOf/oneOf that best_match would descend to, if it would."""
    if not error.context:
        return None
    ranked = sorted(error.context, key=relevance)
    if len(ranked) > 1 and relevance(ranked[0]) == relevance(ranked[1]):
        return None
    return ranked[0]


def _unknown_keys(error: ValidationError) -> list[str]:
    known = _schema(error).get("properties", {})
    patterns = [re.compile(p) for p in _schema(error).get("patternProperties", {})]
    return sorted(
        key
        for key in cast(Mapping[str, Any], error.instance)
        if key not in known and not any(p.search(key) for p in patterns)
    )


def _message(error: ValidationError) -> str:
    if error.validator == "maxItems" and isinstance(error.instance, list):
        return f"has {len(error.instance)} items, more than the maximum of {error.validator_value}"
    if error.validator == "pattern" and "propertyNames" in error.absolute_schema_path:
        return f"invalid name {_short_repr(error.instance)} (must match {error.validator_value})"
    if error.validator == "anyOf" and all(set(alt) == {"required"}
                                          for alt in cast(list[Any], error.validator_value)):
        # "one of these fields is needed": name them rather than quoting the instance
        names = [name for alt in error.validator_value for name in alt["required"]]
        return "needs " + " or ".join(names)
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return message


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- dataset config ------------------------------------------------------------------------


def validate_dataset_config(config: Any) -> None:
    """Raise `Invalid` (400, naming the field) unless `config` is a usable dataset config.
    Schema problems and dependency problems are reported together, so a config is fixed in
    one round, not two."""
    problems = schema_problems(config, "dataset_config")
    tasks = config.get("tasks") if isinstance(config, dict) else None
    edges: list[list[int]] = []
    # names or dependencies the schema refused would only echo its problems here
    echoes = any(_NAME_OR_DEPENDS.match(field) for field, _ in problems)
    if not echoes and _dependencies_readable(tasks):
        assert isinstance(tasks, list)
        _integer_indexes(tasks)
        edges, dependency_problems = _dependency_edges(tasks)
        problems += [p for p in [*_duplicate_names(tasks), *dependency_problems]
                     if p not in problems]
    raise_problems(problems)
    tasks = config["tasks"]
    _check_parameters(config)
    cycle = _find_cycle(edges)
    if cycle:
        names = " -> ".join(tasks[i]["name"] for i in cycle)
        raise Invalid(f"tasks: dependency cycle {names}", field="tasks")


_NAME_OR_DEPENDS = re.compile(r"^tasks(\[\d+\](\.(name|depends)\b.*)?)?$")


def _dependencies_readable(tasks: Any) -> bool:
    """Whether the tasks' names and dependencies can be checked, whatever else is wrong."""
    if not isinstance(tasks, list):
        return False
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            return False
        depends = task.get("depends", [])
        if not isinstance(depends, list) or not all(
                isinstance(d, str | int | float) and not isinstance(d, bool) for d in depends):
            return False
    return True


def _integer_indexes(tasks: list[dict[str, Any]]) -> None:
    """JSON Schema counts 2.0 as an integer: store such task indexes as the int they name, so
    code that tells names from indexes by type sees an index."""
    for task in tasks:
        if "depends" in task:
            task["depends"] = [int(d) if isinstance(d, float) else d for d in task["depends"]]


def _duplicate_names(tasks: Sequence[Mapping[str, Any]]) -> list[Problem]:
    seen: set[str] = set()
    problems: list[Problem] = []
    for index, task in enumerate(tasks):
        if task["name"] in seen:
            problems.append((f"tasks[{index}].name", f"duplicate task name {task['name']!r}"))
        seen.add(task["name"])
    return problems


def _dependency_edges(tasks: Sequence[Mapping[str, Any]]) -> tuple[list[list[int]], list[Problem]]:
    """For each task, the indexes of the tasks in this config it depends on; and the problems."""
    by_name: dict[str, int] = {}
    for index, task in enumerate(tasks):
        by_name.setdefault(task["name"], index)
    edges: list[list[int]] = []
    problems: list[Problem] = []
    for index, task in enumerate(tasks):
        edges.append([])
        for position, dep in enumerate(task.get("depends", [])):
            field = f"tasks[{index}].depends[{position}]"
            target, problem = _resolve_dependency(dep, by_name, len(tasks))
            if problem:
                problems.append((field, problem))
            elif target == index:
                problems.append((field, f"task {task['name']!r} cannot depend on itself"))
            elif target is not None:
                edges[index].append(target)
    return edges, problems


def _resolve_dependency(
    dep: str | int, by_name: Mapping[str, int], count: int
) -> tuple[int | None, str | None]:
    """(task index or None for another dataset's task, problem or None)."""
    if isinstance(dep, int):
        if dep >= count:
            return None, f"unknown task index {dep} (the dataset has {count} tasks)"
        return dep, None
    if _CROSS_DATASET.match(dep):
        return None, None  # another dataset's task: checked against that dataset elsewhere
    if dep not in by_name:
        return None, f"unknown task {dep!r}"
    return by_name[dep], None


def _find_cycle(edges: Sequence[Sequence[int]]) -> list[int] | None:
    """A dependency cycle as task indexes in run order, first task repeated at the end.

    It starts at its lowest index, and each task runs before the next: for [a, b depends on a,
    a depends on b] it is [0, 1, 0].
    """
    runs_before: list[list[int]] = [[] for _ in edges]
    for task, deps in enumerate(edges):
        for dep in deps:
            runs_before[dep].append(task)
    done: set[int] = set()
    for start in range(len(edges)):
        cycle = _cycle_from(start, runs_before, done)
        if cycle:
            lowest = cycle.index(min(cycle))
            cycle = cycle[lowest:] + cycle[:lowest]
            return [*cycle, cycle[0]]
    return None


def _cycle_from(start: int, graph: Sequence[Sequence[int]], done: set[int]) -> list[int] | None:
    """Iterative depth-first search from `start`; the nodes of the first cycle found."""
    if start in done:
        return None
    path: list[int] = [start]
    on_path: set[int] = {start}
    pending: list[Iterator[int]] = [iter(graph[start])]
    while pending:
        node = next(pending[-1], None)
        if node is None:
            finished = path.pop()
            on_path.discard(finished)
            done.add(finished)
            pending.pop()
        elif node in on_path:
            return path[path.index(node) :]
        elif node not in done:
            path.append(node)
            on_path.add(node)
            pending.append(iter(graph[node]))
    return None


def _check_parameters(config: Mapping[str, Any]) -> None:
    """Substitute every task with placeholder values, so unknown parameters fail now (400)
    rather than when jobs are created."""
    steering = config.get("steering", {}).get("parameters", {})
    for index, task in enumerate(config["tasks"]):
        context = params.task_context(
            dataset_id="0" * 32, dataset=0, job_index=0, task_index=index,
            task_name=task["name"], steering=steering,
        )
        params.substitute(task, context, field=f"tasks[{index}]")

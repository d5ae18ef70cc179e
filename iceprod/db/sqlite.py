"""The embedded SQLite backend.

One database file (``iceprod.sqlite3``, WAL mode, ``synchronous=NORMAL``: a killed process
loses no committed write) under the data directory. Each collection is a table
``(id TEXT PRIMARY KEY, doc TEXT, <columns>)`` whose JSON ``doc`` is the single source of
truth; every field listed in ``CollectionSpec.columns`` is also a real column (named after
the path, dots replaced by ``__``) so it can be indexed and compared natively. The store
writes those columns with the document, in the same statement: an insert binds the values
it reads from the document in Python, and an update sets only the columns its fields touch
(a top-level ``$set`` of a scalar binds the value, an ``$unset`` binds NULL, anything else
reads the column back from the new document). So a write parses no JSON to maintain its
columns, and only the indexes over touched columns are rewritten; the virtual generated
columns of earlier versions made SQLite parse the document again for each indexed column
on every write (a data dir from such a version is rebuilt once when opened, see
``SQLiteStore._ensure``).

``CollectionSpec.counts`` groupings are kept in small tables (``<table>__count__<fields>``:
one row per distinct value tuple, with its number of documents) maintained by triggers in
the same transaction as every insert, delete and update of those columns; ``group_count``
and ``count`` filters that only compare those fields for equality (or ``$in``) read them.

Filters and updates are first split into a *shape* (fields, operators and the kind of each
value) and the list of their values. Statements are compiled from the shape alone, with named
parameters for the values, and cached per shape; the SQL text is therefore also stable, so
sqlite3's prepared-statement cache reuses the prepared statement. Updates are one
``UPDATE ... SET doc = json_set(...) RETURNING doc`` statement, so ``update_one`` (the claim)
is atomic.

One dedicated worker thread owns the only connection, but a statement first tries the event
loop's own thread: when the worker is idle, every statement (finds, counts, inserts,
updates, deletes; each one statement or one transaction) runs at once on the loop's thread
under a budget of ``INLINE_BUDGET_S`` (a progress handler interrupts a statement that runs
longer, and a zero busy timeout refuses to wait for another process's lock); an interrupted
or refused statement has had no effect and runs again on the worker, as does one arriving
while the worker is busy. A write runs inline inside a transaction of its own whose COMMIT
is outside the budget: SQLite can report an interrupted autocommit write or COMMIT that it
did commit, and running that again would apply it twice (a log stored twice, a counter
incremented twice); interrupted before its COMMIT, the transaction is rolled back whole.
So a request's short statements never cross threads, and a long one (a big listing, a bulk
update) costs the loop at most the budget. Handing a 50 µs statement to a thread and back costs more than the statement on
a busy machine (two thread switches, each a wait for the GIL, and the GIL convoy that
follows).

Differences from MongoDB, inherent to JSON in SQLite: booleans compare equal to 1/0 in filters
on non-array fields; a unique index accepts several documents missing its fields (NULLs
are distinct in SQLite); values of a column take its declared SQL type. (A field of
undeclared shape, which could hold an array SQLite would not look into, is refused by
``Collection`` before it gets here.)

What MongoDB could not hold (integers past 64 bits, NaN, NUL or ``$`` in keys, deep nesting,
16 MiB) is refused by ``Collection`` (store.py) before it reaches this module, so both
backends store the same things; an update growing a document past 16 MiB is the exception
(only MongoDB measures the result).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from iceprod.common.errors import DuplicateKey, Invalid
from iceprod.db.storable import dumps
from iceprod.db.store import (
    Collection,
    CollectionSpec,
    Doc,
    Filter,
    Index,
    Sort,
    Store,
    Update,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILE = "iceprod.sqlite3"
MIN_SQLITE_VERSION = (3, 35, 0)
BUSY_TIMEOUT_MS = 10_000
CACHED_STATEMENTS = 512
# the page cache: a bounded 64 MiB (SQLite's default is 2 MiB) keeps the upper levels of the
# indexes of a million-task table in memory; memory stays flat as the store grows
CACHE_KIB = 64 * 1024
INLINE_BUDGET_S = 0.002
_PROGRESS_STEPS = 1000  # virtual machine steps between checks of the inline budget

_SQL_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*$")
_RANGE_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_UPDATE_OPS = frozenset({"$set", "$unset", "$inc", "$max", "$min", "$push", "$addToSet", "$pull"})
# an inline statement interrupted by its budget, or refused another process's lock
_RETRY_ON_WORKER = ("SQLITE_INTERRUPT", "SQLITE_BUSY", "SQLITE_LOCKED")  # and extended codes
_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_RESERVED_COLUMNS = frozenset({"id", "doc", "rowid"})
_BOOL_TYPES = frozenset({"BOOL", "BOOLEAN"})
_NUMERIC_TYPES = "'integer', 'real'"
_SCALAR_KINDS = frozenset({"null", "true", "false", "num", "str"})
_ORDERED_KINDS = frozenset({"num", "str"})

SortKey = tuple[tuple[str, int], ...] | None
Shape = tuple[Any, ...]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_path(field: str) -> str:
    """The SQL string literal of the JSON path of a dotted field: ``a.b`` -> ``'$."a"."b"'``."""
    keys = field.split(".")
    if any(not key or '"' in key or key.startswith("$") for key in keys):
        raise Invalid(f"bad field name {field!r}")
    return sql_string("$" + "".join(f'."{key}"' for key in keys))


def column_name(field: str) -> str:
    return field.replace(".", "__")


def kind_of(value: Any) -> str:
    """The kind of a value, which is all the compiled SQL depends on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple | dict):
        return "json"
    raise Invalid(f"unsupported value {value!r}")


def bind(value: Any) -> Any:
    """A filter value as SQLite sees the matching ``json_extract`` result."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple | dict):
        return dumps(value)
    return value


def _is_operator_map(value: Any) -> bool:
    if type(value) is not dict and not isinstance(value, Mapping) or not value:
        return False
    for key in value:
        if not key.startswith("$"):
            return False
    return True


def _json_number(expr: str) -> str:
    """Render a computed REAL with 17 significant digits (json_set would keep 15)."""
    return f"CASE typeof({expr}) WHEN 'real' THEN json(printf('%!.17g', {expr})) ELSE {expr} END"


class Leaf(NamedTuple):
    """A value of a filter or update: its position in the value list, and its kind."""

    position: int
    kind: str


@cache
def _leaf(position: int, kind: str) -> Leaf:
    """Leaves are interned: there are few (position, kind) pairs and shapes are built often."""
    return Leaf(position, kind)


class Flattener:
    """Splits filters and updates into a hashable shape and the list of their values.

    This runs on every call, so it sticks to list comprehensions (faster than generators).
    """

    def __init__(self) -> None:
        self.values: list[Any] = []

    def leaf(self, value: Any) -> Leaf:
        self.values.append(value)
        return _leaf(len(self.values) - 1, kind_of(value))

    def filter(self, filter: Filter) -> Shape:
        return tuple([(key, self._clause(key, value)) for key, value in filter.items()])

    def _clause(self, key: str, value: Any) -> Any:
        if key in ("$or", "$and"):
            if not isinstance(value, list | tuple):
                raise Invalid(f"{key} needs a list of filters")
            return tuple([self.filter(f) for f in value])
        if _is_operator_map(value):
            return ("$ops", tuple([(op, self._operand(op, arg)) for op, arg in value.items()]))
        return self.leaf(value)

    def _operand(self, op: str, arg: Any) -> Any:
        if op in ("$in", "$nin"):
            if not isinstance(arg, list | tuple):
                raise Invalid(f"{op} needs a list")
            return tuple([self.leaf(v) for v in arg])
        if op == "$exists":
            return bool(arg)
        return self.leaf(arg)

    def update(self, update: Update) -> Shape:
        shape = []
        for op, fields in update.items():
            if not isinstance(fields, Mapping):
                raise Invalid(f"{op} needs a document of fields")
            shape.append((op, tuple([(field, self.leaf(v)) for field, v in fields.items()])))
        return tuple(shape)


class Statement(NamedTuple):
    """Compiled SQL, and how to compute each named parameter from the value list."""

    sql: str
    steps: tuple[tuple[str, int, Callable[[Any], Any]], ...]

    def params(self, values: Sequence[Any]) -> dict[str, Any]:
        return {name: convert(values[i]) for name, i, convert in self.steps}


class Recipe:
    """The parameters of the statement being compiled."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, Callable[[Any], Any]]] = []

    def add(self, leaf: Leaf, convert: Callable[[Any], Any] = bind) -> str:
        name = f"p{len(self.steps)}"
        self.steps.append((name, leaf.position, convert))
        return ":" + name

    def statement(self, sql: str) -> Statement:
        return Statement(sql, tuple(self.steps))


def _element_match(leaf: Leaf, recipe: Recipe) -> str:
    """A ``json_each`` row equal to the value with MongoDB's type-exact equality."""
    if leaf.kind in ("null", "true", "false"):
        return f"type = '{leaf.kind}'"
    types = "'text'" if leaf.kind == "str" else _NUMERIC_TYPES
    return f"type IN ({types}) AND value = {recipe.add(leaf)}"


def _check_update_fields(fields: Sequence[str], id_field: str) -> None:
    for i, field in enumerate(fields):
        if field == id_field or field.startswith(id_field + "."):
            raise Invalid(f"cannot update the id field {id_field!r}")
        for other in fields[i + 1 :]:
            if field == other or other.startswith(field + ".") or field.startswith(other + "."):
                raise Invalid(f"conflicting update of {field!r} and {other!r}")


class Compiler:
    """Compiles shapes of the store's filter, update and sort language to cached SQL
    statements for one collection."""

    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec
        self.table = quote_ident(spec.name)
        # SQLite's name for the unique index behind `id TEXT PRIMARY KEY`
        self.pk_index = quote_ident(f"sqlite_autoindex_{spec.name}_1")
        self.select = lru_cache(maxsize=CACHED_STATEMENTS)(self._select)
        self.count = lru_cache(maxsize=CACHED_STATEMENTS)(self._count)
        self.group = lru_cache(maxsize=CACHED_STATEMENTS)(self._group)
        self.update_one = lru_cache(maxsize=CACHED_STATEMENTS)(self._update_one)
        self.update_many = lru_cache(maxsize=CACHED_STATEMENTS)(self._update_many)
        self.delete = lru_cache(maxsize=CACHED_STATEMENTS)(self._delete)
        self.columns = [(f, quote_ident(column_name(f)), tuple(f.split(".")))
                        for f in spec.columns if f != spec.id_field]
        names = ", ".join(["id", "doc", *(col for _, col, _ in self.columns)])
        marks = ", ".join("?" * (2 + len(self.columns)))
        self.insert_sql = f"INSERT INTO {self.table} ({names}) VALUES ({marks})"
        self.insert_ignore_sql = f"INSERT OR IGNORE INTO {self.table} ({names}) VALUES ({marks})"

    def field(self, name: str) -> str:
        """The SQL expression of a field: the id column, a stored column or json_extract."""
        if name == self.spec.id_field:
            return "id"
        if name in self.spec.columns:
            return quote_ident(column_name(name))
        return self.extract(name)

    @staticmethod
    def extract(name: str) -> str:
        return f"json_extract(doc, {json_path(name)})"

    def is_column(self, name: str) -> bool:
        return name == self.spec.id_field or name in self.spec.columns

    def source(self, shape: Shape) -> str:
        """The table to read, pinned to its primary key when the filter names ids at the top
        level: without statistics the planner would rather scan a (dataset_id, status)
        index than look up a thousand ids, which makes batched updates quadratic."""
        for key, value in shape:
            if key != self.spec.id_field:
                continue
            if isinstance(value, Leaf) and value.kind in _SCALAR_KINDS - {"null"}:
                return f"{self.table} INDEXED BY {self.pk_index}"
            if not isinstance(value, Leaf) and all(
                op in ("$eq", "$in") for op, _ in value[1]
            ):
                return f"{self.table} INDEXED BY {self.pk_index}"
        return self.table

    # -- statements ----------------------------------------------------------------------------

    def _select(self, shape: Shape, sort: SortKey, limit: Leaf | None) -> Statement:
        recipe = Recipe()
        sql = f"SELECT doc FROM {self.source(shape)} WHERE {self.where(shape, recipe)}"
        sql += self.order_by(sort)
        if limit is not None:
            sql += f" LIMIT {recipe.add(limit, int)}"
        return recipe.statement(sql)

    def _count(self, shape: Shape) -> Statement:
        recipe = Recipe()
        counter = self.counter_for(shape, ())
        if counter is not None:
            where = self.counter_where(shape, recipe)
            return recipe.statement(
                f"SELECT COALESCE(SUM(n), 0) FROM {self.counter_table(counter)} WHERE {where}")
        return recipe.statement(
            f"SELECT COUNT(*) FROM {self.source(shape)} WHERE {self.where(shape, recipe)}"
        )

    def _group(
        self, shape: Shape, keys: tuple[str, ...], stats: tuple[tuple[str, str], ...]
    ) -> Statement:
        recipe = Recipe()
        group = [expr for key in keys for expr in self.group_key(key)]
        counter = None if stats else self.counter_for(shape, keys)
        if counter is not None:
            columns = [*group, "SUM(n)"]
            table, where = self.counter_table(counter), self.counter_where(shape, recipe)
        else:
            columns = [*group, *(self.aggregate(op, path) for op, path in stats), "COUNT(*)"]
            table, where = self.table, self.where(shape, recipe)
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
        if group:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group)))
        return recipe.statement(sql)

    # -- maintained counts -------------------------------------------------------------------

    def counter_for(self, shape: Shape, keys: tuple[str, ...]) -> tuple[str, ...] | None:
        """A ``counts`` grouping that answers a count of ``shape`` grouped by ``keys``: the
        filter only compares its fields for equality with (or ``$in``) non-null scalars."""
        named = set(keys)
        for key, value in shape:
            if isinstance(value, Leaf):
                if value.kind not in _SCALAR_KINDS - {"null"}:
                    return None
            elif (key.startswith("$") or len(value[1]) != 1 or value[1][0][0] != "$in"
                  or any(leaf.kind not in _SCALAR_KINDS - {"null"} for leaf in value[1][0][1])):
                return None
            named.add(key)
        for counter in self.spec.counts:
            if named <= set(counter):
                return counter
        return None

    def counter_table(self, counter: tuple[str, ...]) -> str:
        return quote_ident(f"{self.spec.name}__count__{'__'.join(map(column_name, counter))}")

    def counter_where(self, shape: Shape, recipe: Recipe) -> str:
        clauses = []
        for key, value in shape:
            col = self.field(key)
            if isinstance(value, Leaf):
                clauses.append(f"{col} = {recipe.add(value)}")
            else:
                leaves = value[1][0][1]
                marks = ", ".join(recipe.add(leaf) for leaf in leaves)
                clauses.append(f"{col} IN ({marks})" if leaves else "0")
        return " AND ".join(clauses) or "1"

    def _update_one(self, update: Shape, shape: Shape, sort: SortKey) -> Statement:
        recipe = Recipe()
        sets = self.assignments(update, recipe)
        first = f"SELECT id FROM {self.source(shape)} WHERE {self.where(shape, recipe)}"
        first += self.order_by(sort) + " LIMIT 1"
        return recipe.statement(
            f"UPDATE {self.table} SET {sets} WHERE id = ({first}) RETURNING doc"
        )

    def _update_many(self, update: Shape, shape: Shape) -> Statement:
        recipe = Recipe()
        sets = self.assignments(update, recipe)
        where = self.where(shape, recipe)
        return recipe.statement(
            f"UPDATE {self.source(shape)} SET {sets} WHERE {where}")

    def assignments(self, update: Shape, recipe: Recipe) -> str:
        """``doc = <new doc>`` and the columns the update touches: a top-level ``$set`` of a
        scalar binds it, an ``$unset`` of the field or a parent is NULL, anything else reads
        the value back from the new document (every right-hand side sees the old row)."""
        new_doc = self.update(update, recipe)
        sets = [f"doc = {new_doc}"]
        entries = [(op, field, leaf) for op, fields in update for field, leaf in fields]
        for name, col, parts in self.columns:
            touching = [(op, field, leaf) for op, field, leaf in entries
                        if field == name or name.startswith(field + ".")
                        or field.startswith(name + ".")]
            if not touching:
                continue
            op, field, leaf = touching[0]  # fields never overlap (_check_update_fields)
            if op == "$unset" and field != name and not name.startswith(field + "."):
                value = f"json_extract({new_doc}, {json_path(name)})"
            elif op == "$unset":
                value = "NULL"
            elif op == "$set" and field == name and len(parts) == 1 and \
                    leaf.kind in _SCALAR_KINDS:
                value = recipe.add(leaf)
            else:
                value = f"json_extract({new_doc}, {json_path(name)})"
            sets.append(f"{col} = {value}")
        return ", ".join(sets)

    def _delete(self, shape: Shape) -> Statement:
        recipe = Recipe()
        return recipe.statement(
            f"DELETE FROM {self.source(shape)} WHERE {self.where(shape, recipe)}")

    # -- filters ---------------------------------------------------------------------------

    def where(self, shape: Shape, recipe: Recipe) -> str:
        clauses = [self._clause(key, value, recipe) for key, value in shape]
        return " AND ".join(clauses) or "1"

    def _clause(self, key: str, value: Any, recipe: Recipe) -> str:
        if key in ("$or", "$and"):
            if not value:
                raise Invalid(f"{key} needs a non-empty list of filters")
            joiner = " OR " if key == "$or" else " AND "
            return "(" + joiner.join(f"({self.where(f, recipe)})" for f in value) + ")"
        if key.startswith("$"):
            raise Invalid(f"unsupported filter operator {key}")
        if isinstance(value, Leaf):
            return self._equal(key, value, recipe)
        _, operators = value
        return " AND ".join(self._condition(key, op, arg, recipe) for op, arg in operators)

    def _condition(self, field: str, op: str, arg: Any, recipe: Recipe) -> str:
        if op == "$eq":
            return self._equal(field, arg, recipe)
        if op == "$ne":
            return f"NOT COALESCE({self._equal(field, arg, recipe)}, 0)"
        if op == "$in":
            return self._in(field, arg, recipe)
        if op == "$nin":
            return f"NOT COALESCE({self._in(field, arg, recipe)}, 0)"
        if op in _RANGE_OPS:
            return self._range(field, _RANGE_OPS[op], arg, recipe)
        if op == "$exists":
            return f"json_type(doc, {json_path(field)}) IS {'NOT ' if arg else ''}NULL"
        raise Invalid(f"unsupported filter operator {op}")

    def _equal(self, field: str, leaf: Leaf, recipe: Recipe) -> str:
        if leaf.kind == "null":
            return f"{self.field(field)} IS NULL"
        if field in self.spec.array_fields and leaf.kind in _SCALAR_KINDS:
            return self._any_element(field, _element_match(leaf, recipe))
        return f"{self.field(field)} = {recipe.add(leaf)}"

    def _in(self, field: str, leaves: tuple[Leaf, ...], recipe: Recipe) -> str:
        scalars = [leaf for leaf in leaves if leaf.kind in _SCALAR_KINDS - {"null"}]
        composites = [leaf for leaf in leaves if leaf.kind == "json"]
        parts = []
        if scalars:
            marks = ", ".join(recipe.add(leaf) for leaf in scalars)
            if field in self.spec.array_fields:
                parts.append(self._any_element(field, f"value IN ({marks})"))
            else:
                parts.append(f"{self.field(field)} IN ({marks})")
        if composites:
            marks = ", ".join(recipe.add(leaf) for leaf in composites)
            parts.append(f"{self.extract(field)} IN ({marks})")
        if any(leaf.kind == "null" for leaf in leaves):
            parts.append(f"{self.field(field)} IS NULL")
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def _range(self, field: str, op: str, leaf: Leaf, recipe: Recipe) -> str:
        if leaf.kind not in _ORDERED_KINDS:
            raise Invalid(f"range comparison on {field!r} needs a number or a string")
        types = "'text'" if leaf.kind == "str" else _NUMERIC_TYPES
        mark = recipe.add(leaf)
        if field in self.spec.array_fields:
            return self._any_element(field, f"type IN ({types}) AND value {op} {mark}")
        expr = self.field(field)
        kind = f"typeof({expr})" if self.is_column(field) else f"json_type(doc, {json_path(field)})"
        return f"({expr} {op} {mark} AND {kind} IN ({types}))"

    @staticmethod
    def _any_element(field: str, condition: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each(doc, {json_path(field)}) WHERE {condition})"

    # -- sort --------------------------------------------------------------------------------

    def order_by(self, sort: SortKey) -> str:
        """ORDER BY for ``sort``; ties keep insertion order (rowid), as indexes store it."""
        if not sort:
            return ""
        terms = []
        for field, direction in sort:
            if direction not in (1, -1):
                raise Invalid(f"sort direction of {field!r} must be 1 or -1")
            terms.append(f"{self.field(field)} {'ASC' if direction == 1 else 'DESC'}")
        return " ORDER BY " + ", ".join(terms) + ", rowid"

    # -- updates -----------------------------------------------------------------------------

    def update(self, update: Shape, recipe: Recipe) -> str:
        """The new ``doc`` as one expression over the old one."""
        if not update:
            raise Invalid("empty update")
        _check_update_fields([f for _, fields in update for f, _ in fields], self.spec.id_field)
        removes: list[str] = []
        sets: list[str] = []
        replaces: list[str] = []
        for op, fields in update:
            if op not in _UPDATE_OPS:
                raise Invalid(f"unsupported update operator {op}")
            for field, leaf in fields:
                path = json_path(field)
                if op == "$unset":
                    removes.append(path)
                elif op == "$pull":
                    replaces.append(f"{path}, {self._pulled(path, leaf, recipe)}")
                else:
                    sets.append(f"{path}, {self._new_value(op, path, leaf, recipe)}")
        expr = "doc"
        if removes:
            expr = f"json_remove({expr}, {', '.join(removes)})"
        if sets:
            expr = f"json_set({expr}, {', '.join(sets)})"
        if replaces:
            expr = f"json_replace({expr}, {', '.join(replaces)})"
        return expr

    def _new_value(self, op: str, path: str, leaf: Leaf, recipe: Recipe) -> str:
        old = f"json_extract(doc, {path})"
        if op == "$set":
            return f"json({recipe.add(leaf, dumps)})"
        if op == "$inc":
            if leaf.kind != "num":
                raise Invalid("$inc needs a number")
            return _json_number(f"(COALESCE({old}, 0) + {recipe.add(leaf)})")
        if op in ("$max", "$min"):
            if leaf.kind not in _ORDERED_KINDS:
                raise Invalid(f"{op} needs a number or a string")
            mark = recipe.add(leaf)
            if op == "$max":
                return _json_number(
                    f"CASE WHEN {old} IS NULL THEN {mark} ELSE max({old}, {mark}) END"
                )
            return _json_number(
                f"CASE WHEN json_type(doc, {path}) IS NULL THEN {mark} ELSE min({old}, {mark}) END"
            )
        if leaf.kind not in _SCALAR_KINDS:
            raise Invalid(f"{op} takes one scalar value")
        element = f"json({recipe.add(leaf, dumps)})"
        if op == "$push":
            return self._appended(old, element, None)
        present = (
            f"EXISTS (SELECT 1 FROM json_each(doc, {path}) WHERE {_element_match(leaf, recipe)})"
        )
        return self._appended(old, element, present)

    @staticmethod
    def _appended(old: str, element: str, present: str | None) -> str:
        keep = f"WHEN {present} THEN {old} " if present else ""
        return (
            f"json(CASE WHEN {old} IS NULL THEN json_array({element}) {keep}"
            f"ELSE json_insert({old}, '$[#]', {element}) END)"
        )

    @staticmethod
    def _pulled(path: str, leaf: Leaf, recipe: Recipe) -> str:
        if leaf.kind not in _SCALAR_KINDS:
            raise Invalid("$pull takes one scalar value")
        match = _element_match(leaf, recipe)
        element = (
            "CASE type WHEN 'true' THEN json('true') WHEN 'false' THEN json('false') "
            "WHEN 'object' THEN json(value) WHEN 'array' THEN json(value) ELSE value END"
        )
        kept = f"SELECT json_group_array({element}) FROM json_each(doc, {path}) WHERE NOT ({match})"
        return (
            f"CASE WHEN json_type(doc, {path}) = 'array' THEN json(({kept})) "
            f"ELSE json_extract(doc, {path}) END"
        )

    # -- grouping ----------------------------------------------------------------------------

    def group_key(self, name: str) -> tuple[str, str]:
        """The value expression of a group key, and an expression telling how to decode it
        (1: boolean, 2: JSON text, 0: as is)."""
        if self.is_column(name):
            return self.field(name), "0"
        path = json_path(name)
        kind = (
            f"CASE json_type(doc, {path}) WHEN 'true' THEN 1 WHEN 'false' THEN 1 "
            "WHEN 'object' THEN 2 WHEN 'array' THEN 2 ELSE 0 END"
        )
        return self.extract(name), kind

    def decode_key(self, name: str, value: Any, kind: int) -> Any:
        if value is None:
            return None
        if kind == 1 or self.spec.columns.get(name, "").upper() in _BOOL_TYPES:
            return bool(value)
        if kind == 2:
            return json.loads(value)
        return value

    def aggregate(self, op: str, path: str) -> str:
        expr = self.field(path)
        if op == "sum":
            numbers = f"CASE WHEN typeof({expr}) IN ({_NUMERIC_TYPES}) THEN {expr} END"
            return f"COALESCE(SUM({numbers}), 0)"
        if op in ("min", "max"):
            return f"{op.upper()}({expr})"
        raise Invalid(f"unsupported aggregate {op!r}")

    # -- schema ------------------------------------------------------------------------------

    def validate_schema(self) -> None:
        for field, sql_type in self.spec.columns.items():
            if field == self.spec.id_field:
                continue
            json_path(field)
            if column_name(field).lower() in _RESERVED_COLUMNS:
                raise Invalid(f"{self.spec.name}: column name {field!r} is reserved")
            if not _SQL_TYPE.match(sql_type):
                raise Invalid(f"{self.spec.name}: bad SQL type {sql_type!r} for {field!r}")
        for counter in self.spec.counts:
            if not counter or any(f not in self.spec.columns or column_name(f) in ("key", "n")
                                  for f in counter):
                raise Invalid(f"{self.spec.name}: counted fields {counter!r} must be columns "
                              "(other than key and n)")
        for index in self.spec.indexes:
            for field, direction in index.keys:
                if not self.is_column(field):
                    raise Invalid(f"{self.spec.name}: indexed field {field!r} is not a column")
                if direction not in (1, -1):
                    raise Invalid(f"{self.spec.name}: bad direction in index {index.name}")

    def create_table(self, table: str | None = None) -> str:
        columns = ", ".join(["id TEXT PRIMARY KEY NOT NULL", "doc TEXT NOT NULL", *(
            f"{col} {self.spec.columns[name]}" for name, col, _ in self.columns)])
        return f"CREATE TABLE IF NOT EXISTS {table or self.table} ({columns})"

    def add_column(self, field: str) -> str:
        return (f"ALTER TABLE {self.table} ADD COLUMN {quote_ident(column_name(field))} "
                f"{self.spec.columns[field]}")

    def fill_column(self, field: str) -> str:
        return (f"UPDATE {self.table} SET {quote_ident(column_name(field))} = "
                f"{self.extract(field)}")

    def copy_into(self, table: str) -> str:
        """Copy every row (keeping rowids, hence tie order) into ``table``, reading the
        columns from the documents."""
        cols = [col for _, col, _ in self.columns]
        values = [self.extract(name) for name, _, _ in self.columns]
        names = ", ".join(["rowid", "id", "doc", *cols])
        return (f"INSERT INTO {table} ({names}) SELECT {', '.join(['rowid', 'id', 'doc', *values])}"
                f" FROM {self.table} ORDER BY rowid")

    def create_counter(self, counter: tuple[str, ...]) -> list[str]:
        """The table of one ``counts`` grouping and the triggers keeping it."""
        table = self.counter_table(counter)
        cols = [self.field(f) for f in counter]
        decl = ", ".join(f"{c} {self.spec.columns[f]}" for f, c in zip(counter, cols, strict=True))
        names = ", ".join(cols)

        def add(row: str) -> str:
            values = ", ".join(f"{row}.{c}" for c in cols)
            return (f"INSERT INTO {table} (key, {names}, n) VALUES (json_array({values}), "
                    f"{values}, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1;")

        def remove(row: str) -> str:
            values = ", ".join(f"{row}.{c}" for c in cols)
            return f"UPDATE {table} SET n = n - 1 WHERE key = json_array({values});"

        base = f"{self.spec.name}__count__{'__'.join(map(column_name, counter))}"
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in cols)
        # inserts are counted per batch by ``count_inserted`` (a trigger per row would
        # halve the insert rate)
        on = {"delete": ("AFTER DELETE", remove("OLD")),
              "update": (f"AFTER UPDATE OF {names}", f"{remove('OLD')} {add('NEW')}")}
        table_sql = (f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY NOT NULL, "
                     f"{decl}, n INTEGER NOT NULL)")
        triggers = [
            f"CREATE TRIGGER IF NOT EXISTS {quote_ident(f'{base}__{name}')} {when} ON "
            f"{self.table}{f' WHEN {changed}' if name == 'update' else ''} BEGIN {body} END"
            for name, (when, body) in on.items()
        ]
        return [table_sql, *triggers]

    def fill_counter(self, counter: tuple[str, ...], after_rowid: bool = False) -> str:
        """Count the collection's documents (those after rowid ``?`` with
        ``after_rowid``: the ones an insert just added) into the counts table."""
        cols = ", ".join(self.field(f) for f in counter)
        where = "rowid > ?" if after_rowid else "1"
        return (f"INSERT INTO {self.counter_table(counter)} (key, {cols}, n) SELECT "
                f"json_array({cols}), {cols}, COUNT(*) FROM {self.table} WHERE {where} "
                f"GROUP BY {cols} ON CONFLICT (key) DO UPDATE SET n = n + excluded.n")

    def index_name(self, index: Index) -> str:
        return f"{self.spec.name}__{index.name}"

    def create_index(self, index: Index) -> str:
        keys = ", ".join(
            f"{self.field(field)} {'ASC' if direction == 1 else 'DESC'}"
            for field, direction in index.keys
        )
        unique = "UNIQUE " if index.unique else ""
        name = quote_ident(self.index_name(index))
        return f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {self.table} ({keys})"


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction around the block; inside one already open (an inline write,
    see ``SQLiteStore.run_short``) the block joins it."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def duplicate_key_errors() -> Iterator[None]:
    """Turn a unique-index violation into ``DuplicateKey``."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        if getattr(error, "sqlite_errorname", "") in _UNIQUE_ERRORS:
            raise DuplicateKey(str(error)) from error
        raise


def project(doc: Doc, keys: Sequence[str] | None, id_field: str) -> Doc:
    if keys is None:
        return doc
    wanted = {id_field, *keys}
    return {k: v for k, v in doc.items() if k in wanted}


def sort_key(sort: Sort | None) -> SortKey:
    return tuple((field, direction) for field, direction in sort) if sort else None


def _plain_scalar(value: Any, collection: str) -> Any:
    """A column value of a subclass (StrEnum, IntEnum, ...) as the plain scalar its JSON
    holds."""
    if isinstance(value, bool):
        return int(value)
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    raise Invalid(f"{collection}: a column holds a scalar, not {type(value).__name__}")


class SQLiteCollection(Collection):
    """One table of the SQLite store."""

    def __init__(self, store: SQLiteStore, spec: CollectionSpec, compiler: Compiler) -> None:
        self.spec = spec
        self._store = store
        self._sql = compiler
        self._insert = compiler.insert_sql
        self._insert_ignore = compiler.insert_ignore_sql

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def prepared(conn: sqlite3.Connection) -> T:
            self._store.ensure_in_thread(conn, self.spec)
            return fn(conn)

        return await self._store.run(prepared)

    async def _run_short(self, fn: Callable[[sqlite3.Connection], T], write: bool = False
                         ) -> T:
        """``_run`` for one statement (or transaction) expected to be short, ``write`` when
        it changes anything (see ``SQLiteStore.run_short``)."""
        if self._store._ensured.get(self.spec.name) is not self.spec:
            return await self._run(fn)
        return await self._store.run_short(fn, write)

    async def _fetch(self, statement: Statement, values: Sequence[Any]) -> list[Any]:
        params = statement.params(values)
        return await self._run_short(lambda conn: conn.execute(statement.sql, params).fetchall())

    def _row(self, doc: Doc, text: str) -> tuple[Any, ...]:
        """The row of a document: its id, its JSON and its column values as ``json_extract``
        reads them from the JSON (``Collection`` has made sure each is a scalar)."""
        doc_id = doc.get(self.spec.id_field)
        if doc_id is None:
            raise Invalid(f"{self.spec.name}: missing {self.spec.id_field}")
        row: list[Any] = [doc_id, text]
        for _, _, parts in self._sql.columns:
            value: Any = doc
            for part in parts:
                if type(value) is dict or isinstance(value, Mapping):
                    value = value.get(part)
                else:
                    value = None
            kind = type(value)
            if kind is bool:
                value = int(value)
            elif not (value is None or kind is str or kind is int or kind is float):
                value = _plain_scalar(value, self.spec.name)
            row.append(value)
        return tuple(row)

    def _last_rowid(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self._sql.table}")
                   .fetchone()[0])

    def _count_inserted(self, conn: sqlite3.Connection, last_rowid: int) -> None:
        """Add the rows just inserted (in this transaction: rowids past ``last_rowid``, as
        SQLite numbers new rows) to the maintained counts."""
        for counter in self.spec.counts:
            conn.execute(self._sql.fill_counter(counter, after_rowid=True), (last_rowid,))

    def _find_statement(
        self, filter: Filter, sort: Sort | None, limit: int | None
    ) -> tuple[Statement, list[Any]]:
        flat = Flattener()
        shape = flat.filter(filter)
        limit_leaf = None if limit is None else flat.leaf(limit)
        return self._sql.select(shape, sort_key(sort), limit_leaf), flat.values

    async def _insert_one(self, doc: Doc, text: str) -> None:
        row = self._row(doc, text)

        def op(conn: sqlite3.Connection) -> None:
            with duplicate_key_errors():
                if not self.spec.counts:
                    conn.execute(self._insert, row)
                    return
                with transaction(conn):
                    last = self._last_rowid(conn)
                    conn.execute(self._insert, row)
                    self._count_inserted(conn, last)

        await self._run_short(op, write=True)

    async def _insert_many(self, docs: Sequence[Doc], texts: Sequence[str],
                           skip_duplicates: bool) -> int:
        if not docs:
            return 0
        sql = self._insert_ignore if skip_duplicates else self._insert

        rows = [self._row(doc, text) for doc, text in zip(docs, texts, strict=True)]

        def op(conn: sqlite3.Connection) -> int:
            with duplicate_key_errors(), transaction(conn):
                last = self._last_rowid(conn) if self.spec.counts else 0
                inserted = conn.executemany(sql, rows).rowcount
                if inserted and self.spec.counts:
                    self._count_inserted(conn, last)
                return inserted

        return await self._run_short(op, write=True)

    async def _find(
        self, filter: Filter, keys: Sequence[str] | None, sort: Sort | None, limit: int | None
    ) -> list[Doc]:
        statement, values = self._find_statement(filter, sort, limit)
        params = statement.params(values)
        id_field = self.spec.id_field

        def op(conn: sqlite3.Connection) -> list[Doc]:
            rows = conn.execute(statement.sql, params).fetchall()
            return [project(json.loads(row[0]), keys, id_field) for row in rows]

        return await self._run_short(op)

    async def _count(self, filter: Filter) -> int:
        flat = Flattener()
        rows = await self._fetch(self._sql.count(flat.filter(filter)), flat.values)
        return int(rows[0][0])

    async def _group_stats(
        self, filter: Filter, keys: Sequence[str], fields: Mapping[str, tuple[str, str]]
    ) -> list[Doc]:
        flat = Flattener()
        keys = tuple(keys)
        stats = tuple((op, path) for op, path in fields.values())
        rows = await self._fetch(self._sql.group(flat.filter(filter), keys, stats), flat.values)
        return [self._group_doc(row, keys, list(fields)) for row in rows if row[-1]]

    def _group_doc(self, row: Sequence[Any], keys: Sequence[str], outputs: list[str]) -> Doc:
        doc = {
            key: self._sql.decode_key(key, row[2 * i], row[2 * i + 1]) for i, key in enumerate(keys)
        }
        doc.update(zip(outputs, row[2 * len(keys) : -1], strict=True))
        doc["count"] = row[-1]
        return doc

    async def _update_one(self, filter: Filter, update: Update, sort: Sort | None
                          ) -> Doc | None:
        flat = Flattener()
        statement = self._sql.update_one(flat.update(update), flat.filter(filter), sort_key(sort))
        params = statement.params(flat.values)

        def op(conn: sqlite3.Connection) -> Doc | None:
            with duplicate_key_errors():
                rows = conn.execute(statement.sql, params).fetchall()
            return json.loads(rows[0][0]) if rows else None

        return await self._run_short(op, write=True)

    async def _update_many(self, filter: Filter, update: Update) -> int:
        flat = Flattener()
        statement = self._sql.update_many(flat.update(update), flat.filter(filter))
        params = statement.params(flat.values)

        def op(conn: sqlite3.Connection) -> int:
            with duplicate_key_errors():
                return conn.execute(statement.sql, params).rowcount

        return await self._run_short(op, write=True)

    async def _delete_many(self, filter: Filter) -> int:
        flat = Flattener()
        statement = self._sql.delete(flat.filter(filter))
        params = statement.params(flat.values)
        return await self._run_short(
            lambda conn: conn.execute(statement.sql, params).rowcount, write=True)

    async def explain(self, filter: Filter, sort: Sort | None = None) -> list[str]:
        """SQLite's query plan for ``find(filter, sort=sort)`` (one line per plan step)."""
        statement, values = self._find_statement(filter, sort, None)
        rows = await self._fetch(
            statement._replace(sql="EXPLAIN QUERY PLAN " + statement.sql), values
        )
        return [row[3] for row in rows]


class SQLiteStore(Store):
    """The embedded store: ``<data_dir>/iceprod.sqlite3``, one worker thread, one connection."""

    backend = "sqlite"

    def __init__(self, data_dir: str) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old; iceprod needs "
                + ".".join(map(str, MIN_SQLITE_VERSION))
            )
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(data_dir) / DB_FILE
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iceprod-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._compilers: dict[str, Compiler] = {}
        self._ensured: dict[str, CollectionSpec] = {}
        self._closed = False
        # held by whichever thread uses the connection: the worker, or the loop inline
        self._lock = threading.Lock()
        self._inline_deadline = 0.0
        self._busy_ms = -1  # the connection's busy_timeout as last set

    def collection(self, spec: CollectionSpec) -> SQLiteCollection:
        return SQLiteCollection(self, spec, self._compiler(spec))

    async def ensure_indexes(self, specs: Sequence[CollectionSpec]) -> None:
        specs = list(specs)

        def op(conn: sqlite3.Connection) -> None:
            for spec in specs:
                self._ensure(conn, spec)

        await self.run(op)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=False)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's worker thread."""
        if self._closed:
            raise RuntimeError("the SQLite store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def run_short(self, fn: Callable[[sqlite3.Connection], T], write: bool = False) -> T:
        """Run ``fn(connection)``, one statement or one transaction, on this thread when the
        worker is idle and it finishes within the budget; else on the worker thread.

        A ``write`` runs inline inside its own transaction, and only its statements are under
        the budget, never the COMMIT: SQLite may report an interrupted autocommit write (or
        COMMIT) that it has in fact committed, and running that again on the worker would
        apply it twice. Interrupted before COMMIT, the transaction is rolled back whole."""
        if self._closed:
            raise RuntimeError("the SQLite store is closed")
        conn = self._conn
        if conn is None or not self._lock.acquire(blocking=False):
            return await self.run(fn)
        try:
            self._set_busy_timeout(conn, 0)  # inline: never wait for another process's lock
            try:
                if conn.in_transaction:  # left open by a failure: it has no effect, drop it
                    conn.execute("ROLLBACK")
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                self._inline_deadline = time.perf_counter() + INLINE_BUDGET_S
                conn.set_progress_handler(self._over_budget, _PROGRESS_STEPS)
                try:
                    result = fn(conn)
                finally:
                    conn.set_progress_handler(None, 0)
                if write:
                    conn.execute("COMMIT")
                return result
            except BaseException as error:
                if conn.in_transaction:  # nothing of it was committed: drop it
                    conn.execute("ROLLBACK")
                name = getattr(error, "sqlite_errorname", "")
                if not (isinstance(error, sqlite3.OperationalError)
                        and name.startswith(_RETRY_ON_WORKER)):
                    raise
        finally:
            self._lock.release()
        return await self.run(fn)

    def _over_budget(self) -> int:
        return int(time.perf_counter() > self._inline_deadline)

    def ensure_in_thread(self, conn: sqlite3.Connection, spec: CollectionSpec) -> None:
        """Create ``spec``'s table on first use (worker thread only)."""
        known = self._ensured.get(spec.name)
        if known is not spec and known != spec:
            self._ensure(conn, spec)

    def _compiler(self, spec: CollectionSpec) -> Compiler:
        """One compiler, hence one statement cache, per collection spec."""
        compiler = self._compilers.get(spec.name)
        if compiler is None or (compiler.spec is not spec and compiler.spec != spec):
            compiler = self._compilers[spec.name] = Compiler(spec)
        return compiler

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            self._set_busy_timeout(self._conn, BUSY_TIMEOUT_MS)
            return fn(self._conn)

    def _set_busy_timeout(self, conn: sqlite3.Connection, ms: int) -> None:
        """Set the lock wait (0 inline, ``BUSY_TIMEOUT_MS`` on the worker) when it differs
        (the caller holds ``_lock``): back-to-back inline statements pay no PRAGMA."""
        if self._busy_ms != ms:
            conn.execute(f"PRAGMA busy_timeout={ms}")
            self._busy_ms = ms

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               cached_statements=CACHED_STATEMENTS)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._busy_ms = BUSY_TIMEOUT_MS
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return conn

    def _disconnect(self) -> None:
        with self._lock:
            self._close_connection()

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                # statistics for the planner, best effort: another process writing the same
                # file may hold the lock, and that must not fail the close
                self._conn.execute("PRAGMA optimize")
            except sqlite3.OperationalError as e:
                log.debug("sqlite: PRAGMA optimize skipped at close: %s", e)
            self._conn.close()
            self._conn = None
            self._busy_ms = -1

    def _ensure(self, conn: sqlite3.Connection, spec: CollectionSpec) -> None:
        """Create the table, its columns, indexes and maintained counts (idempotent, and
        safe against another process doing the same: all in one write transaction).

        A table from an earlier version, whose columns were virtual generated columns, is
        rebuilt once with real columns (a copy in one transaction, logged: about a minute
        per million tasks). A column new to the spec is added and filled from the
        documents; a counts table new to the spec is filled from the collection."""
        sql = Compiler(spec)
        sql.validate_schema()
        with duplicate_key_errors(), transaction(conn):
            conn.execute(sql.create_table())
            info = list(conn.execute(f"PRAGMA table_xinfo({sql.table})"))
            if any(row[6] in (2, 3) for row in info):  # hidden: 2 virtual, 3 stored generated
                self._rebuild(conn, sql)
            else:
                existing = {row[1] for row in info}
                for field, col, _ in sql.columns:
                    if column_name(field) not in existing:
                        conn.execute(sql.add_column(field))
                        conn.execute(sql.fill_column(field))
            for index in spec.indexes:
                conn.execute(sql.create_index(index))
            for counter in spec.counts:
                table = sql.counter_table(counter)
                new = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                   f"name = {sql_string(table[1:-1])}").fetchone() is None
                for statement in sql.create_counter(counter):
                    conn.execute(statement)
                if new:
                    conn.execute(sql.fill_counter(counter))
        self._ensured[spec.name] = spec

    @staticmethod
    def _rebuild(conn: sqlite3.Connection, sql: Compiler) -> None:
        """Copy a table with generated columns into one with real columns (in the caller's
        transaction); its indexes and counts are created again by the caller."""
        started = time.monotonic()
        n = conn.execute(f"SELECT COUNT(*) FROM {sql.table}").fetchone()[0]
        log.warning("sqlite: rebuilding table %s (%d documents) with stored columns, once, "
                    "for this version's faster writes", sql.spec.name, n)
        tmp = quote_ident(f"{sql.spec.name}__rebuild")
        conn.execute(f"DROP TABLE IF EXISTS {tmp}")
        conn.execute(sql.create_table(tmp))
        conn.execute(sql.copy_into(tmp))
        conn.execute(f"DROP TABLE {sql.table}")
        conn.execute(f"ALTER TABLE {tmp} RENAME TO {sql.table}")
        log.warning("sqlite: table %s rebuilt in %.1f s", sql.spec.name,
                    time.monotonic() - started)

"""The embedded SQLite backend.

One database file (``iceprod.sqlite3``, WAL mode, ``synchronous=NORMAL``: a killed process
loses no committed write) under the data directory. Each collection is a table
``(id TEXT PRIMARY KEY, doc TEXT)`` whose JSON ``doc`` is the single source of truth; every
field listed in ``CollectionSpec.columns`` is also a virtual generated column (named after the
path, dots replaced by ``__``) so it can be indexed and compared natively.

Filters and updates are first split into a *shape* (fields, operators and the kind of each
value) and the list of their values. Statements are compiled from the shape alone, with named
parameters for the values, and cached per shape; the SQL text is therefore also stable, so
sqlite3's prepared-statement cache reuses the prepared statement. Updates are one
``UPDATE ... SET doc = json_set(...) RETURNING doc`` statement, so ``update_one`` (the claim)
is atomic.

All database work runs on one dedicated worker thread that owns the only connection; the event
loop only awaits it.

Differences from MongoDB, inherent to JSON in SQLite: booleans compare equal to 1/0 in filters
on non-array fields; an array is only traversed by the filter language when its field is
declared in ``array_fields``; a unique index accepts several documents missing its fields
(NULLs are distinct in SQLite); values of a generated column take its declared SQL type.

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

_SQL_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*$")
_RANGE_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_UPDATE_OPS = frozenset({"$set", "$unset", "$inc", "$max", "$min", "$push", "$addToSet", "$pull"})
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
    if not isinstance(value, Mapping) or not value:
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

    def field(self, name: str) -> str:
        """The SQL expression of a field: the id column, a generated column or json_extract."""
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
        return recipe.statement(
            f"SELECT COUNT(*) FROM {self.source(shape)} WHERE {self.where(shape, recipe)}"
        )

    def _group(
        self, shape: Shape, keys: tuple[str, ...], stats: tuple[tuple[str, str], ...]
    ) -> Statement:
        recipe = Recipe()
        group = [expr for key in keys for expr in self.group_key(key)]
        columns = [*group, *(self.aggregate(op, path) for op, path in stats), "COUNT(*)"]
        sql = f"SELECT {', '.join(columns)} FROM {self.table} WHERE {self.where(shape, recipe)}"
        if group:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group)))
        return recipe.statement(sql)

    def _update_one(self, update: Shape, shape: Shape, sort: SortKey) -> Statement:
        recipe = Recipe()
        new_doc = self.update(update, recipe)
        first = f"SELECT id FROM {self.source(shape)} WHERE {self.where(shape, recipe)}"
        first += self.order_by(sort) + " LIMIT 1"
        return recipe.statement(
            f"UPDATE {self.table} SET doc = {new_doc} WHERE id = ({first}) RETURNING doc"
        )

    def _update_many(self, update: Shape, shape: Shape) -> Statement:
        recipe = Recipe()
        new_doc = self.update(update, recipe)
        where = self.where(shape, recipe)
        return recipe.statement(
            f"UPDATE {self.source(shape)} SET doc = {new_doc} WHERE {where}")

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
        for index in self.spec.indexes:
            for field, direction in index.keys:
                if not self.is_column(field):
                    raise Invalid(f"{self.spec.name}: indexed field {field!r} is not a column")
                if direction not in (1, -1):
                    raise Invalid(f"{self.spec.name}: bad direction in index {index.name}")

    def create_table(self) -> str:
        columns = "id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL"
        return f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})"

    def add_column(self, field: str) -> str:
        return (
            f"ALTER TABLE {self.table} ADD COLUMN {quote_ident(column_name(field))} "
            f"{self.spec.columns[field]} GENERATED ALWAYS AS ({self.extract(field)}) VIRTUAL"
        )

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
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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


class SQLiteCollection(Collection):
    """One table of the SQLite store."""

    def __init__(self, store: SQLiteStore, spec: CollectionSpec, compiler: Compiler) -> None:
        self.spec = spec
        self._store = store
        self._sql = compiler
        table = compiler.table
        self._insert = f"INSERT INTO {table} (id, doc) VALUES (?, ?)"
        self._insert_ignore = f"INSERT OR IGNORE INTO {table} (id, doc) VALUES (?, ?)"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def prepared(conn: sqlite3.Connection) -> T:
            self._store.ensure_in_thread(conn, self.spec)
            return fn(conn)

        return await self._store.run(prepared)

    async def _fetch(self, statement: Statement, values: Sequence[Any]) -> list[Any]:
        params = statement.params(values)
        return await self._run(lambda conn: conn.execute(statement.sql, params).fetchall())

    def _row(self, doc: Doc, text: str) -> tuple[Any, str]:
        doc_id = doc.get(self.spec.id_field)
        if doc_id is None:
            raise Invalid(f"{self.spec.name}: missing {self.spec.id_field}")
        return doc_id, text

    def _find_statement(
        self, filter: Filter, sort: Sort | None, limit: int | None
    ) -> tuple[Statement, list[Any]]:
        flat = Flattener()
        shape = flat.filter(filter)
        limit_leaf = None if limit is None else flat.leaf(limit)
        return self._sql.select(shape, sort_key(sort), limit_leaf), flat.values

    async def _insert_one(self, doc: Doc, text: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with duplicate_key_errors():
                conn.execute(self._insert, self._row(doc, text))

        await self._run(op)

    async def _insert_many(self, docs: Sequence[Doc], texts: Sequence[str],
                           skip_duplicates: bool) -> int:
        if not docs:
            return 0
        sql = self._insert_ignore if skip_duplicates else self._insert

        def op(conn: sqlite3.Connection) -> int:
            rows = [self._row(doc, text) for doc, text in zip(docs, texts, strict=True)]
            with duplicate_key_errors(), transaction(conn):
                return conn.executemany(sql, rows).rowcount

        return await self._run(op)

    async def _find(
        self, filter: Filter, keys: Sequence[str] | None, sort: Sort | None, limit: int | None
    ) -> list[Doc]:
        statement, values = self._find_statement(filter, sort, limit)
        params = statement.params(values)
        id_field = self.spec.id_field

        def op(conn: sqlite3.Connection) -> list[Doc]:
            rows = conn.execute(statement.sql, params).fetchall()
            return [project(json.loads(row[0]), keys, id_field) for row in rows]

        return await self._run(op)

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

        return await self._run(op)

    async def _update_many(self, filter: Filter, update: Update) -> int:
        flat = Flattener()
        statement = self._sql.update_many(flat.update(update), flat.filter(filter))
        params = statement.params(flat.values)

        def op(conn: sqlite3.Connection) -> int:
            with duplicate_key_errors():
                return conn.execute(statement.sql, params).rowcount

        return await self._run(op)

    async def _delete_many(self, filter: Filter) -> int:
        flat = Flattener()
        statement = self._sql.delete(flat.filter(filter))
        params = statement.params(flat.values)
        return await self._run(lambda conn: conn.execute(statement.sql, params).rowcount)

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
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=CACHED_STATEMENTS)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                # statistics for the planner, best effort: another process writing the same
                # file may hold the lock, and that must not fail the close
                self._conn.execute("PRAGMA optimize")
            except sqlite3.OperationalError as e:
                log.debug("sqlite: PRAGMA optimize skipped at close: %s", e)
            self._conn.close()
            self._conn = None

    def _ensure(self, conn: sqlite3.Connection, spec: CollectionSpec) -> None:
        sql = Compiler(spec)
        sql.validate_schema()
        with duplicate_key_errors(), transaction(conn):
            conn.execute(sql.create_table())
            existing = {row[1] for row in conn.execute(f"PRAGMA table_xinfo({sql.table})")}
            for field in spec.columns:
                if field != spec.id_field and column_name(field) not in existing:
                    conn.execute(sql.add_column(field))
            for index in spec.indexes:
                conn.execute(sql.create_index(index))
        self._ensured[spec.name] = spec

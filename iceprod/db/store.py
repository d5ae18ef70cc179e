"""The backend-neutral store: collection specs and the primitive ``Collection`` and ``Store``
interfaces (``backends.open_store`` picks the implementation).

Repositories (one module per collection in this package) express their domain operations
with these primitives; each backend (``sqlite.py``, ``mongo.py``) implements the primitives
natively: the SQLite backend compiles filters and updates to SQL over real, indexed columns;
the Mongo backend hands them to PyMongo's async API unchanged.

Filter language (a subset of MongoDB's, identical meaning on both backends):

- ``{"a": v}`` equality; ``v is None`` matches a missing or null field. For a field listed in
  ``CollectionSpec.array_fields`` equality means "the array contains v", and ``{"a": []}``
  matches an empty array.
- ``{"a": {"$in": [..]}}``, ``$nin``, ``$ne``, ``$lt``, ``$lte``, ``$gt``, ``$gte``,
  ``{"$exists": bool}``; several operators on one field are ANDed.
- ``{"$or": [f1, f2]}``, ``{"$and": [f1, f2]}``; top-level keys are ANDed.
- Dotted paths address nested fields: ``"requirements.cpu"``.

Update language: ``$set``, ``$unset``, ``$inc``, ``$max``, ``$min`` (dotted paths allowed),
``$push`` and ``$addToSet`` (one scalar value), ``$pull`` (one scalar value).

Sort: a list of ``(field, 1 | -1)``. Documents never carry Mongo's ``_id``.

Projection (``keys``): a list of field paths, the same on both backends (applied by
``Collection``; see ``storable.project``). The collection's id field is always included. A
top-level name keeps that field whole; a dotted path keeps only that sub-field, with MongoDB's
nesting: ``requirements.cpu`` answers ``{"requirements": {"cpu": 1}}``. Through an array a
sub-path applies to each object in it (scalars there are dropped); a path that is missing, or
runs into a scalar, adds nothing, and an object or array left with nothing is left out. A
field asked for whole covers its sub-paths (``r|r.cpu`` is ``r``). An empty segment or one
starting with ``$`` is ``Invalid``.

What a document, update or filter may hold (64-bit integers, finite numbers, no lone
surrogates, no NUL or leading ``$`` in keys, nesting, 16 MiB) is checked before either backend
sees it: see ``storable.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iceprod.common.errors import Invalid, UndeclaredField
from iceprod.db.storable import (
    check_document,
    check_filter,
    check_update,
    project,
    projection_tree,
)

Doc = dict[str, Any]
Filter = Mapping[str, Any]
Update = Mapping[str, Mapping[str, Any]]
Sort = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class Index:
    """An index over ``keys`` (field, 1 | -1); ``unique`` makes inserts idempotent."""

    keys: tuple[tuple[str, int], ...]
    unique: bool = False

    @property
    def name(self) -> str:
        return "_".join(f"{k.replace('.', '_')}_{d}" for k, d in self.keys)


@dataclass(frozen=True)
class CollectionSpec:
    """What a backend needs to know about one collection.

    ``columns`` maps a (dotted) field to a SQL type; the SQLite backend keeps those fields as
    real columns beside the document, written with it (so they can be indexed and compared
    natively). Every field used by an index must be a column; a column never holds an array.

    The shape of every field a filter compares is declared: a column, the id, one of
    ``scalar_fields`` (a single value, a scalar or an embedded document, never an array) or
    one of ``array_fields`` (arrays of scalars, where equality means "contains"). A filter
    comparing any other field raises ``UndeclaredField`` on every backend (MongoDB looks
    inside arrays and SQLite does not, so an undeclared field holding an array would answer
    differently). Filters are built only in this package, from typed parameters, so that
    is a bug in a repository (a 500), never bad input.

    ``counts`` are groupings (tuples of scalar columns) whose document counts the SQLite
    backend keeps up to date in the same transaction as every write, so a ``group_count``
    over them (equality or ``$in`` filters on those fields only) reads a few rows instead
    of the collection. MongoDB answers the same query by aggregation.
    """

    name: str
    id_field: str
    columns: Mapping[str, str] = field(default_factory=dict)
    indexes: tuple[Index, ...] = ()
    array_fields: frozenset[str] = frozenset()
    scalar_fields: frozenset[str] = frozenset()
    counts: tuple[tuple[str, ...], ...] = ()

    def shape_known(self, name: str) -> bool:
        """Whether filters may compare ``name`` (see the class docstring)."""
        return name in self.known_fields

    @property
    def column_paths(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Each column and its path segments (computed once)."""
        paths = self.__dict__.get("_paths")
        if paths is None:
            paths = tuple((name, tuple(name.split("."))) for name in self.columns)
            object.__setattr__(self, "_paths", paths)
        return paths

    @property
    def column_roots(self) -> frozenset[str]:
        """The top-level fields holding columns (computed once)."""
        roots = self.__dict__.get("_roots")
        if roots is None:
            roots = frozenset(name.split(".", 1)[0] for name in self.columns)
            object.__setattr__(self, "_roots", roots)
        return roots

    @property
    def known_fields(self) -> frozenset[str]:
        """The fields whose shape is declared (computed once)."""
        known = self.__dict__.get("_known")
        if known is None:
            known = frozenset({self.id_field, *self.columns, *self.scalar_fields,
                               *self.array_fields})
            object.__setattr__(self, "_known", known)
        return known


_COMPOSITE = (Mapping, list, tuple)


def _column_value(value: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _not_scalar(path: str) -> Invalid:
    return Invalid(f"{path}: a column of this collection, it holds one scalar value, never "
                   "an object or an array", field=path)


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})


def check_columns(doc: Doc, spec: CollectionSpec) -> None:
    """Refuse a document holding an object or array where ``spec`` declares a column: a
    column is a scalar (indexed, compared and counted as one) on every backend."""
    for name, parts in spec.column_paths:
        value: Any = doc
        for part in parts:
            if type(value) is not dict:
                value = _column_value(value, [part])
            else:
                value = value.get(part)
        if type(value) not in _SCALAR_TYPES and isinstance(value, _COMPOSITE):
            raise _not_scalar(name)


def check_column_update(update: Update, spec: CollectionSpec) -> None:
    """Refuse an update that would leave an object or array at a column (a ``$set`` of one
    at the column or inside a parent set whole, an array operator on a column or a
    parent)."""
    columns = spec.columns
    roots = spec.column_roots
    for op, fields in update.items():
        if op == "$unset" or not isinstance(fields, Mapping):
            continue
        for path, value in fields.items():
            if not isinstance(path, str) or (path.split(".", 1)[0] not in roots):
                continue
            if path in columns and op in ("$set", "$inc", "$max", "$min") and \
                    type(value) in (str, int, float, bool, type(None)):
                continue  # the common case: a scalar at a column
            for name in columns:
                if name == path:
                    found = value
                elif name.startswith(path + "."):
                    if op in ("$push", "$addToSet", "$pull"):
                        raise _not_scalar(name)
                    found = _column_value(value, name[len(path) + 1:].split("."))
                else:
                    continue
                if isinstance(found, _COMPOSITE) or (op in ("$push", "$addToSet", "$pull")
                                                     and name == path):
                    raise _not_scalar(name)


def check_shapes(filter: Filter, spec: CollectionSpec) -> None:
    """Refuse a filter comparing a field whose shape ``spec`` does not declare (only
    ``$exists`` may name any field): see ``CollectionSpec``."""
    known = spec.known_fields
    for key, value in filter.items():
        if key in known:
            continue
        if key == "$or" or key == "$and":
            if isinstance(value, list | tuple):
                for sub in value:
                    if isinstance(sub, Mapping):
                        check_shapes(sub, spec)
            continue
        if key.startswith("$"):
            continue  # an unknown operator is refused by the backend
        if isinstance(value, Mapping) and value and all(op == "$exists" for op in value):
            continue
        raise UndeclaredField(
            f"{key}: {spec.name} does not declare this field's shape (a column, "
            "scalar_fields or array_fields), so a filter may not compare it", field=key)


class Collection(abc.ABC):
    """Primitive operations on one collection. All methods are coroutines and never block
    the event loop.

    The public methods are the one place every read and write of both backends passes:
    they refuse what either backend could not hold (``storable.py``) and apply ``keys``
    projections the same way, then call the backend's ``_``-prefixed implementation.
    """

    spec: CollectionSpec

    async def insert_one(self, doc: Doc) -> None:
        """Insert; raises ``DuplicateKey`` when a unique index (or the id) refuses it."""
        text = check_document(doc)
        check_columns(doc, self.spec)
        await self._insert_one(doc, text)

    async def insert_many(self, docs: Sequence[Doc], skip_duplicates: bool = False) -> int:
        """Insert all docs in one batch and return how many were inserted. With
        ``skip_duplicates`` documents refused by a unique index are skipped silently;
        otherwise the first duplicate raises ``DuplicateKey`` and nothing is inserted."""
        texts = [check_document(doc) for doc in docs]
        for doc in docs:
            check_columns(doc, self.spec)
        return await self._insert_many(docs, texts, skip_duplicates)

    async def find_one(
        self, filter: Filter, keys: Sequence[str] | None = None, sort: Sort | None = None
    ) -> Doc | None:
        found = await self.find(filter, keys, sort, 1)
        return found[0] if found else None

    async def find(
        self,
        filter: Filter,
        keys: Sequence[str] | None = None,
        sort: Sort | None = None,
        limit: int | None = None,
    ) -> list[Doc]:
        check_filter(filter)
        check_shapes(filter, self.spec)
        if limit is not None and limit <= 0:
            return []  # SQLite's LIMIT -1 would mean "no limit", Mongo's 0 too
        if keys is None:
            return await self._find(filter, None, sort, limit)
        tree = projection_tree(keys)
        docs = await self._find(filter, list(tree), sort, limit)
        if all(sub is True for sub in tree.values()):
            return docs
        return [project(doc, tree, self.spec.id_field) for doc in docs]

    async def count(self, filter: Filter) -> int:
        check_filter(filter)
        check_shapes(filter, self.spec)
        return await self._count(filter)

    async def group_count(self, filter: Filter, keys: Sequence[str]) -> list[Doc]:
        """Count matching docs grouped by ``keys`` (dotted allowed). Each result is
        ``{key: value, ..., "count": n}``; a missing field groups as ``None``."""
        return await self.group_stats(filter, keys, {})

    async def group_stats(
        self, filter: Filter, keys: Sequence[str], fields: Mapping[str, tuple[str, str]]
    ) -> list[Doc]:
        """Aggregate grouped by ``keys``. ``fields`` maps an output name to
        ``(op, path)`` with op in sum|min|max; each result is
        ``{key: value, ..., out_name: number | None, ..., "count": n}``."""
        check_filter(filter)
        check_shapes(filter, self.spec)
        return await self._group_stats(filter, keys, fields)

    async def update_one(
        self, filter: Filter, update: Update, sort: Sort | None = None
    ) -> Doc | None:
        """Atomically update the first matching doc (in ``sort`` order) and return it as it
        is after the update, or ``None`` when nothing matched. This is the conditional
        update every status change uses, and the claim."""
        check_filter(filter)
        check_shapes(filter, self.spec)
        check_update(update)
        check_column_update(update, self.spec)
        return await self._update_one(filter, update, sort)

    async def update_many(self, filter: Filter, update: Update) -> int:
        """Update all matching docs; returns how many matched."""
        check_filter(filter)
        check_shapes(filter, self.spec)
        check_update(update)
        check_column_update(update, self.spec)
        return await self._update_many(filter, update)

    async def delete_many(self, filter: Filter) -> int:
        check_filter(filter)
        check_shapes(filter, self.spec)
        return await self._delete_many(filter)

    # -- what each backend implements; arguments are already checked --------------------
    # ``text`` is the document's compact JSON, made by the check (the SQLite store keeps it).

    @abc.abstractmethod
    async def _insert_one(self, doc: Doc, text: str) -> None: ...

    @abc.abstractmethod
    async def _insert_many(self, docs: Sequence[Doc], texts: Sequence[str],
                           skip_duplicates: bool) -> int: ...

    @abc.abstractmethod
    async def _find(
        self, filter: Filter, keys: Sequence[str] | None, sort: Sort | None, limit: int | None
    ) -> list[Doc]:
        """Matching docs; ``keys`` are top-level field names (the id is always included)."""

    @abc.abstractmethod
    async def _count(self, filter: Filter) -> int: ...

    @abc.abstractmethod
    async def _group_stats(
        self, filter: Filter, keys: Sequence[str], fields: Mapping[str, tuple[str, str]]
    ) -> list[Doc]: ...

    @abc.abstractmethod
    async def _update_one(self, filter: Filter, update: Update, sort: Sort | None
                          ) -> Doc | None: ...

    @abc.abstractmethod
    async def _update_many(self, filter: Filter, update: Update) -> int: ...

    @abc.abstractmethod
    async def _delete_many(self, filter: Filter) -> int: ...


class Store(abc.ABC):
    """A connected backend: hands out collections and owns their indexes."""

    backend: str

    @abc.abstractmethod
    def collection(self, spec: CollectionSpec) -> Collection: ...

    @abc.abstractmethod
    async def ensure_indexes(self, specs: Sequence[CollectionSpec]) -> None:
        """Create every collection and index declared in ``specs`` (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

"""The MongoDB backend, through PyMongo's native async API (``AsyncMongoClient``).

The store's filter, update and sort languages are MongoDB's, so they pass through unchanged;
documents never expose ``_id``. Group queries are aggregate ``$group`` stages (not
``distinct``, which some wire-compatible servers reject when a value is missing).

``insert_many`` without ``skip_duplicates`` promises "nothing is inserted" on a duplicate.
Without a replica set MongoDB cannot make that transactional, so the batch is inserted in
order and, when a duplicate stops it, the documents this call already inserted are deleted
again (by the ``_id`` PyMongo assigned them). Concurrent readers may briefly see them.

Documents, updates, filters and projections are checked by ``Collection`` (store.py) before
they reach this module, so the driver never meets a value it cannot encode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from iceprod.common.errors import DuplicateKey, Invalid, TooLarge
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

DEFAULT_DB_NAME = "iceprod"
DUPLICATE_KEY_CODE = 11000
_AGGREGATES = {"sum": "$sum", "min": "$min", "max": "$max"}
# "BSONObjectTooLarge", and "Resulting document after update is larger than ..."
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})


def _projection(keys: Sequence[str] | None, id_field: str) -> dict[str, int]:
    if keys is None:
        return {"_id": 0}
    return {**{key: 1 for key in keys}, id_field: 1, "_id": 0}


def _sort(sort: Sort | None) -> list[tuple[str, int]] | None:
    return list(sort) if sort else None


def _check_id_unchanged(update: Update, id_field: str) -> None:
    for fields in update.values():
        for field in fields:
            if field == id_field or field.startswith(id_field + "."):
                raise Invalid(f"cannot update the id field {id_field!r}")


def _too_large_or(error: OperationFailure) -> Exception:
    """MongoDB refuses an update that grows a document past 16 MiB: say so as ``TooLarge``
    (storable.py can only measure the update, not the document it grows)."""
    if error.code in _TOO_LARGE_CODES:
        return TooLarge("document: the update would grow it past 16 MiB")
    return error


def _all_duplicates(error: BulkWriteError) -> bool:
    errors = error.details.get("writeErrors", [])
    return bool(errors) and all(e.get("code") == DUPLICATE_KEY_CODE for e in errors)


class MongoCollection(Collection):
    """One MongoDB collection."""

    def __init__(self, store: MongoStore, spec: CollectionSpec) -> None:
        self.spec = spec
        self._store = store
        self._coll: AsyncCollection[dict[str, Any]] = store.db[spec.name]

    def _copy(self, doc: Doc) -> dict[str, Any]:
        """A copy PyMongo may add ``_id`` to; the caller's document stays untouched."""
        if doc.get(self.spec.id_field) is None:
            raise Invalid(f"{self.spec.name}: missing {self.spec.id_field}")
        return dict(doc)

    async def _ready(self) -> AsyncCollection[dict[str, Any]]:
        await self._store.ensure_spec(self.spec)
        return self._coll

    async def _insert_one(self, doc: Doc, text: str) -> None:
        coll = await self._ready()
        try:
            await coll.insert_one(self._copy(doc))
        except DuplicateKeyError as error:
            raise DuplicateKey(str(error)) from error

    async def _insert_many(self, docs: Sequence[Doc], texts: Sequence[str],
                           skip_duplicates: bool) -> int:
        if not docs:
            return 0
        coll = await self._ready()
        copies = [self._copy(doc) for doc in docs]
        try:
            result = await coll.insert_many(copies, ordered=not skip_duplicates)
        except BulkWriteError as error:
            if not _all_duplicates(error):
                raise
            inserted = int(error.details.get("nInserted", 0))
            if skip_duplicates:
                return inserted
            await self._undo(copies[:inserted])
            raise DuplicateKey(str(error.details["writeErrors"][0].get("errmsg"))) from error
        return len(result.inserted_ids)

    async def _undo(self, inserted: list[dict[str, Any]]) -> None:
        if inserted:
            await self._coll.delete_many({"_id": {"$in": [doc["_id"] for doc in inserted]}})

    async def _find(
        self, filter: Filter, keys: Sequence[str] | None, sort: Sort | None, limit: int | None
    ) -> list[Doc]:
        coll = await self._ready()
        projection = _projection(keys, self.spec.id_field)
        cursor = coll.find(filter, projection, sort=_sort(sort), limit=limit or 0)
        return await cursor.to_list()

    async def _count(self, filter: Filter) -> int:
        coll = await self._ready()
        return await coll.count_documents(filter)

    async def _group_stats(
        self, filter: Filter, keys: Sequence[str], fields: Mapping[str, tuple[str, str]]
    ) -> list[Doc]:
        keys = list(keys)
        outputs = list(fields)
        group: dict[str, Any] = {
            "_id": {f"k{i}": {"$ifNull": [f"${key}", None]} for i, key in enumerate(keys)}
            if keys
            else None,
            "count": {"$sum": 1},
        }
        for i, (op, path) in enumerate(fields.values()):
            if op not in _AGGREGATES:
                raise Invalid(f"unsupported aggregate {op!r}")
            group[f"f{i}"] = {_AGGREGATES[op]: f"${path}"}
        coll = await self._ready()
        cursor = await coll.aggregate([{"$match": dict(filter)}, {"$group": group}])
        return [self._group_doc(row, keys, outputs) async for row in cursor]

    @staticmethod
    def _group_doc(row: Mapping[str, Any], keys: list[str], outputs: list[str]) -> Doc:
        ids = row["_id"] or {}
        doc: Doc = {key: ids.get(f"k{i}") for i, key in enumerate(keys)}
        doc.update({name: row.get(f"f{i}") for i, name in enumerate(outputs)})
        doc["count"] = row["count"]
        return doc

    async def _update_one(self, filter: Filter, update: Update, sort: Sort | None
                          ) -> Doc | None:
        _check_id_unchanged(update, self.spec.id_field)
        coll = await self._ready()
        try:
            return await coll.find_one_and_update(
                filter,
                update,
                projection={"_id": 0},
                sort=_sort(sort),
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as error:
            raise DuplicateKey(str(error)) from error
        except OperationFailure as error:
            raise _too_large_or(error) from error

    async def _update_many(self, filter: Filter, update: Update) -> int:
        _check_id_unchanged(update, self.spec.id_field)
        coll = await self._ready()
        try:
            result = await coll.update_many(filter, update)
        except DuplicateKeyError as error:
            raise DuplicateKey(str(error)) from error
        except OperationFailure as error:
            raise _too_large_or(error) from error
        return result.matched_count

    async def _delete_many(self, filter: Filter) -> int:
        coll = await self._ready()
        result = await coll.delete_many(filter)
        return result.deleted_count


class MongoStore(Store):
    """A MongoDB database; its name comes from the URL path unless ``db_name`` is given."""

    backend = "mongo"

    def __init__(self, url: str, db_name: str | None = None) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        self.db = (
            self.client[db_name]
            if db_name
            else self.client.get_default_database(default=DEFAULT_DB_NAME)
        )
        self._ensured: dict[str, CollectionSpec] = {}

    @property
    def db_name(self) -> str:
        return self.db.name

    def collection(self, spec: CollectionSpec) -> MongoCollection:
        return MongoCollection(self, spec)

    async def ensure_indexes(self, specs: Sequence[CollectionSpec]) -> None:
        for spec in specs:
            await self._create_indexes(spec)

    async def ensure_spec(self, spec: CollectionSpec) -> None:
        """Create ``spec``'s indexes on first use of the collection."""
        known = self._ensured.get(spec.name)
        if known is not spec and known != spec:
            await self._create_indexes(spec)

    async def close(self) -> None:
        await self.client.close()

    async def _create_indexes(self, spec: CollectionSpec) -> None:
        coll = self.db[spec.name]
        id_index = Index(((spec.id_field, 1),), unique=True)
        for index in (id_index, *spec.indexes):
            await coll.create_index(list(index.keys), name=index.name, unique=index.unique)
        self._ensured[spec.name] = spec

"""The dialects' own records (issue 15): the script catalog, what each dialect submission
was (a DRMAAtic task or a batch, both ordinary datasets), and users' API keys.

Everything else a dialect shows is read from the datasets, jobs and tasks it created.
"""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.common.errors import Conflict, DuplicateKey, NotFound
from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc, Index

MAX_SCRIPTS = 10_000


class ScriptsRepo(Repository):
    """Catalog entries, by their unique name."""

    spec = CollectionSpec(name="scripts", id_field="name")
    kind = "script"

    async def put(self, doc: Doc) -> bool:
        """Create or replace the entry ``doc["name"]``; answers whether it was created.
        ``created`` is kept from the entry replaced."""
        name = doc["name"]
        now = iso()
        old = await self.coll.find_one({"name": name}, keys=["created"])
        fields = {**doc, "updated": now, "created": old["created"] if old else now}
        if old is None:
            try:
                await self.coll.insert_one(fields)
                return True
            except DuplicateKey:  # created meanwhile: replace it
                pass
        current = await self.coll.find_one({"name": name})
        gone = {k: "" for k in (current or {}) if k not in fields and k != "_id"}
        update: dict = {"$set": {k: v for k, v in fields.items() if k != "name"}}
        if gone:
            update["$unset"] = gone
        await self.coll.update_one({"name": name}, update)
        return False

    async def delete(self, name: str) -> Doc:
        doc = await self.get(name)
        await self.coll.delete_many({"name": name})
        return doc

    async def window(self, offset: int, limit: int) -> tuple[int, list[Doc]]:
        """``(count, entries)``: the entries from ``offset`` (name order), at most
        ``limit``."""
        total = await self.coll.count({})
        docs = await self.coll.find({}, sort=[("name", 1)],
                                    limit=min(offset + limit, MAX_SCRIPTS))
        return total, docs[offset:]


class SubmissionsRepo(Repository):
    """What a dialect submitted, by the dataset it created: its kind (``drmaatic`` |
    ``batch``), owner, the request as the dialect shows it, and whether it was deleted."""

    spec = CollectionSpec(
        name="submissions",
        id_field="dataset_id",
        columns={"username": "TEXT", "kind": "TEXT"},
        indexes=(Index((("username", 1), ("kind", 1))),),
        scalar_fields=frozenset({"deleted"}),
    )
    kind = "submission"

    async def create(self, doc: Doc) -> None:
        await self.coll.insert_one(doc)

    async def of_user(self, username: str, kind: str, deleted: bool = False,
                      limit: int | None = None) -> list[Doc]:
        """A user's submissions of one kind, oldest first (deleted ones only when asked)."""
        query: dict = {"username": username, "kind": kind}
        if not deleted:
            query["deleted"] = False
        return await self.coll.find(query, sort=[("created", 1), ("dataset_id", 1)],
                                    limit=limit)

    async def of_kind(self, dataset_id: str, kind: str) -> Doc:
        """The submission of that kind which created the dataset, else ``NotFound``."""
        doc = await self.coll.find_one({"dataset_id": dataset_id, "kind": kind})
        if doc is None:
            raise NotFound(f"{'task' if kind == 'drmaatic' else kind} not found")
        return doc

    async def mark_deleted(self, dataset_ids: Sequence[str]) -> int:
        """Mark submissions deleted (stamping ``update_date``); answers how many changed."""
        if not dataset_ids:
            return 0
        return await self.coll.update_many(
            {"dataset_id": {"$in": list(dataset_ids)}, "deleted": False},
            {"$set": {"deleted": True, "updated": iso()}})


class ApiKeysRepo(Repository):
    """API keys: per user, a name and the SHA-256 of the key's secret (never the secret)."""

    spec = CollectionSpec(
        name="apikeys",
        id_field="key_id",
        columns={"username": "TEXT", "name": "TEXT"},
        indexes=(Index((("username", 1), ("name", 1)), unique=True),),
    )
    kind = "API key"

    async def create(self, doc: Doc) -> None:
        try:
            await self.coll.insert_one(doc)
        except DuplicateKey:
            raise Conflict(f"name: an API key named {doc['name']!r} exists") from None

    async def of_user(self, username: str) -> list[Doc]:
        return await self.coll.find({"username": username}, sort=[("name", 1)])

    async def delete_named(self, username: str, name: str) -> Doc:
        doc = await self.coll.find_one({"username": username, "name": name})
        if doc is None:
            raise NotFound(f"name: no API key named {name!r}")
        await self.coll.delete_many({"key_id": doc["key_id"]})
        return doc

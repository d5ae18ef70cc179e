"""Settings: atomic counters (dataset numbers) and small named values such as leases."""

from __future__ import annotations

import time

from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc

METRICS_SNAPSHOT = "metrics"
"""The value the scheduler leaves its counts for ``/metrics`` under."""


class SettingsRepo(Repository):
    spec = CollectionSpec(name="settings", id_field="key",
                          scalar_fields=frozenset({"holder", "expires", "kind"}))
    kind = "setting"

    async def next_counter(self, name: str) -> int:
        """Atomically increment and return a named counter (first value: 1)."""
        await self.coll.insert_many([{"key": name, "value": 0}], skip_duplicates=True)
        doc = await self.coll.update_one({"key": name}, {"$inc": {"value": 1}})
        assert doc is not None
        return int(doc["value"])

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew a named lease; True while ``holder`` has it. With several
        schedulers on one store exactly one acts at a time."""
        now = time.time()
        await self.coll.insert_many(
            [{"key": name, "holder": "", "expires": iso(0)}], skip_duplicates=True)
        doc = await self.coll.update_one(
            {"key": name, "$or": [{"holder": holder}, {"expires": {"$lt": iso(now)}}]},
            {"$set": {"holder": holder, "expires": iso(now + ttl)}},
        )
        return doc is not None

    async def release_lease(self, name: str, holder: str) -> None:
        await self.coll.update_one({"key": name, "holder": holder},
                                   {"$set": {"holder": "", "expires": iso(0)}})

    async def put_value(self, key: str, value: Doc) -> None:
        """Store a small named document (e.g. the scheduler's metrics snapshot), replacing
        the previous one; ``updated`` records when."""
        update = {"$set": {"value": value, "updated": iso()}}
        if await self.coll.update_one({"key": key}, update) is None:
            await self.coll.insert_many([{"key": key, "value": value, "updated": iso()}],
                                        skip_duplicates=True)
            await self.coll.update_one({"key": key}, update)

    async def get_value(self, key: str) -> Doc | None:
        """The named document and when it was stored: ``{"value": ..., "updated": ...}``."""
        doc = await self.coll.find_one({"key": key}, keys=["value", "updated"])
        if doc is None or "value" not in doc:
            return None
        return {"value": doc["value"], "updated": doc["updated"]}
    # -- named entries of one kind (e.g. maintenance per node) ---------------------------

    async def put_entry(self, kind: str, name: str, fields: Doc) -> Doc:
        """Create or replace the fields of the entry ``name`` of ``kind`` (one document per
        entry, so two operators changing different entries never overwrite each other)."""
        key = f"{kind}:{name}"
        await self.coll.insert_many([{"key": key, "kind": kind, "name": name}],
                                    skip_duplicates=True)
        doc = await self.coll.update_one({"key": key}, {"$set": dict(fields)})
        assert doc is not None
        return doc

    async def delete_entry(self, kind: str, name: str) -> bool:
        """Remove the entry ``name`` of ``kind``; true when there was one."""
        return bool(await self.coll.delete_many({"key": f"{kind}:{name}"}))

    async def entries(self, kind: str) -> list[Doc]:
        """Every entry of ``kind``, by name."""
        return await self.coll.find({"kind": kind}, sort=[("key", 1)])

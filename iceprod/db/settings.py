"""Settings: atomic counters (dataset numbers) and small named values such as leases."""

from __future__ import annotations

from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec


class SettingsRepo(Repository):
    spec = CollectionSpec(name="settings", id_field="key")
    kind = "setting"

    async def next_counter(self, name: str) -> int:
        """Atomically increment and return a named counter (first value: 1)."""
        await self.coll.insert_many([{"key": name, "value": 0}], skip_duplicates=True)
        doc = await self.coll.update_one({"key": name}, {"$inc": {"value": 1}})
        assert doc is not None
        return int(doc["value"])

"""Pilots: registration, heartbeat, the tasks each holds, and ownership for pilot tokens."""

from __future__ import annotations

from typing import Any

from iceprod.common.errors import NotFound
from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc, Index


class PilotsRepo(Repository):
    spec = CollectionSpec(
        name="pilots",
        id_field="pilot_id",
        columns={"grid_id": "TEXT", "status": "TEXT", "last_update": "TEXT", "owner": "TEXT"},
        indexes=(
            Index((("grid_id", 1), ("status", 1))),
            Index((("status", 1), ("last_update", 1))),
            Index((("owner", 1),)),
        ),
    )
    kind = "pilot"
    machine = "pilot"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def heartbeat(self, pilot_id: str, fields: Doc) -> Doc:
        sets: dict[str, Any] = {**fields, "last_update": iso()}
        doc = await self.coll.update_one({"pilot_id": pilot_id}, {"$set": sets})
        if doc is None:
            raise NotFound("pilot not found")
        return doc

    async def delete(self, pilot_id: str) -> None:
        if not await self.coll.delete_many({"pilot_id": pilot_id}):
            raise NotFound("pilot not found")

"""Pilots: registration, heartbeat, the tasks each holds, and ownership for pilot tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.errors import NotFound
from iceprod.common.timeutil import iso
from iceprod.db.base import ALL, Page, Paging, Repository, one_of, where
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

    async def page(self, paging: Paging = ALL, *, status: Sequence[str] | None = None,
                   grid_id: str | None = None, pilot_id: str | None = None) -> Page:
        """One page of the pilots matching every given criterion (``status``: any of)."""
        return await self._page(where(status=one_of(status), grid_id=grid_id,
                                      pilot_id=pilot_id), paging)

    async def set_status(self, pilot_id: str, status: str, reason: str | None = None) -> Doc:
        """Move a pilot to ``status`` by its state machine, recording ``reason`` when
        given."""
        extra = {"$set": {"reason": reason}} if reason else None
        return await self._transition({"pilot_id": pilot_id}, status, extra)

    async def heartbeat(self, pilot_id: str, fields: Doc) -> Doc:
        sets: dict[str, Any] = {**fields, "last_update": iso()}
        doc = await self.coll.update_one({"pilot_id": pilot_id}, {"$set": sets})
        if doc is None:
            raise NotFound("pilot not found")
        return doc

    async def delete(self, pilot_id: str) -> None:
        if not await self.coll.delete_many({"pilot_id": pilot_id}):
            raise NotFound("pilot not found")

"""Grids: the submit hosts and their queues that start pilots."""

from __future__ import annotations

from iceprod.db.base import ALL, Page, Paging, Repository, where
from iceprod.db.store import CollectionSpec, Doc, Index


class GridsRepo(Repository):
    spec = CollectionSpec(
        name="grids",
        id_field="grid_id",
        columns={"host": "TEXT"},
        indexes=(Index((("host", 1),)),),
    )
    kind = "grid"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def page(self, paging: Paging = ALL, *, host: str | None = None) -> Page:
        """One page of the grids (on ``host`` when given)."""
        return await self._page(where(host=host), paging)

    async def set_fields(self, grid_id: str, fields: Doc) -> Doc | None:
        return await self.coll.update_one({"grid_id": grid_id}, {"$set": fields})

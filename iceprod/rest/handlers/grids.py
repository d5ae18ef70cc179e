"""Grids: the submit hosts and queues that start pilots."""

from __future__ import annotations

from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import KEYS, PAGE, TEXT, query

CREATE_BODY = body("grids_create")


class GridsHandler(APIHandler):
    @query(**PAGE, host=TEXT)
    @requires("read:grids")
    async def get(self) -> None:
        """Grids as `{grid_id: grid}` (`host=`, `keys=`, paged)."""
        query = {"host": h} if (h := self.get_argument("host", "")) else {}
        await self.list_page(self.db.grids, query)

    @requires("write:grids", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Register a grid."""
        grid_id = new_id()
        now = iso()
        await self.db.grids.create({
            "grid_id": grid_id, "host": self.body["host"], "queues": self.body.get("queues", {}),
            "version": self.body.get("version", ""), "debug": self.body.get("debug", False),
            "start_date": now, "last_update": now,
        })
        self.write_json({"result": grid_id}, 201)


class GridHandler(APIHandler):
    @query(keys=KEYS)
    @requires("read:grids")
    async def get(self, grid_id: str) -> None:
        """One grid."""
        self.write_json(await self.db.grids.get(grid_id, self.keys_arg()))


routes = [
    (r"/grids", GridsHandler),
    (r"/grids/(?P<grid_id>[0-9a-f]{32})", GridHandler),
]

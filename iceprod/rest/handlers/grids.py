"""Grids: the submit hosts and queues that start pilots, and the queued demand their grid
managers size pilots from."""

from __future__ import annotations

from iceprod.common.errors import Conflict, NotFound
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.maintenance import State, get_state, grid_names, why_stopped
from iceprod.core.taskflow import wait_for_demand
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import KEYS, PAGE, SEQ, TEXT, WAIT, query
from iceprod.rest.responses import responds

CREATE_BODY = body("grids_create")
PUT_BODY = body("grids_put")
PATCH_BODY = body("grids_patch")


def with_drain(doc: Doc, state: State) -> Doc:
    """A grid with `drain`: why it is to start no new pilots (maintenance, or the grid, its
    host or site drained), when it is not to."""
    if why := why_stopped(state, grid_names(doc)):
        return {**doc, "drain": why}
    return doc


class GridsHandler(APIHandler):
    @responds("GridPage")
    @query(**PAGE, host=TEXT)
    @requires("read:grids")
    async def get(self) -> None:
        """Grids as `{grid_id: grid}` (`host=`, `keys=`, paged); `drain` says why a grid
        starts no new pilots."""
        host = self.get_argument("host", "") or None
        state = await get_state(self.db)
        await self.list_page(self.db.grids, lambda paging: self.db.grids.page(
            paging, host=host), lambda d: with_drain(d, state))

    @responds("Created")
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
    @responds("Grid")
    @query(keys=KEYS)
    @requires("read:grids")
    async def get(self, grid_id: str) -> None:
        """One grid (with `drain` when it is to start no new pilots)."""
        doc = await self.db.grids.get(grid_id, self.keys_arg())
        self.write_json(with_drain(doc, await get_state(self.db)))

    @responds("Grid")
    @requires("write:grids", body=PUT_BODY)
    async def put(self, grid_id: str) -> None:
        """Register or update a grid under an id its manager chose (stable across restarts):
        answers the grid (with `drain` when it is to start no new pilots)."""
        now = iso()
        fields = {"queues": {}, "version": "", "debug": False, "single_user": None,
                  "site": "", "max_resources": None, **self.body, "last_update": now}
        if await self.db.grids.find(grid_id) is None:
            try:
                await self.db.grids.create({"grid_id": grid_id, "start_date": now, **fields})
            except Conflict:
                pass  # registered meanwhile by another request: update it below
            else:
                await self.answer(grid_id)
                return
        await self.db.grids.set_fields(grid_id, fields)
        await self.answer(grid_id)

    async def answer(self, grid_id: str) -> None:
        doc = await self.db.grids.get(grid_id)
        self.write_json(with_drain(doc, await get_state(self.db)))

    @responds("Grid")
    @requires("write:grids", body=PATCH_BODY)
    async def patch(self, grid_id: str) -> None:
        """Update some of a grid's fields (IceProd v2.7); 404 for an unknown grid. Answers
        the grid."""
        doc = await self.db.grids.set_fields(grid_id, {**self.body, "last_update": iso()})
        if doc is None:
            raise NotFound("grid not found")
        await audit(self, "grid.patch", detail={"grid_id": grid_id, **self.body})
        self.write_json(doc)


class DemandHandler(APIHandler):
    @responds("Demand")
    @query(wait=WAIT, after=SEQ)
    @requires("grid")
    async def get(self) -> None:
        """Queued tasks grouped by requirements, largest groups first:
        `{groups: [{requirements: {cpu, gpu, memory, disk, time, site}, count}], seq}`;
        what a grid manager sizes its pilots from. With `wait=s` (at most 20) the answer
        waits until tasks are queued after event `after` (the previous answer's `seq`), or,
        without `after`, while there is no demand at all; `seq` is the event sequence of
        the last queued task this server has seen."""
        wait = min(self.int_arg("wait", 0, maximum=20) or 0, self.ctx.config.max_wait)
        after = self.int_arg("after", None, maximum=2**62)
        groups = await wait_for_demand(self.db, self.ctx.events, wait, after)
        self.write_json({"groups": groups, "seq": self.ctx.events.last_queued_seq})


routes = [
    (r"/grids", GridsHandler),
    (r"/grids/(?P<grid_id>[0-9a-f]{32})", GridHandler),
    (r"/task_demand", DemandHandler),
]

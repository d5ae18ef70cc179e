"""Pilots: registration, heartbeat (renews the leases of its tasks, and the pilot's token),
removal (its tasks go back to waiting), and listing. A pilot token acts only on the record it
names; registering answers a token bound to the new record, which the pilot uses from then on
(see ``iceprod.rest.auth.tokens`` for the two kinds of pilot token)."""

from __future__ import annotations

from iceprod.common.errors import Conflict, Forbidden, Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.maintenance import State, claim_refusal, get_state, pilot_names, why_stopped
from iceprod.core.taskflow import release_pilot
from iceprod.core.tokens import pilot_subject, pilot_token, token_expiry
from iceprod.db.store import Doc
from iceprod.rest.auth.resolver import ACTIVE_PILOT
from iceprod.rest.base import APIHandler, OwnershipMixin, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import KEYS, PAGE, STATUS, TEXT, query
from iceprod.rest.responses import responds

CREATE_BODY = body("pilots_create")
PATCH_BODY = body("pilots_patch")
GRID_ONLY = ("status", "grid_name", "only_user", "token_seconds")
"""The fields of a pilot's registration only a grid manager sets."""


def with_drain(doc: Doc, state: State) -> Doc:
    """A pilot with `drain`: why it takes no new work, when it does not."""
    if why := why_stopped(state, pilot_names(doc)):
        return {**doc, "drain": why}
    return doc


class PilotTokens(APIHandler):
    def bound_token(self, pilot_id: str, seconds: int | None = None) -> Doc:
        """A fresh token bound to ``pilot_id`` and its expiry: `{token, expires}`."""
        token = pilot_token(self.ctx.config.secret, pilot_id,
                            seconds or self.ctx.config.pilot_token_seconds)
        return {"token": token, "expires": iso(token_expiry(token))}


class PilotsHandler(OwnershipMixin, PilotTokens):
    @responds("PilotPage")
    @query(**PAGE, status=STATUS, grid_id=TEXT)
    @requires("read:pilots")
    async def get(self) -> None:
        """Pilots as `{pilot_id: pilot}` (`grid_id=`, `status=`, `keys=`, paged); a pilot
        token sees only its own. `drain` says why a pilot takes no new work (maintenance,
        or its site, host or grid drained)."""
        grid_id = self.get_argument("grid_id", "") or None
        status = self.status_arg()
        p = self.principal
        own: str | None = None
        if "pilot" in p.roles and not (p.privileged or p.has("read:datasets")):
            own = p.pilot_id or ""
        state = await get_state(self.db)
        await self.list_page(self.db.pilots, lambda paging: self.db.pilots.page(
            paging, status=status, grid_id=grid_id, pilot_id=own),
            lambda d: with_drain(d, state))

    @responds("PilotRegistered")
    @requires("write:pilots", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Register a pilot: answers `{result: pilot_id, token, expires}`, the token being
        bound to the new pilot (a registration token may do nothing else). A grid manager
        (scope `grid`) registers a pilot for its grid before submitting its batch job
        (`status: submitted`, with `grid_id`), and hands the answered token to the job; that
        pilot starts with a heartbeat instead."""
        p = self.principal
        if p.pilot_id and not p.privileged:
            raise Conflict(f"pilot_id: pilot {p.pilot_id} is registered already; start it "
                           f"with a heartbeat (PATCH /pilots/{p.pilot_id})")
        body = dict(self.body)
        seconds = body.pop("token_seconds", None)
        submitted = await self.check_grid_fields(body, seconds)
        pilot_id = new_id()
        now = iso()
        doc: Doc = {
            "queue_host": "", "queue_version": "", "resources": {}, "host": "", "site": "",
            "version": "", "grid_id": None, "grid_queue_id": "",
            **body,
            "pilot_id": pilot_id, "status": "running",
            "owner": pilot_subject(pilot_id) if submitted else p.username,
            "resources_available": body.get("resources", {}),
            "resources_claimed": {},
            "submit_date": now, "start_date": now, "last_update": now,
        }
        if submitted:
            # not started yet: it offers nothing until its first heartbeat
            doc.update(status="submitted", resources_available={}, start_date="")
        await self.db.pilots.create(doc)
        self.write_json({"result": pilot_id, **self.bound_token(pilot_id, seconds)}, 201)

    async def check_grid_fields(self, body: Doc, seconds: int | None) -> bool:
        """The fields only a grid manager sets; true when it registers a submitted pilot."""
        grid_fields = [k for k in GRID_ONLY if k in body or (k == "token_seconds" and seconds)]
        if not grid_fields:
            return False
        if not self.principal.has("grid"):
            raise Forbidden(f"{grid_fields[0]}: only a grid manager (scope grid) sets it")
        if body.get("status") != "submitted" or not body.get("grid_id"):
            raise Invalid(f"{grid_fields[0]}: a grid registers its pilots with status "
                          "submitted and its grid_id", field=grid_fields[0])
        if await self.db.grids.find(body["grid_id"]) is None:
            raise Invalid("grid_id: no such grid", field="grid_id")
        return True


class PilotHandler(OwnershipMixin, PilotTokens):
    @responds("Pilot")
    @query(keys=KEYS)
    @requires("read:pilots")
    async def get(self, pilot_id: str) -> None:
        """One pilot, with the tasks it is processing now."""
        if "pilot" in self.principal.roles:
            await self.check_pilot(pilot_id)
        doc = await self.db.pilots.get(pilot_id, self.keys_arg())
        doc["tasks"] = await self.db.tasks.held_by(pilot_id)
        self.write_json(doc)

    @responds("PilotHeartbeat")
    @requires("write:pilots", body=PATCH_BODY)
    async def patch(self, pilot_id: str) -> None:
        """Heartbeat: update the pilot and renew the leases of its tasks. Answers the pilot
        with `tasks`, the ids it still holds (a task missing there was taken away), and
        `drain` when it is to take no new work (maintenance, or its node drained: it then
        claims nothing and exits once idle); to the pilot's own token past half its life,
        also a fresh `token` (and its `expires`) that replaces it."""
        await self.check_pilot(pilot_id)
        fields = dict(self.body)
        status = fields.pop("status", None)
        if status:
            reason = fields.pop("reason", None)
            await self.db.pilots.set_status(pilot_id, status, reason)
        doc = await self.db.pilots.heartbeat(pilot_id, fields)
        if doc.get("status") in ACTIVE_PILOT:
            await self.db.tasks.renew_leases(pilot_id, self.ctx.config.lease_seconds)
            if why := await claim_refusal(self.db, doc):
                doc["drain"] = why  # the pilot claims nothing more and exits once idle
        else:
            # a pilot given up (or done) holds nothing: its credentials died with it, so its
            # tasks go back to waiting now rather than when their leases run out
            await release_pilot(self.db, self.ctx.events, pilot_id)
        doc["tasks"] = await self.db.tasks.held_by(pilot_id)
        p = self.principal
        if p.pilot_id == pilot_id and doc.get("status") in ACTIVE_PILOT and p.renewal_due():
            doc.update(self.bound_token(pilot_id))
        self.write_json(doc)

    @responds("Released")
    @requires("write:pilots")
    async def delete(self, pilot_id: str) -> None:
        """Remove a pilot; the tasks it was processing go back to waiting."""
        await self.check_pilot(pilot_id)
        released = await release_pilot(self.db, self.ctx.events, pilot_id)
        await self.db.pilots.delete(pilot_id)
        self.write_json({"released": released})


routes = [
    (r"/pilots", PilotsHandler),
    (r"/pilots/(?P<pilot_id>[0-9a-f]{32})", PilotHandler),
]

"""Drain and maintenance: which parts of the facility take no new work, and why.

State lives in the store (``settings`` entries of kind ``maintenance``, one per node), so
every REST replica honours the same state:

- node ``all``: the server is in maintenance. New submissions answer 503 with the
  operator's message and a ``Retry-After``; no pilot claims; reads keep working; running
  tasks finish.
- any other node name: a site, a pilot host or a grid (by name, host or id) is drained. Its
  pilots claim nothing new, their running tasks finish, and they exit once idle (their
  heartbeat answer says ``drain``); its grid starts no new pilots.

Every change goes through ``set_maintenance`` (the one place an audit record is to be
written); the claim handler asks ``claim_refusal``, submissions ``submission_refusal``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from iceprod.common.errors import Invalid, Unavailable
from iceprod.common.schema import load_schema
from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.db.store import Doc

KIND = "maintenance"
ALL = "all"
NODE = re.compile(load_schema("api")["$defs"]["maintenance_node"]["pattern"])
"""What a node name may be (the API schema's ``maintenance_node``)."""
DEFAULT_RETRY_AFTER = 600
DEFAULT_MESSAGE = "the server is in maintenance"


class InMaintenance(Unavailable):
    """503: the server is in maintenance; ``retry_after`` seconds is the operator's guess."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Entry:
    """One node in maintenance (``all``: the whole server) or drained."""

    node: str
    message: str
    retry_after: int
    since: str
    by: str

    def as_doc(self) -> Doc:
        return {"node": self.node, "status": "on", "message": self.message,
                "retry_after": self.retry_after, "since": self.since, "by": self.by}


@dataclass(frozen=True)
class State:
    """The whole maintenance state: the server-wide entry (if on) and the drained nodes."""

    general: Entry | None
    nodes: tuple[Entry, ...]

    def as_doc(self) -> Doc:
        """What ``GET /admin/maintenance`` answers: general status and per-node status."""
        return {"general": self.general.as_doc() if self.general else {"status": "off"},
                "nodes": {e.node: e.as_doc() for e in self.nodes}}

    def drained(self, names: Iterable[str | None]) -> Entry | None:
        """The entry draining any of ``names`` (a pilot's site, host, grid...), if any."""
        wanted = {n for n in names if n}
        return next((e for e in self.nodes if e.node in wanted), None)


def _entry(doc: Doc) -> Entry:
    return Entry(node=str(doc["name"]), message=str(doc.get("message") or ""),
                 retry_after=int(doc.get("retry_after") or DEFAULT_RETRY_AFTER),
                 since=str(doc.get("since") or ""), by=str(doc.get("by") or ""))


async def get_state(db: Database) -> State:
    entries = [_entry(d) for d in await db.settings.entries(KIND)]
    general = next((e for e in entries if e.node == ALL), None)
    return State(general, tuple(e for e in entries if e.node != ALL))


def check_node(node: str) -> str:
    if not NODE.fullmatch(node):
        raise Invalid("node: 'all' or a site, host or grid name (letters, digits, '_', '.', "
                      "'-'; at most 128)", field="node")
    return node


async def set_maintenance(db: Database, node: str, on: bool, *, actor: str,
                          message: str | None = None, retry_after: int | None = None) -> State:
    """Turn maintenance (``node == "all"``) or a node's drain on or off; answers the new
    state. THE one place a maintenance change happens: an audit record belongs here."""
    check_node(node)
    if on:
        text = message if message is not None else (
            DEFAULT_MESSAGE if node == ALL else f"{node} is drained")
        await db.settings.put_entry(KIND, node, {
            "status": "on", "message": text,
            "retry_after": int(retry_after or DEFAULT_RETRY_AFTER),
            "since": iso(), "by": actor})
    else:
        await db.settings.delete_entry(KIND, node)
    return await get_state(db)


def pilot_names(pilot: Doc, grid: Doc | None = None) -> list[str]:
    """The node names that drain a pilot: its site, host, grid name and grid id (and its
    grid's submit host)."""
    names = [pilot.get("site"), pilot.get("host"), pilot.get("grid_name"), pilot.get("grid_id")]
    if grid:
        names += [grid.get("host"), *(grid.get("queues") or {})]
    return [str(n) for n in names if n]


def grid_names(grid: Doc) -> list[str]:
    """The node names that drain a grid: its id, submit host, site and queue (grid) names."""
    return [str(n) for n in (grid.get("grid_id"), grid.get("host"), grid.get("site"),
                             *(grid.get("queues") or {})) if n]


def why_stopped(state: State, names: Sequence[str]) -> str | None:
    """Why something known by ``names`` takes no new work, or None when it may."""
    if state.general is not None:
        return f"server in maintenance: {state.general.message}"
    if (entry := state.drained(names)) is not None:
        return f"{entry.node} is drained: {entry.message}"
    return None


async def claim_refusal(db: Database, pilot: Doc) -> str | None:
    """The claim-side check: why this pilot may claim nothing now (maintenance, or its
    site/host/grid drained), or None."""
    state = await get_state(db)
    if state.general is None and not state.nodes:
        return None
    return why_stopped(state, pilot_names(pilot))


async def submission_refusal(db: Database) -> None:
    """Raise 503 (with the operator's message and ``Retry-After``) while in maintenance."""
    state = await get_state(db)
    if state.general is not None:
        raise InMaintenance(f"server in maintenance: {state.general.message}",
                            state.general.retry_after)


def health(state: State) -> dict[str, Any]:
    """What ``/healthz`` shows (public): maintenance on/off with its message, and how many
    nodes are drained (not which)."""
    g = state.general
    return {"status": "on" if g else "off", "message": g.message if g else "",
            "since": g.since if g else "", "drained_nodes": len(state.nodes)}

"""The grid manager: starts pilots where queued work needs them and keeps the pilot records
true to what the batch systems report.

Configuration (``load_grids``): the JSON file named by ``ICEPROD_GRID_CONFIG``, validated
against ``resources/schemas/grid_config.schema.json``; unset means one ``local`` grid (the
embedded default), ``none`` means no grids.

The manager is a REST client (``iceprod.client``): it reads queued demand
(``GET /task_demand``), registers its grids (``PUT /grids/{id}``) and its pilots
(``POST /pilots``, answered with each pilot's bound token), marks pilots lost
(``PATCH /pilots/{id}``) and removes them (``DELETE``), all with one token of role ``grid``
(or ``system``/``admin``). So a submit host running ``iceprod-server --only grid`` holds a URL
and that token, never the database's credentials or the signing secret; the embedded server
runs the same code against its own port with a token it mints for itself.

Each round, for each grid:

1. ``poll()`` the backend and reconcile: a pilot record (submitted or running) whose job the
   backend no longer knows, or whose job ended while the record still says it runs, is
   marked ``lost`` and its tasks go back to waiting (``tasks.release_pilot``); a running
   pilot silent for twice the lease is cancelled and lost too; a job iceprod has no live
   pilot record for is cancelled.
2. Size: queued tasks are grouped by their requirements (cpu, gpu, memory, disk, time,
   site). A pilot for a group is the grid's ``pilot_resources``, grown where the group needs
   more (a CPU group never gets GPUs: GPU pilots take only GPU tasks); it holds
   ``floor(pilot / task)`` tasks at once. Free room in the grid's live pilots (idle ones
   whole, running ones as their heartbeat reports) absorbs tasks first; what is left
   needs new pilots.
3. Submit, unless the grid is drained or the server in maintenance (``drain`` in
   ``GET /grids/{id}``), within the limits: ``max_per_cycle`` per round, ``max_pilots`` alive,
   ``max_idle`` waiting in the queue, and the backend's ``capacity()``. Each pilot is
   registered first (status ``submitted``, ``grid_id``); the server answers a narrow token
   (role ``pilot``, bound to its ``pilot_id``, expiring after the server's
   ``ICEPROD_PILOT_TOKEN_SECONDS``, or ``options.token_exp`` seconds, which must also cover
   the time the job waits in the batch queue) that the backend hands over as a file; the running pilot renews it through
   its heartbeat, and it is refused once the pilot is lost, finished or removed. The batch
   job id is recorded as ``grid_queue_id``. Records of pilots the backend failed to start
   are removed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import iceprod
from iceprod.client import errors as api_errors
from iceprod.client._async import AsyncClient
from iceprod.client.models import Resources
from iceprod.common.config import ServerConfig
from iceprod.common.errors import Invalid
from iceprod.common.schema import load_schema, validate
from iceprod.common.timeutil import parse
from iceprod.server.grids.base import (
    GridConfig,
    GridError,
    GridJob,
    GridJobState,
    GridPlugin,
    PilotSpec,
)
from iceprod.server.grids.local import defaults as local_defaults

log = logging.getLogger(__name__)

Doc = dict[str, Any]
TokenSource = Callable[[], str]
"""Answers the token for the next round (a token file is read again, so it can be replaced
without a restart; the embedded server mints a fresh one when the old is half through)."""

# the backends, written out in one place; imported when a grid uses them (condor needs the
# htcondor2 bindings, which a server without condor grids does not have)
BACKENDS: dict[str, str] = {
    "local": "iceprod.server.grids.local:LocalGrid",
    "slurm": "iceprod.server.grids.slurm:SlurmGrid",
    "condor": "iceprod.server.grids.condor:CondorGrid",
}
NUMERIC = ("cpu", "gpu", "memory", "disk", "time")
LIVE = ["submitted", "running"]
FINAL = (GridJobState.COMPLETED, GridJobState.REMOVED)
SUBMIT_GRACE = 60.0
MIN_GAP = 0.5  # seconds between rounds woken by queued tasks (a steady stream of them)
"""Seconds a fresh pilot may be missing from the backend's list (a batch system may not
list a job at once) before it counts as lost."""
TIME_MARGIN_HOURS = 0.1
"""Walltime a pilot gets beyond its longest task (it offers its walltime minus a minute)."""
NAMESPACE = uuid.UUID("0d6f7f0e-3c56-4a4f-9a53-3c0f4cc0e1a7")


@dataclass(frozen=True)
class GridsFile:
    """The grid configuration file."""

    grids: tuple[GridConfig, ...] = ()
    url: str | None = None
    interval: float | None = None


def grid_from_doc(doc: Mapping[str, Any]) -> GridConfig:
    return GridConfig(
        name=doc["name"], backend=doc["backend"], queue=doc.get("queue", ""),
        max_pilots=doc.get("max_pilots", 10), max_idle=doc.get("max_idle", 5),
        max_per_cycle=doc.get("max_per_cycle", 5), warm_pilots=doc.get("warm_pilots", 0),
        pilot_resources=dict(doc.get("pilot_resources") or {}), site=doc.get("site", ""),
        setup=doc.get("setup", ""), options=dict(doc.get("options") or {}),
    )


def parse_grids(doc: Any) -> GridsFile:
    """A validated grid configuration (``Invalid`` names the field)."""
    validate(doc, load_schema("grid_config"))
    names = [g["name"] for g in doc["grids"]]
    if len(names) != len(set(names)):
        raise Invalid("grids: grid names must be unique")
    return GridsFile(tuple(grid_from_doc(g) for g in doc["grids"]), doc.get("url"),
                     doc.get("interval"))


def load_grids(path: str | None) -> GridsFile:
    """The grids of ``ICEPROD_GRID_CONFIG``: unset is one local grid, ``none`` is none."""
    if not path:
        return GridsFile((grid_from_doc(local_defaults()),))
    if path.strip().lower() == "none":
        return GridsFile()
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise Invalid(f"ICEPROD_GRID_CONFIG: cannot read {path}: {e}") from None
    return parse_grids(doc)


def chosen_grids(grids: GridsFile, only: str | None) -> list[GridConfig]:
    """The grids to manage: all, or the one ``--grid`` names."""
    chosen = [g for g in grids.grids if only is None or g.name == only]
    if only is not None and not chosen:
        raise Invalid(f"--grid: no grid named {only!r} in the grid configuration")
    return chosen


def make_plugin(grid: GridConfig, work_dir: Path) -> GridPlugin:
    module, _, name = BACKENDS[grid.backend].partition(":")
    cls = getattr(importlib.import_module(module), name)
    plugin: GridPlugin = cls(grid, work_dir)
    return plugin


# -- sizing ----------------------------------------------------------------------------------


def pilot_size(grid: GridConfig, need: Mapping[str, Any]) -> dict[str, float]:
    """A pilot for tasks needing ``need``: the grid's standard pilot, grown to fit one task;
    GPUs only for GPU tasks. Walltime only when the grid sets one (a local pilot has no
    walltime), then long enough for the task plus a margin."""
    size: dict[str, float] = {}
    for key in NUMERIC:
        want = need.get(key) or 0
        std = grid.pilot_resources.get(key) or 0
        if key == "gpu":
            value = max(std, want) if want else 0
        elif key == "cpu":
            value = max(std, want, 1)
        elif key == "time":
            value = max(std, want + TIME_MARGIN_HOURS) if std else 0
        else:
            value = max(std, want)
        if value:
            size[key] = value
    return size


def per_pilot(size: Mapping[str, float], need: Mapping[str, Any]) -> int:
    """How many tasks needing ``need`` run at once in a pilot of ``size``."""
    fits = []
    for key in ("cpu", "gpu", "memory", "disk"):
        want = need.get(key) or (1 if key == "cpu" else 0)
        if want:
            fits.append(math.floor((size.get(key) or 0) / want + 1e-9))
    return max(1, min(fits)) if fits else 1


def fits(offer: Mapping[str, Any], need: Mapping[str, Any]) -> int:
    """How many tasks needing ``need`` fit in a free ``offer`` (0 when none)."""
    if (need.get("gpu") or 0) > 0 and not (offer.get("gpu") or 0):
        return 0
    if (offer.get("gpu") or 0) > 0 and not (need.get("gpu") or 0):
        return 0  # a GPU pilot takes only GPU tasks
    if need.get("time") and offer.get("time") is not None and need["time"] > offer["time"]:
        return 0
    n = math.inf
    for key in ("cpu", "gpu", "memory", "disk"):
        want = need.get(key) or (1 if key == "cpu" else 0)
        if want:
            n = min(n, math.floor((offer.get(key) or 0) / want + 1e-9))
    return int(n) if n != math.inf else 1


def within(capacity: Mapping[str, float] | None, used: Mapping[str, float],
           size: Mapping[str, float]) -> bool:
    if capacity is None:
        return True
    return all(used.get(k, 0) + size.get(k, 0) <= capacity[k] + 1e-9 for k in capacity)


@dataclass
class Group:
    """Queued tasks with the same requirements."""

    need: dict[str, Any]
    count: int


async def queued_groups(api: AsyncClient) -> list[Group]:
    """Queued tasks grouped by requirements, largest groups first (``GET /task_demand``)."""
    groups = [Group(dict(g["requirements"]), int(g["count"])) for g in await api.grids.demand()]
    return sorted(groups, key=lambda g: -g.count)


# -- the manager -----------------------------------------------------------------------------


@dataclass
class GridState:
    """One grid and its backend."""

    config: GridConfig
    plugin: GridPlugin
    grid_id: str = ""
    submitted_at: dict[str, float] = field(default_factory=dict)
    # whether the last round left room for more pilots (a grid at its limits has nothing
    # to do when tasks are queued, so it does not wake for them)
    room: bool = True


class GridManager:
    """Runs the rounds of every configured grid (or only the one named)."""

    def __init__(self, api: AsyncClient, config: ServerConfig, grids: GridsFile, url: str,
                 only: str | None = None, token: TokenSource | None = None) -> None:
        self.api = api
        self.token = token
        self.config = config
        self.url = url
        self.interval = grids.interval or config.grid_interval
        self.host = socket.gethostname()
        chosen = chosen_grids(grids, only)
        base = Path(config.data_dir).resolve() / "grids"  # pilots run elsewhere: absolute
        self.grids = [GridState(g, make_plugin(g, base / g.name)) for g in chosen]
        self.seq = 0  # the event sequence of the last queued task the server told of
        self.demand_waits = True

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; then each backend is closed (local pilots stop)."""
        for g in self.grids:
            log.info("grid %s (%s) managing pilots for %s through %s", g.config.name,
                     g.config.backend, self.url, self.api.url)
            if not g.plugin.isolated:
                log.warning("grid %s: no isolation for payloads (bubblewrap unavailable or "
                            "sandbox none): single-user mode, running only datasets of %s",
                            g.config.name, self.config.operator)
        try:
            while not stop.is_set():
                await self.round()
                await self.pause(stop)
        finally:
            await self.close()
            await self.api.aclose()

    async def pause(self, stop: asyncio.Event) -> None:
        """Until the next round: ``interval`` seconds, or less when tasks are queued
        (``GET /task_demand?wait=&after=``: the server answers when it sees tasks queued
        after the last answer's event ``seq``), never sooner than ``MIN_GAP`` after the
        last round. Grids at their pilot limits, and a server that does not wait (no
        ``seq`` in its answer), get the plain interval."""
        started = time.monotonic()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            if self.demand_waits and any(g.room for g in self.grids):
                demand = asyncio.ensure_future(
                    self.api.grids.wait_demand(self.seq, min(self.interval, 20.0)))
                await asyncio.wait({demand, stopping}, timeout=self.interval + 5,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not demand.done():
                    demand.cancel()
                    await asyncio.gather(demand, return_exceptions=True)
                elif demand.exception() is None and "seq" in demand.result():
                    self.seq = int(demand.result()["seq"])
                else:
                    if demand.exception() is None:
                        self.demand_waits = False  # an older server: plain intervals
                    left = self.interval - (time.monotonic() - started)
                    if left > 0:
                        await asyncio.wait({stopping}, timeout=left)
                gap = MIN_GAP - (time.monotonic() - started)
                if gap > 0 and not stop.is_set():
                    await asyncio.wait({stopping}, timeout=gap)
            else:
                await asyncio.wait({stopping}, timeout=self.interval)
        finally:
            stopping.cancel()

    async def close(self) -> None:
        """Let each backend release what it holds (local pilots are stopped)."""
        for g in self.grids:
            try:
                await g.plugin.close()
            except Exception:
                log.exception("grid %s: close failed", g.config.name)

    async def round(self) -> None:
        if self.token is not None:
            try:
                self.api.token = self.token()
            except OSError as e:
                log.error("grids: cannot read the token: %s", e)
                return
        groups: list[Group] | None = None
        for g in self.grids:
            try:
                if not g.grid_id:
                    g.grid_id = await self.register_grid(g.config)
                if not await self.reconcile(g):
                    continue
                if groups is None:
                    groups = await queued_groups(self.api)
                await self.submit(g, groups)
            except api_errors.APIError as e:
                log.warning("grid %s: round failed: %s", g.config.name, e)
            except Exception:
                log.exception("grid %s: round failed", g.config.name)

    async def register_grid(self, grid: GridConfig) -> str:
        grid_id = uuid.uuid5(NAMESPACE, f"{self.host}:{grid.name}").hex
        isolation = self.isolation(next(g for g in self.grids if g.config is grid))
        capacity = next(g for g in self.grids if g.config is grid).plugin.capacity()
        await self.api.grids.put(grid_id, self.host, queues={grid.name: grid.backend},
                                 version=iceprod.__version__, site=grid.site or None,
                                 max_resources=cast(Resources, _numbers({
                                     k: v for k, v in capacity.items() if k in NUMERIC}))
                                 if capacity else None, **isolation)
        return grid_id

    def isolation(self, g: GridState) -> dict[str, Any]:
        """What ``GET /grids`` says of a grid's isolation: ``bwrap`` (local pilots and steps
        sandboxed), ``batch`` (pilots on other nodes), or ``none`` with the one user whose
        datasets its pilots run (single-user mode)."""
        if g.plugin.isolated:
            return {"isolation": getattr(g.plugin, "isolation", "batch")}
        return {"isolation": "none", "single_user": self.config.operator}

    async def live_pilots(self, grid_id: str) -> list[Doc]:
        return list((await self.api.pilots.list(grid_id=grid_id, status=LIVE)).values())

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, g: GridState) -> bool:
        """Bring the pilot records in line with the backend; False when it cannot be
        asked this round (nothing is marked lost on a failed poll)."""
        try:
            jobs = await g.plugin.poll()
        except GridError as e:
            log.warning("grid %s: poll failed, pilots left as they are: %s", g.config.name, e)
            return False
        by_pilot = {j.pilot_id: j for j in jobs if j.pilot_id}
        by_queue_id = {j.grid_queue_id: j for j in jobs}
        pilots = await self.live_pilots(g.grid_id)
        stale_after = 2 * self.config.lease_seconds
        cancel: list[str] = []
        for p in pilots:
            job = by_pilot.get(p["pilot_id"]) or by_queue_id.get(p.get("grid_queue_id") or "")
            why = self.lost_reason(g, p, job, stale_after)
            if why:
                if job is not None and job.state not in FINAL:
                    cancel.append(job.grid_queue_id)
                await self.lose(p, why)
        live = {p["pilot_id"] for p in pilots}
        known_ids = {p.get("grid_queue_id") for p in pilots}
        for j in jobs:
            if j.state in FINAL or j.pilot_id in live or j.grid_queue_id in known_ids:
                continue
            log.info("grid %s: cancelling job %s: iceprod has no live pilot %s for it",
                     g.config.name, j.grid_queue_id, j.pilot_id)
            cancel.append(j.grid_queue_id)
        if cancel:
            await g.plugin.cancel(cancel)
        return True

    def lost_reason(self, g: GridState, pilot: Doc, job: GridJob | None,
                    stale_after: float) -> str:
        """Why a live pilot record is lost, or "" when it is fine."""
        if job is None:
            started = g.submitted_at.get(pilot["pilot_id"]) or _ts(pilot.get("submit_date"))
            if time.time() - started < SUBMIT_GRACE:
                return ""
            return "its batch job is unknown to the batch system"
        if job.state in FINAL:
            return f"its batch job ended ({job.state}{': ' + job.reason if job.reason else ''})"
        if pilot.get("status") == "running" and \
                time.time() - _ts(pilot.get("last_update")) > stale_after:
            return f"no heartbeat for over {stale_after:.0f}s"
        return ""

    async def lose(self, pilot: Doc, why: str) -> None:
        pilot_id = pilot["pilot_id"]
        try:
            # the server releases the tasks of a pilot no longer active
            await self.api.pilots.heartbeat(pilot_id, status="lost", reason=why)
        except (api_errors.Conflict, api_errors.NotFound):
            return  # it finished (or was removed) meanwhile
        log.warning("pilot %s lost (%s); its tasks go back to waiting", pilot_id, why)

    # -- submit --------------------------------------------------------------------------

    async def submit(self, g: GridState, groups: Sequence[Group]) -> int:
        grid = g.config
        pilots = await self.live_pilots(g.grid_id)
        idle = sum(1 for p in pilots if p.get("status") == "submitted")
        room = min(grid.max_per_cycle, grid.max_pilots - len(pilots), grid.max_idle - idle)
        warm = min(grid.warm_pilots - len(pilots), room)
        g.room = room > 0
        if room <= 0 or (not groups and warm <= 0):
            return 0
        if drain := (await self.api.grids.get(g.grid_id)).get("drain"):
            log.info("grid %s: no new pilots: %s", grid.name, drain)
            return 0
        used = _total(p.get("resources") or {} for p in pilots)
        capacity = g.plugin.capacity()
        sizes = self.plan(grid, groups, pilots, room, capacity, used)
        if not sizes and warm > 0:  # no work: keep pilots ready for the next task
            size = pilot_size(grid, {})
            sizes = [size] * warm if within(capacity, used, size) else []
            if not sizes:
                return 0
        if not sizes:
            return 0
        specs = [await self.register_pilot(g, size) for size in sizes]
        try:
            started = await g.plugin.submit(specs)
        except GridError as e:
            log.error("grid %s: submit failed: %s", grid.name, e)
            started = {}
        for spec in specs:
            if spec.pilot_id in started:
                await self.api.pilots.heartbeat(spec.pilot_id,
                                                grid_queue_id=started[spec.pilot_id])
                g.submitted_at[spec.pilot_id] = time.time()
            else:
                await self.api.pilots.delete(spec.pilot_id)
        if started:
            log.info("grid %s: submitted %d pilot(s)", grid.name, len(started))
        return len(started)

    def plan(self, grid: GridConfig, groups: Sequence[Group], pilots: Sequence[Doc],
             room: int, capacity: Mapping[str, float] | None,
             used: dict[str, float]) -> list[dict[str, float]]:
        """The sizes of the pilots to start now. Each group's ``count`` drops by what this
        grid's pilots (live and new) will take, so the next grid sees only what is left."""
        offers = [dict(p.get("resources") or {}) if p.get("status") == "submitted"
                  else dict(p.get("resources_available") or {}) for p in pilots]
        sizes: list[dict[str, float]] = []
        for group in groups:
            if group.need.get("site") and group.need["site"] != grid.site:
                continue
            left = group.count
            for offer in offers:  # room in live pilots takes tasks first
                take = min(left, fits(offer, group.need))
                for key in ("cpu", "gpu", "memory", "disk"):
                    want = group.need.get(key) or (1 if key == "cpu" else 0)
                    offer[key] = (offer.get(key) or 0) - take * want
                left -= take
            size = pilot_size(grid, group.need)
            per = per_pilot(size, group.need)
            while left > 0 and len(sizes) < room and within(capacity, used, size):
                sizes.append(size)
                for key, value in size.items():
                    used[key] = used.get(key, 0) + value
                left -= per
            group.count = max(0, left)
            if len(sizes) >= room:
                break
        return sizes

    async def register_pilot(self, g: GridState, size: Mapping[str, float]) -> PilotSpec:
        grid = g.config
        # hours, not the pilot's walltime: the running pilot renews it through its heartbeat
        # (unset: the server's ICEPROD_PILOT_TOKEN_SECONDS)
        exp = grid.options.get("token_exp")
        answer = await self.api.pilots.register(
            resources=cast(Resources, _numbers(size)), status="submitted", grid_id=g.grid_id,
            grid_name=grid.name, queue_host=self.host, queue_version=grid.backend,
            site=grid.site, token_seconds=int(exp) if exp else None,
            # single-user mode: the claim hands this pilot only the operator's datasets
            only_user=None if g.plugin.isolated else self.config.operator,
        )
        return PilotSpec(pilot_id=answer["result"], resources=dict(size), url=self.url,
                         token=answer["token"], site=grid.site)


def _numbers(size: Mapping[str, float]) -> dict[str, float | int]:
    """Whole numbers as integers (the requirements schema takes integer cpu and gpu)."""
    return {k: int(v) if float(v).is_integer() else v for k, v in size.items()}


def _total(resources: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in resources:
        for key in ("cpu", "gpu", "memory", "disk"):
            out[key] = out.get(key, 0) + float(r.get(key) or 0)
    return out


def _ts(value: Any) -> float:
    try:
        return parse(value) if value else 0.0
    except ValueError:
        return 0.0


def pilot_url(config: ServerConfig, grids: GridsFile, port: int | None) -> str | None:
    """Where pilots reach the REST API: the grid file's ``url``, ``ICEPROD_URL``, or the
    address this process serves on (a wildcard address becomes loopback)."""
    if grids.url or config.public_url:
        return grids.url or config.public_url
    if port is None:
        return None
    host = config.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def require_pilot_url(config: ServerConfig, grids: GridsFile, port: int | None) -> str:
    url = pilot_url(config, grids, port)
    if url is None:
        raise Invalid("grids: set the server URL pilots use (ICEPROD_URL, or url in the grid "
                      "configuration) when the REST API runs in another process")
    return url

"""Why isn't my task running? Plain words, with the data behind them.

``explain_task`` gathers what a task's state depends on into a ``Context`` and runs every
check of ``CHECKS`` over it; each check is a small async function answering the blockers
it finds (``kind``: dependency, suspended, quota, queue, resources, drained, maintenance,
failures), each with a plain ``message`` and the figures it is based on. A new reason is
one more function appended to ``CHECKS`` (as ``check_quota`` asks ``core.quota``).

The answer (the contract the CLI and the dashboard read)::

    {"task_id": ..., "dataset_id": ..., "name": ..., "status": ..., "summary": "plain words",
     "blockers": [{"kind": "dependency", "message": "...", ...data}]}

``explain_dataset`` groups a dataset's unfinished tasks by name and status and explains one
task of each group (``tasks``: ``[{name, status, count, example_task_id, summary,
blockers}]``); its ``blockers`` are those of every group, each with ``tasks``, how many tasks
it holds back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from iceprod.core.maintenance import State, get_state, pilot_names
from iceprod.core.quota import quota_blockers
from iceprod.db import Database
from iceprod.db.base import Paging
from iceprod.db.store import Doc

KINDS = ("dependency", "suspended", "quota", "queue", "resources", "drained", "maintenance",
         "failures")
NUMERIC = ("cpu", "gpu", "memory", "disk", "time")
UNITS = {"cpu": "cores", "gpu": "GPUs", "memory": "GB", "disk": "GB", "time": "hours"}
ACTIVE = ("running",)
"""Pilot statuses that offer resources now (a submitted pilot is the grid's, counted there)."""
NOT_STARTED = ("waiting", "queued")
MAX_DEPENDENCIES_SHOWN = 20


@dataclass
class Blocker:
    """One reason a task does not run: its kind, plain words, and the data behind them."""

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_doc(self) -> Doc:
        return {"kind": self.kind, "message": self.message, **self.data}


@dataclass
class Context:
    """What the checks read: the task, its dataset, the server's limits, the maintenance
    state, and (loaded once, on demand) the active pilots and registered grids."""

    db: Database
    task: Doc
    dataset: Doc
    queue_max: int
    max_failures: int
    maintenance: State
    cache: dict[str, list[Doc]] = field(default_factory=dict)
    """Pilots and grids, read once per answer (shared by a dataset's groups)."""
    pending_dependencies: int = 0
    """Set by ``check_dependencies``: how many of its dependencies are not complete."""

    async def pilots(self) -> list[Doc]:
        if "pilots" not in self.cache:
            page = await self.db.pilots.page(status=list(ACTIVE))
            self.cache["pilots"] = page.docs
        return self.cache["pilots"]

    async def grids(self) -> list[Doc]:
        if "grids" not in self.cache:
            self.cache["grids"] = (await self.db.grids.page()).docs
        return self.cache["grids"]

    @property
    def status(self) -> str:
        return str(self.task.get("status") or "waiting")


Check = Callable[[Context], Awaitable[list[Blocker]]]


# -- the checks ------------------------------------------------------------------------------


async def check_maintenance(ctx: Context) -> list[Blocker]:
    g = ctx.maintenance.general
    if g is None or ctx.status not in NOT_STARTED:
        return []
    return [Blocker("maintenance", f"the server is in maintenance ({g.message}): no task "
                    "starts until it ends", {"since": g.since, "retry_after": g.retry_after,
                                             "operator_message": g.message})]


async def check_suspended(ctx: Context) -> list[Blocker]:
    if ctx.dataset.get("status") == "suspended":
        return [Blocker("suspended", "its dataset is suspended: resume the dataset to run it",
                        {"dataset_status": "suspended"})]
    if ctx.status == "suspended":
        return [Blocker("suspended", "the task is suspended: reset it to run it again",
                        {"task_status": "suspended"})]
    return []


async def check_failures(ctx: Context) -> list[Blocker]:
    if ctx.status != "failed":
        return []
    n = int(ctx.task.get("failures") or 0)
    limit = int(ctx.dataset.get("max_failures") or ctx.max_failures)
    reason = str(ctx.task.get("reason") or "")
    text = f"failed {n} time(s), the dataset's limit is {limit}: it is not retried"
    if reason:
        text += f"; last reason: {reason}"
    return [Blocker("failures", text, {"failures": n, "max_failures": limit,
                                       "reason": reason,
                                       "reason_class": ctx.task.get("reason_class") or ""})]


async def check_dependencies(ctx: Context) -> list[Blocker]:
    deps = list(ctx.task.get("depends") or [])
    if not deps or ctx.status != "waiting":
        return []
    page = await ctx.db.tasks.page(Paging(["task_id", "dataset_id", "name", "status"]),
                                   ids=deps)
    found = {d["task_id"]: d for d in page.docs}
    pending = [found.get(t) or {"task_id": t, "status": "missing"} for t in deps
               if found.get(t, {}).get("status") != "complete"]
    ctx.pending_dependencies = len(pending)
    if not pending:
        return []
    shown = [{"task_id": d["task_id"], "name": d.get("name", ""), "status": d["status"],
              "dataset_id": d.get("dataset_id", "")} for d in pending[:MAX_DEPENDENCIES_SHOWN]]
    words = ", ".join(f"{d['name'] or d['task_id']} ({d['status']})" for d in shown)
    stuck = [d for d in pending if d["status"] in ("failed", "suspended", "missing")]
    text = f"waiting on {len(pending)} of {len(deps)} dependencies: {words}"
    if stuck:
        text += "; a failed or suspended dependency must be reset first"
    return [Blocker("dependency", text, {"pending": len(pending), "total": len(deps),
                                         "dependencies": shown})]


async def check_queue(ctx: Context) -> list[Blocker]:
    """A ready waiting task waits for a queue slot; a queued one has others before it."""
    db = ctx.db
    if ctx.status == "waiting" and ctx.dataset.get("status") == "processing" \
            and not ctx.pending_dependencies:
        queued = await db.tasks.count(status=["queued"])
        return [Blocker("queue", f"ready, waiting for a queue slot: {queued} task(s) are "
                        f"queued, the queue holds at most {ctx.queue_max}",
                        {"queued": queued, "queue_max": ctx.queue_max})]
    if ctx.status != "queued":
        return []
    dp = float(ctx.task.get("dataset_priority") or 0.0)
    p = float(ctx.task.get("priority") or 0.0)
    ahead = await db.tasks.queued_ahead(dp, p)
    queued = await db.tasks.count(status=["queued"])
    return [Blocker("queue", f"queued: {ahead} of {queued} queued task(s) come before it "
                    f"(queue limit {ctx.queue_max})",
                    {"position": ahead + 1, "queued": queued, "queue_max": ctx.queue_max})]


async def check_quota(ctx: Context) -> list[Blocker]:
    """A waiting task of a project at one of its quotas is not queued until it frees."""
    if ctx.status != "waiting" or ctx.dataset.get("status") != "processing":
        return []
    found = await quota_blockers(ctx.db, ctx.dataset)
    return [Blocker("quota", str(b["message"]),
                    {k: v for k, v in b.items() if k not in ("kind", "message")})
            for b in found]


def _amount(key: str, value: float) -> str:
    return f"{key} {value:g} {UNITS[key]}"


async def check_resources(ctx: Context) -> list[Blocker]:
    """Which requirement exceeds every active pilot's and every grid's maximum."""
    if ctx.status not in NOT_STARTED:
        return []
    req = ctx.task.get("requirements") or {}
    pilots, grids = await ctx.pilots(), await ctx.grids()
    if not pilots and not grids:
        return [Blocker("resources", "no pilot is running and no grid is registered to "
                        "start one", {"pilots": 0, "grids": 0})]
    out = []
    for key in NUMERIC:
        want = req.get(key)
        if not want:
            continue
        pilot_max = max((float((p.get("resources") or {}).get(key) or 0) for p in pilots),
                        default=0.0)
        limits = [(g.get("max_resources") or {}).get(key) for g in grids]
        if any(v is None for v in limits) and grids:
            continue  # a grid without a known limit can start a pilot this big
        grid_max = max((float(v) for v in limits if v is not None), default=0.0)
        if want > pilot_max and want > grid_max:
            unit = UNITS[key]
            beyond = [f"largest pilot {pilot_max:g} {unit}"] if pilots else []
            if grids:
                beyond.append(f"every grid's maximum ({grid_max:g} {unit})")
            text = f"{_amount(key, want)} > {' and '.join(beyond)}"
            if not pilots:
                text += ", and no pilot is running"
            out.append(Blocker("resources", text, {
                "requirement": key, "requested": want,
                "largest_pilot": pilot_max if pilots else None,
                "largest_grid": grid_max if grids else None}))
    site = req.get("site")
    if site and not any(p.get("site") == site for p in pilots) and \
            not any(g.get("site") == site for g in grids):
        out.append(Blocker("resources", f"it must run at site {site}, and no active pilot "
                           "or grid is there", {"requirement": "site", "requested": site}))
    return out


async def check_drained(ctx: Context) -> list[Blocker]:
    """The task's site is drained, or every active pilot is on a drained node."""
    state = ctx.maintenance
    if not state.nodes or ctx.status not in NOT_STARTED:
        return []
    site = (ctx.task.get("requirements") or {}).get("site")
    if site and (entry := state.drained([site])) is not None:
        return [Blocker("drained", f"its site {site} is drained: {entry.message}",
                        {"node": entry.node, "since": entry.since})]
    pilots = await ctx.pilots()
    drained = {p["pilot_id"]: e for p in pilots
               if (e := state.drained(pilot_names(p))) is not None}
    if pilots and len(drained) == len(pilots):
        nodes = sorted({e.node for e in drained.values()})
        return [Blocker("drained", f"every active pilot is on a drained node "
                        f"({', '.join(nodes)})", {"nodes": nodes, "pilots": len(pilots)})]
    return []


CHECKS: list[Check] = [
    check_maintenance, check_suspended, check_failures, check_dependencies, check_quota,
    check_queue, check_resources, check_drained,
]
"""Every check, in the order their blockers are listed (append to add one)."""


# -- answers ---------------------------------------------------------------------------------


def summary(ctx: Context, blockers: list[Blocker]) -> str:
    t, status = ctx.task, ctx.status
    if status == "complete":
        return "the task is complete"
    if status == "processing":
        where = f"pilot {t.get('pilot_id')}" + (f" at {t['site']}" if t.get("site") else "")
        return f"the task is running on {where} since {t.get('status_changed', '?')}"
    if not blockers:
        return f"the task is {status}; nothing is known to hold it back"
    first = blockers[0].message
    more = f" (and {len(blockers) - 1} more reason(s))" if len(blockers) > 1 else ""
    return f"the task is {status}: {first}{more}"


async def make_context(db: Database, task: Doc, queue_max: int, max_failures: int,
                       state: State | None = None, dataset: Doc | None = None,
                       cache: dict[str, list[Doc]] | None = None) -> Context:
    if dataset is None:
        dataset = await db.datasets.get(str(task["dataset_id"]),
                                        keys=["status", "max_failures", "project"])
    return Context(db, task, dataset, queue_max, max_failures,
                   state if state is not None else await get_state(db),
                   cache if cache is not None else {})


async def blockers_of(ctx: Context) -> list[Blocker]:
    out: list[Blocker] = []
    for check in CHECKS:
        out += await check(ctx)
    return out


async def explain_task(db: Database, task_id: str, queue_max: int,
                       max_failures: int) -> Doc:
    task = await db.tasks.get(task_id)
    ctx = await make_context(db, task, queue_max, max_failures)
    return await _answer(ctx)


async def _answer(ctx: Context) -> Doc:
    blockers = await blockers_of(ctx)
    t = ctx.task
    return {"task_id": t["task_id"], "dataset_id": t.get("dataset_id"), "name": t.get("name"),
            "job_index": t.get("job_index"), "status": ctx.status,
            "summary": summary(ctx, blockers), "blockers": [b.as_doc() for b in blockers]}


async def explain_dataset(db: Database, dataset_id: str, queue_max: int,
                          max_failures: int) -> Doc:
    """Per task name and status, a count and one task's explanation; the dataset's own
    blockers (suspended, maintenance) and a summary."""
    dataset = await db.datasets.get(dataset_id, keys=["status", "max_failures", "project"])
    state = await get_state(db)
    counts = await db.tasks.counts_by_name_status(dataset_id)
    groups = []
    cache: dict[str, list[Doc]] = {}
    for name, by_status in counts.items():
        for status, n in by_status.items():
            if status == "complete":
                continue
            page = await db.tasks.page(Paging(limit=1), dataset_id=dataset_id, name=name,
                                       status=[status])
            if not page.docs:
                continue
            ctx = await make_context(db, page.docs[0], queue_max, max_failures, state,
                                     dataset, cache)
            answer = await _answer(ctx)
            groups.append({"name": name, "status": status, "count": n,
                           "example_task_id": answer["task_id"], "summary": answer["summary"],
                           "blockers": answer["blockers"]})
    done = sum(by.get("complete", 0) for by in counts.values())
    total = sum(sum(by.values()) for by in counts.values())
    kinds: dict[str, int] = {}
    blockers: dict[str, Doc] = {}
    for g in groups:
        for b in g["blockers"]:
            kinds[b["kind"]] = kinds.get(b["kind"], 0) + g["count"]
            key = b["message"] if b["kind"] in ("maintenance", "suspended", "drained") \
                else f"{g['name']}/{g['status']}/{b['message']}"
            shown = blockers.setdefault(key, {**b, "tasks": 0})
            shown["tasks"] += g["count"]
    ds_status = str(dataset.get("status") or "")
    if not groups:
        text = f"dataset {ds_status}: all {total} task(s) complete" if total else \
            f"dataset {ds_status}: no tasks yet (jobs are created as the queue needs them)"
    else:
        why = ", ".join(f"{k} ({n} task(s))" for k, n in sorted(kinds.items(),
                                                                key=lambda kv: -kv[1]))
        text = f"dataset {ds_status}: {done} of {total} task(s) complete" + (
            f"; held back by {why}" if why else "")
    return {"dataset_id": dataset_id, "status": ds_status, "summary": text,
            "blockers": list(blockers.values()), "blocker_counts": kinds, "tasks": groups}

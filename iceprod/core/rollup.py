"""Roll-up: job and dataset statuses follow their tasks, and suspending or resuming a
dataset or job carries down to its unfinished tasks."""

from __future__ import annotations

import logging

from iceprod.common.errors import BadTransition
from iceprod.core.events import dataset_event, job_event, tasks_event
from iceprod.db import Database
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

ACTIVE = {"waiting", "queued", "processing"}


def job_outcome(tasks: list[Doc]) -> str:
    """``complete`` when every task is; ``errors`` when failed tasks remain and nothing else
    can run (what is left waits, directly or not, on a failed task); else ``processing``."""
    if tasks and all(t["status"] == "complete" for t in tasks):
        return "complete"
    blocked = {t["task_id"] for t in tasks if t["status"] == "failed"}
    if not blocked or any(t["status"] in ("queued", "processing") for t in tasks):
        return "processing"
    waiting = [t for t in tasks if t["status"] == "waiting"]
    grew = True
    while grew:
        grew = False
        for t in waiting:
            if t["task_id"] not in blocked and blocked & set(t.get("depends") or []):
                blocked.add(t["task_id"])
                grew = True
    if all(t["task_id"] in blocked for t in waiting):
        return "errors"
    return "processing"


async def rollup_job(db: Database, job_id: str, events: list[Doc] | None = None,
                     tasks: list[Doc] | None = None) -> str | None:
    """Update a job from its tasks (and its dataset when the job finished). Status changes
    are appended to ``events`` when given; ``tasks`` are the job's tasks when the caller
    just read them (``db.tasks.of_job``)."""
    job = await db.jobs.find(job_id)
    if job is None or job["status"] == "suspended":
        return None
    outcome = job_outcome(tasks if tasks is not None else await db.tasks.of_job(job_id))
    if outcome != job["status"]:
        try:
            doc = await db.jobs.set_status(job_id, outcome)
        except BadTransition:
            return job["status"]
        if events is not None:
            events.append(job_event(job, outcome, job["status"], doc.get("status_changed", "")))
        # the dataset can only have finished once no job is left processing: one index
        # probe here instead of counting every job of the dataset at each completion
        if not await db.jobs.any_with_status(job["dataset_id"], "processing"):
            await rollup_dataset(db, job["dataset_id"], events)
    return outcome


async def rollup_dataset(db: Database, dataset_id: str,
                         events: list[Doc] | None = None) -> str | None:
    """A processing dataset is complete when all its jobs are, and in errors when every
    job is finished and some ended in errors (the change appended to ``events``)."""
    ds = await db.datasets.find(dataset_id)
    if ds is None or ds["status"] != "processing":
        return None
    if int(ds.get("jobs_materialized", 0)) < ds["jobs_submitted"]:
        return "processing"
    counts = await db.jobs.counts_by_status(dataset_id)
    if counts.get("complete", 0) >= ds["jobs_submitted"]:
        new = "complete"
    elif sum(counts.values()) >= ds["jobs_submitted"] and not counts.get("processing") \
            and counts.get("errors"):
        new = "errors"
    else:
        return "processing"
    doc = await db.datasets.set_status(dataset_id, new)
    if events is not None:
        events.append(dataset_event(dataset_id, new, "processing",
                                    doc.get("status_changed", "")))
    if new == "complete":
        log.info("dataset %s complete", dataset_id)
    else:
        log.warning("dataset %s finished with errors: some jobs failed", dataset_id)
    return new


async def rollup_all(db: Database, events: list[Doc] | None = None) -> None:
    """Periodic safety net: re-check every processing dataset."""
    for ds in await db.datasets.processing():
        await rollup_dataset(db, ds["dataset_id"], events)


async def cascade_dataset(db: Database, dataset_id: str, status: str,
                          events: list[Doc] | None = None) -> int:
    """Suspending a dataset suspends its jobs and unfinished tasks; resuming (to processing)
    sends suspended tasks back to waiting. Returns how many tasks changed (and adds their
    ``tasks`` event to ``events``)."""
    changed = 0
    if status == "suspended":
        await db.jobs.bulk_status(dataset_id, "suspended", ["processing", "errors"])
        changed = await db.tasks.bulk_status(dataset_id, "suspended", None,
                                             from_status=sorted(ACTIVE))
    elif status == "processing":
        await db.jobs.bulk_status(dataset_id, "processing", ["suspended", "errors"])
        changed = await db.tasks.bulk_status(dataset_id, "waiting", None,
                                             from_status=["suspended"])
    _cascaded(events, dataset_id, status, changed)
    return changed


async def cascade_job(db: Database, job: Doc, status: str,
                      events: list[Doc] | None = None) -> int:
    """The same as ``cascade_dataset`` for one job."""
    changed = 0
    if status == "suspended":
        changed = await db.tasks.bulk_status(job["dataset_id"], "suspended", None,
                                             job_id=job["job_id"], from_status=sorted(ACTIVE))
    elif status == "processing":
        changed = await db.tasks.bulk_status(job["dataset_id"], "waiting", None,
                                             job_id=job["job_id"], from_status=["suspended"])
    _cascaded(events, job["dataset_id"], status, changed)
    return changed


def _cascaded(events: list[Doc] | None, dataset_id: str, status: str, changed: int) -> None:
    if events is not None and changed:
        events.append(tasks_event(dataset_id, "suspended" if status == "suspended"
                                  else "waiting", changed, "cascade"))

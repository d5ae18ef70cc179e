"""Jobs' status in bulk (``POST /datasets/{id}/job_actions/bulk_status/{status}``): each
listed job the state machine allows moves, with the same cascade to its tasks as a single
job's status change; jobs it does not allow (or already there) are left alone.

``preview_jobs_status`` answers what ``set_jobs_status`` would change, with the same
filters, changing nothing: matched/changed/by_status/sample over the jobs, and
``tasks_changed``, how many of their tasks the cascade would change.
"""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.common.states import allowed_from
from iceprod.core.events import job_event
from iceprod.core.rollup import ACTIVE, cascade_job
from iceprod.db import Database
from iceprod.db.base import Paging
from iceprod.db.store import Doc
from iceprod.db.tasks import SAMPLE

BATCH = 1000


def cascade_target(status: str) -> tuple[str, list[str]] | None:
    """The task status a job's new status carries to its tasks, and from which statuses."""
    if status == "suspended":
        return "suspended", sorted(ACTIVE)
    if status == "processing":
        return "waiting", ["suspended"]
    return None


async def movable_jobs(db: Database, dataset_id: str, status: str,
                       job_ids: Sequence[str]) -> tuple[int, list[Doc]]:
    """How many of ``job_ids`` are the dataset's, and those the state machine lets go to
    ``status`` (in id order, with their current status)."""
    allowed = set(allowed_from("job", status))
    ids = sorted(set(job_ids))
    matched, movable = 0, []
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        page = await db.jobs.page(Paging(["job_id", "status"], BATCH),
                                  dataset_id=dataset_id, ids=chunk)
        matched += len(page.docs)
        movable += [d for d in page.docs if d.get("status") in allowed]
    return matched, movable


async def preview_jobs_status(db: Database, dataset_id: str, status: str,
                              job_ids: Sequence[str]) -> Doc:
    matched, movable = await movable_jobs(db, dataset_id, status, job_ids)
    by_status: dict[str, int] = {}
    for d in movable:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    tasks_changed = 0
    if target := cascade_target(status):
        preview = await db.tasks.preview_status(dataset_id, target[0], from_status=target[1],
                                                job_ids=[d["job_id"] for d in movable])
        tasks_changed = preview["changed"]
    return {"matched": matched, "changed": len(movable), "by_status": dict(sorted(
        by_status.items())), "sample": [d["job_id"] for d in movable[:SAMPLE]],
        "tasks_changed": tasks_changed}


async def set_jobs_status(db: Database, dataset_id: str, status: str,
                          job_ids: Sequence[str], events: list[Doc] | None = None) -> Doc:
    """Move the listed jobs the state machine allows to ``status`` (each one conditional
    update) and cascade to their tasks. Answers ``{"changed": jobs, "tasks_changed": n}``;
    the jobs' events and their tasks' go to ``events``."""
    _, movable = await movable_jobs(db, dataset_id, status, job_ids)
    changed = tasks_changed = 0
    for d in movable:
        job = await db.jobs.find(d["job_id"])
        if job is None or job.get("status") not in allowed_from("job", status):
            continue  # moved meanwhile
        previous = job.get("status")
        job = await db.jobs.set_status(d["job_id"], status, dataset_id=dataset_id)
        changed += 1
        if events is not None:
            events.append(job_event(job, status, previous, job.get("status_changed", "")))
        tasks_changed += await cascade_job(db, job, status, events)
    return {"changed": changed, "tasks_changed": tasks_changed}

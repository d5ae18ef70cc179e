"""Dry runs: what an operator's status change would do, computed with the same filters the
real change uses, changing nothing.

Every preview answers ``{"matched": n, "changed": n, "by_status": {status: n},
"sample": [ids]}``: ``matched`` is what the action selects (for a cascade: every task of the
dataset or job), ``changed`` how many of those the real run would change, ``by_status`` those
counted by their current status, ``sample`` the first ``db.tasks.SAMPLE`` of their ids. The
handlers add ``"dry_run": true``. An illegal transition raises ``BadTransition`` exactly as
the real run would, so a dry run also answers "would this be refused?".
"""

from __future__ import annotations

from iceprod.common.errors import BadTransition
from iceprod.common.states import is_allowed
from iceprod.core.rollup import ACTIVE
from iceprod.db import Database
from iceprod.db.store import Doc

NOTHING: Doc = {"matched": 0, "changed": 0, "by_status": {}, "sample": []}


def check_transition(machine: str, old: str, new: str) -> bool:
    """Whether ``old -> new`` changes anything: False for the same status (a no-op, as in
    ``Repository.transition``), True when allowed; raises ``BadTransition`` otherwise."""
    if old == new:
        return False
    if not is_allowed(machine, old, new):
        raise BadTransition(old, new)
    return True


async def preview_dataset_status(db: Database, dataset_id: str, status: str) -> Doc:
    """What ``PUT /datasets/{id}/status`` would do to the dataset's tasks (the cascade of
    ``core.rollup.cascade_dataset``)."""
    dataset = await db.datasets.get(dataset_id, keys=["status"])
    moves = check_transition("dataset", dataset["status"], status)
    if status == "suspended" and moves:
        return await db.tasks.preview_status(dataset_id, "suspended",
                                             from_status=sorted(ACTIVE))
    if status == "processing" and moves:
        return await db.tasks.preview_status(dataset_id, "waiting", from_status=["suspended"])
    return await db.tasks.preview_status(dataset_id, status, from_status=[])


async def preview_job_status(db: Database, dataset_id: str, job_id: str, status: str) -> Doc:
    """What ``PUT /datasets/{id}/jobs/{job_id}/status`` would do to the job's tasks (the
    cascade of ``core.rollup.cascade_job``)."""
    job = await db.jobs.get_in(job_id, dataset_id, keys=["status"])
    moves = check_transition("job", job["status"], status)
    if status == "suspended" and moves:
        return await db.tasks.preview_status(dataset_id, "suspended", job_id=job_id,
                                             from_status=sorted(ACTIVE))
    if status == "processing" and moves:
        return await db.tasks.preview_status(dataset_id, "waiting", job_id=job_id,
                                             from_status=["suspended"])
    return await db.tasks.preview_status(dataset_id, status, job_id=job_id, from_status=[])


async def preview_task_status(db: Database, dataset_id: str, task_id: str, status: str) -> Doc:
    """What ``PUT /datasets/{id}/tasks/{task_id}/status`` would do to the one task."""
    task = await db.tasks.get_in(task_id, dataset_id, keys=["status"])
    moves = check_transition("task", task["status"], status)
    if not moves:
        return {**NOTHING, "matched": 1}
    return {"matched": 1, "changed": 1, "by_status": {task["status"]: 1}, "sample": [task_id]}

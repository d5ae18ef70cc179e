"""Project quotas in the queueing round (``core/quota.py`` with ``core/queue.py``), on a real
embedded store: work over a core or CPU-hours quota waits with the reason
``quota_blockers`` gives, and is queued once quota frees."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iceprod.core.queue import queue_tasks
from iceprod.core.quota import QuotaGate, period_start, quota_blockers
from iceprod.core.taskflow import complete_task
from iceprod.db import Database
from tests.db.builders import dataset_doc, task_doc


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(None, str(tmp_path))
    yield database
    await database.close()


async def world(db: Database, quota: dict, cpu: int = 2, n: int = 4) -> dict:
    await db.projects.create(db.projects.new_doc("ice", quota=quota))
    ds = dataset_doc("d1", 1, project="ice")
    await db.datasets.create(ds)
    await db.datasets.create(dataset_doc("d2", 2))  # the default project: no quota
    for i in range(n):
        for d in ("d1", "d2"):
            await db.tasks.create(task_doc(f"{d}t{i}", dataset_id=d, job_index=i,
                                           status="waiting", requirements={"cpu": cpu}))
    return ds


async def test_cores_quota_holds_back_and_frees(db: Database) -> None:
    ds = await world(db, {"cores": 5})
    assert await quota_blockers(db, ds) == []
    await queue_tasks(db, 100, {})
    # two 2-core tasks fit in 5 cores, a third would not; the other project is not held
    assert await db.tasks.counts_by_dataset("queued") == {"d1": 2, "d2": 4}
    (blocker,) = await quota_blockers(db, ds)
    assert blocker == {"kind": "quota", "quota": "cores", "project": "ice", "used": 4.0,
                       "limit": 5, "message": "project ice: 4 cores in use of 5; its next "
                                              "task needs 2"}
    await queue_tasks(db, 100, {})  # another round changes nothing
    assert (await db.tasks.counts_by_dataset("queued"))["d1"] == 2
    # one finishes: its cores free, the next is queued
    await db.tasks.set_status("d1t0", "suspended")
    assert await quota_blockers(db, ds) == []
    await queue_tasks(db, 100, {})
    assert (await db.tasks.counts_by_dataset("queued"))["d1"] == 2
    assert await db.tasks.count(dataset_id="d1", status=["waiting"]) == 1
    # raising the quota releases the rest
    await db.projects.set_quota("ice", {"cores": None})
    await queue_tasks(db, 100, {})
    assert (await db.tasks.counts_by_dataset("queued"))["d1"] == 3


async def test_cpu_hours_quota_over_the_period(db: Database) -> None:
    ds = await world(db, {"cpu_hours": 10, "period_days": 7}, cpu=1, n=2)
    key = {"user": "alice", "group": "users", "project": "ice", "site": "",
           "dataset_id": "d1"}
    await db.usage.add({**key, "day": "2000-01-01"}, {"core_hours": 100})  # long ago
    await db.usage.add({**key, "day": period_start(7)}, {"core_hours": 10.5})
    (blocker,) = await quota_blockers(db, ds)
    assert blocker["quota"] == "cpu_hours" and blocker["message"] == \
        "project ice: 10.5 CPU-hours used of 10 in the last 7 days"
    await queue_tasks(db, 100, {})
    assert await db.tasks.counts_by_dataset("queued") == {"d2": 2}
    await db.projects.set_quota("ice", {"cpu_hours": 20})
    assert await quota_blockers(db, ds) == []
    await queue_tasks(db, 100, {})
    assert await db.tasks.counts_by_dataset("queued") == {"d1": 2, "d2": 2}


async def test_the_gate_shares_a_project_between_its_datasets(db: Database) -> None:
    await world(db, {"cores": 3}, cpu=1)
    await db.datasets.create(dataset_doc("d3", 3, project="ice"))
    for i in range(3):
        await db.tasks.create(task_doc(f"d3t{i}", dataset_id="d3", job_index=i,
                                       status="waiting", requirements={"cpu": 1}))
    gate = await QuotaGate.load(db, await db.datasets.processing())
    for d in ("d1", "d2", "d3"):
        await gate.prepare(db, d)
    assert gate.allow("d1", 2) == 2
    gate.took("d1", 2)
    assert gate.allow("d3", 5) == 1  # what d1 left of the project's 3 cores
    gate.took("d3", 1)
    assert gate.allow("d3", 1) == 0 and gate.allow("d2", 9) == 9
    await queue_tasks(db, 100, {})
    counts = await db.tasks.counts_by_dataset("queued")
    assert counts.get("d1", 0) + counts.get("d3", 0) == 3 and counts["d2"] == 4


async def test_a_completion_queues_dependents_only_within_the_quota(db: Database) -> None:
    """Completing a task queues its ready dependents at once, but no more than the project's
    core quota leaves room for: the rest wait for a round, as any over-quota work does."""
    await db.projects.create(db.projects.new_doc("ice", quota={"cores": 2}))
    await db.datasets.create(dataset_doc("d1", 1, project="ice"))
    await db.tasks.insert_missing([
        task_doc("parent", status="queued", requirements={"cpu": 1}),
        task_doc("child1", task_index=1, status="waiting", requirements={"cpu": 1},
                 depends=["parent"]),
        task_doc("child2", task_index=2, status="waiting", requirements={"cpu": 1},
                 depends=["parent"]),
        task_doc("other", job_index=1, status="queued", requirements={"cpu": 1}),
    ])
    held = [await db.tasks.claim({"cpu": 1}, "p1", 600) for _ in range(2)]
    assert sorted(t["task_id"] for t in held if t) == ["other", "parent"]
    parent = next(t for t in held if t and t["task_id"] == "parent")
    await complete_task(db, None, "parent", parent["instance_id"])
    # "other" still holds one of the two cores: one child is queued, one waits
    assert await db.tasks.counts_by_status("d1") == {"complete": 1, "processing": 1,
                                                       "queued": 1, "waiting": 1}
    (blocker,) = await quota_blockers(db, await db.datasets.get("d1"))
    assert blocker["quota"] == "cores" and blocker["used"] == 2.0

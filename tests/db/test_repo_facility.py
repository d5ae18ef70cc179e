"""``ProjectsRepo``, ``UsageRepo`` and ``ArchiveRepo`` (issue 16: projects and quotas, usage
and billing, archive).

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees; ``test_repo_coverage`` names these tests per method.
"""

from __future__ import annotations

import asyncio

import pytest

from iceprod.common.errors import Conflict, NotFound
from iceprod.db import Database
from tests.db.builders import dataset_doc, job_doc, task_doc


async def test_projects_create_update_quota_delete(db: Database) -> None:
    doc = db.projects.new_doc("ice", "IceCube", ["alice"], ["physics"], {"cores": 4})
    assert await db.projects.create(doc) == doc
    with pytest.raises(Conflict, match="name: project 'ice' already exists"):
        await db.projects.create(db.projects.new_doc("ice"))
    await db.projects.create(db.projects.new_doc("astro", users=["bob"], groups=["astro"]))
    await db.projects.create(db.projects.new_doc("zeta", groups=["physics"]))

    updated = await db.projects.update("ice", {"users": ["alice", "rita"]})
    assert updated["users"] == ["alice", "rita"] and updated["groups"] == ["physics"]
    assert (await db.projects.update("ice", {}))["description"] == "IceCube"
    with pytest.raises(NotFound, match="project not found"):
        await db.projects.update("nope", {"description": "x"})

    q = await db.projects.set_quota("ice", {"cpu_hours": 100.5, "stored_bytes": 10})
    assert q["quota"] == {"cores": 4, "cpu_hours": 100.5, "stored_bytes": 10}
    q = await db.projects.set_quota("ice", {"cores": None, "period_days": 7})
    assert q["quota"] == {"cpu_hours": 100.5, "stored_bytes": 10, "period_days": 7}
    with pytest.raises(NotFound):
        await db.projects.set_quota("nope", {"cores": 1})

    names = [p["name"] for p in await db.projects.of_member("mark", ("physics",))]
    assert names == ["ice", "zeta"]
    assert [p["name"] for p in await db.projects.of_member("bob", ())] == ["astro"]
    assert await db.projects.of_member("nobody", ("none",)) == []
    assert [p["name"] for p in await db.projects.with_quota(["zeta", "ice", "gone"])] == \
        ["ice", "zeta"]
    assert await db.projects.with_quota([]) == []

    assert (await db.projects.delete("astro"))["users"] == ["bob"]
    assert await db.projects.find("astro") is None
    with pytest.raises(NotFound):
        await db.projects.delete("astro")


async def test_projects_datasets_and_cores_held(db: Database) -> None:
    await db.datasets.create(dataset_doc("d1", 1, project="ice"))
    await db.datasets.create(dataset_doc("d2", 2, project="ice", status="complete"))
    await db.datasets.create(dataset_doc("d3", 3))  # no project: default
    await db.datasets.create(dataset_doc("d4", 4, project="default"))
    assert await db.projects.dataset_ids("ice") == ["d1", "d2"]
    assert await db.projects.dataset_ids("ice", ["processing"]) == ["d1"]
    assert await db.projects.dataset_ids("default") == ["d3", "d4"]
    assert await db.projects.dataset_ids("none") == []

    for t in (
        task_doc("t1", dataset_id="d1", status="processing", requirements={"cpu": 4}),
        task_doc("t2", dataset_id="d1", job_index=1, status="queued", requirements={"cpu": 2}),
        task_doc("t3", dataset_id="d1", job_index=2, status="queued"),  # no cpu: one core
        task_doc("t4", dataset_id="d1", job_index=3, status="waiting", requirements={"cpu": 8}),
        task_doc("t5", dataset_id="d1", job_index=4, status="waiting", requirements={"cpu": 3}),
        task_doc("t6", dataset_id="d3", status="processing", requirements={"cpu": 16}),
    ):
        await db.tasks.create(t)
    assert await db.projects.cores_held(["d1", "d2"]) == {"queued": 3.0, "processing": 4.0}
    assert await db.projects.cores_held(["d3"]) == {"queued": 0.0, "processing": 16.0}
    assert await db.projects.cores_held([]) == {"queued": 0.0, "processing": 0.0}
    assert await db.projects.largest_waiting_cpu("d1") == 8.0
    assert await db.projects.largest_waiting_cpu("d3") == 1.0  # nothing waiting


async def test_usage_add_and_totals(db: Database) -> None:
    key = {"day": "2026-11-01", "user": "alice", "group": "physics", "project": "ice",
           "site": "a", "dataset_id": "d1"}
    # concurrent reports into one rollup lose nothing
    await asyncio.gather(*(db.usage.add(key, {"cpu_hours": 0.5, "tasks_complete": 1})
                           for _ in range(6)))
    await db.usage.add({**key, "day": "2026-11-02", "site": "b"},
                       {"cpu_hours": 1.25, "gpu_hours": 2, "tasks_reset": 1, "bogus": 9})
    await db.usage.add({**key, "day": "2026-12-01", "user": "bob"}, {"core_hours": 4})
    await db.usage.add({**key, "day": "2026-12-02"}, {})  # a rollup of nothing

    (total,) = await db.usage.totals({})
    assert total["cpu_hours"] == 4.25 and total["core_hours"] == 4
    assert total["tasks_complete"] == 6 and total["tasks_reset"] == 1
    assert total["gpu_hours"] == 2 and total["rollups"] == 4
    assert "bogus" not in total

    by_site = await db.usage.totals({"user": "alice"}, "2026-11-01", "2026-11-30", ["site"])
    assert [(r["site"], r["cpu_hours"]) for r in by_site] == [("a", 3.0), ("b", 1.25)]
    by_user_day = await db.usage.totals({"project": "ice"}, start="2026-12-01",
                                        group_by=["user", "day"])
    assert [(r["user"], r["day"], r["core_hours"]) for r in by_user_day] == [
        ("alice", "2026-12-02", 0), ("bob", "2026-12-01", 4)]
    assert await db.usage.totals({"project": "other"}) == []
    assert await db.usage.totals({"user": None, "dataset_id": "d1"}, end="2026-10-31") == []


async def test_usage_rates(db: Database) -> None:
    assert await db.usage.get_rates() is None
    await db.usage.put_rates({"currency": "EUR", "cpu_hours": 0.02})
    assert await db.usage.get_rates() == {"currency": "EUR", "cpu_hours": 0.02}
    await db.usage.put_rates({"currency": "USD"})
    assert await db.usage.get_rates() == {"currency": "USD"}


async def test_archive_candidates_summary_compact_record(db: Database) -> None:
    old, new = "2026-01-01T00:00:00Z", "2026-11-01T00:00:00Z"
    await db.datasets.create(dataset_doc("d1", 1, status="complete", status_changed=old,
                                         tags=["mc"]))
    await db.datasets.create(dataset_doc("d2", 2, status="errors", status_changed=old))
    await db.datasets.create(dataset_doc("d3", 3, status="complete", status_changed=new))
    await db.datasets.create(dataset_doc("d4", 4, status="processing", status_changed=old))
    cutoff = "2026-06-01T00:00:00Z"
    assert [d["dataset_id"] for d in await db.archive.candidates(cutoff)] == ["d1", "d2"]
    assert [d["dataset_id"] for d in await db.archive.candidates(cutoff, "mc")] == ["d1"]
    assert [d["dataset_id"] for d in await db.archive.candidates(
        "2027-01-01T00:00:00Z", dataset_ids=["d3", "d4"])] == ["d3"]

    await db.jobs.create(job_doc("d1", 0, "complete"))
    await db.jobs.create(job_doc("d1", 1, "complete"))
    await db.tasks.create(task_doc("t1", dataset_id="d1", status="complete", walltime=1.5,
                                   failures=2, walltime_err=0.5))
    await db.tasks.create(task_doc("t2", dataset_id="d1", job_index=1, name="post",
                                   status="complete", walltime=0.5, evictions=1))
    await db.tasks.create(task_doc("t3", dataset_id="d2", status="failed"))
    assert await db.archive.task_summary("d1") == {"main": {"complete": 1},
                                                   "post": {"complete": 1}}
    assert await db.archive.task_totals("d1") == {
        "walltime_hours": 2.0, "error_hours": 0.5, "failures": 2, "evictions": 1}
    assert await db.archive.task_totals("none") == {
        "walltime_hours": 0, "error_hours": 0, "failures": 0, "evictions": 0}

    assert await db.archive.compact("d1") == {"tasks": 2, "jobs": 2}
    assert await db.tasks.count(dataset_id="d1") == 0
    assert await db.tasks.count(dataset_id="d2") == 1
    assert await db.archive.compact("d1") == {"tasks": 0, "jobs": 0}

    rec = await db.archive.record("d1", {"logs": {"policy": "drop", "count": 3}})
    assert rec["dataset_id"] == "d1" and rec["archived_at"].endswith("Z")
    rec2 = await db.archive.record("d1", {"logs": {"policy": "compress", "count": 0}})
    assert await db.archive.get("d1") == rec2
    assert await db.archive.coll.count({}) == 1

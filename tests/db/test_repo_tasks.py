"""``TasksRepo`` outside the claim: creation, status, queueing, operators' bulk actions,
reading and the scheduler's per-dataset operations.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import pytest

from iceprod.common.errors import BadTransition, DuplicateKey, NotFound
from iceprod.db import Database
from iceprod.db import tasks as tasks_module
from iceprod.db.tasks import SAMPLE, TaskSelection
from tests.db.builders import (
    LEASE,
    claim_all,
    dataset_doc,
    processing_task,
    queued,
    task_doc,
)


async def test_tasks_create_and_insert_missing_is_idempotent(db: Database) -> None:
    doc = task_doc("t0")
    assert await db.tasks.create(doc) == doc
    assert await db.tasks.get("t0") == doc
    with pytest.raises(DuplicateKey):
        await db.tasks.create(task_doc("other"))
    batch = [
        task_doc(f"t{j}{i}", job_index=j, task_index=i) for j in range(3) for i in range(3)
    ]
    batch[0]["task_id"] = "t0"
    assert await db.tasks.insert_missing(batch) == 8
    assert await db.tasks.insert_missing(batch) == 0
    fresh_ids = [{**t, "task_id": "x" + t["task_id"]} for t in batch]
    assert await db.tasks.insert_missing(fresh_ids) == 0
    assert await db.tasks.coll.count({}) == 9
    assert await db.tasks.insert_missing([task_doc("t9", job_index=9)]) == 1


async def test_tasks_set_status_and_patch(db: Database) -> None:
    await db.tasks.insert_missing(
        [task_doc("t1", status="waiting"), task_doc("t2", job_index=1, status="complete")]
    )
    assert (await db.tasks.set_status("t1", "queued"))["status"] == "queued"
    assert (await db.tasks.set_status("t1", "queued"))["status"] == "queued"
    with pytest.raises(BadTransition, match="complete -> waiting"):
        await db.tasks.set_status("t2", "waiting")
    with pytest.raises(NotFound):
        await db.tasks.set_status("t1", "waiting", dataset_id="d2")
    with pytest.raises(NotFound, match="task not found"):
        await db.tasks.set_status("nope", "waiting")

    # leaving processing clears the pilot's hold
    claimed = await db.tasks.claim({}, "p1", LEASE)
    assert claimed is not None and claimed["task_id"] == "t1"
    suspended = await db.tasks.set_status("t1", "suspended", dataset_id="d1")
    assert suspended["status"] == "suspended"
    assert not suspended.get("pilot_id") and not suspended.get("instance_id")
    assert not suspended.get("lease_expires")
    assert await db.tasks.held_by("p1") == []

    await db.tasks.coll.update_one(
        {"task_id": "t1"}, {"$set": {"requirements": {"cpu": 1, "memory": 2.0}}}
    )
    patched = await db.tasks.patch(
        "t1", {"status": "waiting", "priority": 3.5, "requirements": {"memory": 4.0, "gpu": 1}}
    )
    assert patched["status"] == "waiting" and patched["priority"] == 3.5
    assert patched["requirements"] == {"cpu": 1, "memory": 4.0, "gpu": 1}
    only_status = await db.tasks.patch("t1", {"status": "queued"})
    assert only_status == await db.tasks.get("t1") and only_status["status"] == "queued"
    with pytest.raises(BadTransition, match="complete -> queued"):
        await db.tasks.patch("t2", {"status": "queued", "priority": 9})
    assert (await db.tasks.get("t2"))["priority"] == 0.0
    with pytest.raises(NotFound):
        await db.tasks.patch("nope", {"priority": 1})
    with pytest.raises(NotFound):
        await db.tasks.patch("nope", {})


async def test_queue_dataset_respects_depends_and_priority(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("a", task_index=0, status="waiting", priority=1.0),
            task_doc("b", task_index=1, status="waiting", priority=9.0, depends=["a"]),
            task_doc("c", task_index=2, status="waiting", priority=2.0, depends=["x"]),
            task_doc("d", task_index=3, status="waiting", priority=3.0, depends=["a", "x"]),
            task_doc("x", job_index=1, status="complete"),
            task_doc("e", job_index=2, status="waiting", priority=5.0),
            task_doc("s", job_index=3, status="suspended", priority=50.0),
            task_doc("o", dataset_id="d2", status="waiting", priority=99.0),
        ]
    )
    assert await db.tasks.queue_dataset("d1", 0, 1.0) == 0
    assert await db.tasks.queue_dataset("d1", -1, 1.0) == 0
    assert await db.tasks.queue_dataset("d1", 5, 1.0, scan_budget=0) == 0
    assert await db.tasks.queue_dataset("d1", 2, 0.25) == 2  # e (5.0), c (2.0); b, d need a
    ids = await db.tasks.ids_by_status("d1")
    assert sorted(ids["queued"]) == ["c", "e"]
    assert ids["waiting"] == ["a", "b", "d"]
    assert (await db.tasks.get("e"))["dataset_priority"] == 0.25
    assert await db.tasks.queue_dataset("d1", 10, 0.5) == 1  # only a is ready
    assert sorted((await db.tasks.ids_by_status("d1"))["queued"]) == ["a", "c", "e"]
    assert (await db.tasks.get("a"))["dataset_priority"] == 0.5
    assert await db.tasks.queue_dataset("d1", 10, 0.5) == 0
    assert await db.tasks.ids_by_status("d2") == {"waiting": ["o"]}

    # claims take the best dataset score first (a: 0.5), then priority (e: 5.0, c: 2.0)
    claimed = [await db.tasks.claim({}, "p1", LEASE) for _ in range(3)]
    assert [t["task_id"] if t else None for t in claimed] == ["a", "e", "c"]
    assert claimed[0] is not None
    await db.tasks.complete("a", claimed[0]["instance_id"])
    assert await db.tasks.queue_dataset("d1", 10, 0.5) == 2
    ids = await db.tasks.ids_by_status("d1")
    assert sorted(ids["queued"]) == ["b", "d"] and ids["suspended"] == ["s"]
    assert await db.tasks.queue_dataset("d2", 10, 0.5) == 1


async def test_queue_dataset_takes_the_highest_priority_ready_tasks(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc(f"t{i}", job_index=i, status="waiting", priority=float(p))
            for i, p in enumerate([3, 8, 1, 8, 5])
        ]
        + [task_doc("n", job_index=9, status="waiting", priority=None)]
    )
    assert await db.tasks.queue_dataset("d1", 3, 1.0) == 3
    assert sorted((await db.tasks.ids_by_status("d1"))["queued"]) == ["t1", "t3", "t4"]
    assert await db.tasks.queue_dataset("d1", 10, 1.0) == 3
    assert await db.tasks.counts_by_status("d1") == {"queued": 6}


async def test_unqueue_dataset_sends_back_the_lowest_priority(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc(f"t{i}", job_index=i, priority=float(p))
            for i, p in enumerate([3, 1, 5, 1, 2])
        ]
        + [
            task_doc("w", job_index=8, status="waiting", priority=-9.0),
            task_doc("o", dataset_id="d2", priority=-9.0),
        ]
    )
    assert await db.tasks.unqueue_dataset("d1", 0) == 0
    assert await db.tasks.unqueue_dataset("d1", -1) == 0
    assert await db.tasks.counts_by_status("d1") == {"queued": 5, "waiting": 1}
    # lowest priority first; among equals the later task id goes first
    assert await db.tasks.unqueue_dataset("d1", 1) == 1
    assert (await db.tasks.get("t3"))["status"] == "waiting"
    assert await db.tasks.unqueue_dataset("d1", 2) == 2
    ids = await db.tasks.ids_by_status("d1")
    assert ids == {"queued": ["t0", "t2"], "waiting": ["t1", "t3", "t4", "w"]}
    assert await db.tasks.unqueue_dataset("d1", 10) == 2
    assert await db.tasks.counts_by_status("d1") == {"waiting": 6}
    assert await db.tasks.unqueue_dataset("d1", 10) == 0
    assert await db.tasks.counts_by_status("d2") == {"queued": 1}


async def test_queue_dataset_and_bulk_status_work_in_batches(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both page through the dataset; tiny batches make the pages visible with few tasks."""
    monkeypatch.setattr(tasks_module, "BATCH", 2)
    priorities = [5, 5, 5, 3, 3, 1, 0, -1, 5, 2, 2, 4]
    await db.tasks.insert_missing(
        [
            task_doc(f"t{i:02d}", job_index=i, status="waiting", priority=float(p),
                     depends=["t00"] if i in (4, 9) else [])
            for i, p in enumerate(priorities)
        ]
    )
    assert await db.tasks.queue_dataset("d1", 3, 1.0) == 3
    assert sorted((await db.tasks.ids_by_status("d1"))["queued"]) == ["t00", "t01", "t02"]
    assert await db.tasks.queue_dataset("d1", 100, 1.0) == 7  # all but t04, t09 (need t00)
    assert (await db.tasks.ids_by_status("d1"))["waiting"] == ["t04", "t09"]
    # more than one page of ids (BATCH * 5) when no ids are given
    assert await db.tasks.bulk_status("d1", "suspended", None) == 12
    assert await db.tasks.counts_by_status("d1") == {"suspended": 12}
    assert await db.tasks.bulk_status("d1", "waiting", [f"t{i:02d}" for i in range(7)]) == 7
    assert await db.tasks.counts_by_status("d1") == {"suspended": 5, "waiting": 7}


async def test_bulk_status_by_ids_name_and_all(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("g0", job_index=0, task_index=0, name="gen", status="failed", failures=4),
            task_doc("g1", job_index=1, task_index=0, name="gen", status="complete"),
            task_doc("g2", job_index=2, task_index=0, name="gen", status="suspended"),
            task_doc("s0", job_index=0, task_index=1, name="sim", status="failed", failures=2),
            task_doc("s1", job_index=1, task_index=1, name="sim", status="queued"),
            task_doc("s2", job_index=2, task_index=1, name="sim", status="waiting"),
            task_doc("o0", dataset_id="d2", status="failed", failures=1),
        ]
    )
    # by ids: only the tasks the machine allows change; complete stays complete
    assert await db.tasks.bulk_status("d1", "waiting", ["g0", "g1", "nope"]) == 1
    g0 = await db.tasks.get("g0")
    assert (g0["status"], g0["failures"]) == ("waiting", 0)
    assert (await db.tasks.get("g1"))["status"] == "complete"
    # ids from another dataset are never touched
    assert await db.tasks.bulk_status("d1", "waiting", ["o0"]) == 0
    assert (await db.tasks.get("o0"))["status"] == "failed"
    assert await db.tasks.bulk_status("d1", "waiting", []) == 0

    # by name
    assert await db.tasks.bulk_status("d1", "suspended", None, name="sim") == 2
    assert await db.tasks.ids_by_status("d1") == {
        "waiting": ["g0"],
        "failed": ["s0"],
        "complete": ["g1"],
        "suspended": ["s1", "g2", "s2"],
    }
    # all of the dataset's
    assert await db.tasks.bulk_status("d1", "waiting", None) == 4
    assert await db.tasks.counts_by_status("d1") == {"waiting": 5, "complete": 1}
    assert (await db.tasks.get("s0"))["failures"] == 0
    assert await db.tasks.counts_by_status("d2") == {"failed": 1}
    assert await db.tasks.bulk_status("d1", "waiting", None) == 0


async def test_bulk_status_suspending_processing_releases_it(db: Database) -> None:
    await db.tasks.insert_missing(queued({"t0": {}, "t1": {}}))
    claimed = await db.tasks.claim({}, "p1", LEASE)
    assert claimed is not None
    assert await db.tasks.bulk_status("d1", "suspended", None) == 2
    task = await db.tasks.get(claimed["task_id"])
    assert task["status"] == "suspended" and not task.get("pilot_id")
    assert await db.tasks.held_by("p1") == []
    with pytest.raises(BadTransition):
        await db.tasks.complete(claimed["task_id"], claimed["instance_id"])


async def test_bulk_requirements(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("g0", job_index=0, name="gen", requirements={"cpu": 1, "os": ["el9"]}),
            task_doc("g1", job_index=1, name="gen", status="complete", requirements={"cpu": 1}),
            task_doc("g2", job_index=2, name="gen", status="failed"),
            task_doc("s0", job_index=0, task_index=1, name="sim", requirements={"cpu": 1}),
            task_doc("o0", dataset_id="d2", name="gen", status="waiting",
                     requirements={"cpu": 1}),
        ]
    )
    assert await db.tasks.bulk_requirements("d1", "gen", {"memory": 3.0, "cpu": 2}) == 2
    assert (await db.tasks.get("g0"))["requirements"] == {"cpu": 2, "os": ["el9"], "memory": 3.0}
    assert (await db.tasks.get("g2"))["requirements"] == {"cpu": 2, "memory": 3.0}
    assert (await db.tasks.get("g1"))["requirements"] == {"cpu": 1}
    assert (await db.tasks.get("s0"))["requirements"] == {"cpu": 1}
    assert (await db.tasks.get("o0"))["requirements"] == {"cpu": 1}
    assert await db.tasks.bulk_requirements("d1", "none", {"cpu": 2}) == 0
    # the claim sees the new requirements
    assert await claim_all(db, {"cpu": 1, "memory": 8.0, "os": "el9"}) == ["s0"]
    assert await claim_all(db, {"cpu": 2, "memory": 8.0, "os": "el9"}) == ["g0"]


async def test_queued_groups_count_queued_tasks_by_requirements(db: Database) -> None:
    small = {"cpu": 1, "memory": 2.0}
    await db.tasks.create(task_doc("a", job_index=0, requirements=small))
    await db.tasks.create(task_doc("b", job_index=1, requirements=small))
    await db.tasks.create(task_doc("c", job_index=2, requirements={"gpu": 1, "site": "X"}))
    await db.tasks.create(task_doc("d", job_index=3, requirements=small, status="waiting"))
    rows = sorted(await db.tasks.queued_groups(), key=lambda r: -r["count"])
    assert [r["count"] for r in rows] == [2, 1]
    assert rows[0]["requirements.cpu"] == 1 and rows[0]["requirements.memory"] == 2.0
    assert rows[0]["requirements.gpu"] is None
    assert rows[1]["requirements.gpu"] == 1 and rows[1]["requirements.site"] == "X"
    # the same, shaped as GET /task_demand answers it: fields set only, largest group first
    assert await db.tasks.demand() == [
        {"requirements": small, "count": 2},
        {"requirements": {"gpu": 1, "site": "X"}, "count": 1},
    ]


async def test_task_counts_and_ids_by_status(db: Database) -> None:
    rows = [  # (job_index, task_index, status), inserted out of order
        (1, 1, "waiting"), (0, 1, "complete"), (1, 0, "complete"), (0, 0, "complete"),
        (2, 0, "failed"), (2, 1, "waiting"), (0, 2, "queued"),
    ]
    await db.tasks.insert_missing(
        [
            task_doc(f"t{j}{i}", job_index=j, task_index=i, status=s)
            for j, i, s in rows
        ]
        + [task_doc("other", dataset_id="d2", status="failed")]
    )
    assert await db.tasks.counts_by_status("d1") == {
        "waiting": 2, "complete": 3, "failed": 1, "queued": 1
    }
    assert await db.tasks.counts_by_status("none") == {}
    assert await db.tasks.ids_by_status("d1") == {
        "complete": ["t00", "t01", "t10"],
        "queued": ["t02"],
        "waiting": ["t11", "t21"],
        "failed": ["t20"],
    }
    assert await db.tasks.ids_by_status("none") == {}


async def test_counts_by_name_status_in_task_index_order(db: Database) -> None:
    names = ["zeta", "alpha", "mid"]  # task_index order differs from name order
    statuses = {
        (0, 0): "complete", (0, 1): "complete", (0, 2): "waiting",
        (1, 0): "complete", (1, 1): "failed", (1, 2): "waiting",
        (2, 0): "processing", (2, 1): "failed",
    }
    await db.tasks.insert_missing(
        [
            task_doc(f"t{j}{i}", job_index=j, task_index=i, name=names[i], status=s)
            for (j, i), s in reversed(statuses.items())
        ]
        + [task_doc("o", dataset_id="d2", name="other")]
    )
    counts = await db.tasks.counts_by_name_status("d1")
    assert list(counts) == ["zeta", "alpha", "mid"]
    assert counts == {
        "zeta": {"complete": 2, "processing": 1},
        "alpha": {"complete": 1, "failed": 2},
        "mid": {"waiting": 2},
    }
    assert await db.tasks.counts_by_name_status("none") == {}


async def test_stats_by_name_and_efficiency(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("s0", job_index=0, task_index=1, name="sim", status="complete", walltime=1.0),
            task_doc("s1", job_index=1, task_index=1, name="sim", status="complete", walltime=3.0,
                     walltime_err=0.5, walltime_err_n=1),
            task_doc("s2", job_index=2, task_index=1, name="sim", status="waiting",
                     walltime_err=0.5, walltime_err_n=2),
            task_doc("g0", job_index=0, task_index=0, name="gen", status="failed",
                     walltime_err=2.0, walltime_err_n=3),
            task_doc("f0", job_index=0, task_index=2, name="fin", status="waiting"),
            task_doc("o0", dataset_id="d2", name="sim", status="complete", walltime=50.0),
        ]
    )
    stats = await db.tasks.stats_by_name("d1")
    # IceProd's fields; names with nothing completed (gen, fin) are left out
    assert list(stats) == ["sim"]
    assert stats["sim"] == {
        "count": 2, "total_hrs": 4.0, "total_err_hrs": 1.0, "avg_hrs": 2.0,
        "stddev_hrs": pytest.approx(1.0), "min_hrs": 1.0, "max_hrs": 3.0,
        "efficiency": pytest.approx(0.8),
    }
    assert await db.tasks.stats_by_name("none") == {}


async def test_stats_by_name_through_complete_and_reset(db: Database) -> None:
    task = await processing_task(db, "t1", name="gen")
    await db.tasks.reset("t1", task["instance_id"], max_failures=10, time_used=1800)
    await db.tasks.set_status("t1", "queued")
    again = await db.tasks.claim({}, "p1", LEASE)
    assert again is not None
    await db.tasks.complete("t1", again["instance_id"], time_used=5400)
    stats = await db.tasks.stats_by_name("d1")
    assert stats == {
        "gen": {
            "count": 1, "total_hrs": 1.5, "total_err_hrs": 0.5, "avg_hrs": 1.5,
            "stddev_hrs": 0.0, "min_hrs": 1.5, "max_hrs": 1.5,
            "efficiency": pytest.approx(0.75),
        }
    }


async def test_tasks_bulk_status_by_job_and_from_status(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("a0", job_index=0, task_index=0, status="failed"),
            task_doc("a1", job_index=0, task_index=1, status="suspended"),
            task_doc("a2", job_index=0, task_index=2, status="complete"),
            task_doc("b0", job_index=1, task_index=0, status="failed"),
            task_doc("b1", job_index=1, task_index=1, status="suspended"),
        ]
    )
    assert await db.tasks.bulk_status("d1", "waiting", None, job_id="d1-j0") == 2
    assert await db.tasks.ids_by_status("d1") == {
        "waiting": ["a0", "a1"], "complete": ["a2"], "failed": ["b0"], "suspended": ["b1"]
    }
    assert await db.tasks.bulk_status("d1", "waiting", None, from_status=["failed"]) == 1
    assert (await db.tasks.get("b1"))["status"] == "suspended"
    # from_status never widens what the state machine allows
    assert await db.tasks.bulk_status("d1", "waiting", None, from_status=["complete"]) == 0
    assert await db.tasks.bulk_status(
        "d1", "suspended", ["a0", "b0", "b1"], from_status=["waiting"]
    ) == 2
    assert await db.tasks.ids_by_status("d1") == {
        "suspended": ["a0", "b0", "b1"], "waiting": ["a1"], "complete": ["a2"]
    }


async def test_set_dataset_priority_and_counts_by_dataset(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("a0", dataset_id="d1", job_index=0),
            task_doc("a1", dataset_id="d1", job_index=1),
            task_doc("a2", dataset_id="d1", job_index=2, status="waiting"),
            task_doc("b0", dataset_id="d2", job_index=0, dataset_priority=0.9),
            task_doc("b1", dataset_id="d2", job_index=1, status="waiting"),
            task_doc("b2", dataset_id="d2", job_index=2, status="complete"),
        ]
    )
    assert await db.tasks.counts_by_dataset("queued") == {"d1": 2, "d2": 1}
    assert await db.tasks.counts_by_dataset("waiting") == {"d1": 1, "d2": 1}
    assert await db.tasks.counts_by_dataset("failed") == {}

    assert await db.tasks.set_dataset_priority("d1", 0.5) == 2
    assert (await db.tasks.get("a1"))["dataset_priority"] == 0.5
    assert "dataset_priority" not in await db.tasks.get("a2")  # only queued tasks carry it
    assert await db.tasks.set_dataset_priority("none", 0.5) == 0
    assert await claim_all(db, {}) == ["b0", "a0", "a1"]
    assert await db.tasks.set_dataset_priority("d2", 0.1) == 0
    assert await db.tasks.counts_by_dataset("processing") == {"d1": 2, "d2": 1}


async def test_of_job(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("t2", job_index=0, task_index=2, depends=["t0", "t1"], status="waiting"),
            task_doc("t0", job_index=0, task_index=0, status="complete"),
            task_doc("t1", job_index=0, task_index=1, depends=["t0"]),
            task_doc("u0", job_index=1, task_index=0),
        ]
    )
    tasks = await db.tasks.of_job("d1-j0")
    assert [t["task_id"] for t in tasks] == ["t0", "t1", "t2"]
    assert tasks[2] == {
        "task_id": "t2", "status": "waiting", "depends": ["t0", "t1"], "task_index": 2
    }
    assert tasks[0]["depends"] == [] and tasks[1]["status"] == "queued"
    assert await db.tasks.of_job("nope") == []


async def test_bulk_status_selected_and_task_names(db: Database) -> None:
    await db.tasks.insert_missing(
        [task_doc(f"{n[0]}{j}", job_index=j, task_index=i, name=n, status="waiting")
         for j in range(4) for i, n in enumerate(("gen", "sim"))]
        + [task_doc("o0", dataset_id="d2", name="sim", status="waiting")]
    )
    assert await db.tasks.names("d1") == {"gen", "sim"}
    assert await db.tasks.names("nope") == set()
    # an empty selection selects nothing
    assert TaskSelection().empty
    assert await db.tasks.bulk_status_selected("d1", "suspended", TaskSelection()) == 0
    # every given filter narrows: sims of jobs 1..2
    sims = TaskSelection(names=("sim",), job_index_min=1, job_index_max=2)
    assert await db.tasks.bulk_status_selected("d1", "suspended", sims) == 2
    assert (await db.tasks.ids_by_status("d1"))["suspended"] == ["s1", "s2"]
    # statuses narrow the state machine's sources
    back = TaskSelection(statuses=("suspended",), job_index_min=2)
    assert await db.tasks.bulk_status_selected("d1", "waiting", back) == 1
    # listed ids, never another dataset's
    ids = TaskSelection(task_ids=("g0", "s1", "o0"))
    assert await db.tasks.bulk_status_selected("d1", "suspended", ids) == 1
    assert await db.tasks.counts_by_status("d1") == {"waiting": 6, "suspended": 2}
    assert await db.tasks.counts_by_status("d2") == {"waiting": 1}


async def test_config_task_names_and_dataset_number(db: Database) -> None:
    assert await db.config.task_names("d1") == set()
    await db.config.put("d1", {"tasks": [{"name": "gen"}, {"name": "sim"}]})
    assert await db.config.task_names("d1") == {"gen", "sim"}
    await db.datasets.create(dataset_doc("d1", 7))
    assert await db.datasets.id_of_number(7) == "d1"
    assert await db.datasets.id_of_number(8) is None


async def test_previews_predict_the_bulk_changes_exactly(db: Database) -> None:
    await db.tasks.insert_missing(
        [task_doc(f"{n[0]}{j}", job_index=j, task_index=i, name=n,
                  status="failed" if (n, j) == ("sim", 3) else "waiting")
         for j in range(4) for i, n in enumerate(("gen", "sim"))]
        + [task_doc("o0", dataset_id="d2", name="sim", status="waiting")]
    )
    before = await db.tasks.counts_by_status("d1")
    # a selection by filter: what is selected, what would change, by status, the first ids
    sims = TaskSelection(names=("sim",), job_index_min=1)
    plan = await db.tasks.preview_selected("d1", "suspended", sims)
    assert plan == {"matched": 3, "changed": 2, "by_status": {"waiting": 2},
                    "sample": ["s1", "s2"]}
    assert await db.tasks.preview_selected("d1", "suspended", TaskSelection()) == {
        "matched": 0, "changed": 0, "by_status": {}, "sample": []}
    # listed ids (another dataset's never count), batched like the real run
    ids = TaskSelection(task_ids=("s3", "g0", "o0", "g1"))
    plan_ids = await db.tasks.preview_selected("d1", "waiting", ids)
    assert plan_ids == {"matched": 3, "changed": 1, "by_status": {"failed": 1},
                        "sample": ["s3"]}
    # a status filter narrows what is matched as well as what changes
    failed = TaskSelection(statuses=("failed", "suspended"))
    assert (await db.tasks.preview_selected("d1", "waiting", failed))["matched"] == 1
    # a cascade: every task of the dataset (or job) is matched
    cascade = await db.tasks.preview_status("d1", "suspended", job_id="d1-j3",
                                            from_status=["waiting", "queued"])
    assert cascade == {"matched": 2, "changed": 1, "by_status": {"waiting": 1},
                       "sample": ["g3"]}
    assert (await db.tasks.preview_status("d1", "waiting", from_status=[]))["changed"] == 0
    # the general form: any matched / changing filters
    direct = await db.tasks._preview({"dataset_id": "d1", "name": "gen"},
                                     {"dataset_id": "d1", "name": "gen", "job_index": 0})
    assert direct == {"matched": 4, "changed": 1, "by_status": {"waiting": 1},
                      "sample": ["g0"]}
    reqs = await db.tasks.preview_requirements("d1", "sim")
    assert reqs["matched"] == 4 and reqs["changed"] == 4
    # nothing changed by any preview
    assert await db.tasks.counts_by_status("d1") == before
    # and the real runs change exactly what they predicted
    assert await db.tasks.bulk_status("d1", "suspended", None, job_id="d1-j3",
                                      from_status=["waiting", "queued"]) == cascade["changed"]
    assert await db.tasks.bulk_status_selected("d1", "suspended", sims) == plan["changed"]
    assert await db.tasks.bulk_status_selected("d1", "waiting", ids) == plan_ids["changed"]
    assert await db.tasks.bulk_requirements("d1", "sim", {"memory": 2.0}) == 4
    # a preview samples at most SAMPLE ids, in id order
    many = [task_doc(f"m{i:03d}", dataset_id="d3", job_index=i, task_index=0, status="waiting")
            for i in range(SAMPLE + 5)]
    await db.tasks.insert_missing(many)
    big = await db.tasks.preview_selected(
        "d3", "suspended", TaskSelection(task_ids=tuple(d["task_id"] for d in many)))
    assert big["changed"] == SAMPLE + 5
    assert big["sample"] == [f"m{i:03d}" for i in range(SAMPLE)]


async def test_queue_ready_complete_ids_briefs_and_queued_ids(db: Database) -> None:
    """What event-driven queueing uses: a parent's completion queues its known-ready
    dependents one by one (only those still waiting), `complete_ids` answers which tasks
    are complete, `briefs` what an event names, and `queue_dataset` reports the ids it
    queued."""
    await db.tasks.insert_missing([
        task_doc("a", task_index=0, status="complete"),
        task_doc("b", task_index=1, status="waiting", depends=["a"]),
        task_doc("c", task_index=2, status="suspended", depends=["a"]),
        task_doc("d", task_index=3, status="waiting", priority=2.0),
        task_doc("e", task_index=4, status="waiting", priority=1.0),
    ])
    queued = await db.tasks.queue_ready(["b", "c", "nope"], 0.75)
    assert [(t["task_id"], t["status"], t["dataset_priority"]) for t in queued] == \
        [("b", "queued", 0.75)]
    assert await db.tasks.queue_ready(["b"], 0.75) == []  # already queued: nothing moves
    assert await db.tasks.complete_ids(["a", "b", "c", "nope"]) == {"a"}
    assert await db.tasks.complete_ids([]) == set()
    briefs = {t["task_id"]: t for t in await db.tasks.briefs(["a", "b"])}
    assert set(briefs) == {"a", "b"}
    assert set(briefs["b"]) == {"task_id", "dataset_id", "job_id", "name", "status",
                                "status_changed"}
    assert briefs["b"]["status"] == "queued" and briefs["a"]["job_id"] == "d1-j0"
    out: list[str] = []
    assert await db.tasks.queue_dataset("d1", 10, 0.5, out=out) == 2
    assert sorted(out) == ["d", "e"]


async def test_counts_by_datasets_in_one_query(db: Database) -> None:
    docs = [task_doc("a1", dataset_id="da", status="queued"),
            task_doc("a2", dataset_id="da", job_index=1, status="complete"),
            task_doc("a3", dataset_id="da", job_index=2, status="complete"),
            task_doc("b1", dataset_id="db", status="failed"),
            task_doc("c1", dataset_id="dc", status="waiting")]
    for d in docs:
        await db.tasks.create(d)
    assert await db.tasks.counts_by_datasets(["da", "db", "none"]) == {
        "da": {"queued": 1, "complete": 2}, "db": {"failed": 1}, "none": {}}
    assert await db.tasks.counts_by_datasets([]) == {}


async def test_for_plots_projects_what_the_plots_need(db: Database) -> None:
    await db.tasks.create(task_doc("t1", status="complete", walltime=1.5,
                                   status_changed="2026-01-01T00:00:00.000000Z"))
    await db.tasks.create(task_doc("t2", job_index=1, status="failed", failures=2,
                                   reason="exit code 1"))
    await db.tasks.create(task_doc("o1", dataset_id="d2"))
    rows = sorted(await db.tasks.for_plots("d1"), key=lambda r: r["task_id"])
    assert rows == [
        {"task_id": "t1", "name": "main", "status": "complete", "failures": 0,
         "walltime": 1.5, "status_changed": "2026-01-01T00:00:00.000000Z"},
        {"task_id": "t2", "name": "main", "status": "failed", "failures": 2,
         "reason": "exit code 1"},
    ]

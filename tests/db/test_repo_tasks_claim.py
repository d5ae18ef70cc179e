"""``TasksRepo`` around the claim: what a pilot's offer takes, the fencing token and lease,
complete/reset/fail fenced by it, and leases held by pilots.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iceprod.common.errors import BadTransition, Conflict, NotFound
from iceprod.common.ids import is_id
from iceprod.common.timeutil import iso, parse
from iceprod.db import Database
from iceprod.db.tasks import grown_requirements
from tests.db.builders import (
    LEASE,
    NOW,
    claim_all,
    processing_task,
    queued,
    task_doc,
)


@pytest.mark.parametrize("key", ["cpu", "memory", "disk", "time"])
async def test_claim_numeric_requirement_at_most_the_offer(db: Database, key: str) -> None:
    await db.tasks.insert_missing(
        queued(
            {
                "small": {key: 1},
                "exact": {key: 2.5},
                "big": {key: 4},
                "absent": {},
                "null": {key: None},
            }
        )
    )
    assert sorted(await claim_all(db, {key: 2.5}, "p1")) == ["absent", "exact", "null", "small"]
    assert await claim_all(db, {key: 3.9}, "p2") == []
    assert await claim_all(db, {key: 4}, "p3") == ["big"]


async def test_claim_offer_without_a_resource_takes_any_amount(db: Database) -> None:
    await db.tasks.insert_missing(
        queued({"a": {"cpu": 64, "memory": 512.0}, "b": {"disk": 1e6, "time": 1e3}})
    )
    assert sorted(await claim_all(db, {"cpu": None})) == ["a", "b"]


async def test_claim_all_requirements_together(db: Database) -> None:
    await db.tasks.insert_missing(
        queued(
            {
                "fits": {"cpu": 2, "memory": 4.0, "disk": 10.0, "time": 2.0},
                "memory": {"cpu": 2, "memory": 8.0, "disk": 10.0, "time": 2.0},
                "time": {"cpu": 1, "memory": 1.0, "disk": 1.0, "time": 12.0},
            }
        )
    )
    offer = {"cpu": 4, "gpu": 0, "memory": 6.0, "disk": 20.0, "time": 4.0, "os": "el9"}
    assert await claim_all(db, offer) == ["fits"]


async def test_claim_gpu_offers_take_only_gpu_tasks(db: Database) -> None:
    await db.tasks.insert_missing(
        queued(
            {
                "cpu_absent": {},
                "cpu_zero": {"gpu": 0},
                "cpu_null": {"gpu": None},
                "gpu1": {"gpu": 1},
                "gpu2": {"gpu": 2},
            }
        )
    )
    assert await claim_all(db, {"gpu": 1}, "p1") == ["gpu1"]
    assert await claim_all(db, {"gpu": 1}, "p2") == []
    assert await claim_all(db, {"gpu": 4}, "p3") == ["gpu2"]
    assert sorted(await claim_all(db, {"gpu": 0}, "p4")) == ["cpu_absent", "cpu_null", "cpu_zero"]


async def test_claim_cpu_offers_never_take_gpu_tasks(db: Database) -> None:
    await db.tasks.insert_missing(queued({"gpu1": {"gpu": 1}, "plain": {}}))
    assert await claim_all(db, {"cpu": 8}) == ["plain"]
    assert await claim_all(db, {"gpu": None}) == []


async def test_claim_os_list_must_contain_the_pilot_os(db: Database) -> None:
    await db.tasks.insert_missing(
        queued(
            {
                "el8_el9": {"os": ["el8", "el9"]},
                "el7": {"os": ["el7"]},
                "empty": {"os": []},
                "absent": {},
            }
        )
    )
    assert sorted(await claim_all(db, {"os": "el9"}, "p1")) == ["absent", "el8_el9", "empty"]
    assert await claim_all(db, {}, "p2") == []
    assert await claim_all(db, {"os": "el7"}, "p3") == ["el7"]


async def test_claim_os_unset_pilot_takes_only_unconstrained(db: Database) -> None:
    await db.tasks.insert_missing(queued({"el9": {"os": ["el9"]}, "any": {"os": []}}))
    assert await claim_all(db, {"os": None}) == ["any"]


async def test_claim_container_tasks_only_by_pilots_offering_their_runtime(
        db: Database) -> None:
    docs = queued({"plain": {}, "any_runtime": {}, "apptainer": {}, "bwrap": {}})
    for doc, runtime in zip(docs[1:], ("*", "apptainer", "bwrap"), strict=True):
        doc["container"] = {"image": "busybox"}
        doc["container_runtime"] = runtime
    await db.tasks.insert_missing(docs)
    # no runtime offered: only the plain task
    assert await claim_all(db, {}, "p1") == ["plain"]
    # an offer of bwrap: the task that names it and the one any runtime runs
    assert sorted(await claim_all(db, {"containers": ["bwrap"]}, "p2")) == \
        ["any_runtime", "bwrap"]
    assert await claim_all(db, {"containers": ["podman", "apptainer"]}, "p3") == ["apptainer"]


async def test_claim_site_must_equal_when_set(db: Database) -> None:
    await db.tasks.insert_missing(
        queued({"at_a": {"site": "A"}, "at_b": {"site": "B"}, "blank": {"site": ""}, "any": {}})
    )
    assert sorted(await claim_all(db, {"site": "A"}, "p1")) == ["any", "at_a", "blank"]
    assert await claim_all(db, {}, "p2") == []
    assert await claim_all(db, {"site": "B"}, "p3") == ["at_b"]


async def test_claim_highest_priority_first_and_only_queued(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("low", job_index=0, priority=1.0),
            task_doc("high", job_index=1, priority=9.5),
            task_doc("mid_b", job_index=2, priority=5.0),
            task_doc("mid_a", job_index=3, priority=5.0),
            task_doc("neg", job_index=4, priority=-2.0),
            task_doc("waiting", job_index=5, priority=99.0, status="waiting"),
            task_doc("suspended", job_index=6, priority=99.0, status="suspended"),
            task_doc("complete", job_index=7, priority=99.0, status="complete"),
        ]
    )
    assert await claim_all(db, {}) == ["high", "mid_a", "mid_b", "low", "neg"]


async def test_claim_takes_the_best_dataset_score_first(db: Database) -> None:
    await db.tasks.insert_missing(
        [
            task_doc("d1_hi", dataset_id="d1", job_index=0, priority=9.0, dataset_priority=0.1),
            task_doc("d1_lo", dataset_id="d1", job_index=1, priority=1.0, dataset_priority=0.1),
            task_doc("d2_lo", dataset_id="d2", job_index=0, priority=1.0, dataset_priority=0.7),
            task_doc("d2_hi", dataset_id="d2", job_index=1, priority=2.0, dataset_priority=0.7),
            task_doc("unscored", dataset_id="d3", job_index=0, priority=50.0),
        ]
    )
    assert await claim_all(db, {}) == ["d2_hi", "d2_lo", "d1_hi", "d1_lo", "unscored"]


async def test_claim_sets_the_fencing_token_and_lease(db: Database) -> None:
    await db.tasks.insert_missing(queued({"t1": {}, "t2": {}}))
    first = await db.tasks.claim({"cpu": 1}, "pilot-1", 300.0, now=NOW)
    assert first is not None and first["task_id"] == "t1"
    assert first["status"] == "processing"
    assert first["pilot_id"] == "pilot-1"
    assert is_id(first["instance_id"])
    assert first["lease_expires"] == iso(NOW + 300.0)
    assert first["status_changed"] == iso(NOW)
    assert await db.tasks.get("t1") == first
    second = await db.tasks.claim({}, "pilot-2", LEASE)
    assert second is not None and second["task_id"] == "t2"
    assert second["instance_id"] != first["instance_id"]
    assert abs(parse(second["lease_expires"]) - time.time() - LEASE) < 60
    assert await db.tasks.claim({}, "pilot-3", LEASE) is None


async def test_claim_is_atomic_under_concurrent_pilots(db: Database) -> None:
    await db.tasks.insert_missing(queued({f"t{i}": {} for i in range(4)}))
    results = await asyncio.gather(*(db.tasks.claim({}, f"p{i}", LEASE) for i in range(8)))
    got = [r["task_id"] for r in results if r is not None]
    assert sorted(got) == ["t0", "t1", "t2", "t3"]
    assert results.count(None) == 4
    assert await db.tasks.counts_by_status("d1") == {"processing": 4}


async def test_complete_is_fenced_by_instance_id(db: Database) -> None:
    task = await processing_task(db, "t1")
    with pytest.raises(Conflict, match="instance_id") as stale:
        await db.tasks.complete("t1", "0" * 32)
    assert not isinstance(stale.value, BadTransition)
    assert (await db.tasks.get("t1"))["status"] == "processing"

    done = await db.tasks.complete("t1", task["instance_id"], time_used=5400, site="SiteA")
    assert done["status"] == "complete"
    assert done["walltime"] == 1.5 and done["site"] == "SiteA"
    for key in ("pilot_id", "instance_id", "lease_expires"):
        assert not done.get(key)
    assert await db.tasks.get("t1") == done

    with pytest.raises(BadTransition, match="complete -> complete"):
        await db.tasks.complete("t1", task["instance_id"])
    with pytest.raises(NotFound, match="task not found"):
        await db.tasks.complete("nope", task["instance_id"])

    await db.tasks.create(task_doc("t2", job_index=1, status="waiting"))
    with pytest.raises(BadTransition, match="waiting -> complete"):
        await db.tasks.complete("t2", task["instance_id"])


async def test_complete_after_reissue_refuses_the_stale_pilot(db: Database) -> None:
    old = await processing_task(db, "t1")
    assert await db.tasks.release_pilot("p1") == 1
    await db.tasks.set_status("t1", "queued")
    new = await db.tasks.claim({}, "p2", LEASE)
    assert new is not None and new["instance_id"] != old["instance_id"]
    with pytest.raises(Conflict, match="stale"):
        await db.tasks.complete("t1", old["instance_id"])
    with pytest.raises(Conflict, match="stale"):
        await db.tasks.reset("t1", old["instance_id"], max_failures=10)
    task = await db.tasks.get("t1")
    assert (task["status"], task["pilot_id"], task["failures"]) == ("processing", "p2", 0)
    assert (await db.tasks.complete("t1", new["instance_id"]))["status"] == "complete"


async def test_reset_counts_a_failure_and_grows_requirements(db: Database) -> None:
    reqs = {"cpu": 1, "memory": 2.0, "disk": 10.0}
    task = await processing_task(db, "t1", requirements=reqs)
    measured = {"cpu": 2.5, "memory": 3.0, "disk": 5.0, "time": 2.0}
    # time was never requested: a measurement does not invent a limit for it
    assert grown_requirements(reqs, measured) == {"cpu": 2, "memory": 4.5}
    doc = await db.tasks.reset(
        "t1", task["instance_id"], max_failures=10, time_used=1800, resources=measured,
        site="SiteB", reason="out of memory", reason_class="payload",
    )
    assert doc["status"] == "waiting"
    assert doc["failures"] == 1
    assert (doc["reason"], doc["reason_class"], doc["site"]) == (
        "out of memory", "payload", "SiteB"
    )
    assert doc["walltime_err"] == 0.5 and doc["walltime_err_n"] == 1
    assert doc["requirements"] == {"cpu": 2, "memory": 4.5, "disk": 10.0}
    for key in ("pilot_id", "instance_id", "lease_expires"):
        assert not doc.get(key)
    assert await db.tasks.get("t1") == doc

    # a second failure: lower measurements never lower the requirements; defaults for reason
    await db.tasks.set_status("t1", "queued")
    again = await db.tasks.claim({}, "p1", LEASE)
    assert again is not None
    doc = await db.tasks.reset(
        "t1", again["instance_id"], max_failures=10, time_used=3600,
        resources={"cpu": 1, "memory": 1.0, "time": 0.5},
    )
    assert doc["failures"] == 2
    assert (doc["reason"], doc["reason_class"]) == ("", "unknown")
    assert doc["walltime_err"] == 1.5 and doc["walltime_err_n"] == 2
    assert doc["requirements"] == {"cpu": 2, "memory": 4.5, "disk": 10.0}


async def test_reset_fails_after_max_failures(db: Database) -> None:
    await db.tasks.create(task_doc("t1"))
    for n in (1, 2, 3):
        task = await db.tasks.claim({}, "p1", LEASE)
        assert task is not None
        doc_instance = task["instance_id"]
        doc = await db.tasks.reset("t1", task["instance_id"], max_failures=3, reason=f"r{n}")
        assert doc["failures"] == n
        if n < 3:
            assert doc["status"] == "waiting"
            await db.tasks.set_status("t1", "queued")
    assert doc["status"] == "failed" and doc["reason"] == "r3"
    assert await db.tasks.claim({}, "p1", LEASE) is None
    with pytest.raises(BadTransition, match="failed -> failed"):
        await db.tasks.reset("t1", doc_instance, max_failures=3)
    assert (await db.tasks.get("t1"))["failures"] == 3


async def test_reset_with_fail_fails_at_once(db: Database) -> None:
    task = await processing_task(db, "t1")
    doc = await db.tasks.reset(
        "t1", task["instance_id"], max_failures=10, fail=True, reason="bad config",
        reason_class="payload",
    )
    assert (doc["status"], doc["failures"], doc["reason"]) == ("failed", 1, "bad config")
    # a failed task can be reset to waiting by an operator, not completed
    with pytest.raises(BadTransition, match="failed -> complete"):
        await db.tasks.complete("t1", task["instance_id"])
    assert (await db.tasks.set_status("t1", "waiting"))["status"] == "waiting"


async def test_reset_wrong_state_stale_and_missing(db: Database) -> None:
    task = await processing_task(db, "t1")
    with pytest.raises(Conflict, match="stale"):
        await db.tasks.reset("t1", "f" * 32, max_failures=10)
    with pytest.raises(NotFound):
        await db.tasks.reset("nope", task["instance_id"], max_failures=10)
    await db.tasks.create(task_doc("t2", job_index=1))
    with pytest.raises(BadTransition, match="queued -> waiting"):
        await db.tasks.reset("t2", task["instance_id"], max_failures=10)
    with pytest.raises(BadTransition, match="queued -> failed"):
        await db.tasks.reset("t2", task["instance_id"], max_failures=10, fail=True)
    t2 = await db.tasks.get("t2")
    assert (t2["status"], t2["failures"]) == ("queued", 0)
    assert (await db.tasks.get("t1"))["failures"] == 0


async def test_requeue_is_an_eviction_and_complete_clears_the_reason(db: Database) -> None:
    task = await processing_task(db, "t1", requirements={"cpu": 1, "memory": 2.0})
    doc = await db.tasks.requeue("t1", task["instance_id"], "pilot stopped by SIGTERM",
                                 site="SiteB")
    assert (doc["status"], doc["failures"], doc["evictions"]) == ("waiting", 0, 1)
    assert (doc["reason"], doc["reason_class"], doc["site"]) == (
        "pilot stopped by SIGTERM", "evicted", "SiteB")
    assert doc["requirements"] == {"cpu": 1, "memory": 2.0}
    for key in ("pilot_id", "instance_id", "lease_expires"):
        assert not doc.get(key)
    await db.tasks.set_status("t1", "queued")
    assert await db.tasks.claim({}, "p1", LEASE) is not None
    with pytest.raises(Conflict, match="stale"):  # fenced like every report
        await db.tasks.requeue("t1", task["instance_id"], "late")
    again = await db.tasks.get("t1")
    done = await db.tasks.complete("t1", again["instance_id"])
    assert done["status"] == "complete" and "reason" not in done and "reason_class" not in done
    with pytest.raises(BadTransition, match="complete -> waiting"):
        await db.tasks.requeue("t1", again["instance_id"], "too late")


async def test_held_by_and_release_pilot(db: Database) -> None:
    await db.tasks.insert_missing(queued({f"t{i}": {} for i in range(5)}))
    for pilot in ("p1", "p1", "p2", "p1"):
        assert await db.tasks.claim({}, pilot, LEASE) is not None
    assert sorted(await db.tasks.held_by("p1")) == ["t0", "t1", "t3"]
    assert await db.tasks.held_by("p2") == ["t2"]
    assert await db.tasks.held_by("p9") == []

    assert await db.tasks.release_pilot("p1") == 3
    assert await db.tasks.held_by("p1") == []
    for tid in ("t0", "t1", "t3"):
        task = await db.tasks.get(tid)
        assert (task["status"], task["evictions"], task["failures"]) == ("waiting", 1, 0)
        assert not task.get("pilot_id") and not task.get("instance_id")
    assert (await db.tasks.get("t2"))["status"] == "processing"
    assert await db.tasks.release_pilot("p1") == 0
    assert await db.tasks.counts_by_status("d1") == {
        "waiting": 3, "processing": 1, "queued": 1
    }


async def test_renew_and_expire_leases(db: Database) -> None:
    await db.tasks.insert_missing(queued({f"t{i}": {} for i in range(4)}))
    past = time.time() - 1000
    a = await db.tasks.claim({}, "p1", 60, now=past)  # expired long ago
    b = await db.tasks.claim({}, "p2", 60, now=past)  # expired, but p2 heartbeats
    c = await db.tasks.claim({}, "p3", LEASE)  # fresh
    assert a and b and c
    assert await db.tasks.renew_leases("p2", LEASE) == 1
    renewed = await db.tasks.get(b["task_id"])
    assert renewed["instance_id"] == b["instance_id"]
    assert abs(parse(renewed["lease_expires"]) - time.time() - LEASE) < 60
    assert await db.tasks.renew_leases("p9", LEASE) == 0

    # an explicit clock: nothing has expired before the oldest lease ends
    found: dict[str, int] = {}
    assert await db.tasks.expire_leases(now=past + 59, by_dataset=found) == 0
    assert found == {}
    assert await db.tasks.expire_leases(by_dataset=found) == 1
    assert found == {"d1": 1}  # for the scheduler's events, per dataset
    expired = await db.tasks.get(a["task_id"])
    assert (expired["status"], expired["evictions"], expired["failures"]) == ("waiting", 1, 0)
    assert not expired.get("pilot_id") and not expired.get("lease_expires")
    assert await db.tasks.held_by("p1") == []
    assert await db.tasks.expire_leases() == 0
    assert await db.tasks.expire_leases(now=time.time() + 2 * LEASE) == 2
    assert await db.tasks.counts_by_status("d1") == {"waiting": 3, "queued": 1}
    # a renewal never resurrects a task that left processing
    assert await db.tasks.renew_leases("p1", LEASE) == 0
    with pytest.raises(Conflict, match="waiting -> complete"):
        await db.tasks.complete(a["task_id"], a["instance_id"])

"""The repository contract: every public repository operation, run against every backend
(see ``conftest.store``: SQLite, the mongoeco wire-protocol server, and a real MongoDB when
``ICEPROD_TEST_MONGODB_URL`` is set).

Tests assert on what a caller sees (returned documents, counts, raised errors), never on how a
backend stores things. Data sets are tens of documents at most: mongoeco inserts slowly.

``COVERED`` at the end maps every public coroutine method of every repository class to the
tests exercising it; ``test_every_repository_method_has_a_contract_test`` fails when a method
is added (or removed) without updating it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest

from iceprod.common.errors import BadTransition, Conflict, DuplicateKey, Invalid, NotFound
from iceprod.common.ids import is_id
from iceprod.common.timeutil import iso, parse
from iceprod.db import REPOSITORIES, Database, all_specs
from iceprod.db import tasks as tasks_module
from iceprod.db.auths import allows
from iceprod.db.base import MAX_PAGE, Repository, encode_cursor
from iceprod.db.logs import CHUNK_CHARS
from iceprod.db.store import Doc, Store
from iceprod.db.tasks import TaskSelection, grown_requirements

LEASE = 600.0
NOW = 1_700_000_000.0


@pytest.fixture
async def db(store: Store) -> Database:
    await store.ensure_indexes(all_specs())
    return Database(store)


# -- document builders ---------------------------------------------------------------------


def dataset_doc(dataset_id: str, number: int, **extra: Any) -> Doc:
    return {
        "dataset_id": dataset_id,
        "dataset": number,
        "status": "processing",
        "jobs_submitted": 2,
        "tasks_per_job": 3,
        "username": "alice",
        "group": "users",
        **extra,
    }


def job_doc(dataset_id: str, job_index: int, status: str = "processing", **extra: Any) -> Doc:
    return {
        "job_id": f"{dataset_id}-j{job_index}",
        "dataset_id": dataset_id,
        "job_index": job_index,
        "status": status,
        **extra,
    }


def task_doc(
    task_id: str,
    *,
    dataset_id: str = "d1",
    job_index: int = 0,
    task_index: int = 0,
    name: str = "main",
    status: str = "queued",
    priority: float | None = 0.0,
    requirements: Doc | None = None,
    depends: Sequence[str] = (),
    **extra: Any,
) -> Doc:
    return {
        "task_id": task_id,
        "dataset_id": dataset_id,
        "job_id": f"{dataset_id}-j{job_index}",
        "job_index": job_index,
        "task_index": task_index,
        "name": name,
        "status": status,
        "priority": priority,
        "requirements": dict(requirements or {}),
        "depends": list(depends),
        "failures": 0,
        "evictions": 0,
        **extra,
    }


def queued(specs: dict[str, Doc]) -> list[Doc]:
    """Queued tasks from ``{task_id: requirements}``, one job each, all in dataset d1."""
    return [
        task_doc(tid, job_index=i, requirements=reqs) for i, (tid, reqs) in enumerate(specs.items())
    ]


async def claim_all(db: Database, resources: Doc, pilot_id: str = "p1") -> list[str]:
    """Claim until nothing fits; the task ids in claim order."""
    got = []
    while (task := await db.tasks.claim(resources, pilot_id, LEASE)) is not None:
        got.append(task["task_id"])
        assert len(got) <= 50, "claim never ran dry"
    return got


async def processing_task(db: Database, task_id: str = "t1", **extra: Any) -> Doc:
    """A task just claimed by pilot p1 (the only queued task)."""
    await db.tasks.create(task_doc(task_id, **extra))
    task = await db.tasks.claim({}, "p1", LEASE)
    assert task is not None and task["task_id"] == task_id
    return task


# -- base.Repository: get, find, page, transition, status_counts ----------------------------


async def test_get_find_and_projection(db: Database) -> None:
    grid = {"grid_id": "g1", "host": "submit.example.org", "queues": {"q": {"max": 5}}}
    assert await db.grids.create(grid) == grid
    assert await db.grids.get("g1") == grid
    assert await db.grids.find("g1") == grid
    assert await db.grids.get("g1", keys=["host"]) == {"grid_id": "g1", "host": grid["host"]}
    assert await db.grids.find("nope") is None
    with pytest.raises(NotFound, match="grid not found"):
        await db.grids.get("nope")
    await db.datasets.create(dataset_doc("d1", 1))
    with pytest.raises(NotFound, match="dataset not found"):
        await db.datasets.get("d2")
    assert (await db.datasets.get("d1", keys=["dataset"])) == {"dataset_id": "d1", "dataset": 1}


async def test_get_in_scopes_by_dataset(db: Database) -> None:
    await db.logs.create({"log_id": "l1", "dataset_id": "d1", "task_id": "t1",
                          "name": "stdout", "data": "x", "timestamp": "2026-01-01T00:00:00.000000Z"})
    assert (await db.logs.get_in("l1", {"dataset_id": "d1"}, keys=["name"])) == \
        {"log_id": "l1", "name": "stdout"}
    for scope in ({"dataset_id": "d2"}, {"dataset_id": "d1", "task_id": "t2"}):
        with pytest.raises(NotFound, match="log not found"):
            await db.logs.get_in("l1", scope, keys=["name"])


async def test_page_visits_every_doc_exactly_once(db: Database) -> None:
    hosts = ["a", "b", "c"]
    grids = [
        {"grid_id": f"g{i:02d}", "host": hosts[i % 3], "n": i} for i in range(23)
    ]
    await db.grids.coll.insert_many(list(reversed(grids)))
    all_ids = [g["grid_id"] for g in grids]

    async def walk(filter: Doc, limit: int | None) -> list[list[str]]:
        pages, after = [], None
        while True:
            page = await db.grids.page(filter, limit=limit, after=after)
            pages.append([d["grid_id"] for d in page.docs])
            if page.next_after is None:
                return pages
            assert page.docs and page.next_after == encode_cursor(page.docs[-1]["grid_id"])
            after = page.next_after
            assert len(pages) < 30

    pages = await walk({}, 7)
    assert [len(p) for p in pages] == [7, 7, 7, 2]
    assert [i for p in pages for i in p] == all_ids
    # a limit dividing the total exactly ends without an empty trailing page
    pages = await walk({"host": "a"}, 4)
    assert [len(p) for p in pages] == [4, 4]
    assert [i for p in pages for i in p] == [g["grid_id"] for g in grids if g["host"] == "a"]
    assert await walk({}, None) == [all_ids]
    assert await walk({}, MAX_PAGE * 10) == [all_ids]
    assert await walk({"host": "zzz"}, 5) == [[]]

    page = await db.grids.page({"host": "b"}, keys=["n"], limit=2)
    assert page.docs == [{"grid_id": "g01", "n": 1}, {"grid_id": "g04", "n": 4}]
    after_last = await db.grids.page({}, after=encode_cursor("g22"))
    assert after_last.docs == [] and after_last.next_after is None
    # a cursor need not name an existing document
    assert [d["grid_id"] for d in (await db.grids.page({}, after=encode_cursor("g20a"))).docs] == [
        "g21", "g22"
    ]


@pytest.mark.parametrize("cursor", ["%%%", "not base64!", "_w", "A", encode_cursor("x") + "*"])
async def test_page_bad_cursor_is_invalid(db: Database, cursor: str) -> None:
    await db.grids.create({"grid_id": "g1", "host": "h"})
    with pytest.raises(Invalid, match="after"):
        await db.grids.page({}, limit=2, after=cursor)


async def test_transition_follows_the_state_machine(db: Database) -> None:
    await db.tasks.create(task_doc("t1", status="waiting"))
    doc = await db.tasks.transition({"task_id": "t1"}, "queued", {"$set": {"note": "x"}})
    assert doc["status"] == "queued" and doc["note"] == "x"
    changed = doc["status_changed"]
    assert abs(parse(changed) - time.time()) < 60

    # the same state again: a no-op returning the document unchanged
    again = await db.tasks.transition({"task_id": "t1"}, "queued", {"$set": {"note": "y"}})
    assert again == doc
    assert (await db.tasks.get("t1"))["note"] == "x"

    await db.tasks.coll.update_one({"task_id": "t1"}, {"$set": {"status": "complete"}})
    with pytest.raises(BadTransition, match="bad transition: complete -> queued") as err:
        await db.tasks.transition({"task_id": "t1"}, "queued")
    assert (err.value.old, err.value.new) == ("complete", "queued")
    assert isinstance(err.value, Conflict)
    assert (await db.tasks.get("t1"))["status"] == "complete"

    with pytest.raises(NotFound, match="task not found"):
        await db.tasks.transition({"task_id": "missing"}, "queued")
    # the query narrows the match: a wrong dataset is "not found", not a transition
    with pytest.raises(NotFound):
        await db.tasks.transition({"task_id": "t1", "dataset_id": "other"}, "waiting")

    # the pilot machine, which has no set_status of its own
    await db.pilots.create({"pilot_id": "p1", "status": "submitted", "grid_id": "g"})
    assert (await db.pilots.transition({"pilot_id": "p1"}, "running"))["status"] == "running"
    assert (await db.pilots.transition({"pilot_id": "p1"}, "finished"))["status"] == "finished"
    with pytest.raises(BadTransition, match="finished -> running"):
        await db.pilots.transition({"pilot_id": "p1"}, "running")


async def test_status_counts(db: Database) -> None:
    await db.pilots.coll.insert_many(
        [
            {"pilot_id": "p1", "grid_id": "g1", "status": "running"},
            {"pilot_id": "p2", "grid_id": "g1", "status": "running"},
            {"pilot_id": "p3", "grid_id": "g2", "status": "lost"},
            {"pilot_id": "p4", "grid_id": "g2", "status": "running"},
            {"pilot_id": "p5", "grid_id": "g2"},
        ]
    )
    assert await db.pilots.status_counts() == {"running": 3, "lost": 1}
    assert await db.pilots.status_counts({"grid_id": "g2"}) == {"running": 1, "lost": 1}
    assert await db.pilots.status_counts({"grid_id": "none"}) == {}


# -- datasets ------------------------------------------------------------------------------


async def test_datasets_create_and_set_fields(db: Database) -> None:
    doc = dataset_doc("d1", 20001, description="first")
    assert await db.datasets.create(doc) == doc
    assert await db.datasets.get("d1") == doc
    with pytest.raises(DuplicateKey):
        await db.datasets.create(dataset_doc("d2", 20001))
    with pytest.raises(DuplicateKey):
        await db.datasets.create(dataset_doc("d1", 20002))
    assert await db.datasets.find("d2") is None

    updated = await db.datasets.set_fields("d1", {"description": "second", "priority": 2.5})
    assert updated == {**doc, "description": "second", "priority": 2.5}
    assert await db.datasets.get("d1") == updated
    with pytest.raises(NotFound, match="dataset not found"):
        await db.datasets.set_fields("nope", {"description": "x"})


async def test_datasets_set_status(db: Database) -> None:
    await db.datasets.create(dataset_doc("d1", 1))
    assert (await db.datasets.set_status("d1", "suspended"))["status"] == "suspended"
    with pytest.raises(BadTransition, match="suspended -> complete"):
        await db.datasets.set_status("d1", "complete")
    same = await db.datasets.set_status("d1", "suspended")
    assert same["status"] == "suspended"
    assert (await db.datasets.set_status("d1", "processing"))["status"] == "processing"
    assert (await db.datasets.set_status("d1", "errors"))["status"] == "errors"
    assert (await db.datasets.set_status("d1", "processing"))["status"] == "processing"
    assert (await db.datasets.set_status("d1", "complete"))["status"] == "complete"
    for new in ("processing", "suspended", "errors"):
        with pytest.raises(BadTransition, match=f"complete -> {new}"):
            await db.datasets.set_status("d1", new)
    with pytest.raises(NotFound):
        await db.datasets.set_status("nope", "suspended")


async def test_datasets_grow_jobs_only_grows(db: Database) -> None:
    await db.datasets.create(dataset_doc("d1", 1, jobs_submitted=2, tasks_per_job=3))
    grown = await db.datasets.grow_jobs("d1", 5)
    assert (grown["jobs_submitted"], grown["tasks_submitted"]) == (5, 15)
    assert (await db.datasets.get("d1"))["jobs_submitted"] == 5
    same = await db.datasets.grow_jobs("d1", 5)
    assert (same["jobs_submitted"], same["tasks_submitted"]) == (5, 15)
    with pytest.raises(Invalid, match="jobs_submitted: may only grow"):
        await db.datasets.grow_jobs("d1", 4)
    assert (await db.datasets.get("d1"))["jobs_submitted"] == 5

    await db.datasets.create(dataset_doc("d2", 2, jobs_immutable=True))
    with pytest.raises(Conflict, match="jobs_immutable"):
        await db.datasets.grow_jobs("d2", 10)
    assert (await db.datasets.get("d2"))["jobs_submitted"] == 2
    with pytest.raises(NotFound):
        await db.datasets.grow_jobs("nope", 10)


async def test_datasets_ids_of_user_and_a_claim_limited_to_them(db: Database) -> None:
    await db.datasets.coll.insert_many([dataset_doc("d1", 1), dataset_doc("d2", 2, username="ops"),
                                        dataset_doc("d3", 3, username="ops")])
    assert sorted(await db.datasets.ids_of_user("ops")) == ["d2", "d3"]
    assert await db.datasets.ids_of_user("nobody") == []
    await db.tasks.insert_missing([task_doc("a", dataset_id="d1", priority=9.0),
                                   task_doc("b", dataset_id="d2"), task_doc("c", dataset_id="d3")])
    # a single-user pilot: only the operator's datasets, however high the others' priority
    only = await db.datasets.ids_of_user("ops")
    got = []
    while (task := await db.tasks.claim({}, "p1", LEASE, dataset_ids=only)) is not None:
        got.append(task["task_id"])
    assert sorted(got) == ["b", "c"]
    assert await db.tasks.claim({}, "p1", LEASE, dataset_ids=[]) is None
    assert await claim_all(db, {}) == ["a"]


async def test_datasets_ids_by_status(db: Database) -> None:
    await db.datasets.coll.insert_many(
        [
            dataset_doc("d3", 3, status="suspended"),
            dataset_doc("d1", 1),
            dataset_doc("d4", 4, status="complete"),
            dataset_doc("d2", 2),
            {k: v for k, v in dataset_doc("d5", 5).items() if k != "status"},
        ]
    )
    assert await db.datasets.ids_by_status() == {
        "processing": ["d1", "d2", "d5"],
        "suspended": ["d3"],
        "complete": ["d4"],
    }
    assert await db.datasets.ids_by_status(["d4", "d2", "nope"]) == {
        "processing": ["d2"], "complete": ["d4"]
    }
    assert await db.datasets.ids_by_status([]) == {}


# -- config ----------------------------------------------------------------------------------


async def test_config_put_and_get(db: Database) -> None:
    with pytest.raises(NotFound, match="config not found"):
        await db.config.get_config("d1")
    first = {"version": 3.2, "tasks": [{"name": "gen", "trays": [{"modules": []}]}]}
    await db.config.put("d1", first)
    assert await db.config.get_config("d1") == first
    stored = await db.config.get("d1")
    assert set(stored) == {"dataset_id", "config", "updated"}
    second = {
        "version": 3.2, "tasks": [],
        "options": {"a.b": 1, "empty": {}, "text": "héllo ✓", "big": 2**53 + 1,
                    "null": None, "list": [1, {"k": []}], "flag": False},
    }
    await db.config.put("d1", second)
    assert await db.config.get_config("d1") == second
    # a "$" key is refused on both backends (PyMongo reads {"$ref", "$id"} back as a DBRef)
    with pytest.raises(Invalid, match=r"^config\.options\.\$ref: a key must not start"):
        await db.config.put("d1", {**second, "options": {"$ref": "x", "$id": 1}})
    assert await db.config.get_config("d1") == second
    assert await db.config.coll.count({}) == 1

    # concurrent first puts: one document, holding one of the configs
    configs = [{"version": 3.2, "n": i} for i in range(5)]
    await asyncio.gather(*(db.config.put("d2", c) for c in configs))
    assert await db.config.get_config("d2") in configs
    assert await db.config.coll.count({"dataset_id": "d2"}) == 1


# -- jobs ----------------------------------------------------------------------------------


async def test_jobs_create_and_insert_missing_is_idempotent(db: Database) -> None:
    doc = job_doc("d1", 0)
    assert await db.jobs.create(doc) == doc
    with pytest.raises(DuplicateKey):
        await db.jobs.create({**job_doc("d1", 0), "job_id": "other"})
    batch = [job_doc("d1", i) for i in range(6)]
    assert await db.jobs.insert_missing(batch) == 5
    assert await db.jobs.insert_missing(batch) == 0
    assert await db.jobs.coll.count({}) == 6
    # a crash re-run with fresh ids for the same keys adds nothing either
    rerun = [{**job_doc("d1", i), "job_id": f"new{i}"} for i in range(8)]
    assert await db.jobs.insert_missing(rerun) == 2
    assert await db.jobs.insert_missing(rerun) == 0
    assert await db.jobs.coll.count({"dataset_id": "d1"}) == 8
    assert await db.jobs.insert_missing([]) == 0


async def test_jobs_set_status_and_patch(db: Database) -> None:
    await db.jobs.insert_missing([job_doc("d1", 0), job_doc("d1", 1)])
    assert (await db.jobs.set_status("d1-j0", "suspended"))["status"] == "suspended"
    assert (await db.jobs.set_status("d1-j0", "suspended"))["status"] == "suspended"
    with pytest.raises(BadTransition, match="suspended -> errors"):
        await db.jobs.set_status("d1-j0", "errors")
    with pytest.raises(NotFound, match="job not found"):
        await db.jobs.set_status("d1-j0", "processing", dataset_id="d2")
    done = await db.jobs.set_status("d1-j0", "processing", dataset_id="d1")
    assert done["status"] == "processing"
    with pytest.raises(NotFound):
        await db.jobs.set_status("nope", "complete")

    patched = await db.jobs.patch("d1-j1", {"status": "complete", "note": "ok"})
    assert (patched["status"], patched["note"]) == ("complete", "ok")
    assert (await db.jobs.patch("d1-j1", {"note": "again"}))["note"] == "again"
    assert await db.jobs.patch("d1-j1", {}) == await db.jobs.get("d1-j1")
    with pytest.raises(BadTransition, match="complete -> processing"):
        await db.jobs.patch("d1-j1", {"status": "processing", "note": "refused"})
    assert (await db.jobs.get("d1-j1"))["note"] == "again"
    with pytest.raises(NotFound):
        await db.jobs.patch("nope", {"note": "x"})
    with pytest.raises(NotFound):
        await db.jobs.patch("nope", {})


async def test_jobs_counts_and_ids_by_status(db: Database) -> None:
    statuses = ["complete", "processing", "errors", "processing", "complete", "suspended"]
    await db.jobs.insert_missing(
        [job_doc("d1", i, s) for i, s in reversed(list(enumerate(statuses)))]
        + [job_doc("d2", 0, "errors")]
    )
    assert await db.jobs.counts_by_status("d1") == {
        "complete": 2, "processing": 2, "errors": 1, "suspended": 1
    }
    assert await db.jobs.counts_by_status("none") == {}
    ids = await db.jobs.ids_by_status("d1")
    assert ids == {
        "complete": ["d1-j0", "d1-j4"],
        "processing": ["d1-j1", "d1-j3"],
        "errors": ["d1-j2"],
        "suspended": ["d1-j5"],
    }
    assert await db.jobs.ids_by_status("d2") == {"errors": ["d2-j0"]}
    assert await db.jobs.ids_by_status("none") == {}


# -- tasks: creation, status and patches -----------------------------------------------------


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


# -- tasks: the claim ------------------------------------------------------------------------


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


# -- tasks: complete, reset, fail (fenced) -----------------------------------------------------


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


# -- tasks: pilots and leases ----------------------------------------------------------------


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
    assert await db.tasks.expire_leases(now=past + 59) == 0
    assert await db.tasks.expire_leases() == 1
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


# -- tasks: queueing ---------------------------------------------------------------------------


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


# -- tasks: operators' bulk actions -------------------------------------------------------------


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


# -- tasks: reading ----------------------------------------------------------------------------


async def test_ids_grouped_by_status(db: Database) -> None:
    await db.jobs.insert_missing([
        {"job_id": "j2", "dataset_id": "d1", "job_index": 2, "status": "complete"},
        {"job_id": "j0", "dataset_id": "d1", "job_index": 0, "status": "complete"},
        {"job_id": "j1", "dataset_id": "d1", "job_index": 1},
        {"job_id": "j9", "dataset_id": "d2", "job_index": 0, "status": "errors"},
    ])
    got = await db.jobs.ids_grouped_by_status({"dataset_id": "d1"}, [("job_index", 1)])
    # in sort order within a status; no status counts as the machine's first (processing)
    assert got == {"complete": ["j0", "j2"], "processing": ["j1"]}
    got = await db.jobs.ids_grouped_by_status({}, [("job_index", -1)])
    assert got["complete"] == ["j2", "j0"] and got["errors"] == ["j9"]


async def test_jobs_any_with_status(db: Database) -> None:
    await db.jobs.insert_missing([
        {"job_id": "j0", "dataset_id": "d1", "job_index": 0, "status": "complete"},
        {"job_id": "j1", "dataset_id": "d1", "job_index": 1, "status": "processing"},
        {"job_id": "j2", "dataset_id": "d2", "job_index": 0, "status": "errors"},
    ])
    assert await db.jobs.any_with_status("d1", "processing")
    assert not await db.jobs.any_with_status("d2", "processing")
    assert await db.jobs.any_with_status("d2", "errors")
    assert not await db.jobs.any_with_status("nope", "complete")


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
    assert list(stats) == ["gen", "sim", "fin"]
    assert stats["sim"] == {
        "count": 2, "total_hrs": 4.0, "mean_hrs": 2.0, "min_hrs": 1.0, "max_hrs": 3.0,
        "error_hrs": 1.0, "error_count": 3, "efficiency": pytest.approx(0.8),
    }
    assert stats["gen"] == {
        "count": 0, "total_hrs": 0.0, "mean_hrs": None, "min_hrs": None, "max_hrs": None,
        "error_hrs": 2.0, "error_count": 3, "efficiency": 0.0,
    }
    assert stats["fin"] == {
        "count": 0, "total_hrs": 0.0, "mean_hrs": None, "min_hrs": None, "max_hrs": None,
        "error_hrs": 0.0, "error_count": 0, "efficiency": None,
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
            "count": 1, "total_hrs": 1.5, "mean_hrs": 1.5, "min_hrs": 1.5, "max_hrs": 1.5,
            "error_hrs": 0.5, "error_count": 1, "efficiency": pytest.approx(0.75),
        }
    }


# -- logs, task_stats, files ---------------------------------------------------------------------


def log_doc(log_id: str, name: str, second: int, task_id: str = "t1", dataset_id: str = "d1"
            ) -> Doc:
    return {
        "log_id": log_id,
        "dataset_id": dataset_id,
        "task_id": task_id,
        "name": name,
        "timestamp": iso(NOW + second),
        "data": f"{name} at {second}",
    }


async def test_logs_for_task(db: Database) -> None:
    logs = [
        log_doc("l1", "stdout", 1),
        log_doc("l2", "stderr", 2),
        log_doc("l3", "stdout", 3),
        log_doc("l4", "stdlog", 4),
        log_doc("l5", "stderr", 5),
        log_doc("x1", "stdout", 9, task_id="t2"),
        log_doc("x2", "stdout", 9, dataset_id="d2"),
    ]
    for log in reversed(logs):
        assert await db.logs.create(log) == log

    async def ids(num: int | None, group: bool, desc: bool) -> list[str]:
        return [d["log_id"] for d in await db.logs.for_task("d1", "t1", num, group, desc)]

    assert await ids(None, False, False) == ["l1", "l2", "l3", "l4", "l5"]
    assert await ids(None, False, True) == ["l5", "l4", "l3", "l2", "l1"]
    assert await ids(2, False, False) == ["l1", "l2"]
    assert await ids(2, False, True) == ["l5", "l4"]
    assert await ids(None, True, True) == ["l5", "l4", "l3"]  # newest of each name
    assert await ids(None, True, False) == ["l3", "l4", "l5"]
    assert await ids(2, True, True) == ["l5", "l4"]
    assert await ids(1, True, False) == ["l3"]

    full = await db.logs.for_task("d1", "t1", 1, False, True)
    assert full == [logs[4]]
    slim = await db.logs.for_task("d1", "t1", 1, False, True, keys=["name"])
    assert slim == [{"log_id": "l5", "name": "stderr"}]
    assert await db.logs.for_task("d1", "nope", None, False, False) == []
    assert await db.logs.for_task("d9", "t1", None, True, True) == []


async def test_logs_are_stored_in_chunks_and_read_whole(db: Database) -> None:
    text = "é" * (CHUNK_CHARS + 5) + "end"  # two chunks, the first 2 MiB of UTF-8
    big = {**log_doc("l1", "stdout", 1), "data": text}
    empty = {**log_doc("l2", "stderr", 2), "data": ""}
    for log in (big, empty):
        assert await db.logs.create(log) == log
    assert await db.logs.chunks.count({"log_id": "l1"}) == 2
    assert await db.logs.chunks.count({"log_id": "l2"}) == 0
    assert await db.logs.get("l1") == big
    assert await db.logs.find("l2") == empty
    assert await db.logs.find("nope") is None
    assert await db.logs.get_in("l1", {"dataset_id": "d1"}, keys=["data"]) == \
        {"log_id": "l1", "data": text}
    assert await db.logs.get("l1", keys=["name", "timestamp"]) == \
        {"log_id": "l1", "name": "stdout", "timestamp": big["timestamp"]}
    assert await db.logs.for_task("d1", "t1", None, False, False) == [big, empty]
    # grouping needs the name even when keys leave it out, and does not show it
    assert await db.logs.for_task("d1", "t1", None, True, True, keys=["data"]) == \
        [{"log_id": "l2", "data": ""}, {"log_id": "l1", "data": text}]
    page = await db.logs.page({"task_id": "t1"}, keys=["data"], limit=1)
    assert page.docs == [{"log_id": "l1", "data": text}] and page.next_after


async def test_logs_answer_inline_data_of_logs_written_before_chunking(db: Database) -> None:
    legacy = log_doc("l0", "stdout", 0)
    await db.logs.coll.insert_one(legacy)
    assert await db.logs.get("l0") == legacy
    assert await db.logs.for_task("d1", "t1", None, False, False, keys=["data"]) == \
        [{"log_id": "l0", "data": legacy["data"]}]


async def test_logs_failed_write_leaves_nothing(db: Database) -> None:
    first = {**log_doc("l1", "stdout", 1), "data": ""}
    await db.logs.create(first)
    # same id, now with text: the chunks go in, the metadata is refused, the chunks go again
    with pytest.raises(DuplicateKey):
        await db.logs.create({**first, "data": "x" * 10})
    assert await db.logs.chunks.count({}) == 0
    assert await db.logs.get("l1") == first
    # a refused log writes no chunk at all
    with pytest.raises(Invalid, match=r"^name: a string must not hold a lone surrogate"):
        await db.logs.create({**log_doc("l2", "\ud800", 2)})
    assert await db.logs.chunks.count({}) == 0
    assert await db.logs.find("l2") is None


async def test_logs_delete_for_task_and_dataset_remove_the_chunks(db: Database) -> None:
    for log in (log_doc("a", "stdout", 1), log_doc("b", "stdout", 2, task_id="t2"),
                log_doc("c", "stdout", 3, dataset_id="d2")):
        await db.logs.create({**log, "data": "x" * (CHUNK_CHARS + 1)})
    assert await db.logs.chunks.count({}) == 6
    assert await db.logs.delete_for_task("d1", "t1") == 1
    assert await db.logs.find("a") is None and await db.logs.find("b") is not None
    assert await db.logs.chunks.count({"log_id": "a"}) == 0
    assert await db.logs.delete_for_dataset("d1") == 1
    assert await db.logs.chunks.count({"dataset_id": "d1"}) == 0
    assert await db.logs.get("c", keys=["data"]) == {"log_id": "c", "data": "x" * (CHUNK_CHARS + 1)}
    assert await db.logs.chunks.count({}) == 2


@pytest.mark.timeout(600)  # mongoeco stores 48 MiB in about a minute on an idle machine
async def test_logs_of_16_mib_round_trip_and_list_together(db: Database) -> None:
    """The size ICEPROD_MAX_LOG_BYTES allows by default, three times on one task: no
    document comes near MongoDB's 16 MiB limit, and the listing answers all three."""
    size = 16 * 1024 * 1024
    logs = [{**log_doc(f"l{i}", f"out{i}", i), "data": chr(ord("a") + i) * size}
            for i in range(3)]
    for log in logs:
        await db.logs.create(log)
    assert await db.logs.get("l0") == logs[0]
    listed = await db.logs.for_task("d1", "t1", None, False, False)
    assert [d["log_id"] for d in listed] == ["l0", "l1", "l2"]
    assert all(d == log for d, log in zip(listed, logs, strict=True))


async def test_task_stats_latest(db: Database) -> None:
    assert await db.task_stats.latest("d1", "t1") == []
    records = [
        {"task_stat_id": f"s{i}", "dataset_id": "d1", "task_id": "t1",
         "create_date": iso(NOW + sec), "stats": {"cpu": i}}
        for i, sec in enumerate([10, 30, 20])
    ]
    for record in records:
        assert await db.task_stats.create(record) == record
    await db.task_stats.create(
        {"task_stat_id": "o", "dataset_id": "d1", "task_id": "t2", "create_date": iso(NOW + 99)}
    )
    assert await db.task_stats.latest("d1", "t1") == [records[1]]
    assert await db.task_stats.latest("d1", "t1", keys=["stats"]) == [
        {"task_stat_id": "s1", "stats": {"cpu": 1}}
    ]
    assert await db.task_stats.latest("d2", "t1") == []


async def test_files_delete_for_task(db: Database) -> None:
    files = [
        {"file_id": "f1", "dataset_id": "d1", "task_id": "t1", "remote": "gsiftp://a"},
        {"file_id": "f2", "dataset_id": "d1", "task_id": "t1", "remote": "gsiftp://b"},
        {"file_id": "f3", "dataset_id": "d1", "task_id": "t2", "remote": "gsiftp://c"},
        {"file_id": "f4", "dataset_id": "d2", "task_id": "t1", "remote": "gsiftp://d"},
    ]
    for f in files:
        assert await db.files.create(f) == f
    assert await db.files.delete_for_task("d1", "t1") == 2
    assert await db.files.delete_for_task("d1", "t1") == 0
    remaining = await db.files.page({})
    assert remaining.docs == files[2:]


# -- auths ---------------------------------------------------------------------------------------


async def test_auths_set_rules_and_readable(db: Database) -> None:
    created = await db.auths.set_rules("d1", {"read_users": ["bob"], "write_groups": ["sim"]})
    assert created == {
        "dataset_id": "d1", "read_users": ["bob"], "read_groups": [], "write_users": [],
        "write_groups": ["sim"],
    }
    assert await db.auths.get("d1") == created
    await db.auths.set_rules("d2", {"read_groups": ["ana"], "write_users": ["carol"]})
    await db.auths.set_rules("d3", {"write_users": ["bob"], "read_users": ["bob"]})
    await db.auths.set_rules("d4", {})

    assert sorted(await db.auths.readable("bob", [])) == ["d1", "d3"]
    assert sorted(await db.auths.readable("carol", ["ana"])) == ["d2"]
    assert sorted(await db.auths.readable("dave", ["sim", "ana"])) == ["d1", "d2"]
    assert await db.auths.readable("eve", ["nobody"]) == []

    replaced = await db.auths.set_rules("d1", {"read_users": ["eve"]})
    assert replaced == {
        "dataset_id": "d1", "read_users": ["eve"], "read_groups": [], "write_users": [],
        "write_groups": [],
    }
    assert await db.auths.get("d1") == replaced
    assert await db.auths.readable("bob", []) == ["d3"]
    assert await db.auths.readable("eve", []) == ["d1"]
    assert await db.auths.coll.count({}) == 4


def test_allows_write_implies_read() -> None:
    rules = {"read_users": ["r"], "read_groups": ["rg"], "write_users": ["w"],
             "write_groups": ["wg"]}
    assert allows(rules, "read", "r", [])
    assert not allows(rules, "write", "r", [])
    assert allows(rules, "read", "w", []) and allows(rules, "write", "w", [])
    assert allows(rules, "read", "x", ["other", "rg"])
    assert not allows(rules, "write", "x", ["rg"])
    assert allows(rules, "write", "x", ["wg"]) and allows(rules, "read", "x", ["wg"])
    assert not allows(rules, "read", "x", [])
    assert not allows({}, "read", "r", ["rg"])
    assert allows({"write_groups": ["wg"]}, "read", "x", ("wg",))


# -- pilots, grids, settings ---------------------------------------------------------------------


async def test_pilots_create_heartbeat_delete(db: Database) -> None:
    pilot = {"pilot_id": "p1", "grid_id": "g1", "status": "submitted", "owner": "svc"}
    assert await db.pilots.create(pilot) == pilot
    with pytest.raises(DuplicateKey):
        await db.pilots.create(pilot)
    before = time.time()
    beat = await db.pilots.heartbeat("p1", {"status": "running", "free": {"cpu": 3}})
    assert beat["status"] == "running" and beat["free"] == {"cpu": 3}
    assert beat["owner"] == "svc" and beat["grid_id"] == "g1"
    assert before - 1 <= parse(beat["last_update"]) <= time.time() + 1
    assert await db.pilots.get("p1") == beat
    beat2 = await db.pilots.heartbeat("p1", {})
    assert beat2["last_update"] >= beat["last_update"] and beat2["free"] == {"cpu": 3}
    with pytest.raises(NotFound, match="pilot not found"):
        await db.pilots.heartbeat("nope", {"status": "running"})

    await db.pilots.create({"pilot_id": "p2", "grid_id": "g1", "status": "running"})
    await db.pilots.delete("p1")
    assert await db.pilots.find("p1") is None
    assert await db.pilots.find("p2") is not None
    with pytest.raises(NotFound, match="pilot not found"):
        await db.pilots.delete("p1")


async def test_grids_set_fields(db: Database) -> None:
    await db.grids.create({"grid_id": "g1", "host": "h1"})
    doc = await db.grids.set_fields("g1", {"isolation": "none", "single_user": "ops"})
    assert doc == {"grid_id": "g1", "host": "h1", "isolation": "none", "single_user": "ops"}
    assert await db.grids.get("g1") == doc
    assert await db.grids.set_fields("nope", {"isolation": "bwrap"}) is None


async def test_grids_create(db: Database) -> None:
    grid = {"grid_id": "g1", "host": "h1", "queues": {"short": {"max": 10}}}
    assert await db.grids.create(grid) == grid
    with pytest.raises(DuplicateKey):
        await db.grids.create({"grid_id": "g1", "host": "h2"})
    assert await db.grids.get("g1") == grid


async def test_settings_next_counter(db: Database) -> None:
    assert [await db.settings.next_counter("dataset") for _ in range(3)] == [1, 2, 3]
    assert await db.settings.next_counter("other") == 1
    assert await db.settings.next_counter("dataset") == 4
    assert (await db.settings.get("dataset"))["value"] == 4


async def test_settings_next_counter_is_atomic(db: Database) -> None:
    values = await asyncio.gather(*(db.settings.next_counter("c") for _ in range(10)))
    assert sorted(values) == list(range(1, 11))
    more = await asyncio.gather(*(db.settings.next_counter("c") for _ in range(10)))
    assert sorted(more) == list(range(11, 21))


# -- the scheduler's operations ------------------------------------------------------------------


async def test_count(db: Database) -> None:
    await db.jobs.insert_missing(
        [job_doc("d1", 0), job_doc("d1", 1, "complete"), job_doc("d2", 0)]
    )
    assert await db.jobs.count({}) == 3
    assert await db.jobs.count({"dataset_id": "d1"}) == 2
    assert await db.jobs.count({"dataset_id": "d1", "status": {"$ne": "complete"}}) == 1
    assert await db.grids.count({}) == 0


async def test_datasets_processing_and_materialization(db: Database) -> None:
    await db.datasets.coll.insert_many(
        [
            dataset_doc("d3", 3, jobs_submitted=4),
            dataset_doc("d1", 1, jobs_submitted=2, jobs_materialized=2),
            dataset_doc("d2", 2, jobs_submitted=5, jobs_materialized=1),
            dataset_doc("d4", 4, status="suspended", jobs_submitted=9),
            dataset_doc("d5", 5, status="complete", jobs_submitted=9, jobs_materialized=9),
        ]
    )
    assert [d["dataset_id"] for d in await db.datasets.processing()] == ["d1", "d2", "d3"]
    assert (await db.datasets.processing())[1] == await db.datasets.get("d2")
    assert [d["dataset_id"] for d in await db.datasets.needing_materialization()] == ["d2", "d3"]

    await db.datasets.advance_materialized("d3", 2)
    assert (await db.datasets.get("d3"))["jobs_materialized"] == 2
    await db.datasets.advance_materialized("d3", 1)  # never moves back
    assert (await db.datasets.get("d3"))["jobs_materialized"] == 2
    await db.datasets.advance_materialized("d3", 4)
    await db.datasets.advance_materialized("d2", 5)
    assert (await db.datasets.get("d2"))["jobs_materialized"] == 5
    assert await db.datasets.needing_materialization() == []
    # growing the dataset makes it need materialization again
    await db.datasets.grow_jobs("d1", 3)
    assert [d["dataset_id"] for d in await db.datasets.needing_materialization()] == ["d1"]


async def test_jobs_bulk_status(db: Database) -> None:
    statuses = ["processing", "errors", "suspended", "complete", "processing"]
    await db.jobs.insert_missing(
        [job_doc("d1", i, s) for i, s in enumerate(statuses)] + [job_doc("d2", 0, "errors")]
    )
    assert await db.jobs.bulk_status("d1", "suspended", ["processing"]) == 2
    assert await db.jobs.ids_by_status("d1") == {
        "suspended": ["d1-j0", "d1-j2", "d1-j4"], "errors": ["d1-j1"], "complete": ["d1-j3"]
    }
    assert await db.jobs.bulk_status("d1", "processing", ["suspended", "errors"]) == 4
    assert await db.jobs.counts_by_status("d1") == {"processing": 4, "complete": 1}
    assert await db.jobs.counts_by_status("d2") == {"errors": 1}
    assert await db.jobs.bulk_status("d1", "processing", []) == 0
    job = await db.jobs.get("d1-j1")
    assert abs(parse(job["status_changed"]) - time.time()) < 60


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


async def test_settings_leases(db: Database) -> None:
    assert await db.settings.acquire_lease("scheduler", "a", 60)
    assert not await db.settings.acquire_lease("scheduler", "b", 60)
    assert await db.settings.acquire_lease("scheduler", "a", 60)  # renewal
    assert await db.settings.acquire_lease("other", "b", 60)  # leases are independent
    await db.settings.release_lease("scheduler", "b")  # not the holder: no effect
    assert not await db.settings.acquire_lease("scheduler", "b", 60)
    await db.settings.release_lease("scheduler", "a")
    assert await db.settings.acquire_lease("scheduler", "b", 60)
    assert not await db.settings.acquire_lease("scheduler", "a", 60)
    await db.settings.release_lease("nope", "a")  # releasing an unknown lease is harmless

    # an expired lease goes to the next caller
    assert await db.settings.acquire_lease("short", "a", -1)
    assert await db.settings.acquire_lease("short", "b", 60)
    assert not await db.settings.acquire_lease("short", "a", 60)


async def test_settings_lease_has_one_holder_under_concurrency(db: Database) -> None:
    got = await asyncio.gather(
        *(db.settings.acquire_lease("scheduler", f"h{i}", 60) for i in range(8))
    )
    assert got.count(True) == 1
    winner = f"h{got.index(True)}"
    assert await db.settings.acquire_lease("scheduler", winner, 60)


# -- users, groups, roles, revocations -----------------------------------------------------------


def user_doc(user_id: str, username: str, **extra: Any) -> Doc:
    return {"user_id": user_id, "username": username, "roles": [], "groups": [], **extra}


async def test_users_create_and_lookups(db: Database) -> None:
    alice = user_doc("u1", "alice", email="a@example.org", roles=["user"], groups=["sim"])
    assert await db.users.create(alice) == alice
    with pytest.raises(Conflict, match="username: 'alice' already exists"):
        await db.users.create(user_doc("u9", "alice"))
    bob = user_doc("u2", "bob", email="shared@example.org", orcid="0000-0001")
    carol = user_doc("u3", "carol", email="shared@example.org")
    dave = user_doc("u4", "dave")
    for u in (bob, carol, dave):
        await db.users.create(u)

    assert await db.users.by_username("alice") == alice
    assert await db.users.by_username("nobody") is None
    assert await db.users.by_identity("email", "a@example.org") == [alice]
    assert await db.users.by_identity("orcid", "0000-0001") == [bob]
    shared = await db.users.by_identity("email", "shared@example.org")
    assert sorted(u["username"] for u in shared) == ["bob", "carol"]
    assert await db.users.by_identity("email", "none@example.org") == []
    with pytest.raises(ValueError, match="identity"):
        await db.users.by_identity("username", "alice")

    found = await db.users.find_many(["u3", "u1", "nope"])
    assert sorted(found, key=lambda u: u["user_id"]) == [alice, carol]
    assert await db.users.find_many([]) == []


async def test_users_set_fields_add_group_delete(db: Database) -> None:
    await db.users.create(user_doc("u1", "alice", email="a@example.org", groups=["sim"]))
    doc = await db.users.set_fields("u1", {"orcid": "0000-0002", "email": None})
    assert doc["orcid"] == "0000-0002" and "email" not in doc
    assert await db.users.by_identity("email", "a@example.org") == []
    assert await db.users.set_fields("u1", {}) == doc
    with pytest.raises(NotFound, match="user not found"):
        await db.users.set_fields("nope", {"orcid": "x"})
    with pytest.raises(NotFound):
        await db.users.set_fields("nope", {"email": None})
    with pytest.raises(NotFound):
        await db.users.set_fields("nope", {})

    assert (await db.users.add_group("u1", "ana"))["groups"] == ["sim", "ana"]
    assert (await db.users.add_group("u1", "ana"))["groups"] == ["sim", "ana"]
    with pytest.raises(NotFound, match="user not found"):
        await db.users.add_group("nope", "ana")

    deleted = await db.users.delete("u1")
    assert deleted["username"] == "alice" and deleted["groups"] == ["sim", "ana"]
    assert await db.users.by_username("alice") is None
    with pytest.raises(NotFound, match="user not found"):
        await db.users.delete("u1")


async def test_users_with_value_and_pull_everywhere(db: Database) -> None:
    for u in (
        user_doc("u1", "alice", roles=["admin", "user"], groups=["sim"]),
        user_doc("u2", "bob", roles=["user"], groups=["sim", "ana"]),
        user_doc("u3", "carol", roles=[], groups=["ana"]),
    ):
        await db.users.create(u)
    assert sorted(await db.users.with_value("roles", "user")) == ["alice", "bob"]
    assert sorted(await db.users.with_value("groups", "ana")) == ["bob", "carol"]
    assert await db.users.with_value("roles", "none") == []

    assert await db.users.pull_everywhere("groups", "sim") == 2
    assert (await db.users.get("u1"))["groups"] == []
    assert (await db.users.get("u2"))["groups"] == ["ana"]
    assert await db.users.with_value("groups", "sim") == []
    assert await db.users.pull_everywhere("roles", "admin") == 1
    assert (await db.users.get("u1"))["roles"] == ["user"]
    assert await db.users.pull_everywhere("roles", "admin") == 0


async def test_groups_create_ensure_missing_delete(db: Database) -> None:
    sim = await db.groups.create("sim", "simulation")
    assert is_id(sim["group_id"])
    assert (sim["name"], sim["description"]) == ("sim", "simulation")
    assert await db.groups.get(sim["group_id"]) == sim
    with pytest.raises(Conflict, match="group 'sim' already exists"):
        await db.groups.create("sim")

    assert await db.groups.missing(["ana", "sim", "zed"]) == ["ana", "zed"]
    assert await db.groups.missing([]) == []
    await db.groups.ensure(["ana", "sim", "zed"])
    await db.groups.ensure(["ana", "zed"])
    await db.groups.ensure([])
    assert await db.groups.missing(["ana", "sim", "zed"]) == []
    assert await db.groups.count({}) == 3
    assert await db.groups.get(sim["group_id"]) == sim  # ensure never replaces

    await asyncio.gather(*(db.groups.ensure(["x", "y"]) for _ in range(5)))
    assert await db.groups.count({"name": {"$in": ["x", "y"]}}) == 2

    assert await db.groups.delete(sim["group_id"]) == sim
    assert await db.groups.missing(["sim"]) == ["sim"]
    with pytest.raises(NotFound, match="group not found"):
        await db.groups.delete(sim["group_id"])


async def test_roles_put_all_scopes_delete(db: Database) -> None:
    doc, created = await db.roles.put("ops", ["read:tasks", "write:tasks", "read:tasks"], "o")
    assert created
    assert (doc["name"], doc["scopes"], doc["description"]) == (
        "ops", ["read:tasks", "write:tasks"], "o"
    )
    assert await db.roles.get("ops") == doc
    replaced, created = await db.roles.put("ops", ["read:datasets"])
    assert not created
    assert (replaced["scopes"], replaced["description"]) == (["read:datasets"], "")
    await db.roles.put("auditor", ["read:logs"])

    assert [r["name"] for r in await db.roles.all()] == ["auditor", "ops"]
    assert await db.roles.all() == [await db.roles.get("auditor"), await db.roles.get("ops")]
    assert await db.roles.scopes_of(["ops", "nope", "auditor"]) == {
        "ops": frozenset({"read:datasets"}), "auditor": frozenset({"read:logs"})
    }
    assert await db.roles.scopes_of([]) == {}

    await db.roles.delete("ops")
    assert await db.roles.scopes_of(["ops"]) == {}
    with pytest.raises(NotFound, match="role not found"):
        await db.roles.delete("ops")

    results = await asyncio.gather(*(db.roles.put("new", [f"s{i}"]) for i in range(5)))
    assert [created for _, created in results].count(True) == 1
    assert await db.roles.count({"name": "new"}) == 1


async def test_revocations(db: Database) -> None:
    assert await db.revocations.not_before("alice") is None
    assert await db.revocations.revoke("alice", NOW) == NOW
    assert await db.revocations.not_before("alice") == NOW
    assert await db.revocations.revoke("alice", NOW - 100) == NOW  # never moves back
    assert await db.revocations.not_before("alice") == NOW
    assert await db.revocations.revoke("alice", NOW + 5.5) == NOW + 5.5
    assert await db.revocations.not_before("bob") is None

    times = [NOW + i for i in (3, 9, 1, 7)]
    got = await asyncio.gather(*(db.revocations.revoke("carol", t) for t in times))
    assert max(got) == NOW + 9
    assert await db.revocations.not_before("carol") == NOW + 9
    assert await db.revocations.count({}) == 2


# -- coverage: every public repository coroutine has a contract test ----------------------------

# "<defining class>.<method>" -> the tests above that call it as ``db.<repo>.<method>(``.
COVERED: dict[str, tuple[str, ...]] = {
    "Repository.get": ("test_get_find_and_projection",),
    "Repository.get_in": ("test_get_in_scopes_by_dataset",),
    "Repository.ids_grouped_by_status": ("test_ids_grouped_by_status",),
    "JobsRepo.any_with_status": ("test_jobs_any_with_status",),
    "TasksRepo.queued_groups": ("test_queued_groups_count_queued_tasks_by_requirements",),
    "Repository.find": ("test_get_find_and_projection", "test_pilots_create_heartbeat_delete"),
    "Repository.page": ("test_page_visits_every_doc_exactly_once",
                        "test_page_bad_cursor_is_invalid"),
    "Repository.transition": ("test_transition_follows_the_state_machine",),
    "Repository.status_counts": ("test_status_counts",),
    "Repository.count": ("test_count",),
    "AuthsRepo.set_rules": ("test_auths_set_rules_and_readable",),
    "AuthsRepo.readable": ("test_auths_set_rules_and_readable",),
    "ConfigRepo.get_config": ("test_config_put_and_get",),
    "ConfigRepo.put": ("test_config_put_and_get",),
    "ConfigRepo.task_names": ("test_config_task_names_and_dataset_number",),
    "DatasetsRepo.id_of_number": ("test_config_task_names_and_dataset_number",),
    "TasksRepo.bulk_status_selected": ("test_bulk_status_selected_and_task_names",),
    "TasksRepo.names": ("test_bulk_status_selected_and_task_names",),
    "DatasetsRepo.create": ("test_datasets_create_and_set_fields",),
    "DatasetsRepo.set_status": ("test_datasets_set_status",),
    "DatasetsRepo.set_fields": ("test_datasets_create_and_set_fields",),
    "DatasetsRepo.grow_jobs": ("test_datasets_grow_jobs_only_grows",),
    "DatasetsRepo.ids_by_status": ("test_datasets_ids_by_status",),
    "DatasetsRepo.advance_materialized": ("test_datasets_processing_and_materialization",),
    "DatasetsRepo.processing": ("test_datasets_processing_and_materialization",),
    "DatasetsRepo.needing_materialization": ("test_datasets_processing_and_materialization",),
    "FilesRepo.create": ("test_files_delete_for_task",),
    "FilesRepo.delete_for_task": ("test_files_delete_for_task",),
    "GridsRepo.create": ("test_grids_create",),
    "GridsRepo.set_fields": ("test_grids_set_fields",),
    "DatasetsRepo.ids_of_user": ("test_datasets_ids_of_user_and_a_claim_limited_to_them",),
    "JobsRepo.create": ("test_jobs_create_and_insert_missing_is_idempotent",),
    "JobsRepo.insert_missing": ("test_jobs_create_and_insert_missing_is_idempotent",),
    "JobsRepo.set_status": ("test_jobs_set_status_and_patch",),
    "JobsRepo.patch": ("test_jobs_set_status_and_patch",),
    "JobsRepo.counts_by_status": ("test_jobs_counts_and_ids_by_status",),
    "JobsRepo.ids_by_status": ("test_jobs_counts_and_ids_by_status",),
    "JobsRepo.bulk_status": ("test_jobs_bulk_status",),
    "LogsRepo.create": ("test_logs_for_task", "test_logs_failed_write_leaves_nothing"),
    "LogsRepo.for_task": ("test_logs_for_task",
                          "test_logs_are_stored_in_chunks_and_read_whole",
                          "test_logs_of_16_mib_round_trip_and_list_together"),
    "LogsRepo.get": ("test_logs_are_stored_in_chunks_and_read_whole",
                     "test_logs_of_16_mib_round_trip_and_list_together"),
    "LogsRepo.get_in": ("test_logs_are_stored_in_chunks_and_read_whole",
                        "test_get_in_scopes_by_dataset"),
    "LogsRepo.find": ("test_logs_are_stored_in_chunks_and_read_whole",
                      "test_logs_delete_for_task_and_dataset_remove_the_chunks"),
    "LogsRepo.page": ("test_logs_are_stored_in_chunks_and_read_whole",),
    "LogsRepo.delete_for_task": ("test_logs_delete_for_task_and_dataset_remove_the_chunks",),
    "LogsRepo.delete_for_dataset": ("test_logs_delete_for_task_and_dataset_remove_the_chunks",),
    "PilotsRepo.create": ("test_pilots_create_heartbeat_delete",),
    "PilotsRepo.heartbeat": ("test_pilots_create_heartbeat_delete",),
    "PilotsRepo.delete": ("test_pilots_create_heartbeat_delete",),
    "SettingsRepo.next_counter": ("test_settings_next_counter",
                                  "test_settings_next_counter_is_atomic"),
    "SettingsRepo.acquire_lease": ("test_settings_leases",
                                   "test_settings_lease_has_one_holder_under_concurrency"),
    "SettingsRepo.release_lease": ("test_settings_leases",),
    "TaskStatsRepo.create": ("test_task_stats_latest",),
    "TaskStatsRepo.latest": ("test_task_stats_latest",),
    "GroupsRepo.create": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.ensure": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.missing": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.delete": ("test_groups_create_ensure_missing_delete",),
    "RevocationsRepo.revoke": ("test_revocations",),
    "RevocationsRepo.not_before": ("test_revocations",),
    "RolesRepo.put": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.all": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.scopes_of": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.delete": ("test_roles_put_all_scopes_delete",),
    "UsersRepo.create": ("test_users_create_and_lookups",),
    "UsersRepo.by_username": ("test_users_create_and_lookups",),
    "UsersRepo.by_identity": ("test_users_create_and_lookups",),
    "UsersRepo.find_many": ("test_users_create_and_lookups",),
    "UsersRepo.set_fields": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.add_group": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.delete": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.with_value": ("test_users_with_value_and_pull_everywhere",),
    "UsersRepo.pull_everywhere": ("test_users_with_value_and_pull_everywhere",),
    "TasksRepo.create": ("test_tasks_create_and_insert_missing_is_idempotent",),
    "TasksRepo.insert_missing": ("test_tasks_create_and_insert_missing_is_idempotent",),
    "TasksRepo.set_status": ("test_tasks_set_status_and_patch",),
    "TasksRepo.patch": ("test_tasks_set_status_and_patch",),
    "TasksRepo.claim": ("test_claim_sets_the_fencing_token_and_lease",
                        "test_claim_is_atomic_under_concurrent_pilots"),
    "TasksRepo.complete": ("test_complete_is_fenced_by_instance_id",
                           "test_complete_after_reissue_refuses_the_stale_pilot"),
    "TasksRepo.reset": ("test_reset_counts_a_failure_and_grows_requirements",
                        "test_reset_fails_after_max_failures",
                        "test_reset_with_fail_fails_at_once",
                        "test_reset_wrong_state_stale_and_missing"),
    "TasksRepo.release_pilot": ("test_held_by_and_release_pilot",),
    "TasksRepo.held_by": ("test_held_by_and_release_pilot",),
    "TasksRepo.renew_leases": ("test_renew_and_expire_leases",),
    "TasksRepo.expire_leases": ("test_renew_and_expire_leases",),
    "TasksRepo.queue_dataset": ("test_queue_dataset_respects_depends_and_priority",
                                "test_queue_dataset_and_bulk_status_work_in_batches",
                                "test_queue_dataset_takes_the_highest_priority_ready_tasks"),
    "TasksRepo.bulk_status": ("test_bulk_status_by_ids_name_and_all",
                              "test_bulk_status_suspending_processing_releases_it",
                              "test_tasks_bulk_status_by_job_and_from_status"),
    "TasksRepo.bulk_requirements": ("test_bulk_requirements",),
    "TasksRepo.unqueue_dataset": ("test_unqueue_dataset_sends_back_the_lowest_priority",),
    "TasksRepo.set_dataset_priority": ("test_set_dataset_priority_and_counts_by_dataset",),
    "TasksRepo.counts_by_dataset": ("test_set_dataset_priority_and_counts_by_dataset",),
    "TasksRepo.of_job": ("test_of_job",),
    "TasksRepo.counts_by_status": ("test_task_counts_and_ids_by_status",),
    "TasksRepo.ids_by_status": ("test_task_counts_and_ids_by_status",),
    "TasksRepo.counts_by_name_status": ("test_counts_by_name_status_in_task_index_order",),
    "TasksRepo.stats_by_name": ("test_stats_by_name_and_efficiency",
                                "test_stats_by_name_through_complete_and_reset"),
}


class _NoStore:
    """Just enough of a ``Store`` to build a ``Database`` without a backend."""

    def collection(self, spec: Any) -> None:
        return None


def public_coroutines() -> dict[str, str]:
    """``"<defining class>.<method>"`` -> the method name, for every public coroutine method
    reachable on a repository class."""
    out = {}
    for cls in REPOSITORIES:
        for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            owner = next(k for k in cls.__mro__ if name in vars(k))
            out[f"{owner.__name__}.{name}"] = name
    return out


def test_every_repository_is_in_the_database() -> None:
    import importlib
    import pkgutil

    import iceprod.db

    for info in pkgutil.iter_modules(iceprod.db.__path__):
        importlib.import_module(f"iceprod.db.{info.name}")
    defined = {c for c in _subclasses(Repository) if c.__module__.startswith("iceprod.db.")}
    assert defined == set(REPOSITORIES)
    database = Database(_NoStore())  # type: ignore[arg-type]
    held = {type(v) for v in vars(database).values() if isinstance(v, Repository)}
    assert held == set(REPOSITORIES)


def _subclasses(cls: type[Any]) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_repository_method_has_a_contract_test() -> None:
    methods = public_coroutines()
    missing = sorted(set(methods) - set(COVERED))
    stale = sorted(set(COVERED) - set(methods))
    assert not missing, f"repository methods without a contract test: {missing}"
    assert not stale, f"COVERED lists methods that no longer exist: {stale}"

    database = Database(_NoStore())  # type: ignore[arg-type]
    attr_of = {
        type(v).__name__: k for k, v in vars(database).items() if isinstance(v, Repository)
    }
    for key, tests in COVERED.items():
        owner, name = key.split(".")
        repo = r"\w+" if owner == "Repository" else re.escape(attr_of[owner])
        call = re.compile(rf"\bdb\.{repo}\.{re.escape(name)}\(")
        assert tests, key
        for test_name in tests:
            test = globals().get(test_name)
            assert test is not None and test_name.startswith("test_"), f"{key}: {test_name}?"
            assert call.search(inspect.getsource(test)), f"{test_name} never calls {key}"

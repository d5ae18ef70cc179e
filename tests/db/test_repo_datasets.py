"""``DatasetsRepo`` and ``ConfigRepo``: datasets, their status and sizes, their configs.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import asyncio

import pytest

from iceprod.common.errors import BadTransition, Conflict, DuplicateKey, Invalid, NotFound
from iceprod.db import Database
from tests.db.builders import (
    LEASE,
    claim_all,
    dataset_doc,
    task_doc,
)


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


async def test_datasets_listing_newest_first_with_keys(db: Database) -> None:
    for i, (user, status) in enumerate([("alice", "processing"), ("bob", "processing"),
                                        ("alice", "suspended")]):
        await db.datasets.create(dataset_doc(f"d{i}", 30 + i, username=user, status=status,
                                             description=f"run {i}"))
    keys = ["dataset_id", "dataset", "description"]
    assert await db.datasets.listing(keys) == [
        {"dataset_id": f"d{i}", "dataset": 30 + i, "description": f"run {i}"}
        for i in (2, 1, 0)]
    rows = await db.datasets.listing(["dataset_id", "status"], username="alice",
                                     status=["processing"])
    assert rows == [{"dataset_id": "d0", "status": "processing"}]
    assert await db.datasets.listing(keys, ids=[]) == []
    assert [r["dataset_id"] for r in await db.datasets.listing(keys, ids=["d0", "d2", "x"])] \
        == ["d2", "d0"]
    assert await db.datasets.listing(keys, group="nobody") == []

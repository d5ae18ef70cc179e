"""``JobsRepo``: creation, status, patches and bulk changes of jobs.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import time

import pytest

from iceprod.common.errors import BadTransition, DuplicateKey, NotFound
from iceprod.common.timeutil import parse
from iceprod.db import Database
from tests.db.builders import (
    job_doc,
)


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

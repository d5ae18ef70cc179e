"""The base ``Repository`` operations every collection shares: get, find, page, transition,
status counts, counts.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import time

import pytest

from iceprod.common.errors import BadTransition, Conflict, Invalid, NotFound
from iceprod.common.timeutil import parse
from iceprod.db import Database
from iceprod.db.base import MAX_PAGE, Paging, encode_cursor
from tests.db.builders import (
    dataset_doc,
    job_doc,
    task_doc,
)


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
    assert (await db.logs.get_in("l1", "d1", keys=["name"])) == \
        {"log_id": "l1", "name": "stdout"}
    with pytest.raises(NotFound, match="log not found"):
        await db.logs.get_in("l1", "d2", keys=["name"])
    # the scope every lookup of the base narrows by, wider than a dataset
    with pytest.raises(NotFound, match="log not found"):
        await db.logs._get_where("l1", {"dataset_id": "d1", "task_id": "t2"}, ["name"])


async def test_page_visits_every_doc_exactly_once(db: Database) -> None:
    hosts = ["a", "b", "c"]
    grids = [
        {"grid_id": f"g{i:02d}", "host": hosts[i % 3], "n": i} for i in range(23)
    ]
    await db.grids.coll.insert_many(list(reversed(grids)))
    all_ids = [g["grid_id"] for g in grids]

    async def walk(host: str | None, limit: int | None) -> list[list[str]]:
        pages, after = [], None
        while True:
            page = await db.grids.page(Paging(limit=limit, after=after), host=host)
            pages.append([d["grid_id"] for d in page.docs])
            if page.next_after is None:
                return pages
            assert page.docs and page.next_after == encode_cursor(page.docs[-1]["grid_id"])
            after = page.next_after
            assert len(pages) < 30

    pages = await walk(None, 7)
    assert [len(p) for p in pages] == [7, 7, 7, 2]
    assert [i for p in pages for i in p] == all_ids
    # a limit dividing the total exactly ends without an empty trailing page
    pages = await walk("a", 4)
    assert [len(p) for p in pages] == [4, 4]
    assert [i for p in pages for i in p] == [g["grid_id"] for g in grids if g["host"] == "a"]
    assert await walk(None, None) == [all_ids]
    assert await walk(None, MAX_PAGE * 10) == [all_ids]
    assert await walk("zzz", 5) == [[]]

    page = await db.grids.page(Paging(keys=["n"], limit=2), host="b")
    assert page.docs == [{"grid_id": "g01", "n": 1}, {"grid_id": "g04", "n": 4}]
    after_last = await db.grids.page(Paging(after=encode_cursor("g22")))
    assert after_last.docs == [] and after_last.next_after is None
    # a cursor need not name an existing document
    assert [d["grid_id"] for d in (await db.grids.page(Paging(after=encode_cursor("g20a")))).docs] == [
        "g21", "g22"
    ]


@pytest.mark.parametrize("cursor", ["%%%", "not base64!", "_w", "A", encode_cursor("x") + "*"])
async def test_page_bad_cursor_is_invalid(db: Database, cursor: str) -> None:
    await db.grids.create({"grid_id": "g1", "host": "h"})
    with pytest.raises(Invalid, match="after"):
        await db.grids.page(Paging(limit=2, after=cursor))


async def test_transition_follows_the_state_machine(db: Database) -> None:
    await db.tasks.create(task_doc("t1", status="waiting"))
    doc = await db.tasks._transition({"task_id": "t1"}, "queued", {"$set": {"note": "x"}})
    assert doc["status"] == "queued" and doc["note"] == "x"
    changed = doc["status_changed"]
    assert abs(parse(changed) - time.time()) < 60

    # the same state again: a no-op returning the document unchanged
    again = await db.tasks._transition({"task_id": "t1"}, "queued", {"$set": {"note": "y"}})
    assert again == doc
    assert (await db.tasks.get("t1"))["note"] == "x"

    await db.tasks.coll.update_one({"task_id": "t1"}, {"$set": {"status": "complete"}})
    with pytest.raises(BadTransition, match="bad transition: complete -> queued") as err:
        await db.tasks._transition({"task_id": "t1"}, "queued")
    assert (err.value.old, err.value.new) == ("complete", "queued")
    assert isinstance(err.value, Conflict)
    assert (await db.tasks.get("t1"))["status"] == "complete"

    with pytest.raises(NotFound, match="task not found"):
        await db.tasks._transition({"task_id": "missing"}, "queued")
    # the query narrows the match: a wrong dataset is "not found", not a transition
    with pytest.raises(NotFound):
        await db.tasks._transition({"task_id": "t1", "dataset_id": "other"}, "waiting")

    # the pilot machine, through the pilots' own set_status (a reason is recorded)
    await db.pilots.create({"pilot_id": "p1", "status": "submitted", "grid_id": "g"})
    assert (await db.pilots.set_status("p1", "running"))["status"] == "running"
    done = await db.pilots.set_status("p1", "finished", "drained")
    assert (done["status"], done["reason"]) == ("finished", "drained")
    with pytest.raises(BadTransition, match="finished -> running"):
        await db.pilots.set_status("p1", "running")
    with pytest.raises(NotFound, match="pilot not found"):
        await db.pilots.set_status("p9", "running")


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
    assert await db.pilots._status_counts({"grid_id": "g2"}) == {"running": 1, "lost": 1}
    assert await db.pilots._status_counts({"grid_id": "none"}) == {}


async def test_ids_grouped_by_status(db: Database) -> None:
    await db.jobs.insert_missing([
        {"job_id": "j2", "dataset_id": "d1", "job_index": 2, "status": "complete"},
        {"job_id": "j0", "dataset_id": "d1", "job_index": 0, "status": "complete"},
        {"job_id": "j1", "dataset_id": "d1", "job_index": 1},
        {"job_id": "j9", "dataset_id": "d2", "job_index": 0, "status": "errors"},
    ])
    got = await db.jobs._ids_grouped_by_status({"dataset_id": "d1"}, [("job_index", 1)])
    # in sort order within a status; no status counts as the machine's first (processing)
    assert got == {"complete": ["j0", "j2"], "processing": ["j1"]}
    got = await db.jobs._ids_grouped_by_status({}, [("job_index", -1)])
    assert got["complete"] == ["j2", "j0"] and got["errors"] == ["j9"]


async def test_count(db: Database) -> None:
    await db.jobs.insert_missing(
        [job_doc("d1", 0), job_doc("d1", 1, "complete"), job_doc("d2", 0)]
    )
    assert await db.jobs._count({}) == 3
    assert await db.jobs._count({"dataset_id": "d1"}) == 2
    assert await db.jobs._count({"dataset_id": "d1", "status": {"$ne": "complete"}}) == 1
    assert await db.grids._count({}) == 0

"""The typed queries: each repository's ``page``, ``count`` and lookups take typed
parameters and build their filters inside ``db/`` (handlers and ``core/`` never do, see
``tests/test_queries_in_db.py``); and a filter a repository builds on a field its collection
does not declare is refused, the same on every backend, as a programming error.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees; ``test_repo_coverage`` lists the methods each one covers.
"""

from __future__ import annotations

import pytest

from iceprod.common.errors import Invalid, NotFound, UndeclaredField
from iceprod.db import Database
from iceprod.db.base import Paging, Repository, between, one_of, where
from iceprod.db.store import CollectionSpec, Store
from tests.db.builders import dataset_doc, job_doc, task_doc


def ids(page_or_docs: object, field: str) -> list[str]:
    docs = getattr(page_or_docs, "docs", page_or_docs)
    return [d[field] for d in docs]  # type: ignore[attr-defined]


async def test_datasets_page_by_status_user_group_and_ids(db: Database) -> None:
    for i, (user, group, status) in enumerate([
            ("alice", "physics", "processing"), ("bob", "physics", "suspended"),
            ("alice", "chem", "suspended"), ("carol", "chem", "complete")]):
        await db.datasets.create(dataset_doc(f"d{i}", i + 1, username=user, group=group,
                                             status=status))
    assert ids(await db.datasets.page(), "dataset_id") == ["d0", "d1", "d2", "d3"]
    page = await db.datasets.page(status=["suspended", "complete"], username="alice")
    assert ids(page, "dataset_id") == ["d2"]
    assert ids(await db.datasets.page(group="chem"), "dataset_id") == ["d2", "d3"]
    assert ids(await db.datasets.page(ids=["d3", "d1", "x"]), "dataset_id") == ["d1", "d3"]
    assert (await db.datasets.page(ids=[])).docs == []  # a reader of nothing sees nothing
    first = await db.datasets.page(Paging(keys=["status"], limit=1), status=["suspended"])
    assert first.docs == [{"dataset_id": "d1", "status": "suspended"}] and first.next_after
    rest = await db.datasets.page(Paging(after=first.next_after), status=["suspended"])
    assert ids(rest, "dataset_id") == ["d2"] and rest.next_after is None
    with pytest.raises(Invalid, match="after"):
        await db.datasets.page(Paging(after="%%%"))


async def test_jobs_and_tasks_pages_and_counts(db: Database) -> None:
    await db.jobs.insert_missing([job_doc("d1", 0), job_doc("d1", 1, "complete"),
                                  job_doc("d1", 2, "suspended"), job_doc("d2", 0)])
    assert ids(await db.jobs.page(dataset_id="d1"), "job_id") == ["d1-j0", "d1-j1", "d1-j2"]
    page = await db.jobs.page(dataset_id="d1", status=["complete", "suspended"])
    assert ids(page, "job_id") == ["d1-j1", "d1-j2"]
    assert ids(await db.jobs.page(dataset_id="d1", job_index=2), "job_id") == ["d1-j2"]
    page = await db.jobs.page(Paging(["status"], 5), dataset_id="d1", ids=["d1-j2", "d2-j0"])
    assert page.docs == [{"job_id": "d1-j2", "status": "suspended"}]  # d2's job is not d1's

    await db.tasks.insert_missing([
        task_doc("t0", status="queued", priority=0.5, dataset_priority=0.5),
        task_doc("t1", task_index=1, name="sim", status="queued", priority=0.9,
                 dataset_priority=0.5),
        task_doc("t2", job_index=1, status="processing", pilot_id="p1"),
        task_doc("t3", dataset_id="d2", status="queued", priority=0.1, dataset_priority=0.9),
        task_doc("t4", job_index=1, task_index=1, name="sim", status="waiting"),
    ])
    assert ids(await db.tasks.page(dataset_id="d1"), "task_id") == ["t0", "t1", "t2", "t4"]
    assert ids(await db.tasks.page(status=["queued"]), "task_id") == ["t0", "t1", "t3"]
    page = await db.tasks.page(dataset_id="d1", name="sim", job_index=1)
    assert ids(page, "task_id") == ["t4"]
    assert ids(await db.tasks.page(job_id="d1-j1"), "task_id") == ["t2", "t4"]
    assert ids(await db.tasks.page(pilot_id="p1"), "task_id") == ["t2"]
    page = await db.tasks.page(Paging(["name"]), ids=["t4", "t3", "nope"])
    assert page.docs == [{"task_id": "t3", "name": "main"}, {"task_id": "t4", "name": "sim"}]
    assert (await db.tasks.page(ids=[])).docs == []

    assert await db.tasks.count() == 5
    assert await db.tasks.count(dataset_id="d1") == 4
    assert await db.tasks.count(dataset_id="d1", status=["waiting", "queued"]) == 3
    assert await db.tasks.count(dataset_id="d1", status=["processing"], pilot_id="p1") == 1
    assert await db.tasks.count(dataset_id="d2", status=["processing"], pilot_id="p1") == 0
    assert await db.tasks.count(status=[]) == 0
    # queued tasks a claim takes first: a higher dataset priority, or the same and higher
    assert await db.tasks.queued_ahead(0.5, 0.5) == 2  # t3 (dataset), t1 (task)
    assert await db.tasks.queued_ahead(0.5, 0.9) == 1
    assert await db.tasks.queued_ahead(0.9, 0.1) == 0


async def test_pilots_users_groups_projects_pages(db: Database) -> None:
    for i, (grid, status) in enumerate([("g1", "running"), ("g1", "finished"),
                                        ("g2", "running")]):
        await db.pilots.create({"pilot_id": f"p{i}", "grid_id": grid, "status": status})
    assert ids(await db.pilots.page(status=["running"]), "pilot_id") == ["p0", "p2"]
    assert ids(await db.pilots.page(grid_id="g1"), "pilot_id") == ["p0", "p1"]
    assert ids(await db.pilots.page(pilot_id="p1"), "pilot_id") == ["p1"]
    assert (await db.pilots.page(pilot_id="")).docs == []  # a pilot token with no pilot

    for i, (name, groups) in enumerate([("ann", ["physics"]), ("ben", ["chem", "physics"]),
                                        ("cat", [])]):
        await db.users.create({"user_id": f"u{i}", "username": name, "roles": [],
                               "groups": groups})
    # group: "the user's groups contain it" on every backend (a declared array field)
    assert ids(await db.users.page(group="physics"), "username") == ["ann", "ben"]
    assert ids(await db.users.page(username="cat"), "username") == ["cat"]
    assert (await db.users.page(username="ann", group="chem")).docs == []

    await db.groups.create("physics")
    await db.groups.create("chem")
    assert [d["name"] for d in (await db.groups.page(name="chem")).docs] == ["chem"]
    assert sorted(d["name"] for d in (await db.groups.page()).docs) == ["chem", "physics"]

    for name in ("b", "a"):
        await db.projects.create(db.projects.new_doc(name))
    assert [d["name"] for d in (await db.projects.page(Paging(limit=1))).docs] == ["a"]


async def test_stats_logs_and_files_of_a_dataset(db: Database) -> None:
    for i, (ds, task) in enumerate([("d1", "t1"), ("d1", "t2"), ("d2", "t1")]):
        await db.task_stats.create({"task_stat_id": f"s{i}", "dataset_id": ds, "task_id": task,
                                    "create_date": f"2026-01-0{i + 1}T00:00:00Z",
                                    "stats": {"n": i}})
    assert ids(await db.task_stats.page(dataset_id="d1"), "task_stat_id") == ["s0", "s1"]
    page = await db.task_stats.page(dataset_id="d1", task_id="t2")
    assert ids(page, "task_stat_id") == ["s1"]
    got = await db.task_stats.get_of_task("s1", "d1", "t2", keys=["stats"])
    assert got == {"task_stat_id": "s1", "stats": {"n": 1}}
    for wrong in (("s1", "d2", "t2"), ("s1", "d1", "t1"), ("s9", "d1", "t2")):
        with pytest.raises(NotFound, match="task_stat not found"):
            await db.task_stats.get_of_task(*wrong)

    for i, ds in enumerate(["d1", "d2", "d1"]):
        await db.logs.create({"log_id": f"l{i}", "dataset_id": ds, "task_id": "t1",
                              "name": "stdout", "data": f"text {i}",
                              "timestamp": "2026-01-01T00:00:00.000000Z"})
    page = await db.logs.page(Paging(["data"]), dataset_id="d1")
    assert page.docs == [{"log_id": "l0", "data": "text 0"}, {"log_id": "l2", "data": "text 2"}]
    assert await db.logs.count(dataset_id="d1") == 2
    assert await db.logs.count(dataset_id="d3") == 0

    for i, ds in enumerate(["d1", "d2", "d1"]):
        await db.files.create({"file_id": f"f{i}", "dataset_id": ds, "task_id": None,
                               "filename": f"x{i}"})
    page = await db.files.of_dataset("d1", Paging(["filename"], 1))
    assert page.docs == [{"file_id": "f0", "filename": "x0"}] and page.next_after
    rest = await db.files.of_dataset("d1", Paging(after=page.next_after))
    assert ids(rest, "file_id") == ["f2"] and rest.next_after is None


def test_where_reads_only_one_of_as_alternatives() -> None:
    """A typed parameter's value is compared as given; only ``one_of`` means "any of" (a
    list from a request body stays a value, never a set of alternatives)."""
    assert where(a=None, b=1, c=["x"], d=one_of(["x", "y"]), e=one_of([]), f=one_of(None)) \
        == {"b": 1, "c": ["x"], "d": {"$in": ["x", "y"]}, "e": {"$in": []}}
    with pytest.raises(TypeError):
        one_of("queued")
    # an inclusive range, either bound optional (0 is a bound); no bound is no criterion
    assert where(a=between(0, 5), b=between(None, "z"), c=between("a", None),
                 d=between(None, None)) == \
        {"a": {"$gte": 0, "$lte": 5}, "b": {"$lte": "z"}, "c": {"$gte": "a"}}


class _Careless(Repository):
    """A repository with a bug: its query compares ``color``, a field whose shape its
    collection does not declare (only ``status`` is a column)."""

    spec = CollectionSpec(name="careless", id_field="thing_id", columns={"status": "TEXT"})
    kind = "thing"

    async def by_color(self, color: str) -> int:
        return await self._count({"status": "new", "color": color})

    async def colored(self, color: str) -> list[str]:
        page = await self._page({"$or": [{"status": "old"}, {"color": color}]})
        return [d["thing_id"] for d in page.docs]


async def test_a_repository_filter_on_an_undeclared_field_is_refused_on_every_backend(
        store: Store) -> None:
    """Not ``Invalid`` (a 400 blaming the caller): the field was named in ``db/``, so it is
    ``UndeclaredField``, a 500, whichever backend runs (MongoDB would have answered, looking
    inside arrays; SQLite differently)."""
    await store.ensure_indexes([_Careless.spec])
    repo = _Careless(store)
    await repo.coll.insert_many([{"thing_id": "a", "status": "new", "color": ["red"]},
                                 {"thing_id": "b", "status": "new", "color": "red"}])
    for call in (repo.by_color("red"), repo.colored("red")):
        with pytest.raises(UndeclaredField) as refused:
            await call
        assert not isinstance(refused.value, Invalid)
        assert refused.value.code == 500 and refused.value.field == "color"
        assert "careless does not declare this field's shape" in refused.value.message

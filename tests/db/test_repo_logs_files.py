"""``LogsRepo`` (chunked logs), ``TaskStatsRepo`` and ``FilesRepo``.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import pytest

from iceprod.common.errors import DuplicateKey, Invalid
from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.db.base import Paging
from iceprod.db.logs import CHUNK_CHARS, INLINE_CHARS
from iceprod.db.store import Doc
from tests.db.builders import (
    NOW,
)


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
    assert await db.logs.get_in("l1", "d1", keys=["data"]) == \
        {"log_id": "l1", "data": text}
    assert await db.logs.get("l1", keys=["name", "timestamp"]) == \
        {"log_id": "l1", "name": "stdout", "timestamp": big["timestamp"]}
    assert await db.logs.for_task("d1", "t1", None, False, False) == [big, empty]
    # grouping needs the name even when keys leave it out, and does not show it
    assert await db.logs.for_task("d1", "t1", None, True, True, keys=["data"]) == \
        [{"log_id": "l2", "data": ""}, {"log_id": "l1", "data": text}]
    page = await db.logs.page(Paging(keys=["data"], limit=1), dataset_id="d1")
    assert page.docs == [{"log_id": "l1", "data": text}] and page.next_after


async def test_small_logs_are_one_document_with_their_text(db: Database) -> None:
    small = {**log_doc("s1", "stdlog", 1), "data": "é" * INLINE_CHARS}
    big = {**log_doc("s2", "stdout", 2), "data": "x" * (INLINE_CHARS + 1)}
    for log in (small, big):
        assert await db.logs.create(log) == log
    assert await db.logs.chunks.count({"log_id": "s1"}) == 0
    assert await db.logs.chunks.count({"log_id": "s2"}) == 1
    stored = await db.logs.coll.find_one({"log_id": "s1"})
    assert stored is not None and stored["data"] == small["data"]
    assert await db.logs.get("s1") == small
    assert await db.logs.get("s1", keys=["name"]) == {"log_id": "s1", "name": "stdlog"}
    assert await db.logs.for_task("d1", "t1", None, False, False) == [small, big]
    assert await db.logs.delete_for_task("d1", "t1") == 2
    assert await db.logs.find("s1") is None and await db.logs.chunks.count({}) == 0


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
        await db.logs.create({**first, "data": "x" * (INLINE_CHARS + 10)})
    with pytest.raises(DuplicateKey):  # a small text: one document, refused whole
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


async def test_task_stats_of_dataset(db: Database) -> None:
    records = [{"task_stat_id": f"s{i}", "dataset_id": ds, "task_id": f"t{i}",
                "create_date": iso(NOW + i), "stats": {"walltime": i}, "extra": "x"}
               for i, ds in enumerate(["d1", "d1", "d2"])]
    for record in records:
        await db.task_stats.create(record)
    rows = sorted(await db.task_stats.of_dataset("d1"), key=lambda r: r["task_stat_id"])
    assert rows == [{k: r[k] for k in ("task_stat_id", "task_id", "create_date", "stats")}
                    for r in records[:2]]
    assert await db.task_stats.of_dataset("none") == []


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
    remaining = await db.files._page({})
    assert remaining.docs == files[2:]


async def test_files_for_task_by_id_or_by_job_and_name(db: Database) -> None:
    files = [
        {"file_id": "f1", "dataset_id": "d1", "task_id": "t1", "filename": "a"},
        # registered by job index and name before the task existed
        {"file_id": "f2", "dataset_id": "d1", "task_id": None, "job_index": 3,
         "task_name": "sim", "filename": "b"},
        {"file_id": "f3", "dataset_id": "d1", "task_id": None, "job_index": 4,
         "task_name": "sim", "filename": "c"},
        {"file_id": "f4", "dataset_id": "d2", "task_id": None, "job_index": 3,
         "task_name": "sim", "filename": "d"},
        {"file_id": "f5", "dataset_id": "d1", "task_id": "t9", "job_index": 3,
         "task_name": "sim", "filename": "e"},
    ]
    for f in files:
        await db.files.create(f)
    page = await db.files.for_task("d1", "t1", 3, "sim")
    assert [f["file_id"] for f in page.docs] == ["f1", "f2"]
    assert [f["file_id"] for f in (await db.files.for_task("d1", "t1")).docs] == ["f1"]
    first = await db.files.for_task("d1", "t1", 3, "sim", keys=["filename"], limit=1)
    assert first.docs == [{"file_id": "f1", "filename": "a"}] and first.next_after
    rest = await db.files.for_task("d1", "t1", 3, "sim", after=first.next_after)
    assert [f["file_id"] for f in rest.docs] == ["f2"] and rest.next_after is None
    assert await db.files.delete_for_task("d1", "t1", 3, "sim") == 2
    assert [f["file_id"] for f in (await db.files._page({})).docs] == ["f3", "f4", "f5"]

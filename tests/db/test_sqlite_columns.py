"""The SQLite store's real columns and maintained counts stay equal to what the documents
say, through every kind of write; a data dir of the earlier layout (virtual generated
columns) is rebuilt when opened, keeping every document and its order; short statements
run inline within a budget."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from iceprod.db import sqlite as sqlite_module
from iceprod.db.sqlite import DB_FILE, Compiler, SQLiteStore, column_name
from iceprod.db.store import CollectionSpec, Index
from tests.db.test_collection_contract import DOCS, THINGS

COUNTED = dataclasses.replace(
    THINGS, counts=(("dataset_id", "status"), ("status",), ("active", "req.cpu")))


def snapshot(conn: sqlite3.Connection, spec: CollectionSpec) -> tuple[list[Any], list[Any]]:
    """Each row's columns next to what json_extract reads from its document; each
    counts table next to a GROUP BY of the collection."""
    sql = Compiler(spec)
    cols = [col for _, col, _ in sql.columns]
    extracted = [sql.extract(name) for name, _, _ in sql.columns]
    # what json_extract reads, stored with the columns' declared types (their affinity)
    conn.execute("DROP TABLE IF EXISTS temp.expected")
    conn.execute(sql.create_table("temp.expected"))
    conn.execute(f"INSERT INTO temp.expected (id, doc, {', '.join(cols)}) "
                 f"SELECT id, doc, {', '.join(extracted)} FROM {sql.table}")
    rows = conn.execute(
        f"SELECT t.id, {', '.join('t.' + c for c in cols)}, {', '.join('e.' + c for c in cols)} "
        f"FROM {sql.table} t JOIN temp.expected e USING (id)").fetchall()
    mismatched = [r for r in rows if r[1:1 + len(cols)] != r[1 + len(cols):]]
    counts = []
    for counter in spec.counts:
        names = ", ".join(sql.field(f) for f in counter)
        kept = conn.execute(f"SELECT {names}, n FROM {sql.counter_table(counter)} "
                            f"WHERE n != 0 ORDER BY {names}").fetchall()
        real = conn.execute(f"SELECT {names}, COUNT(*) FROM {sql.table} GROUP BY {names} "
                            f"ORDER BY {names}").fetchall()
        counts.append((counter, kept, real))
    return mismatched, counts


def check(conn: sqlite3.Connection, spec: CollectionSpec) -> None:
    mismatched, counts = snapshot(conn, spec)
    assert mismatched == []
    for counter, kept, real in counts:
        assert kept == real, counter
        assert all(n > 0 for *_, n in kept)


async def test_columns_and_counts_follow_every_write(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.ensure_indexes([COUNTED])
    things = sqlite_store.collection(COUNTED)
    await things.insert_many(DOCS)
    # a duplicate skipped
    await things.insert_many([{"thing_id": "f", "dataset_id": "d3", "job_index": 0,
                               "status": "odd", "req": {"cpu": 2.5}},
                              {"thing_id": "a", "dataset_id": "zz", "job_index": 9}],
                             skip_duplicates=True)
    await things.insert_one({"thing_id": "g", "dataset_id": "d3", "job_index": 1,
                             "priority": True, "active": False, "req": [1, 2]})
    updates: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"thing_id": "a"}, {"$set": {"status": "processing", "site": "Z"}}),  # bound
        ({"thing_id": "b"}, {"$set": {"req": {"cpu": 8}, "status": None}}),  # parent set
        ({"thing_id": "c"}, {"$unset": {"req": "", "status": ""}}),  # parent unset
        ({"thing_id": "d"}, {"$set": {"req.cpu": 3, "active": True}}),  # dotted, new parent
        ({"thing_id": "a"}, {"$inc": {"req.cpu": 2, "priority": 1.5}}),
        ({"thing_id": "b"}, {"$max": {"req.cpu": 9, "priority": 100}}),
        ({"thing_id": "e"}, {"$min": {"priority": -1}, "$unset": {"req.cpu": ""}}),
        ({"thing_id": "f"}, {"$set": {"status": "queued"}}),
        ({"thing_id": "g"}, {"$set": {"req.cpu": 1}}),  # through an array: nothing set
        ({"thing_id": "g"}, {"$set": {"status": True, "dataset_id": "d4"}}),
        ({"thing_id": "d"}, {"$unset": {"req.cpu": ""}, "$set": {"req.mem": 1}}),
        ({"status": "queued"}, {"$set": {"status": "waiting"}}),
    ]
    for query, update in updates:
        if "thing_id" in query:
            assert await things.update_one(query, update) is not None, update
        else:
            assert await things.update_many(query, update) > 0
        await sqlite_store.run(lambda conn: check(conn, COUNTED))
    assert await things.delete_many({"dataset_id": "d2"}) == 2
    await sqlite_store.run(lambda conn: check(conn, COUNTED))
    # and the counted answers are the collection's (group_stats always scans)
    for filter, keys in [({}, ["dataset_id", "status"]), ({"active": True}, ["req.cpu"]),
                         ({"dataset_id": "d1"}, ["status"]), ({"status": "nope"}, [])]:
        counted = await things.group_count(filter, keys)
        scanned = await things.group_stats(filter, keys, {"x": ("sum", "priority")})
        assert sorted(map(repr, counted)) == sorted(
            repr({k: v for k, v in row.items() if k != "x"}) for row in scanned)
    for filter in [{"status": {"$in": ["processing", "waiting"]}},
                   {"dataset_id": "d1", "status": "nope"}, {"status": "processing"}]:
        assert await things.count(filter) == len(await things.find(filter))
    assert await things.count({"status": "processing"}) == 1


async def test_counts_are_read_from_the_counts_table(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.ensure_indexes([COUNTED])
    sql = Compiler(COUNTED)
    counted = [({"dataset_id": "d1"}, ("status",)), ({"status": {"$in": ["a", "b"]}}, ()),
               ({}, ("status",)), ({"dataset_id": "d", "status": "s"}, ())]
    scanned = [({"dataset_id": None}, ("status",)), ({"site": "A"}, ("status",)),
               ({"status": {"$ne": "a"}}, ()), ({}, ("priority",)),
               ({"$or": [{"status": "a"}]}, ())]
    from iceprod.db.sqlite import Flattener

    for filter, keys in counted + scanned:
        statement = sql.group(Flattener().filter(filter), keys, ())
        uses = "__count__" in statement.sql
        assert uses == ((filter, keys) in counted), (filter, keys, statement.sql)


def old_layout(path: Path, spec: CollectionSpec, docs: list[dict[str, Any]]) -> None:
    """A data dir as the previous version wrote it: virtual generated columns."""
    path.mkdir(parents=True)
    conn = sqlite3.connect(path / DB_FILE)
    sql = Compiler(spec)
    conn.execute(f"CREATE TABLE {sql.table} (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)")
    for field, type_ in spec.columns.items():
        conn.execute(f"ALTER TABLE {sql.table} ADD COLUMN \"{column_name(field)}\" {type_} "
                     f"GENERATED ALWAYS AS ({sql.extract(field)}) VIRTUAL")
    for index in spec.indexes:
        conn.execute(sql.create_index(index))
    conn.executemany(f"INSERT INTO {sql.table} (id, doc) VALUES (?, ?)",
                     [(d[spec.id_field], json.dumps(d)) for d in docs])
    conn.commit()
    conn.close()


async def test_a_data_dir_of_the_previous_layout_is_rebuilt_when_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # inserted in an order that is not the id order: ties keep it
    docs = [dict(d, priority=1) for d in reversed(DOCS)]
    old_layout(data, THINGS, docs)
    store = SQLiteStore(str(data))
    try:
        await store.ensure_indexes([COUNTED])
        things = store.collection(COUNTED)
        assert await things.find({}, sort=[("priority", 1)]) == docs
        info = await store.run(lambda conn: list(
            conn.execute('PRAGMA table_xinfo("things")')))
        assert all(row[6] == 0 for row in info)
        await store.run(lambda conn: check(conn, COUNTED))
        indexes = await store.run(lambda conn: {r[1] for r in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE tbl_name = 'things'")})
        assert {Compiler(COUNTED).index_name(i) for i in COUNTED.indexes} <= indexes
        await things.update_one({"thing_id": "a"}, {"$set": {"status": "complete"}})
        assert await things.count({"dataset_id": "d1", "status": "complete"}) == 1
        await store.run(lambda conn: check(conn, COUNTED))
    finally:
        await store.close()
    # opened again: nothing to rebuild, a new column is added and filled
    wider = dataclasses.replace(COUNTED, columns={**COUNTED.columns, "site": "TEXT"},
                                indexes=(*COUNTED.indexes, Index((("site", 1),))))
    store = SQLiteStore(str(data))
    try:
        await store.ensure_indexes([wider])
        await store.run(lambda conn: check(conn, wider))
        assert len(await store.collection(wider).find({"site": "A"})) == 2
    finally:
        await store.close()


async def test_short_statements_run_inline_within_their_budget(
        sqlite_store: SQLiteStore, monkeypatch: Any) -> None:
    """Statements run on the loop's thread when the worker is idle; one over
    its budget is interrupted (having changed nothing) and runs again on the worker, as
    does one arriving while the worker is busy. Every answer is the same."""
    await sqlite_store.ensure_indexes([THINGS])
    things = sqlite_store.collection(THINGS)
    await things.insert_many([{"thing_id": f"t{i:05d}", "dataset_id": "d", "job_index": i,
                               "note": "x" * 50} for i in range(3000)])
    on_worker = []
    real_run = SQLiteStore.run

    async def counted(self: SQLiteStore, fn: Any) -> Any:
        on_worker.append(fn)
        return await real_run(self, fn)

    monkeypatch.setattr(SQLiteStore, "run", counted)
    found = await things.update_one({"thing_id": "t00007"}, {"$set": {"status": "a"}})
    assert found is not None and found["status"] == "a"
    assert len(await things.find({"dataset_id": "d"}, limit=5)) == 5
    assert on_worker == []  # both inline
    # over budget: a scan of every document for the last one, in job_index order
    monkeypatch.setattr(sqlite_module, "INLINE_BUDGET_S", 0.0)
    found = await things.update_one({"status": None}, {"$set": {"status": "b"}},
                                    sort=[("job_index", -1)])
    assert found is not None and found["thing_id"] == "t02999"
    assert len(on_worker) == 1
    assert await things.count({"status": "b"}) == 1  # once, not twice
    # a transaction over budget (SQLite rolls an interrupted one back whole) runs again on
    # the worker and lands once, its counts with it
    before = len(on_worker)
    more = [{"thing_id": f"u{i:05d}", "dataset_id": "e", "job_index": i} for i in range(2000)]
    assert await things.insert_many(more) == 2000
    assert len(on_worker) == before + 1
    assert await things.count({"dataset_id": "e"}) == 2000
    assert {r["dataset_id"]: r["count"] for r in await things.group_count(
        {}, ["dataset_id"])} == {"d": 3000, "e": 2000}
    monkeypatch.setattr(sqlite_module, "INLINE_BUDGET_S", 2.0)
    # the worker busy: the statement waits its turn on the worker
    release = threading.Event()
    busy = asyncio.ensure_future(real_run(sqlite_store, lambda conn: release.wait(10)))
    await asyncio.sleep(0)
    while not sqlite_store._lock.locked():
        await asyncio.sleep(0.001)
    before = len(on_worker)
    claim = asyncio.ensure_future(
        things.update_one({"thing_id": "t00001"}, {"$set": {"status": "c"}}))
    while len(on_worker) == before:
        await asyncio.sleep(0.001)
    assert not claim.done()
    release.set()
    await busy
    assert (await claim)["status"] == "c"


async def test_concurrent_claims_over_budget_all_land_once(
        sqlite_store: SQLiteStore, monkeypatch: Any) -> None:
    """With no inline budget at all, every claim and find is interrupted on the loop's
    thread and runs again on the worker: none fails, none is applied twice."""
    await sqlite_store.ensure_indexes([THINGS])
    things = sqlite_store.collection(THINGS)
    await things.insert_many([{"thing_id": f"t{i:04d}", "dataset_id": "d", "job_index": i,
                               "status": "queued", "priority": i} for i in range(400)])
    monkeypatch.setattr(sqlite_module, "INLINE_BUDGET_S", 0.0)

    async def claimer(n: int) -> list[str]:
        got = []
        for _ in range(20):
            doc = await things.update_one({"status": "queued"},
                                          {"$set": {"status": "processing", "by": n}},
                                          sort=[("priority", -1)])
            assert doc is not None
            got.append(doc["thing_id"])
            assert len(await things.find({"status": "queued"}, limit=3)) == 3
        return got

    claimed = [t for got in await asyncio.gather(*(claimer(n) for n in range(16))) for t in got]
    assert len(claimed) == len(set(claimed)) == 320
    assert await things.count({"status": "processing"}) == 320


async def test_writes_interrupted_at_any_point_land_exactly_once(
        sqlite_store: SQLiteStore, monkeypatch: Any) -> None:
    """An inline write interrupted at any point of its run (swept over the checks of the
    progress handler, one per instruction, its last ones included) lands exactly once: SQLite may report an
    interrupted autocommit write or COMMIT it did commit, so a write is never retried
    after its COMMIT began."""
    counted_spec = dataclasses.replace(COUNTED, name="counted_things")
    await sqlite_store.ensure_indexes([THINGS, counted_spec])
    things = sqlite_store.collection(THINGS)
    counted = sqlite_store.collection(counted_spec)
    await things.insert_many([{"thing_id": "c", "dataset_id": "d", "n": 0}])
    monkeypatch.setattr(sqlite_module, "_PROGRESS_STEPS", 1)
    checks = [0]
    target = [0]

    def over_budget(self: SQLiteStore) -> int:
        checks[0] += 1
        return int(checks[0] == target[0])

    monkeypatch.setattr(SQLiteStore, "_over_budget", over_budget)

    async def sweep(write: Any) -> int:
        """Run ``write(i)`` once without interruption to learn its number of checks ``n``,
        then interrupted at its k-th check for k spread over 1..n, the last ones included
        (where an autocommit write commits); answers how many runs there were."""
        checks[0], target[0] = 0, 0
        await write(1)
        n = checks[0]
        points = sorted({*range(1, n + 1, max(1, n // 25)), *range(max(1, n - 3), n + 1)})
        for i, k in enumerate(points, start=2):
            checks[0], target[0] = 0, k
            await write(i)
            assert checks[0] == k  # interrupted there (then run again on the worker)
        return len(points) + 1

    async def inc(k: int) -> None:
        doc = await things.update_one({"thing_id": "c"}, {"$inc": {"n": 1}})
        assert doc is not None and doc["n"] == k

    runs = await sweep(inc)
    assert runs > 5  # the sweep did interrupt the write at several points
    assert (await things.find_one({"thing_id": "c"}) or {})["n"] == runs
    runs = await sweep(lambda k: things.insert_one({"thing_id": f"i{k}", "dataset_id": "d"}))
    assert runs > 5
    assert await things.count({"thing_id": {"$gt": "i"}}) == runs
    # a transaction of its own (the maintained counts) inside the inline one
    runs = await sweep(lambda k: counted.insert_one({"thing_id": f"j{k}", "dataset_id": "d",
                                                     "status": "q"}))
    assert runs > 5
    assert await counted.count({"dataset_id": "d", "status": "q"}) == runs
    assert await counted.count({"dataset_id": "d"}) == runs

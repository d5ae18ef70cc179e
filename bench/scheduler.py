"""Scheduler benchmark: materialization and queueing on the embedded store.

Prints, for a 100k-task dataset:
- the raw store's insert rate for the very rows materialization writes (baseline),
- the materialization rate (tasks/s) and its ratio to that baseline (target >= 25%),
- the time to queue 100k waiting tasks with the fair-share queue,
- the time of one bulk status change over those 100k tasks.

    .venv/bin/python bench/scheduler.py [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iceprod.common.ids import new_id
from iceprod.core.queue import queue_tasks
from iceprod.db import REPOSITORIES, Database
from iceprod.db.sqlite import SQLiteStore
from iceprod.server.scheduler.materialize import build_jobs, materialize_dataset, templates


async def open_db(path: str) -> Database:
    store = SQLiteStore(path)
    await store.ensure_indexes([r.spec for r in REPOSITORIES])
    return Database(store)


async def make_dataset(db: Database, config: dict, jobs: int) -> dict:
    ds = {
        "dataset_id": new_id(), "dataset": 1, "description": "bench", "group": "g",
        "username": "u", "status": "processing", "priority": 0.5, "jobs_submitted": jobs,
        "tasks_per_job": len(config["tasks"]),
        "tasks_submitted": jobs * len(config["tasks"]), "max_failures": 10,
    }
    await db.datasets.create(ds)
    await db.config.put(ds["dataset_id"], config)
    return ds


async def bench(n_tasks: int) -> None:
    config = json.loads((ROOT / "examples" / "chain.json").read_text())
    per_job = len(config["tasks"])
    jobs = -(-n_tasks // per_job)
    with tempfile.TemporaryDirectory() as tmp:
        raw_db = await open_db(f"{tmp}/raw")
        ds = await make_dataset(raw_db, config, jobs)
        tmpl = await templates(raw_db, config)
        steering = config["steering"]["parameters"]
        t0 = time.perf_counter()
        _, rows = build_jobs(ds, tmpl, steering, range(jobs))
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(rows), 1000):
            await raw_db.tasks.insert_missing(rows[i:i + 1000])
        raw = time.perf_counter() - t0
        await raw_db.close()
        print(f"tasks: {len(rows)} ({jobs} jobs x {per_job})")
        print(f"raw insert of the prepared rows: {len(rows) / raw:,.0f} rows/s ({raw:.2f} s);"
              f" building them took {build:.2f} s")

        db = await open_db(f"{tmp}/mat")
        ds = await make_dataset(db, config, jobs)
        t0 = time.perf_counter()
        created = await materialize_dataset(db, ds, buffer=len(rows) + 1, batch_jobs=1000)
        mat = time.perf_counter() - t0
        assert created == len(rows), created
        rate = created / mat
        print(f"materialization: {rate:,.0f} tasks/s ({mat:.2f} s) = "
              f"{100 * rate * raw / len(rows):.0f}% of raw insert (target >= 25%)")
        await db.close()

        db = await open_db(f"{tmp}/queue")
        flat = {"tasks": [{"name": "t", "requirements": {"cpu": 1},
                           "steps": [{"command": "/bin/true"}]}]}
        ds = await make_dataset(db, flat, n_tasks)
        await materialize_dataset(db, ds, buffer=n_tasks + 1, batch_jobs=5000)
        t0 = time.perf_counter()
        queued = await queue_tasks(db, queue_max=n_tasks, group_weights={})
        q = time.perf_counter() - t0
        print(f"queue {queued:,} waiting tasks: {q:.2f} s ({queued / q:,.0f} tasks/s)")
        t0 = time.perf_counter()
        changed = await db.tasks.bulk_status(ds["dataset_id"], "suspended", None)
        b = time.perf_counter() - t0
        print(f"bulk suspend of {changed:,} tasks (one operator call, in batches): {b:.2f} s")
        await db.close()
        print(f"summary scheduler: tasks={len(rows)}; raw_insert_per_s={len(rows) / raw:.0f}; "
              f"materialize_per_s={rate:.0f}; queue_per_s={queued / q:.0f}; "
              f"bulk_suspend_s={b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    asyncio.run(bench(parser.parse_args().tasks))


if __name__ == "__main__":
    main()

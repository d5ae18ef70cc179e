"""Archive benchmark: what archiving finished datasets does to the store's size and to query
times as history grows, on the embedded store (through the repository layer, no server).

1. history: `--datasets` finished datasets of `--tasks` one-task jobs each, every task with
   a stdout log of `--log-bytes`, beside one live dataset of the same size;
2. before: documents in tasks/jobs/logs, the store's bytes on disk, and the time of
   queries over whole collections (task counts by status, every log of the live dataset's
   first task, the live dataset's task counts), each the median of `--repeat`;
3. archive every finished dataset (logs compressed to files): datasets/s;
4. after: the same figures;
5. growth: another batch of history of the same size is added and archived again; the
   store's bytes grow by far less than the first batch took, because archiving frees the
   pages the next history reuses.

Prints the ratios after/before measured in this run.

    .venv/bin/python bench/archive.py [--datasets 40] [--tasks 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iceprod.common.timeutil import iso
from iceprod.core import archive
from iceprod.db import Database


async def add_dataset(db: Database, n: int, number: int, status: str, log_bytes: int) -> str:
    ds = f"{number:032x}"
    await db.datasets.create({"dataset_id": ds, "dataset": number, "status": status,
                              "status_changed": iso(time.time() - 86400 * 30),
                              "jobs_submitted": n, "tasks_per_job": 1, "username": "bench",
                              "group": "bench", "project": "default"})
    final = "complete" if status == "complete" else "waiting"
    jobs = [{"job_id": f"{number:016x}{j:016x}", "dataset_id": ds, "job_index": j,
             "status": status} for j in range(n)]
    tasks = [{"task_id": f"{number:016x}{j:016x}", "dataset_id": ds, "job_id": jobs[j]["job_id"],
              "job_index": j, "task_index": 0, "name": "main", "status": final,
              "requirements": {"cpu": 1}, "depends": [], "walltime": 0.1, "failures": 0}
             for j in range(n)]
    await db.jobs.insert_missing(jobs)
    await db.tasks.insert_missing(tasks)
    text = "x" * log_bytes
    for t in tasks:
        await db.logs.create({"log_id": t["task_id"], "dataset_id": ds, "task_id": t["task_id"],
                              "name": "stdout", "data": text, "timestamp": iso()})
    return ds


def disk_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("iceprod.sqlite3*"))


async def timed(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def figures(db: Database, data: Path, live: str, repeat: int) -> dict[str, float]:
    first = f"{int(live, 16):016x}{0:016x}"
    return {
        "tasks": await db.tasks.count(),
        "logs": await db.logs.coll.count({}),
        "bytes": disk_bytes(data),
        "all_counts_ms": await timed(repeat, lambda: db.tasks.status_counts()),
        "live_counts_ms": await timed(repeat, lambda: db.tasks.counts_by_status(live)),
        "task_logs_ms": await timed(repeat, lambda: db.logs.for_task(live, first, 10, False, True)),
    }


async def history(db: Database, start: int, args: argparse.Namespace) -> None:
    for i in range(args.datasets):
        await add_dataset(db, args.tasks, start + i, "complete", args.log_bytes)


async def no_files(dataset_id: str) -> int:
    return 0


async def run(args: argparse.Namespace, data: Path) -> None:
    db = await Database.open(None, str(data))
    try:
        t0 = time.perf_counter()
        live = await add_dataset(db, args.tasks, 1, "processing", args.log_bytes)
        await history(db, 2, args)
        print(f"setup: {args.datasets} finished datasets x {args.tasks:,} tasks (+ logs of "
              f"{args.log_bytes} B) and one live one: {time.perf_counter() - t0:.1f} s")
        before = await figures(db, data, live, args.repeat)
        t0 = time.perf_counter()
        done = await archive.run(db, archive.Selection(older_than_days=1), str(data), no_files)
        took = time.perf_counter() - t0
        after = await figures(db, data, live, args.repeat)
        grown_first = before["bytes"]
        await history(db, 2 + args.datasets, args)
        await archive.run(db, archive.Selection(older_than_days=1), str(data), no_files)
        grown_second = disk_bytes(data) - after["bytes"]
    finally:
        await db.close()
    print(f"archived {done['changed']} datasets in {took:.2f} s "
          f"({done['changed'] / took:.1f} datasets/s, "
          f"{done['changed'] * args.tasks / took:,.0f} tasks/s)")
    print(f"{'':16}{'before':>14}{'after':>14}{'after/before':>14}")
    for key in ("tasks", "logs", "bytes", "all_counts_ms", "live_counts_ms", "task_logs_ms"):
        ratio = after[key] / before[key] if before[key] else float("nan")
        digits = 3 if key.endswith("_ms") else 0
        print(f"{key:16}{before[key]:>14,.{digits}f}{after[key]:>14,.{digits}f}{ratio:>14.3f}")
    print(f"store bytes: {grown_first:,} with the live dataset and a first history; "
          f"+{grown_second:,} for a second history of the same size archived likewise")
    summary("archive", {
        "archived_per_s": f"{done['changed'] / took:.2f}",
        "tasks_before": f"{before['tasks']:.0f}", "tasks_after": f"{after['tasks']:.0f}",
        "all_counts_ms_before": f"{before['all_counts_ms']:.3f}",
        "all_counts_ms_after": f"{after['all_counts_ms']:.3f}",
        "all_counts_ratio": f"{after['all_counts_ms'] / before['all_counts_ms']:.3f}",
        "second_history_growth_ratio": f"{grown_second / grown_first:.3f}",
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=int, default=40)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--log-bytes", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=21)
    p.add_argument("--quick", action="store_true", help="10 datasets x 200 tasks")
    args = p.parse_args()
    if args.quick:
        args.datasets, args.tasks = 10, 200
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()

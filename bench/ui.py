"""Dashboard benchmark: the server time of each dashboard page, at `--datasets` datasets
(1,000) of `--tasks-per-dataset` tasks (100), i.e. 100,000 tasks, on the embedded store.

Setup, through the repository layer with the server stopped (as bench/scale.py does): the
datasets (half alice's, half bob's, both in group physics, each dataset readable by its owner
only),
their rules and configs, ten jobs of ten tasks each with statuses spread as in a running
production (60% complete, 5% failed, the rest waiting/queued/processing/suspended), walltimes
and completion times, and one stats record per finished task of the first dataset.

Then on `iceprod-server --only rest` (no scheduler rounds competing), each page's requests
are made `--repeat` times in the order the browser makes them, as alice (who reads 500
datasets) and as an administrator (who reads all 1,000):

- datasets: the page, its script, `GET /dataset_overview` (25 rows with task counts);
- datasets search: `GET /dataset_overview?search=...`;
- dataset: the dataset, its rules, task counts, name x status matrix, tasks and jobs pages,
  config and plot data;
- task: the task, its stats records, its logs;
- pilots: grids and pilots.

Server time is read from the server's own `/metrics` (time spent per route); a page's figure
is the sum of its requests' mean server times (the browser makes some of them at once, so
this is an upper bound). The client's wall time per page is printed next to it. Target:
every page < 200 ms.

    .venv/bin/python bench/ui.py [--datasets 1000] [--tasks-per-dataset 100] [--repeat 10]
                                 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import server_time, start_server, summary

from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.server.scheduler.materialize import build_jobs, templates

TARGET_MS = 200.0
JOBS = 10
SPREAD = [("complete", 60), ("failed", 5), ("waiting", 15), ("queued", 10), ("processing", 5),
          ("suspended", 5)]


def config(tasks_per_job: int) -> dict:
    return {"tasks": [{"name": f"step{i}", "requirements": {"cpu": 1, "memory": 1},
                       "steps": [{"command": "/bin/true"}],
                       **({"depends": [f"step{i - 1}"]} if i else {})}
                      for i in range(tasks_per_job)]}


async def fill(data: Path, ids: list[str], tasks_per_job: int) -> None:
    """Configs, jobs and tasks of every dataset, statuses spread, through the repositories."""
    db = await Database.open(None, str(data))
    rng = random.Random(7)
    statuses = [s for s, weight in SPREAD for _ in range(weight)]
    now = time.time()
    try:
        cfg = config(tasks_per_job)
        tmpl = await templates(db, cfg)
        for n, ds in enumerate(ids):
            await db.config.put(ds, cfg)
            doc = await db.datasets.get(ds)
            jobs, tasks = build_jobs(doc, tmpl, {}, range(JOBS))
            for t in tasks:
                t["status"] = rng.choice(statuses)
                t["status_changed"] = iso(now - rng.uniform(0, 86400))
                if t["status"] == "complete":
                    t["walltime"] = rng.uniform(0.1, 3.0)
                if t["status"] == "failed":
                    t["failures"] = 3
                    t["reason"] = rng.choice(["step 0 exited with code 1",
                                              "memory 3.1 GB exceeded 2 GB", "cvmfs not found"])
            await db.jobs.insert_missing(jobs)
            await db.tasks.insert_missing(tasks)
            await db.datasets.advance_materialized(ds, JOBS)
            if n == 0:
                for t in tasks:
                    if t["status"] in ("complete", "failed"):
                        await db.task_stats.create({
                            "task_stat_id": new_id(), "task_id": t["task_id"],
                            "dataset_id": ds, "create_date": t["status_changed"],
                            "stats": {"walltime": t.get("walltime", 0.5) * 3600,
                                      "max_rss": rng.uniform(0.2e9, 3e9),
                                      "outcome": "complete" if t["status"] == "complete"
                                      else "reset", "reason": t.get("reason")}})
    finally:
        await db.close()


def prepare(data: Path, n: int, per: int) -> list[str]:
    server = start_server(data, {"ICEPROD_GRID_CONFIG": "none"})
    ids = []
    with server.client("alice", ["user"], ["physics"]) as alice, \
            server.client("bob", ["user"], ["physics"]) as bob:
        for i in range(n):
            c = alice if i % 2 == 0 else bob
            r = c.post("/datasets", json={
                "description": f"{'muon' if i % 10 == 0 else 'cascade'} simulation {i}",
                "jobs_submitted": JOBS, "tasks_submitted": JOBS * per, "tasks_per_job": per,
                "group": "physics"})
            r.raise_for_status()
            ids.append(r.json()["dataset_id"])
            # only the owner reads it: the group rule would let every user read all
            c.put(f"/auths/{ids[-1]}", json={"read_groups": []}).raise_for_status()
    server.stop()
    asyncio.run(fill(data, ids, per))
    return ids


def pages(ds: str, task: str) -> dict[str, list[str]]:
    return {
        "datasets": ["/ui/", "/ui/static/app.js", "/dataset_overview?limit=25&offset=0"],
        "datasets search": ["/dataset_overview?limit=25&offset=0&search=muon"],
        "dataset": [f"/datasets/{ds}", f"/auths/{ds}", f"/datasets/{ds}/task_counts/status",
                    f"/datasets/{ds}/task_counts/name_status",
                    (f"/datasets/{ds}/tasks?limit=50&keys=task_id|name|job_index|task_index|"
                     "status|failures|reason|site"),
                    f"/datasets/{ds}/jobs?limit=50&keys=job_id|job_index|status|status_changed",
                    f"/config/{ds}", f"/datasets/{ds}/task_plots"],
        "task": [f"/datasets/{ds}/tasks/{task}", f"/datasets/{ds}/tasks/{task}/task_stats?limit=100",
                 f"/datasets/{ds}/tasks/{task}/logs?group=true&order=desc&num=100"],
        "pilots": ["/grids?limit=200", "/pilots?limit=1000&status=submitted|running"],
    }


def measure(url: str, token: str, admin_token: str, plan: dict[str, list[str]],
            repeat: int) -> dict[str, tuple[float, float]]:
    """Per page: (mean server ms summed over its requests, median client wall ms)."""
    out = {}
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) \
            as c, httpx.Client(base_url=url, timeout=120,
                               headers={"Authorization": f"Bearer {admin_token}"}) as admin:
        for page, paths in plan.items():
            for p in paths:  # warm caches once, as a page opened twice would
                c.get(p).raise_for_status()
            before = server_time(admin)
            walls = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                for p in paths:
                    c.get(p).raise_for_status()
                walls.append((time.perf_counter() - t0) * 1000)
            after = server_time(admin)
            spent = sum(after[k][0] - before.get(k, (0.0, 0))[0] for k in after
                        if k != "GET /metrics")
            out[page] = (spent * 1000 / repeat, statistics.median(walls))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=1000)
    ap.add_argument("--tasks-per-dataset", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--quick", action="store_true",
                    help="40 datasets of 20 tasks, 2 repeats (a smoke run, light on the machine)")
    a = ap.parse_args()
    if a.quick:
        a.datasets, a.tasks_per_dataset, a.repeat = 40, 20, 2
    per = max(1, a.tasks_per_dataset // JOBS)
    total = a.datasets * per * JOBS
    with tempfile.TemporaryDirectory(prefix="iceprod-bench-ui-") as tmp:
        data = Path(tmp)
        t0 = time.monotonic()
        ids = prepare(data, a.datasets, per)
        print(f"{a.datasets:,} datasets, {total:,} tasks: setup {time.monotonic() - t0:.1f} s")
        server = start_server(data, {"ICEPROD_GRID_CONFIG": "none"}, args=["--only", "rest"])
        try:
            alice = server.token("alice", ["user"], ["physics"])
            admin = server.token("root", ["admin"])
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {alice}"}) as c:
                task = next(iter(c.get(f"/datasets/{ids[0]}/tasks?limit=1").json()))
                seen = c.get("/dataset_overview?limit=1").json()["total"]
            plan = pages(ids[0], task)
            figures: dict[str, str] = {}
            worst = 0.0
            for who, token, reads in (("alice", alice, seen), ("admin", admin, a.datasets)):
                print(f"\nas {who} (reads {reads:,} datasets), {a.repeat} times each:")
                print(f"  {'page':<16} {'server ms':>10} {'wall ms':>9}  requests")
                for page, (server_ms, wall_ms) in measure(server.url, token, admin, plan,
                                                          a.repeat).items():
                    print(f"  {page:<16} {server_ms:>10.1f} {wall_ms:>9.1f}  {len(plan[page])}")
                    worst = max(worst, server_ms)
                    figures[f"{who}_{page.replace(' ', '_')}_ms"] = f"{server_ms:.1f}"
            print(f"\nslowest page: {worst:.1f} ms server time (target < {TARGET_MS:.0f} ms): "
                  f"{'met' if worst < TARGET_MS else 'MISSED'}")
        finally:
            server.stop()
    summary("ui", {"datasets": str(a.datasets), "tasks": str(total),
                   "worst_page_ms": f"{worst:.1f}", **figures})


if __name__ == "__main__":
    main()

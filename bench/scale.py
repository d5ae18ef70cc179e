"""Scale benchmark: one dataset of a million queued one-task jobs on the embedded store.

For a baseline dataset (`--base-tasks`, 10,000) and then the large one (`--tasks`,
1,000,000), each on its own `iceprod-server` (embedded store, no grid, scheduler defaults,
`ICEPROD_QUEUE_MAX` above the task count so the queue round keeps every task queued):

1. setup: the dataset is created over REST (`POST /datasets`); the server is stopped; its
   config is written, then its jobs and tasks are materialized and queued by the
   scheduler's own functions (`materialize_dataset`, 10,000 jobs per batch, then
   `queue_tasks` until everything is queued), called directly on the store rather than by
   scheduler rounds. Each step's time and the materialize and queue rates (tasks/s) are
   printed.

Then, twice on the same store: once on the full server started again on that data dir
(scheduler rounds running, as in production), once on the API alone (`--only rest`: no
scheduler rounds competing for the store), each claiming at most half of the tasks:

2. status counts: `GET /datasets/{id}/task_counts/status` and `.../job_counts/status`, each
   `--repeat` times (min and median; target < 0.2 s);
3. claims/s: `--clients` concurrent pilots (one keep-alive connection and pilot token each,
   the load client of `bench/claims.py`) claiming for `--seconds`;
4. the server's RSS after start and after the claims.

Prints the large dataset's claim rate as a ratio of the baseline's (target: within 20%,
ratio >= 0.80) and its memory next to the baseline's.

    .venv/bin/python bench/scale.py [--tasks 1000000] [--base-tasks 10000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchlib import (
    OFFER,
    TRIVIAL,
    create_dataset,
    mb,
    post_bytes,
    register_pilots,
    run_load,
    start_server,
    summary,
)

from iceprod.core.queue import queue_tasks
from iceprod.db import Database
from iceprod.server.scheduler.materialize import materialize_dataset

BATCH_JOBS = 10_000
TARGET_COUNTS = 0.2
TARGET_RATIO = 0.8


PHASES = (("full server", ()), ("REST only", ("--only", "rest")))


@dataclass
class Phase:
    """What one server (the full one, or the API alone) measured."""

    name: str
    task_counts: list[float]
    job_counts: list[float]
    claims: float
    rss_start: int
    rss_end: int


@dataclass
class Result:
    tasks: int
    setup: dict[str, float]
    phases: list[Phase]

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


def server_env(n: int) -> dict[str, str]:
    return {"ICEPROD_GRID_CONFIG": "none", "ICEPROD_QUEUE_MAX": str(n + 1)}


async def materialize_and_queue(data: Path, ds: str, n: int) -> dict[str, float]:
    """Config, jobs and tasks of dataset `ds`, materialized and queued by the scheduler's
    functions; returns the time of each."""
    times = {}
    db = await Database.open(None, str(data))
    try:
        await db.config.put(ds, {"tasks": [TRIVIAL]})
        t0 = time.monotonic()
        created = await materialize_dataset(db, await db.datasets.get(ds), n + 1, BATCH_JOBS)
        times["materialize"] = time.monotonic() - t0
        t0 = time.monotonic()
        queued = 0
        while got := await queue_tasks(db, n + 1, {}):
            queued += got
        times["queue"] = time.monotonic() - t0
        if created != n or queued != n:
            raise SystemExit(f"materialized {created} and queued {queued} of {n} tasks")
    finally:
        await db.close()
    return times


def prepare(data: Path, n: int) -> tuple[str, dict[str, float]]:
    """A data dir whose store holds one dataset of `n` queued one-task jobs."""
    times: dict[str, float] = {}
    t0 = time.monotonic()
    server = start_server(data, server_env(n))
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {server.token('root', ['admin'])}"}) as c:
        ds = create_dataset(c, n, 1, "scale")
    server.stop()
    times["create over REST"] = time.monotonic() - t0
    times.update(asyncio.run(materialize_and_queue(data, ds, n)))
    return ds, times


def timed_get(c: httpx.Client, path: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        c.get(path).raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def measure_phase(data: Path, ds: str, n: int, name: str, extra: tuple[str, ...],
                  args: argparse.Namespace) -> tuple[Phase, float]:
    """Start a server on the prepared store and measure; returns how long it took to start."""
    t0 = time.monotonic()
    server = start_server(data, server_env(n), args=extra)
    started = time.monotonic() - t0
    try:
        rss_start = server.rss()
        admin = server.admin()
        got = admin.get(f"/datasets/{ds}/task_counts/status").json()
        if sum(got.values()) != n:
            raise SystemExit(f"expected {n} tasks, the server counts {got}")
        task_counts = timed_get(admin, f"/datasets/{ds}/task_counts/status", args.repeat)
        job_counts = timed_get(admin, f"/datasets/{ds}/job_counts/status", args.repeat)
        pilots = register_pilots(server, args.clients, f"scale-{name.split()[0]}")
        requests = [post_bytes(server.port, "/task_actions/process",
                               json.dumps({"pilot_id": pid, "requirements": OFFER}).encode(),
                               {"Authorization": f"Bearer {token}"}) for token, pid in pilots]
        # each phase may claim at most half the tasks: the next one still finds a full queue
        load = run_load(server.port, requests, args.seconds, budget=n // len(PHASES))
        rss_end = server.rss()
    finally:
        server.stop()
    return Phase(name, task_counts, job_counts, load.rate, rss_start, rss_end), started


def measure(data: Path, n: int, args: argparse.Namespace) -> Result:
    ds, setup = prepare(data, n)
    phases = []
    for name, extra in PHASES:
        phase, started = measure_phase(data, ds, n, name, extra, args)
        setup.setdefault("start", started)
        phases.append(phase)
    return Result(n, setup, phases)


def report(r: Result) -> None:
    setup = ", ".join(f"{k} {v:.1f} s" for k, v in r.setup.items())
    print(f"{r.tasks:,} tasks: setup {sum(r.setup.values()):.1f} s ({setup}); "
          f"materialize {r.tasks / r.setup['materialize']:,.0f} tasks/s, queue "
          f"{r.tasks / r.setup['queue']:,.0f} tasks/s")
    for p in r.phases:
        print(f"  {p.name}:")
        for name, values in (("task_counts/status", p.task_counts),
                             ("job_counts/status", p.job_counts)):
            print(f"    {name:19} min {min(values) * 1000:7.1f} ms  median "
                  f"{statistics.median(values) * 1000:7.1f} ms  ({len(values)} calls; "
                  f"target < {TARGET_COUNTS * 1000:.0f} ms)")
        print(f"    claims: {p.claims:,.0f}/s")
        print(f"    server RSS {mb(p.rss_start)} after start, {mb(p.rss_end)} after the claims")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--base-tasks", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent claimers")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="claiming time per phase")
    parser.add_argument("--repeat", type=int, default=5, help="calls of each count route")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 20,000 tasks against 2,000")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.base_tasks, args.seconds, args.repeat = 20_000, 2_000, 1.0, 2
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, n in (("base", args.base_tasks), ("large", args.tasks)):
            data = Path(tmp) / name
            data.mkdir()
            results.append(measure(data, n, args))
            report(results[-1])
    base, large = results
    figures = {"tasks": str(large.tasks), "setup_s": f"{sum(large.setup.values()):.1f}",
               "materialize_per_s": f"{large.tasks / large.setup['materialize']:.0f}",
               "queue_per_s": f"{large.tasks / large.setup['queue']:.0f}"}
    for name, _ in PHASES:
        b, g = base.phase(name), large.phase(name)
        ratio = g.claims / b.claims if b.claims else float("nan")
        print(f"{name}: claim rate at {large.tasks:,} = {ratio:.2f} of the rate at "
              f"{base.tasks:,} (target >= {TARGET_RATIO:.2f}); status counts "
              f"{statistics.median(g.task_counts) * 1000:.0f} ms; RSS {mb(g.rss_end)} "
              f"against {mb(b.rss_end)}")
        key = "" if name == PHASES[0][0] else "_rest_only"
        figures.update({
            f"task_counts_ms{key}": f"{statistics.median(g.task_counts) * 1000:.0f}",
            f"job_counts_ms{key}": f"{statistics.median(g.job_counts) * 1000:.0f}",
            f"claims_per_s{key}": f"{g.claims:.0f}", f"base_claims_per_s{key}": f"{b.claims:.0f}",
            f"claim_ratio{key}": f"{ratio:.2f}"})
    full = large.phase(PHASES[0][0])
    figures["rss_mb"] = f"{full.rss_start / 1e6:.0f}->{full.rss_end / 1e6:.0f}"
    figures["targets"] = f"counts<{TARGET_COUNTS * 1000:.0f}ms/ratio>={TARGET_RATIO:g}"
    summary("scale", figures)


if __name__ == "__main__":
    main()

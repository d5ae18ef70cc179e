"""Many-pilots benchmark: N simulated pilots claiming and completing trivial tasks.

Starts an `iceprod-server` (embedded store, no grid) with a dataset of `--tasks` queued
one-step tasks, then, for each N of `--pilots` (default 200 then 500) in turn: N simulated
pilots (asyncio tasks in one client process, each on its own keep-alive connection through
benchlib's light client so that the client costs little beside the server; every pilot with its
own pilot token) register (`POST /pilots`), then claim (`POST /task_actions/process`) and
complete (`POST /tasks/{id}/task_actions/complete`) tasks in a loop for `--seconds`
(default 30), as the pilot does: each completion claims the next task (`claim`), so a claim
of its own is sent only when a pilot has none (`--separate`: a claim and a completion per
task). Nothing is run: the figures are the server's, under N pilots' traffic.

Prints per N: tasks/s, p50/p99 of register, claim and complete latency (as the client saw
it: the client shares the machine, so it adds its own queueing), next to the mean time the
server itself spent per claim and complete (from `/metrics`) and the client's CPU use, and
the server's RSS at the start and end. Target: p99 < 250 ms at 200 pilots.

    .venv/bin/python bench/pilots.py [--pilots 200,500] [--seconds 30] [--tasks 40000]
                                     [--separate] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    OFFER,
    TRIVIAL,
    Conn,
    Server,
    auth,
    counts,
    mb,
    percentile,
    server_time,
    start_server,
    submit,
    summary,
    wait_counts,
)

TARGET_P99_MS = 250.0
TARGET_PILOTS = 200
BACKOFF = 1.0  # seconds a pilot waits after finding nothing, as a real pilot backs off
OVERTIME = 60.0
CLAIM = "POST /task_actions/process"
COMPLETE = "POST /tasks/{task_id}/task_actions/complete"


@dataclass
class Level:
    pilots: int
    seconds: float = 0.0
    done: int = 0
    empty: int = 0
    errors: int = 0
    register: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)
    rss_start: int = 0
    rss_end: int = 0
    client_cpu: float = 0.0
    server_ms: dict[str, float] = field(default_factory=dict)
    combined: bool = True


async def timed(lat: list[float], request: Awaitable[tuple[int, Any]]) -> tuple[int, Any]:
    t0 = time.perf_counter()
    r = await request
    lat.append(time.perf_counter() - t0)
    return r


async def pilot(server: Server, name: str, level: Level, start: asyncio.Event,
                deadline: list[float]) -> None:
    c = Conn(server.port, auth(server.token(name, ["pilot"])))
    try:
        await run_pilot(c, level, start, deadline)
    finally:
        c.close()


async def run_pilot(c: Conn, level: Level, start: asyncio.Event, deadline: list[float]) -> None:
    code, reg = await timed(level.register, c.request("POST", "/pilots",
                                                      {"resources": {"cpu": 1}}))
    if code != 201:
        raise SystemExit(f"registration answered {code}: {reg}")
    # a registration token only registers: the pilot acts with the token bound to it
    c.headers.update(auth(reg["token"]))
    body = {"pilot_id": reg["result"], "requirements": OFFER}
    await start.wait()
    task: dict[str, Any] | None = None
    while running(level, deadline[0]):
        if task is None:
            code, got = await timed(level.claim,
                                    c.request("POST", "/task_actions/process", body))
            if code == 404:
                level.empty += 1
                await asyncio.sleep(BACKOFF)
                continue
            if code != 200:
                level.errors += 1
                continue
            task = got
        assert task is not None
        report: dict[str, Any] = {"instance_id": task["instance_id"], "time_used": 0.01}
        if level.combined:  # as the pilot does: the completion claims the next task
            report["claim"] = {"requirements": OFFER, "max_tasks": 1}
        code, answer = await timed(level.complete, c.request(
            "POST", f"/tasks/{task['task_id']}/task_actions/complete", report))
        task = None
        if code == 200:
            level.done += 1
            if level.combined and answer["tasks"]:
                task = answer["tasks"][0]
        else:
            level.errors += 1


def running(level: Level, deadline: float) -> bool:
    """Until the deadline, and past it (at most `OVERTIME` s) until a task completed: on a
    loaded machine a short run might otherwise end with no completion to measure."""
    now = time.perf_counter()
    return now < deadline or (level.done == 0 and now < deadline + OVERTIME)


async def run_level(server: Server, admin: httpx.Client, n: int, seconds: float,
                    tag: str, combined: bool) -> Level:
    level = Level(n, combined=combined)
    start = asyncio.Event()
    deadline = [float("inf")]
    workers = [asyncio.create_task(pilot(server, f"sim-{tag}-{i}", level, start, deadline))
               for i in range(n)]
    while len(level.register) < n and not any(w.done() for w in workers):
        await asyncio.sleep(0.05)
    level.rss_start = server.rss()
    before = server_time(admin)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.set()
    await asyncio.gather(*workers)
    level.seconds = time.perf_counter() - t0
    level.client_cpu = time.process_time() - cpu0
    level.rss_end = server.rss()
    after = server_time(admin)
    for route, name in ((CLAIM, "claim"), (COMPLETE, "complete")):
        spent = after.get(route, (0.0, 0))[0] - before.get(route, (0.0, 0))[0]
        n = after.get(route, (0.0, 0))[1] - before.get(route, (0.0, 0))[1]
        level.server_ms[name] = 1000 * spent / n if n else float("nan")
    return level


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:,.0f}"


def report(level: Level) -> None:
    print(f"{level.pilots} pilots, {level.seconds:.1f} s: {level.done / level.seconds:,.1f} "
          f"tasks/s ({level.done} completed; {level.empty} empty claims, "
          f"{level.errors} errors)")
    for name, values in (("register", level.register), ("claim", level.claim),
                         ("complete", level.complete)):
        inside = level.server_ms.get(name)
        print(f"  {name:9} p50 {ms(values, 50):>6} ms   p99 {ms(values, 99):>6} ms   "
              f"({len(values)} requests"
              + (f"; {inside:.1f} ms mean inside the server)" if inside is not None else ")"))
    if level.done:
        # N pilots sending back to back keep N requests in the system: by Little's law the
        # mean request waits N / (k X) at X tasks/s and k requests per task
        rate = level.done / level.seconds
        k = (len(level.claim) + len(level.complete)) / level.done
        print(f"  closed loop: {level.pilots} pilots at {rate:,.0f} tasks/s and {k:.2f} "
              f"requests per task keep each request {1000 * level.pilots / (k * rate):,.0f} ms "
              f"on average (Little's law); a {TARGET_P99_MS:g} ms mean needs "
              f"{level.pilots / (k * TARGET_P99_MS / 1000):,.0f} tasks/s")
    print(f"  client CPU {level.client_cpu / level.seconds:.0%} of one core (the simulated "
          "pilots' own cost, on the same machine)")
    print(f"  server RSS {mb(level.rss_start)} at start, {mb(level.rss_end)} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pilots", default=f"{TARGET_PILOTS},500",
                        help="comma-separated numbers of pilots, run in turn")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 and 10 pilots, 2 s")
    parser.add_argument("--separate", action="store_true",
                        help="claim and complete in separate requests (a pilot against a "
                             "server without claims on completion)")
    args = parser.parse_args()
    if args.quick:
        args.pilots, args.seconds, args.tasks = "5,10", 2.0, 1000
    levels = [int(n) for n in args.pilots.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        n = str(args.tasks + 1)
        server = start_server(Path(tmp), {
            "ICEPROD_GRID_CONFIG": "none", "ICEPROD_SCHEDULER_INTERVAL": "1",
            "ICEPROD_QUEUE_MAX": n, "ICEPROD_MATERIALIZE_BUFFER": n})
        try:
            run(server, levels, args)
        finally:
            server.stop()


def run(server: Server, levels: list[int], args: argparse.Namespace) -> None:
    admin = server.admin()
    t0 = time.monotonic()
    ds = submit(admin, args.tasks, [TRIVIAL])
    wait_counts(admin, ds, "queued", args.tasks, 600)
    print(f"server {server.url} (embedded store, no grid); {args.tasks:,} queued tasks ready "
          f"in {time.monotonic() - t0:.1f} s; RSS {mb(server.rss())}")
    results = []
    for i, n in enumerate(levels):
        level = asyncio.run(run_level(server, admin, n, args.seconds, str(i),
                                      combined=not args.separate))
        report(level)
        results.append(level)
    left = counts(admin, ds).get("queued", 0)
    if any(r.empty for r in results):
        print(f"note: the queue ran dry ({left} queued left): raise --tasks")
    figures = {}
    for r in results:
        figures[f"tasks_per_s_{r.pilots}"] = f"{r.done / r.seconds:.1f}"
        figures[f"claim_p99_ms_{r.pilots}"] = ms(r.claim, 99).replace(",", "")
        figures[f"complete_p99_ms_{r.pilots}"] = ms(r.complete, 99).replace(",", "")
    figures["rss_mb"] = f"{results[0].rss_start / 1e6:.0f}->{results[-1].rss_end / 1e6:.0f}"
    figures["target"] = f"p99<{TARGET_P99_MS:g}ms@{TARGET_PILOTS}"
    summary("pilots", figures)


if __name__ == "__main__":
    main()

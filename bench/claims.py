"""Claim benchmark: claims/s through the REST API next to what bounds it, in the same run.

At 1, 4 and 16 concurrent clients (one keep-alive connection and one registered pilot, with
its own pilot token, per client) it measures:

1. REST: `POST /task_actions/process` on an `iceprod-server` (embedded store, no grid, a
   dataset of `--tasks` queued one-step tasks);
2. a no-op Tornado JSON POST handler (parses the body, answers a small JSON object) started
   in a subprocess the same way, sent the very same request bytes by the same client;
3. the store's own claim, `iceprod.db` `tasks.claim`, called directly (as many concurrent
   callers in one process) on a copy of the server's SQLite file taken after queueing, so
   on the same tasks.

Each level runs for `--seconds` or until it has claimed a third of the tasks. Prints
claims/s, REST / no-op and REST / store ratios; REST / no-op at 16 clients is the headline
(target >= 0.50). It also prints the bound those two measurements set: a claim over HTTP
costs the server at least an HTTP request (the no-op handler) plus the store's claim, on
one event loop, so REST / no-op cannot exceed no-op rate / (no-op rate + store rate).

    .venv/bin/python bench/claims.py [--tasks 30000] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from benchlib import (
    OFFER,
    TRIVIAL,
    LoadResult,
    Server,
    counts,
    free_port,
    post_bytes,
    register_pilots,
    run_load,
    start_server,
    submit,
    summary,
    wait_counts,
)

from iceprod.db import Database
from iceprod.db.sqlite import DB_FILE, SQLiteStore

LEVELS = (1, 4, 16)
TARGET = 0.50


def noop_server(port: int) -> None:
    """The baseline: a Tornado JSON POST handler that does nothing else."""
    import tornado.httpserver
    import tornado.ioloop
    import tornado.web

    class Noop(tornado.web.RequestHandler):
        def post(self, _path: str) -> None:
            json.loads(self.request.body)
            self.set_header("Content-Type", "application/json")
            self.write(b'{"result": "ok"}')

        def get(self, _path: str) -> None:
            self.write(b"{}")

    app = tornado.web.Application([(r"/(.*)", Noop)])
    tornado.httpserver.HTTPServer(app).listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


def start_noop() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--noop-server", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the no-op server did not start")


def snapshot(server: Server, dest: Path) -> None:
    """A consistent copy of the server's SQLite file (the backup API works while it runs)."""
    dest.mkdir()
    src = sqlite3.connect(server.data_dir / DB_FILE)
    dst = sqlite3.connect(dest / DB_FILE)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


async def store_level(db: Database, pilot_ids: list[str], seconds: float,
                      budget: int) -> LoadResult:
    """`len(pilot_ids)` concurrent callers of the store's claim, in this process."""
    done = [0]
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(pilot_id: str) -> None:
        while time.perf_counter() < deadline and done[0] < budget:
            t0 = time.perf_counter()
            task = await db.tasks.claim(OFFER, pilot_id, 600.0)
            lat.append(time.perf_counter() - t0)
            if task is None:
                return
            done[0] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(p) for p in pilot_ids))
    return LoadResult(time.perf_counter() - t0, Counter({200: done[0]}), lat)


async def store_claims(path: Path, pilot_ids: list[str], seconds: float,
                       budget: int) -> list[tuple[int, LoadResult]]:
    """The store's own claim at each level, on the copy of the server's store."""
    db = Database(SQLiteStore(str(path)))
    try:
        return [(level, await store_level(db, pilot_ids[:level], seconds, budget))
                for level in LEVELS]
    finally:
        await db.close()


def rest_and_noop(server: Server, ds: str, noop_port: int, pilots: list[tuple[str, str]],
                  seconds: float, budget: int) -> list[tuple[int, LoadResult, LoadResult, int]]:
    admin = server.admin()
    out = []
    for level in LEVELS:
        requests = [post_bytes(server.port, "/task_actions/process",
                               json.dumps({"pilot_id": pid, "requirements": OFFER}).encode(),
                               {"Authorization": f"Bearer {token}"})
                    for token, pid in pilots[:level]]
        queued = counts(admin, ds).get("queued", 0)
        rest = run_load(server.port, requests, seconds, budget)
        # the same bytes (same size, same headers) to the no-op handler
        noop = run_load(noop_port, requests, seconds)
        out.append((level, rest, noop, queued))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per level and target")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few tasks, 1 s")
    parser.add_argument("--noop-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_server is not None:
        noop_server(args.noop_server)
        return
    if args.quick:
        args.tasks, args.seconds = 1500, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "server"
        data.mkdir()
        n = str(args.tasks + 1)
        server = start_server(data, {
            "ICEPROD_GRID_CONFIG": "none", "ICEPROD_SCHEDULER_INTERVAL": "1",
            "ICEPROD_QUEUE_MAX": n, "ICEPROD_MATERIALIZE_BUFFER": n})
        noop, noop_port = start_noop()
        try:
            run(server, noop_port, Path(tmp), args)
        finally:
            noop.terminate()
            noop.wait(timeout=30)
            server.stop()


def run(server: Server, noop_port: int, tmp: Path, args: argparse.Namespace) -> None:
    admin = server.admin()
    t0 = time.monotonic()
    ds = submit(admin, args.tasks, [TRIVIAL])
    wait_counts(admin, ds, "queued", args.tasks, 600)
    pilots = register_pilots(server, max(LEVELS))
    snapshot(server, tmp / "copy")
    print(f"server {server.url} (embedded store, no grid); {args.tasks:,} queued tasks ready "
          f"in {time.monotonic() - t0:.1f} s; {args.seconds:g} s per level")
    budget = args.tasks // len(LEVELS)
    http = rest_and_noop(server, ds, noop_port, pilots, args.seconds, budget)
    direct = asyncio.run(store_claims(tmp / "copy", [p for _, p in pilots], args.seconds,
                                      budget))
    print(f"{'clients':>7} {'queued':>7} {'REST/s':>9} {'no-op/s':>9} {'store/s':>9} "
          f"{'REST/no-op':>10} {'REST/store':>10} {'REST p50':>9}")
    ratios = {}
    for (level, rest, noop, queued), (_, store) in zip(http, direct, strict=True):
        others = {k: v for k, v in rest.codes.items() if k != 200}
        ratio = rest.rate / noop.rate if noop.rate else float("nan")
        ratios[level] = ratio
        lat = sorted(rest.latencies)[len(rest.latencies) // 2] * 1000 if rest.latencies else 0
        print(f"{level:>7} {queued:>7} {rest.rate:>9,.0f} {noop.rate:>9,.0f} "
              f"{store.rate:>9,.0f} {ratio:>10.2f} "
              f"{rest.rate / store.rate if store.rate else float('nan'):>10.2f} "
              f"{lat:>7.1f}ms" + (f"  (REST answers other than 200: {others})" if others else ""))
    if any(k != 200 for _, rest, _, _ in http for k in rest.codes):
        errors = [line for line in (server.data_dir / "server.log").read_text().splitlines()
                  if "ERROR" in line or "Error" in line]
        print("server errors:\n" + "\n".join(errors[-20:]))
    head = ratios[max(LEVELS)]
    print(f"REST / no-op at {max(LEVELS)} clients: {head:.2f} (target >= {TARGET:.2f})")
    # a claim over HTTP pays at least for an HTTP request (the no-op handler's cost) and for
    # the store's own claim, on the one event loop: its rate is bounded by both together
    noop16, store16 = http[-1][2].rate, direct[-1][1].rate
    if noop16 and store16:
        bound = 1 / (1 / noop16 + 1 / store16)
        print(f"bound: a claim costs at least a no-op request plus the store's claim, so at "
              f"most {bound:,.0f}/s = {bound / noop16:.2f} of the no-op handler on this "
              f"machine, with nothing else done (REST reaches {http[-1][1].rate / bound:.2f} "
              f"of that bound)")
    top = http[-1]
    summary("claims", {
        "rest_per_s_16": f"{top[1].rate:.0f}", "noop_per_s_16": f"{top[2].rate:.0f}",
        "store_per_s_16": f"{direct[-1][1].rate:.0f}", "rest_over_noop_16": f"{head:.2f}",
        "target": f">={TARGET:.2f}"})


if __name__ == "__main__":
    main()

"""End-to-end benchmark: trivial tasks through local pilots started by the server itself.

Starts a real `iceprod-server` (embedded store, a local grid of `--pilots` pilots with
`--slots` cores each) and measures, in the same run:

1. the claim rate: `--claim-tasks` queued tasks claimed over HTTP by as many concurrent
   claimers as there are pilots (tasks pinned to a site no pilot offers, so only the
   benchmark claims them) -- the ceiling for task throughput on this server;
2. end to end: a dataset of `--tasks` one-step tasks (`/bin/true`) run by the local
   pilots, from submission to `complete`: tasks/s overall and in steady state (10%..90%
   done), server requests per task by route (from `/metrics`), and the per-task overhead
   of a full run (stage, run, logs, stats, complete) against a bare claim;
3. the node's spawn limit, before both: as many trivial processes (`/bin/true`) as there
   are tasks, started the way the pilot starts a step (the pilot's own `Sandbox.wrap`,
   `iceprod.pilot.process.spawn` with its output appended to log files, a `TreeMonitor`,
   `wait_pid`), as many at once as the pilots have slots. The sandbox is resolved as the
   local pilots resolve theirs (`auto`: bubblewrap when it works here, which roughly
   triples the cost of a start); `--sandbox none` measures bare starts instead. End-to-end
   tasks/s is printed as a fraction of it (target >= 50%), and requests per task against
   the target of 2.

    .venv/bin/python bench/e2e.py [--tasks 5000] [--pilots 8] [--slots 2] [--claim-tasks 2000]
                                  [--sandbox auto|bwrap|none] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iceprod.core.tokens import create_token
from iceprod.pilot.process import TreeMonitor, spawn, wait_pid
from iceprod.pilot.sandbox import (
    MODES,
    Sandbox,
    StepContext,
    resolve_mode,
    step_environment,
)
from iceprod.server.grids.local import pilot_bwrap_args, pilot_environment

SECRET = "bench-secret-" + "x" * 24
METRIC = re.compile(r'^iceprod_http_requests_total\{method="(\w+)",route="([^"]*)",'
                    r'code="(\d+)"\} (\d+)$')
LATENCY = re.compile(r'^iceprod_http_request_seconds_(sum|count)\{method="(\w+)",'
                     r'route="([^"]*)"\} ([\d.e+-]+)$')
# the benchmark's own requests (progress polling), not part of running tasks
OWN = ("GET /datasets/{dataset_id}/task_counts/status", "GET /metrics")
TARGET_SPAWN_FRACTION = 0.5
TARGET_REQUESTS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data: Path, pilots: int, slots: int) -> tuple[subprocess.Popen[bytes], str]:
    grid = {"grids": [{
        "name": "local", "backend": "local", "max_pilots": pilots, "max_idle": pilots,
        "max_per_cycle": pilots, "pilot_resources": {"cpu": slots},
        "options": {"cores": pilots * slots, "idle_timeout": 30, "claim_interval": 0.5,
                    "heartbeat_interval": 30, "monitor_interval": 1, "log_level": "WARNING"},
    }]}
    (data / "grids.json").write_text(json.dumps(grid))
    port = free_port()
    env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_GRID_CONFIG": str(data / "grids.json"),
           "ICEPROD_SCHEDULER_INTERVAL": "0.2", "ICEPROD_GRID_INTERVAL": "0.5",
           "ICEPROD_LOG_LEVEL": "WARNING"}
    env.pop("ICEPROD_DB_URL", None)
    with open(data / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iceprod.server", "--port", str(port), "--data-dir",
             str(data)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start; see {data / 'server.log'}")


def client(url: str, user: str, roles: list[str], groups: list[str] | None = None,
           **claims: Any) -> httpx.Client:
    token = create_token(SECRET, user, roles, groups or [], **claims)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def submit(c: httpx.Client, jobs: int, task: dict[str, Any]) -> str:
    r = c.post("/datasets", json={"description": "bench", "jobs_submitted": jobs,
                                  "tasks_submitted": jobs, "tasks_per_job": 1,
                                  "group": "bench"})
    r.raise_for_status()
    ds = str(r.json()["dataset_id"])
    c.put(f"/config/{ds}", json={"tasks": [task]}).raise_for_status()
    return ds


def counts(c: httpx.Client, ds: str) -> dict[str, int]:
    return dict(c.get(f"/datasets/{ds}/task_counts/status").json())


def wait_counts(c: httpx.Client, ds: str, status: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while counts(c, ds).get(status, 0) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} {status} tasks: {counts(c, ds)}")
        time.sleep(0.2)


def scrape(c: httpx.Client) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Requests by route (404s apart) and server time by route: `{route: [sum, count]}`."""
    requests: dict[str, int] = defaultdict(int)
    latency: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for line in c.get("/metrics").text.splitlines():
        if m := METRIC.match(line):
            method, route, code, n = m.groups()
            label = f"{method} {route}" + (" (404)" if code == "404" else "")
            requests[label] += int(n)
        elif m := LATENCY.match(line):
            kind, method, route, value = m.groups()
            latency[f"{method} {route}"][0 if kind == "sum" else 1] += float(value)
    return requests, latency


def claim_rate(url: str, admin: httpx.Client, system: httpx.Client, n: int,
               claimers: int) -> float:
    """Claims per second for `n` queued tasks with `claimers` concurrent claimers."""
    ds = submit(admin, n, {"name": "claimed", "requirements": {"cpu": 1, "site": "bench-claim"},
                           "steps": [{"command": "/bin/true"}]})
    wait_counts(admin, ds, "queued", n, 120)
    pilot_ids = [system.post("/pilots", json={"resources": {"cpu": 1000}}).json()["result"]
                 for _ in range(claimers)]
    done = [0] * claimers

    def work(i: int) -> None:
        with client(url, "iceprod-system", ["system"]) as c:
            body = {"pilot_id": pilot_ids[i],
                    "requirements": {"cpu": 1000, "memory": 1000, "site": "bench-claim"}}
            while c.post("/task_actions/process", json=body).status_code == 200:
                done[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(claimers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for pilot_id in pilot_ids:  # give the tasks back; they are never run
        system.delete(f"/pilots/{pilot_id}")
    admin.put(f"/datasets/{ds}/status", json={"status": "suspended"})
    return sum(done) / elapsed


async def spawn_limit(n: int, concurrency: int, sandbox: Sandbox) -> float:
    """Trivial processes per second, started as the pilot starts a step (its own
    ``Sandbox.wrap`` around the command, each slot with its run and tmp directories, the
    step's allow-listed environment), `concurrency` at once."""
    left = [n]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        async def slot(i: int) -> None:
            run_dir, tmp_dir = root / f"{i}" / "run", root / f"{i}" / "tmp"
            run_dir.mkdir(parents=True)
            tmp_dir.mkdir()
            empty = root / f"{i}" / ".empty"
            empty.touch(mode=0o400)
            out, err = root / f"{i}" / "stdout", root / f"{i}" / "stderr"
            env = step_environment(StepContext({}, str(tmp_dir), str(tmp_dir), 1, ""))
            argv = sandbox.wrap(["/bin/true"], run_dir, tmp_dir, empty)
            while left[0] > 0:
                left[0] -= 1
                proc = spawn(argv, run_dir, env, out, err)
                TreeMonitor(proc.pid)
                code, _ = await wait_pid(proc.pid)
                proc.returncode = code
                if code != 0:
                    raise SystemExit(f"{argv} exited with {code}; see {err}")

        t0 = time.perf_counter()
        await asyncio.gather(*(slot(i) for i in range(concurrency)))
        return n / (time.perf_counter() - t0)


def measure_spawn_limit(n: int, concurrency: int, mode: str) -> tuple[float, str]:
    """The spawn limit measured where a local pilot runs: when the local grid isolates its
    pilots (bubblewrap works here), inside the same pilot sandbox (`pilot_bwrap_args`),
    with the steps' sandbox nested in it as the pilot nests it. Answers the rate and a
    description of how it was measured."""
    step_mode = resolve_mode(mode)
    bwrap = shutil.which("bwrap")
    outer = mode != "none" and bwrap is not None
    with tempfile.TemporaryDirectory(prefix="iceprod-bench-") as tmp:
        argv = [sys.executable, __file__, "--spawn-child", str(n), str(concurrency), step_mode]
        if outer:
            assert bwrap is not None
            data, own = Path(tmp) / "data", Path(tmp) / "data" / "pilot"
            own.mkdir(parents=True)
            argv = [bwrap, *pilot_bwrap_args(data, own), "--", *argv]
        env = {**pilot_environment(), "TMPDIR": tmp if not outer else str(own)}
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"spawn limit: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    where = f"steps sandbox {step_mode}" + (", inside a local pilot's sandbox" if outer else "")
    return float(out.stdout.strip().splitlines()[-1]), where


def end_to_end(admin: httpx.Client, n: int) -> dict[str, Any]:
    before, lat_before = scrape(admin)
    t0 = time.monotonic()
    ds = submit(admin, n, {"name": "trivial", "requirements": {"cpu": 1},
                           "steps": [{"command": "/bin/true"}]})
    marks: dict[float, float] = {}
    shown = 0.0
    while True:
        now_counts = counts(admin, ds)
        done = now_counts.get("complete", 0)
        now = time.monotonic() - t0
        if now - shown >= 5:  # progress: one line every 5 s
            shown = now
            print(f"  {now:5.1f}s: {done}/{n} complete "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(now_counts.items()))})",
                  file=sys.stderr, flush=True)
        for frac in (0.1, 0.9):
            if done >= frac * n and frac not in marks:
                marks[frac] = now
        if done >= n:
            break
        if now > 1800:
            raise SystemExit(f"timed out: {counts(admin, ds)}")
        time.sleep(0.2)
    total = time.monotonic() - t0
    after, lat_after = scrape(admin)
    delta = {k: after[k] - before.get(k, 0) for k in after
             if after[k] - before.get(k, 0) and not k.startswith(OWN)}
    latency = {k: (v[0] - lat_before[k][0], v[1] - lat_before[k][1])
               for k, v in lat_after.items() if v[1] - lat_before[k][1]}
    return {"seconds": total, "steady": 0.8 * n / max(marks[0.9] - marks[0.1], 1e-9),
            "requests": delta, "latency": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--pilots", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2, help="cores per pilot")
    parser.add_argument("--claim-tasks", type=int, default=2000)
    parser.add_argument("--sandbox", choices=MODES, default="auto",
                        help="how the spawn-limit baseline starts its processes: as the "
                             "local pilots do (auto: bubblewrap when it works here)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 tasks, 2 pilots, 200 claims")
    parser.add_argument("--spawn-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spawn_child is not None:  # the spawn-limit loop, run where a pilot runs
        n, concurrency, mode = args.spawn_child
        print(asyncio.run(spawn_limit(int(n), int(concurrency), Sandbox(mode))))
        return
    if args.quick:
        args.tasks, args.pilots, args.claim_tasks = 100, 2, 200
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), args.pilots, args.slots)
        try:
            run(url, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def run(url: str, args: argparse.Namespace) -> None:
    admin = client(url, "root", ["admin"], ["bench"])
    system = client(url, "iceprod-system", ["system"])
    print(f"server {url}; {os.cpu_count()} cores here; local grid: {args.pilots} pilots x "
          f"{args.slots} cores")
    slots = args.pilots * args.slots
    limit, where = measure_spawn_limit(args.tasks, slots, args.sandbox)
    print(f"node spawn limit: {limit:,.0f} processes/s ({args.tasks} /bin/true started as the "
          f"pilot starts a step, {slots} at once, {where})")
    rate = claim_rate(url, admin, system, args.claim_tasks, args.pilots)
    print(f"claim rate: {rate:,.0f} claims/s ({args.claim_tasks} tasks, {args.pilots} "
          f"concurrent claimers)")
    e2e = end_to_end(admin, args.tasks)
    n = args.tasks
    tps = n / e2e["seconds"]
    total_requests = sum(e2e["requests"].values())
    print(f"end to end: {n} tasks in {e2e['seconds']:.1f}s = {tps:,.1f} tasks/s "
          f"(steady state {e2e['steady']:,.1f} tasks/s)")
    print(f"end to end = {e2e['steady'] / limit:.1%} of the node's spawn limit in steady state"
          f" ({tps / limit:.1%} overall; target >= {TARGET_SPAWN_FRACTION:.0%})")
    print(f"server requests per task: {total_requests / n:.2f} (target <= {TARGET_REQUESTS:g})")
    for route, count in sorted(e2e["requests"].items(), key=lambda kv: -kv[1]):
        # latency is kept per route, all codes together: shown on the route's main line
        spent, calls = (0.0, 0) if route.endswith("(404)") else e2e["latency"].get(route,
                                                                                  (0.0, 0))
        mean = f"{1000 * spent / calls:6.2f} ms mean" if calls else ""
        print(f"  {count / n:6.3f}  {route:48} ({count}) {mean}")
    in_flight = sum(v[0] for k, v in e2e["latency"].items() if not k.startswith(OWN))
    print(f"server latency of task requests: {in_flight * 1000 / n:.1f} ms/task; "
          f"{in_flight / e2e['seconds']:.1f} requests in flight on average")
    per_task = 1 / e2e["steady"]
    print(f"per-task overhead: {per_task * 1000:.2f} ms/task end to end vs "
          f"{1000 / rate:.2f} ms/claim: {(per_task - 1 / rate) * 1000:.2f} ms beyond the claim "
          f"({rate / e2e['steady']:.1f}x the claim's cost)")
    print(f"summary e2e: tasks_per_s={e2e['steady']:.1f}; spawn_limit_per_s={limit:.0f}; "
          f"fraction_of_limit={e2e['steady'] / limit:.3f}; requests_per_task="
          f"{total_requests / n:.2f}; claims_per_s={rate:.0f}; "
          f"targets=>={TARGET_SPAWN_FRACTION:g}/<={TARGET_REQUESTS:g}")


if __name__ == "__main__":
    main()

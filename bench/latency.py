"""Latency benchmark: how long one small chained job takes on a default server.

Starts a default `iceprod-server` (embedded store, the embedded local grid, every interval
at its default) and submits one job of `examples/chain.json`'s shape: its three tasks, their
names, dependencies, requirements and options, with the data entries removed and each step
replaced by one trivial `echo` (without staging, the chain's own steps would find no input
file; the benchmark measures scheduling, not staging). It prints:

- submit -> the first task processing (target <= 1 s), on an idle server: the benchmark
  first waits until the warm pilot of the embedded local grid runs (`--settle`),
- for each dependent task: its start after its parent completed (target <= 0.3 s),
- submit -> the dataset complete (target <= 2 s).

Times are the server's own `status_changed` stamps (task and dataset documents, same machine
clock as the submit time), read by polling the API every `--poll` seconds (20 ms): a state
is timed exactly as long as the poll sees it at all. The same figures as first seen by the
poll are shown beside them.

    .venv/bin/python bench/latency.py [--poll 0.02] [--timeout 120] [--quick]

`--quick` shortens the scheduler and grid intervals (a smoke run, not the default server).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import ROOT, Server, create_dataset, start_server, summary

from iceprod.common.timeutil import parse

TARGET_COMPLETE = 2.0
TARGET_FIRST = 1.0
TARGET_DEPENDENT = 0.3
QUICK_ENV = {"ICEPROD_SCHEDULER_INTERVAL": "0.2", "ICEPROD_GRID_INTERVAL": "0.3"}
QUICK_GRID = {"grids": [{"name": "local", "backend": "local", "max_pilots": 1, "max_idle": 1,
                         "warm_pilots": 1,
                         "max_per_cycle": 1, "options": {"claim_interval": 0.3}}]}


def chain_config() -> dict[str, Any]:
    """examples/chain.json without data entries, each step a trivial echo."""
    config = copy.deepcopy(json.loads((ROOT / "examples" / "chain.json").read_text()))
    for task in config["tasks"]:
        task.pop("data", None)
        task["steps"] = [{"name": task["name"], "command": "/bin/sh", "timeout": 60,
                          "args": ["-c", f"echo {task['name']} $(job_index)"]}]
    return config


def watch(c: httpx.Client, ds: str, poll: float, timeout: float) -> dict[str, Any]:
    """Poll until the dataset completes; per task and status the server's stamp and the
    time the poll first saw it, and the same for the dataset."""
    seen: dict[tuple[str, str], tuple[float, float | None]] = {}
    deadline = time.monotonic() + timeout
    final: str | None = None
    while True:
        now = time.time()
        tasks = c.get(f"/datasets/{ds}/tasks", params={"keys": "name|status|status_changed"})
        for t in tasks.json().values():
            key = (t["name"], t["status"])
            if key not in seen:
                seen[key] = (parse(t["status_changed"]), now)
        if final is not None:  # the tasks as they were left once the dataset finished
            missed_by_polls(c, ds, seen)
            return {"seen": seen, "status": final}
        dataset = c.get(f"/datasets/{ds}", params={"keys": "status|status_changed"}).json()
        if dataset["status"] != "processing":
            final = dataset["status"]
            seen[("dataset", final)] = (parse(dataset["status_changed"]), time.time())
            continue
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: tasks {sorted(seen)}")
        time.sleep(poll)


def missed_by_polls(c: httpx.Client, ds: str, seen: dict[tuple[str, str], Any]) -> None:
    """A task can pass through a status between two polls (a trivial task is processing
    for a few ms): take the server's stamp of such a transition from its events log
    (`GET /events`, a JSON page), with no time the poll saw it."""
    r = c.get("/events", params={"dataset_id": ds, "since": 0})
    if r.status_code != 200:
        return
    for event in r.json().get("events", []):
        key = (event.get("name"), event.get("status"))
        if event.get("type") == "task" and key not in seen and event.get("time"):
            seen[key] = (parse(event["time"]), None)


def num(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:7.3f}"


def fmt(seconds: float | None, target: float) -> str:
    if seconds is None:
        return "n/a (not seen)"
    return f"{seconds:6.3f} s (target <= {target:g} s: {seconds / target:.1f}x the target)"


def run(server: Server, args: argparse.Namespace) -> None:
    config = chain_config()
    order = [t["name"] for t in config["tasks"]]
    parents = {t["name"]: (t.get("depends") or [None])[0] for t in config["tasks"]}
    admin = server.admin()
    print(f"server {server.url}: {'quick intervals' if args.quick else 'defaults'}; "
          f"one job of {len(order)} chained tasks {' -> '.join(order)}; polling every "
          f"{args.poll * 1000:.0f} ms")
    settle(admin, args.settle)
    t0 = time.time()
    ds = create_dataset(admin, 1, len(order), "latency")
    admin.put(f"/config/{ds}", json=config).raise_for_status()
    result = watch(admin, ds, args.poll, args.timeout)
    seen = result["seen"]

    def stamp(name: str, status: str, which: int = 0) -> float | None:
        got = seen.get((name, status))
        return None if got is None or got[which] is None else got[which] - t0

    first = stamp(order[0], "processing")
    done = stamp("dataset", result["status"])
    print(f"submit -> first task processing:  {fmt(first, TARGET_FIRST)}"
          f"  [poll saw it at {num(stamp(order[0], 'processing', 1))} s]")
    gaps: list[float] = []
    for name in order[1:]:
        parent = parents[name]
        start, end = stamp(name, "processing"), stamp(parent, "complete")
        gap = None if start is None or end is None else start - end
        if gap is not None:
            gaps.append(gap)
        print(f"{name} started after {parent} completed: {fmt(gap, TARGET_DEPENDENT)}")
    for name in order:
        q, p, c = (stamp(name, s) for s in ("queued", "processing", "complete"))
        print(f"  {name:10} queued {num(q)}  processing {num(p)}  complete {num(c)}"
              "  (s after submit)")
    print(f"submit -> dataset {result['status']}:        {fmt(done, TARGET_COMPLETE)}"
          f"  [poll saw it at {num(stamp('dataset', result['status'], 1))} s]")
    worst = max(gaps) if gaps else float("nan")
    summary("latency", {
        "complete_s": f"{done:.2f}" if done is not None else "nan",
        "first_running_s": f"{first:.2f}" if first is not None else "nan",
        "worst_dependent_start_s": f"{worst:.2f}",
        "targets": f"<={TARGET_COMPLETE:g}/<={TARGET_FIRST:g}/<={TARGET_DEPENDENT:g}",
    })


def settle(c: httpx.Client, timeout: float) -> None:
    """An idle server, as a user meets it: the embedded local grid keeps a pilot warm, so
    wait (up to ``timeout``) until a pilot runs before submitting."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pilots = c.get("/pilots").json()
        if any(p.get("status") == "running" for p in pilots.values()):
            print(f"a warm pilot was running {time.monotonic() - t0:.1f} s after the server "
                  "answered")
            return
        time.sleep(0.1)
    print(f"no pilot running after {timeout:g} s: the first task waits for one to start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait for a warm pilot before submitting")
    parser.add_argument("--quick", action="store_true",
                        help="short scheduler and grid intervals (a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env: dict[str, str] = {}
        if args.quick:
            (data / "grids.json").write_text(json.dumps(QUICK_GRID))
            env = {**QUICK_ENV, "ICEPROD_GRID_CONFIG": str(data / "grids.json")}
        server = start_server(data, env)
        try:
            run(server, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

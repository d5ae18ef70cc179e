"""The scheduler against a real server: materialization (crash-safe), dependencies,
fair-share queueing, leases, retries and roll-up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET, Server, start_server
from tests.helpers import (
    FAST,
    create_dataset,
    minimal_config,
    register_pilot,
    submit,
    wait_for,
    wait_scheduler_rounds,
)

ROOT = Path(__file__).resolve().parents[2]


def chain() -> dict[str, Any]:
    return json.loads((ROOT / "examples" / "chain.json").read_text())


@pytest.fixture
def sched(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    env = {**FAST, **getattr(request, "param", {})}
    srv = start_server(tmp_path / "data", env=env)
    yield srv
    srv.stop()


def clients(srv: Server) -> tuple[httpx.Client, httpx.Client, httpx.Client]:
    return (srv.client(srv.token("alice", ["user"], ["physics"])),
            srv.client(srv.token("iceprod-system", ["system"])),
            srv.client(srv.token("pilot-x", ["pilot"])))


def counts(client: httpx.Client, ds: str) -> dict[str, int]:
    return client.get(f"/datasets/{ds}/task_counts/status").json()


def run_task(pilot: httpx.Client, pilot_id: str, ok: bool = True, **offer: Any) -> dict:
    """Claim one task and complete (or reset) it."""
    task = wait_for(lambda: _claim(pilot, pilot_id, offer), what="a claimable task")
    action = "complete" if ok else "reset"
    r = pilot.post(f"/tasks/{task['task_id']}/task_actions/{action}",
                   json={"instance_id": task["instance_id"], "time_used": 1.0,
                         **({} if ok else {"reason": "exit code 1"})})
    assert r.status_code == 200, r.text
    return task


def _claim(pilot: httpx.Client, pilot_id: str, offer: dict[str, Any]) -> dict | None:
    r = pilot.post("/task_actions/process",
                   json={"requirements": {"cpu": 1, "memory": 1, **offer}, "pilot_id": pilot_id})
    return r.json() if r.status_code == 200 else None


def new_pilot(pilot: httpx.Client) -> str:
    """Register a pilot; ``pilot`` switches to the token bound to it."""
    return register_pilot(pilot, cpu=1)


def spawn_scheduler(data_dir: Path, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_MATERIALIZE_BATCH": "1", **FAST}
    with open(log_path, "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "iceprod.server", "--only", "scheduler",
             "--data-dir", str(data_dir)], env=env, stdout=log, stderr=log)


def test_materialization_survives_sigkill(tmp_path: Path) -> None:
    # the config PUT materializes one batch at once: one job here, the rest is the
    # scheduler's to create (and to be killed while creating)
    rest = start_server(tmp_path / "data", env={"ICEPROD_MATERIALIZE_BATCH": "1"},
                        args=["--only", "rest"])
    try:
        alice, _, _ = clients(rest)
        ds = submit(alice, chain(), 50)
        assert sum(counts(alice, ds).values()) == 3

        def total() -> int:
            return sum(counts(alice, ds).values())

        seen_midway = []
        for _ in range(10):
            before = total()
            proc = spawn_scheduler(rest.data_dir, tmp_path / "sched.log")
            wait_for(lambda: total() > before or proc.poll() is not None,  # noqa: B023
                     what="the scheduler to create tasks", interval=0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if 0 < (n := total()) < 150:
                seen_midway.append(n)
                print("killed the scheduler with", n, "tasks created")
            else:
                break
        assert seen_midway, "the scheduler was never killed mid-way"
        # the survivor serves /metrics too, so the test can see it go on looking and create
        # nothing more once all 150 exist
        finisher = start_server(rest.data_dir, env={"ICEPROD_MATERIALIZE_BATCH": "1", **FAST})
        try:
            wait_for(lambda: total() == 150, what="150 tasks")
            wait_scheduler_rounds(finisher.url)
        finally:
            finisher.stop()
        tasks = alice.get(f"/datasets/{ds}/tasks",
                          params={"keys": "job_index|task_index|name|depends"}).json()
        assert len(tasks) == 150
        keys = {(t["job_index"], t["task_index"]) for t in tasks.values()}
        assert keys == {(j, i) for j in range(50) for i in range(3)}
        jobs = alice.get(f"/datasets/{ds}/jobs", params={"keys": "job_index"}).json()
        assert sorted(j["job_index"] for j in jobs.values()) == list(range(50))
        by_key = {(t["job_index"], t["task_index"]): tid for tid, t in tasks.items()}
        for (j, i), tid in by_key.items():
            assert tasks[tid]["depends"] == ([by_key[(j, i - 1)]] if i else [])
            assert tasks[tid]["name"] == ["generate", "process", "finish"][i]
    finally:
        rest.stop()


def test_parameters_are_substituted(sched: Server) -> None:
    alice, _system, _ = clients(sched)
    cfg = chain()
    cfg["tasks"][0]["requirements"]["memory"] = "$(steering.MEM)"
    cfg["steering"]["parameters"]["MEM"] = 0.25
    ds = submit(alice, cfg, 2)
    wait_for(lambda: sum(counts(alice, ds).values()) == 6, what="6 tasks")
    tasks = alice.get(f"/datasets/{ds}/tasks", params={"name": "generate"}).json()
    number = alice.get(f"/datasets/{ds}").json()["dataset"]
    for t in tasks.values():
        assert t["requirements"]["memory"] == 0.25
        assert t["steps"][0]["args"][1] == f"echo 'job {t['job_index']} of dataset {number}' > gen.txt"
        assert t["data"][0]["remote"] == f"iceprod:example/{t['job_index']}/gen.txt"


def test_dependencies_gate_queueing_and_roll_up(sched: Server) -> None:
    alice, _, pilot = clients(sched)
    ds = submit(alice, chain(), 2)
    wait_for(lambda: counts(alice, ds).get("queued") == 2, what="two generate tasks queued")
    by_name = alice.get(f"/datasets/{ds}/task_counts/name_status").json()
    assert by_name == {"generate": {"queued": 2}, "process": {"waiting": 2},
                       "finish": {"waiting": 2}}
    pid = new_pilot(pilot)
    first = run_task(pilot, pid)
    assert first["name"] == "generate"
    wait_for(lambda: alice.get(f"/datasets/{ds}/task_counts/name_status").json()
             ["process"].get("queued") == 1, what="process queued after generate")
    for _ in range(5):
        run_task(pilot, pid)
    wait_for(lambda: alice.get(f"/datasets/{ds}").json()["status"] == "complete",
             what="dataset complete")
    assert alice.get(f"/datasets/{ds}/job_counts/status").json() == {"complete": 2}


def test_cross_dataset_dependencies(sched: Server) -> None:
    alice, _, pilot = clients(sched)
    upstream = submit(alice, minimal_config(["gen"]), 2)
    bad = minimal_config(["use"])
    bad["tasks"][0]["depends"] = [f"{upstream}:nope"]
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=1)
    r = alice.put(f"/config/{ds}", json=bad)
    assert r.status_code == 400 and "tasks[0].depends[0]" in r.json()["error"]
    assert "nope" in r.json()["error"]
    good = minimal_config(["use"])
    good["tasks"][0]["depends"] = [f"{upstream}:gen"]
    assert alice.put(f"/config/{ds}", json=good).status_code == 200
    wait_for(lambda: sum(counts(alice, ds).values()) == 2, what="downstream tasks")
    wait_scheduler_rounds(sched.url)  # rounds that could have queued them, and did not
    assert counts(alice, ds) == {"waiting": 2}
    pid = new_pilot(pilot)
    done = run_task(pilot, pid)
    assert done["dataset_id"] == upstream
    downstream = alice.get(f"/datasets/{ds}/tasks").json()
    target = next(t for t in downstream.values() if t["job_index"] == done["job_index"])
    wait_for(lambda: alice.get(f"/datasets/{ds}/tasks/{target['task_id']}").json()["status"]
             == "queued", what="the matching downstream task queued")
    assert counts(alice, ds) == {"waiting": 1, "queued": 1}


@pytest.mark.parametrize("sched", [{"ICEPROD_LEASE_SECONDS": "1"}], indirect=True)
def test_expired_leases_requeue(sched: Server) -> None:
    alice, system, pilot = clients(sched)
    ds = submit(alice, minimal_config(["t"]), 1)
    pid = new_pilot(pilot)
    task = wait_for(lambda: _claim(pilot, pid, {}), what="a claim")
    assert counts(alice, ds) == {"processing": 1}
    wait_for(lambda: system.get(f"/tasks/{task['task_id']}").json()["status"] != "processing",
             timeout=5, what="the lease to expire")
    t = system.get(f"/tasks/{task['task_id']}").json()
    assert t["evictions"] == 1 and t["failures"] == 0
    r = pilot.post(f"/tasks/{task['task_id']}/task_actions/complete",
                   json={"instance_id": task["instance_id"]})
    assert r.status_code in (403, 409)


def test_failures_past_the_limit_roll_up_to_errors(sched: Server) -> None:
    alice, system, pilot = clients(sched)
    ds = submit(alice, minimal_config(["t"]), 1, max_failures=2)
    pid = new_pilot(pilot)
    t1 = run_task(pilot, pid, ok=False)
    t2 = run_task(pilot, pid, ok=False)
    assert t1["task_id"] == t2["task_id"]
    task = system.get(f"/tasks/{t1['task_id']}").json()
    assert task["status"] == "failed" and task["failures"] == 2
    assert task["reason_class"] == "payload" and task["failure_classes"] == {"payload": 2}
    wait_for(lambda: alice.get(f"/datasets/{ds}").json()["status"] == "errors",
             what="dataset errors")
    assert alice.get(f"/datasets/{ds}/job_counts/status").json() == {"errors": 1}
    # an operator resets the failed task and resumes: it runs again and completes
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/waiting",
                   json={"filter": {"status": ["failed"]}})
    assert r.json() == {"changed": 1}
    # retried work reopens the dataset (server-side); resuming it again is a no-op
    assert alice.get(f"/datasets/{ds}").json()["status"] == "processing"
    assert alice.put(f"/datasets/{ds}/status", json={"status": "processing"}).status_code == 200
    run_task(pilot, pid)
    wait_for(lambda: alice.get(f"/datasets/{ds}").json()["status"] == "complete",
             what="dataset complete")


def test_debug_mode_suspends_a_failing_task(sched: Server) -> None:
    alice, system, pilot = clients(sched)
    ds = submit(alice, minimal_config(["t"]), 1, debug=True)
    pid = new_pilot(pilot)
    t = run_task(pilot, pid, ok=False)
    assert system.get(f"/tasks/{t['task_id']}").json()["status"] == "suspended"
    assert counts(alice, ds) == {"suspended": 1}


def test_suspend_and_resume_carry_down(sched: Server) -> None:
    alice, _, _ = clients(sched)
    ds = submit(alice, chain(), 3)
    wait_for(lambda: sum(counts(alice, ds).values()) == 9, what="9 tasks")
    r = alice.put(f"/datasets/{ds}/status", json={"status": "suspended"})
    assert r.json() == {"changed": 9, "tasks_changed": 9}
    assert counts(alice, ds) == {"suspended": 9}
    assert alice.get(f"/datasets/{ds}/job_counts/status").json() == {"suspended": 3}
    r = alice.put(f"/datasets/{ds}/status", json={"status": "processing"})
    assert r.json() == {"changed": 9, "tasks_changed": 9}
    wait_for(lambda: counts(alice, ds) == {"queued": 3, "waiting": 6}, what="requeued")
    jobs = alice.get(f"/datasets/{ds}/jobs").json()
    job_id = next(iter(jobs))
    r = alice.put(f"/datasets/{ds}/jobs/{job_id}/status", json={"status": "suspended"})
    assert r.json() == {"changed": 3, "tasks_changed": 3}


@pytest.mark.parametrize("sched", [{"ICEPROD_QUEUE_MAX": "100",
                                    "ICEPROD_GROUP_WEIGHTS": '{"physics": 3}'}], indirect=True)
def test_fair_share_of_queued_slots(sched: Server) -> None:
    alice, _, _ = clients(sched)
    carol = sched.client(sched.token("carol", ["user"], ["physics"]))
    dave = sched.client(sched.token("dave", ["user"], ["astro"]))
    # two physics users with equal priority split physics' 3/4 evenly; astro gets 1/4
    a = submit(alice, minimal_config(["t"]), 300)
    c = submit(carol, minimal_config(["t"]), 300)
    d = submit(dave, minimal_config(["t"]), 300, group="astro")
    pairs = [(alice, a), (carol, c), (dave, d)]

    def shares() -> tuple[int, ...]:
        return tuple(counts(x, ds).get("queued", 0) for x, ds in pairs)

    def balanced() -> tuple[int, ...] | None:
        qa, qc, qd = q = shares()
        # whoever materialized first filled the queue; slots must flow to the others
        return q if abs(qa - qc) <= 2 and abs(qd - 25) <= 2 and qa + qc + qd >= 98 else None

    qa, qc, qd = wait_for(balanced, timeout=15, what=f"fair shares, last seen {shares()}")
    assert qa + qc + qd <= 100
    assert qa == pytest.approx(37.5, abs=2) and qc == pytest.approx(37.5, abs=2)
    carol.close()
    dave.close()


def lease_holder(data_dir: Path) -> str:
    """Who holds the scheduler lease now, read from the store ("" when released)."""
    import asyncio

    from iceprod.common.timeutil import parse
    from iceprod.db import Database

    async def read() -> str:
        db = await Database.open(None, str(data_dir))
        try:
            doc = await db.settings.find("scheduler")
        finally:
            await db.close()
        if not doc or parse(doc["expires"]) < time.time():
            return ""
        return str(doc["holder"])

    return asyncio.run(read())


def test_a_stopped_scheduler_releases_its_lease_to_a_standby(tmp_path: Path) -> None:
    # rounds every 2 s: the lease lives 6 s, so a standby that took over within 2 s after
    # the first one stopped got it released, not expired
    env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_SCHEDULER_INTERVAL": "2"}
    data = tmp_path / "data"
    rest = start_server(data, args=["--only", "rest"])
    procs: list[subprocess.Popen] = []
    try:
        for name in ("first", "standby"):
            with open(tmp_path / f"{name}.log", "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "iceprod.server", "--only", "scheduler",
                     "--data-dir", str(data)], env=env, stdout=log, stderr=log))
            if name == "first":
                first = wait_for(lambda: lease_holder(data), what="a scheduler to hold it")
        assert f":{procs[0].pid}:" in first
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=30) == 0
        stopped = time.monotonic()
        assert "released its lease" in (tmp_path / "first.log").read_text()
        standby = wait_for(lambda: lease_holder(data), timeout=30, what="the standby")
        assert f":{procs[1].pid}:" in standby
        assert time.monotonic() - stopped < 4.0, "the standby waited for the lease to expire"
        # the active scheduler's counts are what /metrics shows (the scrape counts nothing)
        alice, _system, _ = clients(rest)
        ds = create_dataset(alice, "physics", jobs=1, tasks_per_job=1)

        def tasks_gauge() -> str | None:
            text = httpx.get(rest.url + "/metrics").text
            found = re.search(r'^iceprod_datasets\{status="processing"\} [1-9]', text,
                              re.MULTILINE)
            return text if found else None

        text = wait_for(tasks_gauge, timeout=30, what="the scheduler's counts in /metrics")
        assert re.search(r'^iceprod_tasks\{status="queued"\} \d+$', text, re.MULTILINE)
        assert re.search(r"^iceprod_status_counts_age_seconds \d", text, re.MULTILINE)
        assert ds not in text
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        rest.stop()

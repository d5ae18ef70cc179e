"""The `iceprod-pilot` process against a real server (scheduler on, no grid: the tests
start the pilots): retries and failure of a broken payload, time and memory limits, a task
taken away by a suspend, SIGTERM, and the idle exit."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Server, start_server
from tests.helpers import create_dataset
from tests.pilot.support import (
    FAST,
    Pilots,
    finished,
    logs,
    one_task,
    pilot_log,
    register,
    stats,
    step_process,
    submit,
    tasks,
    wait_for,
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "data", env=FAST)
    yield server
    server.stop()


@pytest.fixture
def pilots(srv: Server, tmp_path: Path) -> Iterator[Pilots]:
    started = Pilots(srv, tmp_path)
    yield started
    started.stop()


@pytest.fixture
def alice(srv: Server) -> httpx.Client:
    return srv.client(srv.token("alice", ["user"], ["physics"]))


@pytest.fixture
def admin(srv: Server) -> httpx.Client:
    return srv.client(srv.token("root", ["admin"]))


def test_a_failing_task_is_retried_to_the_limit_then_failed(pilots: Pilots, alice: httpx.Client,
                                                           tmp_path: Path) -> None:
    script = "echo 'working on job $(job_index)'; echo 'bad input, giving up' >&2; exit 3"
    step = {"name": "broken", "command": "/bin/sh", "args": ["-c", script]}
    ds = submit(alice, one_task([step]), max_failures=3)
    pilot = pilots.start()
    assert wait_for(lambda: finished(alice, ds), what="the dataset to end") == "errors"
    assert pilot.wait(timeout=20) == 0  # then idle: it exits by itself
    (task,) = tasks(alice, ds).values()
    assert task["status"] == "failed" and task["failures"] == 3
    assert task["reason"] == "step 0 ('broken') exited with code 3: bad input, giving up"
    assert task["reason_class"] == "payload"
    named = [(log["name"], log["data"]) for log in logs(alice, ds, task["task_id"])]
    assert [n for n, _ in named].count("stderr") == 3
    assert ("stderr", "bad input, giving up\n") in named
    assert ("stdout", "working on job 0\n") in named
    assert any(n == "stdlog" and "exited with code 3" in d for n, d in named)
    runs = stats(alice, ds, task["task_id"])
    assert [r["exit_code"] for r in runs] == [3, 3, 3]
    assert {r["outcome"] for r in runs} == {"reset"}


def test_time_and_memory_limits_kill_with_a_reason(pilots: Pilots, alice: httpx.Client,
                                                   tmp_path: Path) -> None:
    hog = "import time; x = 'x' * (200 << 20); time.sleep(60)"
    config = {"tasks": [
        {"name": "slow", "requirements": {"time": 1 / 3600},
         "steps": [{"command": "sleep", "args": ["60"]}]},
        {"name": "nap", "steps": [{"name": "nap", "command": "sleep", "args": ["60"],
                                   "timeout": 1}]},
        {"name": "hog", "requirements": {"memory": 0.05},
         "steps": [{"command": sys.executable, "args": ["-c", hog]}]},
    ]}
    ds = submit(alice, config, max_failures=1)
    t0 = time.monotonic()
    pilots.start(resources="cpu=3,memory=2,disk=2")
    assert wait_for(lambda: finished(alice, ds), what="the dataset to end") == "errors"
    assert time.monotonic() - t0 < 20  # nothing ran its 60 seconds
    by_name = {t["name"]: t for t in tasks(alice, ds).values()}
    slow, nap, hog_task = by_name["slow"], by_name["nap"], by_name["hog"]
    assert slow["status"] == "failed"
    assert slow["reason"].startswith("time limit exceeded: the task ran ")
    assert slow["reason_class"] == "resources"
    # measured use raises the requirement for the next try (1.5x what it ran)
    assert slow["requirements"]["time"] > 1 / 3600
    assert nap["reason"] == "time limit exceeded: step 0 ('nap') ran over its timeout of 1s"
    assert hog_task["reason"].startswith("memory overuse: the task used ")
    assert hog_task["requirements"]["memory"] > 0.1
    (run,) = stats(alice, ds, slow["task_id"])
    assert run["exit_code"] == -signal.SIGTERM and 1 <= run["walltime"] < 10


def test_a_suspended_task_is_killed_on_the_pilot(pilots: Pilots, alice: httpx.Client,
                                                 tmp_path: Path) -> None:
    # the step is found from outside as the pilot's descendant (inside its sandbox it has
    # a pid of its own namespace, and no way to write outside its directory)
    step = {"command": "/bin/sh", "args": ["-c", "exec sleep 60.1"]}
    ds = submit(alice, one_task([step]))
    pilot = pilots.start()
    pid = wait_for(lambda: step_process(pilot, "sleep", "60.1"), what="the step to run").pid
    r = alice.put(f"/datasets/{ds}/status", json={"status": "suspended"})
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    wait_for(lambda: not psutil.pid_exists(pid), timeout=10, what="the step to be killed")
    assert time.monotonic() - t0 < 5  # heartbeat every 0.5s here; within a minute by default
    (task,) = tasks(alice, ds).values()
    assert task["status"] == "suspended"
    assert stats(alice, ds, task["task_id"]) == []  # not this pilot's any more: no report
    assert "no longer this pilot's" in pilot_log(tmp_path)
    assert pilot.poll() is None  # the pilot itself goes on


def test_sigterm_gives_running_tasks_back_without_a_failure(
        pilots: Pilots, alice: httpx.Client, admin: httpx.Client, tmp_path: Path) -> None:
    """A planned stop (a restart, a batch job ending) is not the task's fault: past the drain
    grace the task goes back to the queue as an eviction, its failures untouched."""
    step = {"command": "sleep", "args": ["60"]}
    ds = submit(alice, one_task([step]), max_failures=1)  # one counted failure would fail it
    # registered by its grid: the pilot's token is bound to that record
    pilot_id, token = register(admin, cpu=2)
    pilot = pilots.start("p", "--drain-grace", "0.5", token=token)
    wait_for(lambda: step_process(pilot, "sleep", "60"), what="the step to run")
    (task,) = tasks(alice, ds).values()
    assert task["pilot_id"] == pilot_id and task["status"] == "processing"
    pilot.send_signal(signal.SIGTERM)
    assert pilot.wait(timeout=30) == 0
    task = tasks(alice, ds)[task["task_id"]]
    assert task["status"] in ("waiting", "queued")
    assert (task["failures"], task["evictions"]) == (0, 1)
    assert task["reason"] == ("pilot stopped by SIGTERM: given back to the queue, not a "
                              "failure")
    assert task["reason_class"] == "evicted"
    # a run cut short grows no requirement (a time limit of a fraction of a second would
    # kill every retry)
    assert not {"time", "disk", "memory"} & set(task["requirements"])
    assert any(log["name"] == "stdlog" and "SIGTERM" in log["data"]
               for log in logs(alice, ds, task["task_id"]))
    assert admin.get(f"/pilots/{pilot_id}").json()["status"] == "finished"


def test_a_task_finishing_within_the_drain_grace_completes_and_keeps_no_stale_reason(
        pilots: Pilots, alice: httpx.Client, admin: httpx.Client, tmp_path: Path) -> None:
    script = "sleep 1.5; echo finished"
    step = {"command": "/bin/sh", "args": ["-c", script]}
    ds = submit(alice, one_task([step]), max_failures=1)
    # a first pilot is stopped at once (no grace): the task is given back with a reason
    first = pilots.start("first", "--drain-grace", "0")
    wait_for(lambda: step_process(first, "/bin/sh", "-c", script), what="the first run")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    (task,) = tasks(alice, ds).values()
    assert task["reason_class"] == "evicted" and task["failures"] == 0
    # a second pilot is stopped while the task runs, but the grace lets it finish
    second = pilots.start("second", "--drain-grace", "30")
    wait_for(lambda: step_process(second, "/bin/sh", "-c", script), what="the second run")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    task = tasks(alice, ds)[task["task_id"]]
    assert task["status"] == "complete" and task["failures"] == 0
    assert "reason" not in task and "reason_class" not in task  # the last run's: none


def test_a_pilot_without_work_exits_after_its_idle_timeout(pilots: Pilots, admin: httpx.Client,
                                                           tmp_path: Path) -> None:
    t0 = time.monotonic()
    pilot = pilots.start("idle", "--idle-timeout", "1")
    assert pilot.wait(timeout=15) == 0
    assert 1 <= time.monotonic() - t0 < 10
    (doc,) = admin.get("/pilots").json().values()
    assert doc["status"] == "finished" and doc["resources"]["cpu"] == 2


def test_a_bad_token_is_refused(pilots: Pilots, tmp_path: Path) -> None:
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    pilot = pilots.start("x", "--token-file", str(bad))
    assert pilot.wait(timeout=15) == 1
    assert "invalid token" in pilot_log(tmp_path, "x")


def test_a_pilot_the_server_gave_up_stops(pilots: Pilots, alice: httpx.Client,
                                          admin: httpx.Client, tmp_path: Path) -> None:
    step = {"command": "/bin/sh", "args": ["-c", "exec sleep 60.2"]}
    ds = submit(alice, one_task([step]))
    pilot_id, token = register(admin, cpu=2)
    pilot = pilots.start(token=token)
    pid = wait_for(lambda: step_process(pilot, "sleep", "60.2"), what="the step to run").pid
    # what the grid manager does when the batch system lost track of the pilot: its task
    # goes back to waiting and its credentials die with it
    r = admin.patch(f"/pilots/{pilot_id}", json={"status": "lost"})
    assert r.status_code == 200, r.text
    # refused credentials: exit code 1 (before this change the heartbeat answer said "lost"
    # and the pilot exited 0; now the heartbeat itself is refused)
    assert pilot.wait(timeout=15) == 1
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    refusals = [line for line in pilot_log(tmp_path).splitlines()
                if "the server refused its credentials" in line]
    assert len(refusals) == 1 and f"pilot {pilot_id} is lost" in refusals[0], refusals
    (task,) = tasks(alice, ds).values()
    assert task["status"] in ("waiting", "queued") and task["evictions"] == 1
    assert task["failures"] == 0
    # killed unreported: no stats record, no log from this run
    assert stats(alice, ds, task["task_id"]) == []
    assert logs(alice, ds, task["task_id"]) == []


def test_tasks_run_side_by_side_within_the_slot(pilots: Pilots, alice: httpx.Client,
                                                tmp_path: Path) -> None:
    # each step prints when it started and ended (wall clock, shared with the host)
    script = "date +%s.%N; sleep 1; date +%s.%N"
    ds = submit(alice, one_task([{"command": "/bin/sh", "args": ["-c", script]}],
                                requirements={"cpu": 1, "memory": 0.5}), jobs=5)
    pilots.start(resources="cpu=2,memory=4,disk=1")
    assert wait_for(lambda: finished(alice, ds), what="the dataset") == "complete"
    times = []
    for task in tasks(alice, ds).values():
        (out,) = [log["data"] for log in logs(alice, ds, task["task_id"])
                  if log["name"] == "stdout"]
        start, end = out.split()
        times.append((float(start), float(end)))
    assert len(times) == 5
    # at every start, how many tasks were running: two at a time (2 cores, 1 each), never 3
    running = [sum(1 for s, e in times if s <= t0 < e) for t0, _ in times]
    assert max(running) == 2


def test_iceprod_remotes_stage_through_the_server_store(pilots: Pilots, alice: httpx.Client,
                                                        tmp_path: Path) -> None:
    script = "set -e; tr a-z A-Z < in.txt > out.txt; cat params/p.bin >> out.txt"
    step = {"name": "upper", "command": "/bin/sh", "args": ["-c", script]}
    data = [
        {"remote": "iceprod:inputs/in.txt", "local": "in.txt", "movement": "input"},
        {"remote": "iceprod:/datasets/$(dataset_id)/store/p.bin", "local": "params/p.bin",
         "movement": "input"},
        {"remote": "iceprod:absent.txt", "movement": "input", "transfer": "maybe"},
        {"remote": "iceprod:results/$(job_index)/out.txt", "local": "out.txt",
         "movement": "output"},
    ]
    config = one_task([step], data=data)
    ds = create_dataset(alice, "physics", jobs=1, tasks_per_job=1)
    # inputs go to the store before the config makes the task runnable
    r = alice.put(f"/datasets/{ds}/store/inputs/in.txt", content=b"hello store\n")
    assert r.status_code == 201, r.text
    assert alice.put(f"/datasets/{ds}/store/p.bin", content=b"\x00\x01").status_code == 201
    r = alice.put(f"/config/{ds}", json=config)
    assert r.status_code == 200, r.text
    pilots.start()
    assert wait_for(lambda: finished(alice, ds), what="the dataset to end") == "complete", \
        [t.get("reason") for t in tasks(alice, ds).values()]
    r = alice.get(f"/datasets/{ds}/store/results/0/out.txt")
    assert r.status_code == 200, r.text
    assert r.content == b"HELLO STORE\n\x00\x01"
    # the pilot's log says once that the task is done
    (task_id,) = tasks(alice, ds)
    ends = [line for line in pilot_log(tmp_path).splitlines()
            if task_id in line and ("succeeded" in line or "complete" in line)]
    assert len(ends) == 1, ends
    listing = alice.get(f"/datasets/{ds}/store").json()
    assert set(listing) == {"inputs/in.txt", "p.bin", "results/0/out.txt"}


def claimed_via(srv: Server) -> dict[str, float]:
    """``iceprod_tasks_claimed_total`` by its ``via`` label."""
    out: dict[str, float] = {}
    for line in httpx.get(srv.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("iceprod_tasks_claimed_total{"):
            via = line.split('via="', 1)[1].split('"', 1)[0]
            out[via] = out.get(via, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_each_completion_claims_the_next_task(pilots: Pilots, alice: httpx.Client,
                                              srv: Server) -> None:
    """One request per task: the pilot's first claim takes a task, and each completion
    claims the task that takes its place (one core: one at a time)."""
    ds = submit(alice, one_task([{"command": "/bin/true"}],
                                requirements={"cpu": 1, "memory": 0.5}), jobs=6)
    wait_for(lambda: alice.get(f"/datasets/{ds}/task_counts/status").json()
             == {"queued": 6}, what="six queued tasks")
    pilots.start(resources="cpu=1,memory=2,disk=1")
    assert wait_for(lambda: finished(alice, ds), what="the dataset") == "complete"
    assert claimed_via(srv) == {"process": 1, "completion": 5}

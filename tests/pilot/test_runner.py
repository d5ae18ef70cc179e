"""Running a task's steps for real (processes, files, limits) without a server: what
`TaskRunner.run()` reports is what the pilot then sends. Every test runs twice: steps
started directly, and inside the bubblewrap sandbox (limits, kills and exit codes work
through the wrapper)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from iceprod.client.api import AsyncClient
from iceprod.pilot.resources import Allocation
from iceprod.pilot.runner import RunnerSettings, TaskRunner
from iceprod.pilot.sandbox import Sandbox
from tests.helpers import wait_for

# steps running this test's Python need it inside the sandbox
PYTHON_BINDS = tuple(sorted({sys.prefix, sys.base_prefix}))


@pytest.fixture(params=["none", "bwrap"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    return Sandbox(request.param, binds=PYTHON_BINDS)


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    # run() never talks to the server; report() is exercised by the pilot tests
    async with AsyncClient("http://127.0.0.1:9") as c:
        yield c


def task(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"task_id": "a" * 32, "instance_id": "b" * 32, "dataset_id": "c" * 32,
            "job_index": 7, "task_index": 0, "name": "t", "steps": steps, **extra}


Make = Callable[..., TaskRunner]


@pytest.fixture
def runner(sandbox: Sandbox) -> Make:
    """Builds a runner for a task in ``tmp_path`` with the test's sandbox; staging may use
    the directory above ``tmp_path`` unless ``stage_roots`` says otherwise."""
    def make(client: AsyncClient, tmp_path: Path, doc: dict[str, Any],
             **settings: Any) -> TaskRunner:
        settings.setdefault("sandbox", sandbox)
        settings.setdefault("stage_roots", (str(tmp_path.parent),))
        s = RunnerSettings(pilot_id="d" * 32, site="test", monitor_interval=0.05,
                           kill_grace=1, **settings)
        return TaskRunner(doc, Allocation(cpu=2, memory=1, disk=1, gpus=("1",)), tmp_path, s,
                          client)
    return make


async def test_steps_run_in_order_with_args_env_and_inputs(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    src = tmp_path / "input.txt"
    src.write_text("payload\n")
    out = tmp_path / "results" / "out.txt"
    second = ('echo "$ICEPROD_JOB_INDEX $OMP_NUM_THREADS $CUDA_VISIBLE_DEVICES" >> out.txt; '
              "echo to-stdout; echo to-stderr >&2")
    doc = task(
        [{"name": "first", "command": "/bin/sh",
          "args": ["-c", 'cat input.txt > out.txt; echo "$GREETING $STEP_ONLY" >> out.txt'],
          "env": {"STEP_ONLY": "step-env"}},
         {"name": "second", "command": "sh", "args": ["-c", second]}],  # sh: found on PATH
        env={"GREETING": "hello"},
        data=[{"remote": str(src), "movement": "input"},
              {"remote": str(out), "local": "out.txt", "movement": "output"}],
    )
    r = runner(client, tmp_path / "work", doc, stage_roots=(str(tmp_path),))
    outcome = await r.run()
    assert outcome.ok, outcome.reason
    assert out.read_text() == "payload\nhello step-env\n7 2 1\n"
    assert [s.exit_code for s in outcome.steps] == [0, 0]
    assert (r.root / "stdout").read_text() == "to-stdout\n"
    assert (r.root / "stderr").read_text() == "to-stderr\n"
    assert "staged out 1 file(s)" in (r.root / "stdlog").read_text()
    stats = r.stats(outcome)
    assert stats["exit_code"] == 0 and stats["host"] and stats["site"] == "test"
    assert stats["max_rss"] > 0 and stats["walltime"] >= 0


async def test_a_failing_step_stops_the_task_with_its_exit_code(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    doc = task([{"name": "bad", "command": "/bin/sh", "args": ["-c", "echo broken >&2; exit 3"]},
                {"name": "never", "command": "/bin/sh", "args": ["-c", "touch ran"]}])
    r = runner(client, tmp_path, doc)
    outcome = await r.run()
    assert not outcome.ok and outcome.exit_code == 3
    assert outcome.reason == "step 0 ('bad') exited with code 3: broken"
    assert not (r.run_dir / "ran").exists()


async def test_a_missing_command_is_a_clear_failure(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    r = runner(client, tmp_path, task([{"command": "no-such-command-xyz"}]))
    outcome = await r.run()
    assert not outcome.ok and outcome.exit_code == 127
    assert "cannot run no-such-command-xyz" in outcome.reason


def sleepers(marker: str) -> list[psutil.Process]:
    """Live processes running ``sleep <marker>`` (seen from here, whatever their pid
    namespace)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["cmdline"] == ["sleep", marker] and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


async def test_time_limits_kill_the_whole_tree(
        client: AsyncClient, runner: Make, tmp_path: Path,
                                               sandbox: Sandbox) -> None:
    # the step forks a grandchild that would outlive a naive kill
    marker = f"30.{os.getpid()}{len(sandbox.mode)}"
    doc = task([{"name": "nap", "command": "/bin/sh", "timeout": 0.5,
                 "args": ["-c", f"sleep {marker} & sleep {marker}"]}])
    r = runner(client, tmp_path / "w", doc)
    run = asyncio.create_task(r.run())
    await asyncio.to_thread(wait_for, lambda: len(sleepers(marker)) == 2, 10, "the sleepers")
    t0 = time.monotonic()
    outcome = await run
    assert time.monotonic() - t0 < 5
    assert outcome.reason == "time limit exceeded: step 0 ('nap') ran over its timeout of 0.5s"
    assert sleepers(marker) == []

    doc = task([{"command": "sleep", "args": ["30"]}], requirements={"time": 0.5 / 3600})
    outcome = await runner(client, tmp_path / "w2", doc).run()
    assert outcome.reason.startswith("time limit exceeded: the task ran 1s, over its time "
                                     "requirement of 0s")
    assert outcome.measured(doc["requirements"])["time"] >= 0.5 / 3600


async def test_memory_overuse_is_killed_and_measured(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    hog = "import time; x = 'x' * (150 << 20); time.sleep(30)"
    doc = task([{"command": sys.executable, "args": ["-c", hog]}],
               requirements={"memory": 0.03})
    outcome = await runner(client, tmp_path, doc).run()
    assert re.fullmatch(r"memory overuse: the task used 0\.\d+ GB, more than 2x its "
                        r"requirement of 0\.03 GB", outcome.reason), outcome.reason
    measured = outcome.measured(doc["requirements"])
    assert measured["memory"] > 0.06  # reported, so the retry asks for more
    # only what the task asked for: the server would turn the rest into new requirements
    assert set(measured) == {"memory", "cpu"}


async def test_abort_kills_the_step_and_ends_with_the_reason(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    marker = f"30.{os.getpid()}7"
    r = runner(client, tmp_path, task([{"command": "sleep", "args": [marker]}]))
    run = asyncio.create_task(r.run())
    # abort a running step, not one still starting
    await asyncio.to_thread(wait_for, lambda: sleepers(marker), 10, "the step to run")
    r.abort("taken away", report=False)
    outcome = await asyncio.wait_for(run, 5)
    assert (outcome.ok, outcome.reason, outcome.report) == (False, "taken away", False)


async def test_the_pilots_own_settings_do_not_reach_the_payload(
        client: AsyncClient, runner: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sandbox: Sandbox) -> None:
    monkeypatch.setenv("ICEPROD_TOKEN_FILE", "/secret/token")
    monkeypatch.setenv("SERVER_THING", "server-only")
    monkeypatch.setenv("SHARED_THING", "passed")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("PATH", "/pilot/only/bin:/usr/bin:/bin")
    passing = Sandbox(sandbox.mode, sandbox.binds, pass_env=("SHARED_THING",))
    r = runner(client, tmp_path, task([{"command": "/bin/sh", "args": ["-c", "env > env.txt"]}],
                                      env={"FROM_TASK": "t"}),
               keep_dirs=True, sandbox=passing)
    assert (await r.run()).ok
    env = dict(line.split("=", 1) for line in (r.run_dir / "env.txt").read_text().splitlines()
               if "=" in line)
    assert "ICEPROD_TOKEN_FILE" not in env and env["ICEPROD_TASK_ID"] == "a" * 32
    assert "SERVER_THING" not in env
    assert env["SHARED_THING"] == "passed" and env["LC_TIME"] == "C"
    assert env["FROM_TASK"] == "t"
    assert env["TMPDIR"] == str(r.root / "tmp") and env["HOME"] == str(r.root / "tmp")
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    # only what the allow-list names (the shell adds PWD, SHLVL and _ itself)
    allowed = {"PATH", "HOME", "TMPDIR", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
               "SHARED_THING", "LC_TIME", "FROM_TASK", "PWD", "SHLVL", "_", "LANG", "TZ",
               "LANGUAGE"}
    assert {k for k in env if not k.startswith(("ICEPROD_", "LC_"))} <= allowed
    assert os.environ["ICEPROD_TOKEN_FILE"] == "/secret/token"


async def test_a_signal_is_the_steps_exit_reason(
        client: AsyncClient, runner: Make, tmp_path: Path) -> None:
    # through bwrap too: it reports a child killed by signal N as 128 + N
    r = runner(client, tmp_path, task([{"command": "/bin/sh", "args": ["-c", "kill -SEGV $$"]}]))
    outcome = await r.run()
    assert outcome.exit_code == -11
    assert outcome.reason == "step 0 killed by signal SIGSEGV"


class Handoff:
    """A pilot's side of claims made with completions, recording what the runner asks."""

    def __init__(self) -> None:
        self.offered: list[str] = []
        self.taken: list[tuple[str, list[dict[str, Any]]]] = []
        self.refusals: list[str] = []

    def next_offer(self, task_id: str) -> tuple[dict[str, Any], int] | None:
        self.offered.append(task_id)
        return {"cpu": 2, "memory": 1, "disk": 1}, 2

    def take_over(self, task_id: str, tasks: Any) -> None:
        self.taken.append((task_id, list(tasks)))

    def claims_refused(self, why: Exception) -> None:
        self.refusals.append(str(why))


async def test_a_server_without_claims_on_completion_gets_the_completion_alone(
        tmp_path: Path, runner: Make) -> None:
    """An older server refuses the `claim` field (400 naming it): the runner completes
    without it and tells the pilot to stop asking; a newer one answers the next tasks."""
    bodies: list[dict[str, Any]] = []

    def older_server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "claim" in body:
            return httpx.Response(400, json={"code": 400, "error": "claim: unknown field"})
        return httpx.Response(200, json={})

    async with AsyncClient("http://server.invalid",
                           transport=httpx.MockTransport(older_server)) as c:
        handoff = Handoff()
        r = runner(c, tmp_path, task([{"command": "/bin/true"}]))
        r.next_work = handoff
        outcome = await r.execute()
    assert outcome.ok
    assert handoff.offered == ["a" * 32] and handoff.taken == []
    assert handoff.refusals == ["400 claim: unknown field"]
    assert [sorted(b) for b in bodies] == [
        ["claim", "instance_id", "log", "site", "stats", "time_used"],
        ["instance_id", "log", "site", "stats", "time_used"]]

    def newer_server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tasks": [{"task_id": "e" * 32}]})

    async with AsyncClient("http://server.invalid",
                           transport=httpx.MockTransport(newer_server)) as c:
        handoff = Handoff()
        r = runner(c, tmp_path / "again", task([{"command": "/bin/true"}]))
        r.next_work = handoff
        assert (await r.execute()).ok
    assert handoff.taken == [("a" * 32, [{"task_id": "e" * 32}])] and handoff.refusals == []

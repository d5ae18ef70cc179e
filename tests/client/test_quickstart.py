"""The README's quick start, run line for line against a full server (REST + scheduler), with a
stand-in pilot completing tasks so that `status --watch` sees the dataset finish; and
`status --watch` on its own."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from rich.console import Console

from iceprod.client import cli, settings
from iceprod.client.api import Client
from iceprod.client.output import Output
from tests.client.test_cli import CLI, ROOT
from tests.conftest import Server, start_server

README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


class StandInPilot(threading.Thread):
    """Claims and completes every task it can until stopped (the real pilot runs them; these
    tests are about what the CLI shows)."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, token)
        self.stop = threading.Event()
        self.completed = 0

    def run(self) -> None:
        pilot_id = self.client.pilots.create(resources={"cpu": 4, "memory": 8})
        while not self.stop.is_set():
            task = self.client.tasks.claim({"cpu": 4, "memory": 8, "disk": 10, "time": 1},
                                           pilot_id)
            if task is None:
                self.stop.wait(0.05)
                continue
            self.client.tasks.complete(task["task_id"], task["instance_id"], time_used=1.0)
            self.completed += 1

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)
        self.client.close()


@pytest.fixture
def full_server(tmp_path: Path) -> Iterator[Server]:
    """Like `make serve`: REST and scheduler, the secret kept in the data dir."""
    srv = start_server(tmp_path / "iceprod-data",
                       env={"ICEPROD_SECRET": "", "ICEPROD_SCHEDULER_INTERVAL": "0.1"})
    srv.secret = (srv.data_dir / "secret").read_text().strip()
    yield srv
    srv.stop()


def quick_start_commands(title: str = "Quick start", blocks: int | None = None) -> list[str]:
    """The shell lines of a README section (the quick start by default; its first `blocks`
    code blocks when given), but `make serve` (the fixture's server)."""
    text = README.read_text()
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)[:blocks]:
        lines += [line for line in block.splitlines()
                  if line.strip() and not line.startswith("make serve")]
    return lines


def test_readme_quick_start_runs(full_server: Server, tmp_path: Path) -> None:
    lines = quick_start_commands()
    assert any("iceprod login" in line for line in lines)
    assert any("submit examples/chain.json" in line for line in lines)
    assert any("--watch" in line for line in lines)
    script = "set -euo pipefail\n" + "\n".join(lines).replace(
        "./iceprod-data", str(full_server.data_dir)).replace(".venv/bin/", f"{VENV_BIN}/")
    run = CLI(tmp_path / "config", full_server.url)
    env = {**run.env, "ICEPROD_URL": full_server.url}  # the README's server is on :8080
    pilot_token = full_server.token("pilot-readme", ["pilot"])
    with StandInPilot(full_server.url, pilot_token) as pilot:
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted dataset 1 (" in result.stdout
    assert "30/30 tasks complete" in result.stdout
    assert "no failed task(s) to reset" in result.stdout
    assert pilot.completed == 30
    assert (tmp_path / "config" / "iceprod" / "token").exists()


def test_readme_running_work_runs_on_the_local_grid(tmp_path: Path) -> None:
    """The quick start, then "Running work" line for line, on a server whose local grid runs
    the chain for real (pilots, sandboxed steps, the file store)."""
    grids = tmp_path / "grids.json"
    grids.write_text(json.dumps({"grids": [{
        "name": "local", "backend": "local", "max_pilots": 2, "max_idle": 2,
        "max_per_cycle": 2, "options": {"cores": 2, "idle_timeout": 30,
                                        "claim_interval": 0.2, "heartbeat_interval": 1}}]}))
    srv = start_server(tmp_path / "iceprod-data", env={
        "ICEPROD_SECRET": "", "ICEPROD_SCHEDULER_INTERVAL": "0.1", "ICEPROD_GRID_INTERVAL": "0.2",
        "ICEPROD_GRID_CONFIG": str(grids)})
    try:
        # the section's first block; its next one starts a pilot on another node by hand
        lines = quick_start_commands() + quick_start_commands("Running work", blocks=1)
        assert any(line.startswith("DS=") for line in lines)
        assert any("/store/example/0/final.txt" in line for line in lines)
        script = "set -euo pipefail\n" + "\n".join(lines).replace(
            "./iceprod-data", str(srv.data_dir)).replace(
            ".venv/bin/", f"{VENV_BIN}/").replace("http://127.0.0.1:8080", srv.url).replace(
            "iceprod-server token --user root", f"iceprod-server token --data-dir "
                                                f"{srv.data_dir} --user root")
        run = CLI(tmp_path / "config", srv.url)
        env = {**run.env, "ICEPROD_URL": srv.url}
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=240, check=False)
    finally:
        srv.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "30/30 tasks complete" in out and '{"complete": 30}' in out
    assert "job 0 of dataset 1, processed by task process\nfinal: 1 line(s)" in out
    assert '"name": "stdlog"' in out and '"walltime"' in out  # logs and stats of a task
    assert '"grid_name": "local"' in out  # the local pilots


def test_watch_until_complete_then_unfinished(full_server: Server, tmp_path: Path) -> None:
    run = CLI(tmp_path / "config", full_server.url)
    run.login(full_server.token("alice", ["user"], ["physics"]))
    submitted = run.json("submit", str(ROOT / "examples" / "chain.json"), "--jobs", "2",
                         "--group", "physics")
    with StandInPilot(full_server.url, full_server.token("pilot-watch", ["pilot"])):
        watched = run("status", str(submitted["dataset"]), "--watch", "--interval", "0.1")
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.strip().splitlines()
    assert lines[-1].endswith("6/6 tasks complete (complete 6)")
    final = run.json("status", submitted["dataset_id"])
    assert final["tasks"] == {"complete": 6}

    second = run.json("submit", str(ROOT / "examples" / "chain.json"), "--group", "physics")
    assert run("suspend", second["dataset_id"], "--yes").returncode == 0
    stopped = run("status", second["dataset_id"], "--watch", "--json")
    assert stopped.returncode == 5
    assert '"suspended"' in stopped.stdout


def test_watch_draws_a_progress_bar_on_a_terminal(full_server: Server, tmp_path: Path) -> None:
    token = full_server.token("alice", ["user"], ["physics"])
    with Client(full_server.url, token) as client:
        ds = client.datasets.create("bar", jobs_submitted=1, tasks_per_job=1, group="physics")
        client.datasets.set_status(ds, "suspended")
    args = cli.build_parser().parse_args(
        ["status", ds, "--watch", "--interval", "0.1", "--url", full_server.url,
         "--token", token])
    args.timeout, args.json = 30.0, False
    screen = io.StringIO()
    out = Output(stdout=screen, stderr=io.StringIO())
    out.tty = True
    out.console = Console(file=screen, force_terminal=True, width=100)
    ctx = cli.Context(args, out, settings.resolve(args.url, args.token))
    try:
        assert cli.cmd_status(ctx) == cli.EXIT_UNFINISHED
    finally:
        ctx.close()
    drawn = screen.getvalue()
    assert "dataset 1 (suspended)" in drawn and "0/1" in drawn and "━" in drawn

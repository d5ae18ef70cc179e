"""`iceprod status --watch` and `iceprod logs --follow` are woken by `GET /events`.

Both run with `--interval 120`: a command that only polled would look again two minutes
later, so each finishing well within the test's deadline shows it was woken by an event.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, start_server
from tests.helpers import metric, minimal_config, register_pilot, submit, wait_for

ROOT = Path(__file__).resolve().parents[2]
OFFER = {"cpu": 4, "memory": 4}


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", args=["--only", "rest"])
    yield srv
    srv.stop()


def cli(srv: Server, token: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}
    env.update({"ICEPROD_URL": srv.url, "ICEPROD_TOKEN": token})
    return subprocess.Popen([sys.executable, "-m", "iceprod.client.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_watch_and_follow_are_woken_by_events(rest: Server) -> None:
    token = rest.token("alice", ["user"], ["physics"])
    alice = rest.client(token)
    ds = submit(alice, minimal_config(["first", "second"]), jobs=1)
    pilot = rest.client(rest.token("pilot-w", ["pilot"]))
    pilot_id = register_pilot(pilot, **OFFER)
    first = pilot.post("/task_actions/process",
                       json={"requirements": OFFER, "pilot_id": pilot_id}).json()

    watch = cli(rest, token, "status", ds, "--watch", "--interval", "120")
    follow = cli(rest, token, "logs", first["task_id"], "--dataset", ds, "--follow",
                 "--interval", "120")
    try:
        # both have their stream open before anything happens
        wait_for(lambda: metric(rest.url, "iceprod_event_streams_total") >= 2,
                 what="two event streams")
        r = pilot.post(f"/tasks/{first['task_id']}/task_actions/complete", json={
            "instance_id": first["instance_id"], "log": {"stdout": "first done\n"}})
        assert r.status_code == 200, r.text
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert "first done" in out
        second = pilot.post("/task_actions/process",
                            json={"requirements": OFFER, "pilot_id": pilot_id}).json()
        assert second["name"] == "second"
        r = pilot.post(f"/tasks/{second['task_id']}/task_actions/complete",
                       json={"instance_id": second["instance_id"]})
        assert r.status_code == 200, r.text
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        assert "2/2 tasks complete" in out
    finally:
        watch.kill()
        follow.kill()

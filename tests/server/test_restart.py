"""A planned restart of the server (SIGTERM) with local pilots running a long task: the task
is given back to the queue without counting a failure, and runs again after the restart."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.conftest import start_server
from tests.helpers import FAST, submit, wait_for
from tests.pilot.support import one_task, tasks


def grid_env(tmp_path: Path) -> dict[str, str]:
    doc = {"grids": [{"name": "local", "backend": "local", "max_pilots": 1, "max_idle": 1,
                      "max_per_cycle": 1,
                      "options": {"cores": 1, "idle_timeout": 30, "heartbeat_interval": 0.5,
                                  "claim_interval": 0.2, "drain_grace": 0.5}}]}
    path = tmp_path / "grids.json"
    path.write_text(json.dumps(doc))
    return {**FAST, "ICEPROD_GRID_CONFIG": str(path), "ICEPROD_GRID_INTERVAL": "0.2"}


def test_a_planned_restart_does_not_count_against_a_long_task(tmp_path: Path) -> None:
    env = grid_env(tmp_path)
    srv = start_server(tmp_path / "data", env=env)
    alice_token = srv.token("alice", ["user"], ["physics"])
    with srv.client(alice_token) as alice:
        # one counted failure would fail this task for good
        ds = submit(alice, one_task([{"command": "sleep", "args": ["300"]}]), max_failures=1)
        (task_id,) = wait_for(lambda: [t for t, doc in tasks(alice, ds).items()
                                       if doc["status"] == "processing"],
                              what="the task to run on a local pilot")
    assert srv.stop(signal.SIGTERM) == 0
    srv = start_server(tmp_path / "data", env=env)
    try:
        with srv.client(alice_token) as alice:
            task = tasks(alice, ds)[task_id]
            assert (task["failures"], task["evictions"]) == (0, 1), task
            assert task["reason_class"] == "evicted", task
            assert "not a failure" in task["reason"]
            # and it is runnable: a new pilot of the restarted server takes it again
            wait_for(lambda: tasks(alice, ds)[task_id]["status"] == "processing",
                     what="the task to run again after the restart")
    finally:
        srv.stop()

"""Helpers for tests that run real pilots against a real server: submit datasets, wait for
states, start `iceprod-pilot` processes, read logs and stats over the API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
FAST = {"ICEPROD_SCHEDULER_INTERVAL": "0.1", "ICEPROD_PRIORITY_REFRESH": "0.2",
        "ICEPROD_GRID_INTERVAL": "0.2"}
PILOT_FLAGS = ["--idle-timeout", "3", "--heartbeat-interval", "0.5", "--claim-interval", "0.2",
               "--monitor-interval", "0.1"]


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "",
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")


def chain(outdir: Path) -> dict[str, Any]:
    """examples/chain.json writing under `outdir`."""
    config = json.loads((ROOT / "examples" / "chain.json").read_text())
    config["steering"]["parameters"]["OUTDIR"] = str(outdir)
    return config


def one_task(steps: list[dict[str, Any]], name: str = "only", **task: Any) -> dict[str, Any]:
    return {"tasks": [{"name": name, "steps": steps, **task}]}


def submit(client: httpx.Client, config: dict[str, Any], jobs: int = 1,
           **extra: Any) -> str:
    n = len(config["tasks"])
    r = client.post("/datasets", json={
        "description": "pilot test", "jobs_submitted": jobs, "tasks_submitted": jobs * n,
        "tasks_per_job": n, "group": "physics", **extra})
    assert r.status_code == 201, r.text
    ds = r.json()["dataset_id"]
    r = client.put(f"/config/{ds}", json=config)
    assert r.status_code == 200, r.text
    return ds


def dataset_status(client: httpx.Client, ds: str) -> str:
    return str(client.get(f"/datasets/{ds}").json()["status"])


def finished(client: httpx.Client, ds: str) -> str | None:
    status = dataset_status(client, ds)
    return status if status != "processing" else None


def tasks(client: httpx.Client, ds: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/datasets/{ds}/tasks")
    assert r.status_code == 200, r.text
    return dict(r.json())


def logs(client: httpx.Client, ds: str, task_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/datasets/{ds}/tasks/{task_id}/logs")
    assert r.status_code == 200, r.text
    return list(r.json().values())


def stats(client: httpx.Client, ds: str, task_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/datasets/{ds}/tasks/{task_id}/task_stats")
    assert r.status_code == 200, r.text
    return [doc["stats"] for doc in r.json().values()]


class Pilots:
    """The pilot processes a test started; all are stopped and reaped at teardown."""

    def __init__(self, srv: Server, tmp_path: Path) -> None:
        self.srv = srv
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str = "p", *args: str, resources: str = "cpu=2,memory=2,disk=2",
              **claims: Any) -> subprocess.Popen[bytes]:
        proc = start_pilot(self.srv, self.tmp_path, name, *args, resources=resources, **claims)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def start_pilot(srv: Server, tmp_path: Path, name: str = "p", *args: str,
                resources: str = "cpu=2,memory=2,disk=2",
                **claims: Any) -> subprocess.Popen[bytes]:
    """An `iceprod-pilot` process with its own token file, work dir and log."""
    token = tmp_path / f"{name}.token"
    token.write_text(srv.token(f"pilot-{name}", ["pilot"], **claims))
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "iceprod.pilot", "--url", srv.url, "--token-file", str(token),
             "--work-dir", str(tmp_path / f"{name}-work"), "--resources", resources,
             *PILOT_FLAGS, *args],
            stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def pilot_log(tmp_path: Path, name: str = "p") -> str:
    return (tmp_path / f"{name}.log").read_text()

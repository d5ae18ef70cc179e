"""Helpers for tests that run real pilots against a real server: submit datasets, wait for
states, start `iceprod-pilot` processes, read logs and stats over the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import Server
from tests.helpers import FAST as SCHEDULER_FAST
from tests.helpers import submit, wait_for  # noqa: F401 (re-exported for the pilot tests)

ROOT = Path(__file__).resolve().parents[2]
FAST = {**SCHEDULER_FAST, "ICEPROD_GRID_INTERVAL": "0.2"}
# steps that run this test's Python need it inside their sandbox: bound read-only
PYTHON_BINDS = sorted({sys.prefix, sys.base_prefix})
PILOT_FLAGS = ["--idle-timeout", "3", "--heartbeat-interval", "0.5", "--claim-interval", "0.2",
               "--monitor-interval", "0.1",
               *(arg for path in PYTHON_BINDS for arg in ("--sandbox-bind", path))]


def chain() -> dict[str, Any]:
    """examples/chain.json (its files go to the dataset's store, under `example/`)."""
    return dict(json.loads((ROOT / "examples" / "chain.json").read_text()))


def stored(client: httpx.Client, ds: str, name: str) -> str:
    """A file of the dataset's store on the server."""
    r = client.get(f"/datasets/{ds}/store/{name}")
    assert r.status_code == 200, f"{name}: {r.text}"
    return r.text


def one_task(steps: list[dict[str, Any]], name: str = "only", **task: Any) -> dict[str, Any]:
    return {"tasks": [{"name": name, "steps": steps, **task}]}


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
              token: str | None = None, **claims: Any) -> subprocess.Popen[bytes]:
        proc = start_pilot(self.srv, self.tmp_path, name, *args, resources=resources,
                           token=token, **claims)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def start_pilot(srv: Server, tmp_path: Path, name: str = "p", *args: str,
                resources: str = "cpu=2,memory=2,disk=2", token: str | None = None,
                **claims: Any) -> subprocess.Popen[bytes]:
    """An `iceprod-pilot` process with its own token file, work dir and log. Its token is
    ``token`` (e.g. one bound to a pilot registered beforehand, as a grid does), else a
    registration token (with ``claims``)."""
    token_file = token_path(tmp_path, name)
    token_file.write_text(token or srv.token(f"pilot-{name}", ["pilot"], **claims))
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "iceprod.pilot", "--url", srv.url, "--token-file",
             str(token_file),
             "--work-dir", str(tmp_path / f"{name}-work"), "--resources", resources,
             *PILOT_FLAGS, *args],
            stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def step_process(pilot: subprocess.Popen[bytes], *cmdline: str) -> psutil.Process | None:
    """A running descendant of a pilot process whose command line is ``cmdline`` (its pid
    as this machine sees it, whatever namespace the step runs in)."""
    try:
        procs = psutil.Process(pilot.pid).children(recursive=True)
    except psutil.Error:
        return None
    for proc in procs:
        try:
            if proc.cmdline() == list(cmdline):
                return proc
        except psutil.Error:
            continue
    return None


def token_path(tmp_path: Path, name: str = "p") -> Path:
    return tmp_path / f"{name}.token"


def register(client: httpx.Client, **resources: Any) -> tuple[str, str]:
    """Register a pilot record as its grid would (``client``: admin or system); answers its
    id and the token bound to it, to start the pilot with."""
    r = client.post("/pilots", json={"queue_host": "test", "resources": resources})
    assert r.status_code == 201, r.text
    return r.json()["result"], r.json()["token"]


def pilot_log(tmp_path: Path, name: str = "p") -> str:
    return (tmp_path / f"{name}.log").read_text()


BUSYBOX = Path("/bin/busybox")
ROOTFS_MARK = "iceprod-test-rootfs"


def busybox_rootfs(path: Path) -> Path:
    """A minimal root file system built from Debian's busybox-static: ``bin/`` with busybox
    and its applets as symlinks, and an ``etc/os-release`` naming this test's image (so a
    step can tell it runs inside the container, not on this machine's system)."""
    from tests.helpers import needs

    needs(None if BUSYBOX.exists() else "busybox-static (/bin/busybox) is not installed")
    (path / "bin").mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    (path / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "cat", "ls", "echo", "id", "pwd", "env", "touch", "test"):
        (path / "bin" / applet).symlink_to("busybox")
    (path / "etc" / "os-release").write_text(f"ID={ROOTFS_MARK}\nNAME=busybox\n")
    return path

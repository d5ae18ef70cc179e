"""Payload isolation, tried as an attacker would (issue 10): a real server on a free port
with the local grid, and a `user` whose dataset's steps go after the signing secret, the
database, the pilot's token, a neighbouring task's directory and the data dir, and whose
data entries stage the server's files in and out. Nothing they print signs a token the
server accepts. Then single-user mode: without a sandbox the local grid runs only the
operator's datasets.

These tests need bubblewrap (.ci/run installs it): the local grid's `auto` sandbox must
find it working here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import needs
from tests.pilot.support import FAST, finished, logs, stats, submit, tasks, wait_for

LEVELS = 12  # ../ repeated up to here reaches / from any task directory


def grid_env(tmp_path: Path, **options: Any) -> dict[str, str]:
    doc = {"grids": [{"name": "local", "backend": "local", "max_pilots": 4, "max_idle": 4,
                      "max_per_cycle": 4,
                      "options": {"cores": 4, "idle_timeout": 30, "heartbeat_interval": 0.5,
                                  "claim_interval": 0.2, "monitor_interval": 0.1, **options}}]}
    path = tmp_path / "grids.json"
    path.write_text(json.dumps(doc))
    return {**FAST, "ICEPROD_GRID_CONFIG": str(path)}


def start(tmp_path: Path, **env: str) -> Server:
    # the secret is the one the server keeps in its data dir, as `make serve` does
    srv = start_server(tmp_path / "data", env={"ICEPROD_SECRET": "", **env})
    srv.secret = (srv.data_dir / "secret").read_text().strip()
    return srv


@pytest.fixture
def sandboxed(tmp_path: Path) -> Iterator[Server]:
    needs(None if shutil.which("bwrap") else "bubblewrap (bwrap) is not installed")
    srv = start(tmp_path, **grid_env(tmp_path))
    yield srv
    srv.stop()


def forged(key: str, claims: dict[str, Any]) -> str:
    """An HS256 JWT signed with ``key`` (built by hand: any string is a key here)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def attempt(what: str, command: str) -> str:
    """Shell that runs ``command`` and prints what came of it (the output included, so a
    read that worked would put what it read into the task's logs)."""
    return f'echo "== {what}"; {command} 2>&1; rc=$?; echo; echo "== {what}: exit $rc"\n'


def reader_script(data: Path, server_pid: int) -> str:
    ups = [("../" * n) for n in range(1, LEVELS + 1)]
    pilots = data / "grids" / "local" / "pilots"
    lines = [attempt(f"relative secret {n}", f"cat {up}secret") for n, up in enumerate(ups, 1)]
    lines += [attempt(f"relative data dir secret {n}", f"cat {up}{str(data).lstrip('/')}/secret")
              for n, up in enumerate(ups, 1)]
    lines += [
        attempt("absolute secret", f"cat {data}/secret"),
        attempt("database", f"head -c 64 {data}/iceprod.sqlite3"),
        attempt("file store", f"ls -laR {data}/store"),
        attempt("list the data dir", f"ls -la {data}"),
        attempt("pilot token, absolute", f"cat {pilots}/*/token"),
        attempt("pilot token, relative", "cat ../../../token ../../token ../token"),
        attempt("pilot log", "cat ../../../pilot.log"),
        attempt("my task directory", "ls -la .. ../.."),
        attempt("neighbour, absolute", f"cat {pilots}/*/work/*/run/mine.txt"),
        attempt("neighbour, relative", "cat ../../*/run/mine.txt ../*/mine.txt"),
        attempt("server environment", f"cat /proc/{server_pid}/environ"),
        attempt("every process's environment", "cat /proc/[0-9]*/environ"),
        attempt("home", "ls -la /root /home"),
        attempt("shadow", "cat /etc/shadow"),
        attempt("environment", "env"),
    ]
    return "set +e\n" + "".join(lines)


def data_files(data: Path) -> set[str]:
    """The data dir's files, but the pilots' own directories (which come and go) and the
    database's journal files."""
    out = set()
    for path in data.rglob("*"):
        rel = path.relative_to(data).as_posix()
        if rel.startswith("grids/") or re.search(r"\.sqlite3-(wal|shm|journal)$", rel):
            continue
        out.add(rel)
    return out


def texts(client: httpx.Client, ds: str) -> list[str]:
    """Everything a reader of the dataset sees of its tasks: logs, stats, reasons."""
    out = []
    for task in tasks(client, ds).values():
        out.append(json.dumps(task))
        out += [log["data"] for log in logs(client, ds, task["task_id"])]
        out += [json.dumps(s) for s in stats(client, ds, task["task_id"])]
    return out


def test_a_users_payload_cannot_reach_the_server(sandboxed: Server, tmp_path: Path) -> None:
    srv, data = sandboxed, sandboxed.data_dir.resolve()
    alice = srv.client(srv.token("alice", ["user"], ["physics"]))
    admin = srv.client(srv.token("root", ["admin"]))
    (grid,) = admin.get("/grids").json().values()
    assert grid["isolation"] == "bwrap" and "single_user" not in grid or \
        grid.get("single_user") is None

    # a neighbour: a task that keeps a file in its directory while it runs
    neighbour = submit(alice, {"tasks": [{"name": "neighbour", "requirements": {"cpu": 1},
                                          "steps": [{"command": "/bin/sh", "args": [
                                              "-c", ("echo neighbour-marker > mine.txt; "
                                                     "exec sleep 600")]}]}]})
    pilots = data / "grids" / "local" / "pilots"
    wait_for(lambda: list(pilots.glob("*/work/*/run/mine.txt")), what="the neighbour to run")
    before = data_files(data)

    config = {"tasks": [
        {"name": "reader", "requirements": {"cpu": 1},
         "steps": [{"name": "read", "command": "/bin/sh",
                    "args": ["-c", reader_script(data, srv.proc.pid)]}]},
        {"name": "stage-in", "requirements": {"cpu": 1},
         "data": [{"remote": f"file://{data}/secret", "local": "secret.txt",
                   "movement": "input"}],
         "steps": [{"command": "/bin/cat", "args": ["secret.txt"]}]},
        {"name": "stage-out", "requirements": {"cpu": 1},
         "data": [{"remote": f"{data}/planted.txt", "local": "planted.txt",
                   "movement": "output"}],
         "steps": [{"command": "/bin/sh", "args": ["-c", "echo planted > planted.txt"]}]},
    ]}
    ds = submit(alice, config, max_failures=1)
    assert wait_for(lambda: finished(alice, ds), timeout=90, what="the dataset") == "errors"
    by_name = {t["name"]: t for t in tasks(alice, ds).values()}

    # the reader ran to the end; every read failed
    assert by_name["reader"]["status"] == "complete"
    (out,) = [log["data"] for log in logs(alice, ds, by_name["reader"]["task_id"])
              if log["name"] == "stdout"]
    results = dict(re.findall(r"^== (.+): exit (\d+)$", out, flags=re.MULTILINE))
    assert len(results) == 2 * LEVELS + 15, out
    # what works: its own directory, its own environment (also as its own processes'
    # /proc/<pid>/environ: the server's processes are not in its pid namespace),
    # /etc/shadow, masked by an empty file, and listing the data dir's path, which inside
    # the sandbox holds only the empty directories leading to the task's own
    assert {k for k, v in results.items() if v == "0"} == \
        {"my task directory", "environment", "every process's environment", "shadow",
         "list the data dir"}, out
    listing = out.split("== list the data dir\n", 1)[1].split("== list the data dir:")[0]
    assert [line.split()[-1] for line in listing.splitlines()[1:] if line] == \
        [".", "..", "grids"]
    assert re.search(r"^== shadow\n\n== shadow: exit 0$", out, flags=re.MULTILINE)
    assert "neighbour-marker" not in out
    env = out.split("== environment\n", 1)[1]
    assert "ICEPROD_TASK_ID=" in env and "TOKEN" not in env and "SECRET" not in env

    # staging the server's files is refused, with the reason in the task's log and reason
    for name, path in (("stage-in", f"{data}/secret"), ("stage-out", f"{data}/planted.txt")):
        task = by_name[name]
        why = (f"staging refused: {path} is outside this pilot's staging roots "
               "(none configured)")
        assert task["status"] == "failed" and task["reason"] == why
        stdlog = [log["data"] for log in logs(alice, ds, task["task_id"])
                  if log["name"] == "stdlog"]
        assert any(why in text for text in stdlog)

    # nothing was written to the data dir
    assert data_files(data) == before
    assert not list(data.rglob("planted*"))

    # no log, stat, reason or stored file holds the secret or any pilot's token
    seen = texts(alice, ds)
    assert alice.put(f"/datasets/{neighbour}/status",
                     json={"status": "suspended"}).status_code == 200
    tokens = [p.read_text().strip() for p in pilots.glob("*/token")]
    assert tokens and srv.secret
    for text in seen:
        assert srv.secret not in text
        for token in tokens:
            assert token not in text and token.split(".")[2] not in text

    # and nothing the payload printed signs a token the server takes
    claims = {"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 600}
    users = srv.client()
    ok = users.get("/users", headers={"Authorization": f"Bearer {forged(srv.secret, claims)}"})
    assert ok.status_code == 200  # the check below can fail: the real secret signs
    candidates = {s for text in seen for line in text.splitlines()
                  for s in (line, *line.split(), *line.split("="), *line.split(":"))
                  if s.strip()}
    assert len(candidates) > 50
    accepted = [c for c in candidates
                if users.get("/users", headers={
                    "Authorization": f"Bearer {forged(c, claims)}"}).status_code != 401]
    assert accepted == []


def empty_claims(srv: Server) -> int:
    """Claims that found nothing fitting so far (a 404, or an empty `tasks` list for a
    multi-task claim), from `/metrics` (idle polls are not logged)."""
    text = httpx.get(srv.url + "/metrics").text
    found = re.search(r'^iceprod_claims_empty_total (\d+)', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def test_without_a_sandbox_only_the_operators_datasets_run(tmp_path: Path) -> None:
    srv = start(tmp_path, **grid_env(tmp_path, sandbox="none", idle_timeout=60),
                ICEPROD_OPERATOR="ops")
    try:
        assert srv.log_path is not None
        log = srv.log_path.read_text()
        assert re.search(r"WARNING .*single-user mode, running only datasets of ops", log)
        bob = srv.client(srv.token("bob", ["user"], ["physics"]))
        ops = srv.client(srv.token("ops", ["user"], ["physics"]))
        admin = srv.client(srv.token("root", ["admin"]))
        (grid,) = admin.get("/grids").json().values()
        assert (grid["isolation"], grid["single_user"]) == ("none", "ops")

        step = {"command": "/bin/sh", "args": ["-c", "echo ran"]}
        other = submit(bob, {"tasks": [{"name": "t", "steps": [step]}]})
        wait_for(lambda: [t["status"] for t in tasks(bob, other).values()] == ["queued"],
                 what="bob's task to be queued")
        mine = submit(ops, {"tasks": [{"name": "t", "steps": [step]}]})
        # a pilot claims and runs the operator's task while bob's waits in the queue
        assert wait_for(lambda: finished(ops, mine), timeout=60, what="ops' dataset") == \
            "complete"
        refused = empty_claims(srv)
        wait_for(lambda: empty_claims(srv) >= refused + 3, what="the pilots to claim again")
        (task,) = tasks(bob, other).values()
        assert task["status"] == "queued" and not task.get("pilot_id")
        pilots = admin.get("/pilots").json().values()
        assert pilots and {p["only_user"] for p in pilots} == {"ops"}
        assert all(p["status"] == "running" for p in pilots)
    finally:
        srv.stop()

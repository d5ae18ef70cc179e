"""`iceprod admin scripts ...` and `iceprod apikeys ...`, run as subprocesses against a real
server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from iceprod.client import cli
from tests.client.test_cli import CLI
from tests.conftest import Server


def test_admin_scripts_commands(tmp_path: Path, server: Server, alice: httpx.Client) -> None:
    run = CLI(tmp_path / "config", server.url)
    run.login(server.token("root", ["admin"]))
    name = f"tool-{uuid.uuid4().hex[:8]}"
    entry = tmp_path / "entry.json"
    entry.write_text(json.dumps({"command": "/bin/echo", "args": ["$(param.word)"],
                                 "param": [{"name": "word", "type": "string"}],
                                 "max_clock_time": "00:01:00"}))
    stored = run.json("admin", "scripts", "put", name, str(entry))
    assert stored["name"] == name and stored["param"][0]["type"] == "string"
    assert alice.get(f"/script/{name}").json()["command"] == "/bin/echo"
    assert name in [e["name"] for e in run.json("admin", "scripts", "list")]
    table = run("admin", "scripts")  # list is the default action
    assert name in table.stdout and "word:string" in table.stdout
    assert run.json("admin", "scripts", "show", name)["max_clock_time"] == "00:01:00"
    entry.write_text(json.dumps({"command": "/bin/sh", "args": ["-c", "echo $(param.x)"],
                                 "param": [{"name": "x", "type": "string"}]}))
    bad = run("admin", "scripts", "put", name, str(entry))
    assert bad.returncode == cli.EXIT_USAGE and "args[1]" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert run("admin", "scripts", "delete", name).returncode == 0
    assert alice.get(f"/script/{name}").status_code == 404
    gone = run("admin", "scripts", "show", name)
    assert gone.returncode == cli.EXIT_NOT_FOUND


def test_apikeys_commands(tmp_path: Path, server: Server) -> None:
    run = CLI(tmp_path / "config", server.url)
    run.login(server.token("keeper", ["user"], ["physics"]))
    made = run("apikeys", "create", "ci", "--expires-days", "7")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("ipk_")
    r = httpx.get(server.url + "/datasets", headers={"X-Api-Key": key})
    assert r.status_code == 200, r.text
    listed = run.json("apikeys", "list")
    assert [k["name"] for k in listed] == ["ci"] and key not in json.dumps(listed)
    assert "ci" in run("apikeys", "list").stdout
    assert run("apikeys", "delete", "ci").returncode == 0
    assert httpx.get(server.url + "/datasets", headers={"X-Api-Key": key}).status_code == 401
    assert run("apikeys", "delete", "ci").returncode == cli.EXIT_NOT_FOUND

"""Health, OpenAPI, metrics, the token command, shutdown and crash durability."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from iceprod.rest.app import all_routes
from iceprod.rest.openapi import handler_methods, template
from tests.conftest import Server, start_server
from tests.helpers import create_dataset, create_job, create_task, wait_for


def test_healthz(server: Server) -> None:
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["backend"] == "sqlite"


def test_openapi_documents_every_route(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    for pattern, handler in all_routes():
        path = template(pattern)
        assert path in spec["paths"], path
        for verb in handler_methods(handler):
            op = spec["paths"][path][verb]
            assert op["summary"], (verb, path)
            assert op["security"] == [] or op["x-scopes"]
    create = spec["paths"]["/datasets"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    # the body is a component hoisted from resources/schemas/api.schema.json
    body = spec["components"]["schemas"][body["$ref"].removeprefix("#/components/schemas/")]
    assert "jobs_submitted" in body["required"]
    assert "{dataset_id}" in "".join(spec["paths"])


def test_unknown_route_and_method_are_json_errors(server: Server, alice: httpx.Client) -> None:
    r = httpx.get(server.url + "/no/such/thing")
    assert r.status_code == 404 and r.json() == {"code": 404, "error": "no such route"}
    r = alice.delete("/datasets")
    assert r.status_code == 405 and r.json()["code"] == 405
    r = httpx.get(server.url + "/datasets", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and r.json()["error"] == "invalid token"
    r = httpx.get(server.url + "/datasets", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_expired_token_is_refused(server: Server) -> None:
    token = server.token("alice", ["user"], ["physics"], exp=-10)
    r = httpx.get(server.url + "/datasets", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"] == "token expired"


def test_metrics_use_route_templates(server: Server, alice: httpx.Client) -> None:
    ds = create_dataset(alice, "physics")
    alice.get(f"/datasets/{ds}")
    text = httpx.get(server.url + "/metrics").text
    assert 'route="/datasets/{dataset_id}"' in text
    assert ds not in text
    assert re.search(r'^iceprod_http_requests_total\{method="GET",route="/datasets/'
                     r'\{dataset_id\}",code="200"\} \d+$', text, re.MULTILINE)
    # no scheduler runs beside this server: no counts, and the scrape did not count
    assert "iceprod_tasks{" not in text
    assert "# TYPE iceprod_http_request_seconds histogram" in text


def test_token_command_prints_a_working_token(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d", env={"ICEPROD_SECRET": ""})
    try:
        out = subprocess.run(
            [sys.executable, "-m", "iceprod.server", "token", "--data-dir", str(srv.data_dir),
             "--user", "ops", "--role", "admin"],
            capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
        )
        token = out.stdout.strip()
        r = httpx.get(srv.url + "/datasets", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert (srv.data_dir / "secret").stat().st_mode & 0o777 == 0o600
        bad = subprocess.run(
            [sys.executable, "-m", "iceprod.server", "token", "--data-dir", str(srv.data_dir),
             "--user", "ops", "--role", "wizard"], capture_output=True, text=True, check=False)
        assert bad.returncode == 2 and "wizard" in bad.stderr
    finally:
        srv.stop()


def test_token_command_refuses_a_data_dir_without_a_secret(tmp_path: Path) -> None:
    """A mistyped --data-dir must not mint a token signed with a fresh secret the server never
    sees: it fails in one line, and creates a secret only when asked to."""
    env = {"PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "iceprod.server", "token", "--data-dir", str(tmp_path / "nope"),
            "--user", "ops", "--role", "admin"]
    bad = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--create-secret" in bad.stderr
    assert not (tmp_path / "nope" / "secret").exists()
    made = subprocess.run([*argv, "--create-secret"], capture_output=True, text=True,
                          check=True, env=env)
    assert made.stdout.count(".") == 2  # a JWT
    assert (tmp_path / "nope" / "secret").stat().st_mode & 0o777 == 0o600


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "iceprod.server", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, check=False, timeout=60,
            env={**os.environ, "ICEPROD_GRID_CONFIG": "none"})
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines()
             if "Traceback" in line or "iceprod-server:" in line]
    expected = f"iceprod-server: --port: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert lines == [expected]


def test_idle_claims_are_not_logged_but_errors_are(tmp_path: Path) -> None:
    """An idle pilot polls for work every few seconds: its empty claims stay out of the log
    (DEBUG), while a real 404 is still logged."""
    srv = start_server(tmp_path / "d")
    try:
        with srv.client(srv.token("root", ["admin"])) as admin:
            pilot_id = admin.post("/pilots", json={"resources": {"cpu": 1}}).json()["result"]
            for _ in range(3):
                r = admin.post("/task_actions/process",
                               json={"requirements": {"cpu": 1}, "pilot_id": pilot_id})
                assert r.status_code == 404
            assert admin.get("/datasets/" + "0" * 32).status_code == 404
        assert srv.log_path is not None
        log_path = srv.log_path
        wait_for(lambda: "dataset not found" in log_path.read_text(), what="the 404 logged")
        text = log_path.read_text()
        assert "/datasets/" + "0" * 32 in text
        assert "/task_actions/process" not in text and "no task fits" not in text
    finally:
        srv.stop()


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d")
    assert srv.stop(signal.SIGTERM) == 0
    log = srv.log_path.read_text() if srv.log_path else ""
    assert "serving on http://127.0.0.1:" in log and "stopped" in log


def test_sigkill_loses_no_committed_write(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d")
    admin_token = srv.token("root", ["admin"])
    written: list[str] = []
    with srv.client(admin_token) as c:
        ds = create_dataset(c, "physics")
        job = create_job(c, ds, 0)
        for i in range(200):
            written.append(create_task(c, ds, job, i, f"t{i}"))
        c.put(f"/datasets/{ds}/tasks/{written[-1]}/status", json={"status": "suspended"})
    srv.stop(signal.SIGKILL)
    again = start_server(tmp_path / "d")
    try:
        with again.client(admin_token) as c:
            tasks = c.get(f"/datasets/{ds}/tasks", params={"keys": "status"}).json()
            assert set(tasks) == set(written)
            assert tasks[written[-1]]["status"] == "suspended"
    finally:
        again.stop()


def test_openapi_success_codes_match_the_server(server: Server, alice: httpx.Client) -> None:
    """A documented 201 is what the server answers, and so is a documented 200."""
    spec = httpx.get(server.url + "/openapi.json").json()
    create = spec["paths"]["/datasets"]["post"]["responses"]
    assert "201" in create and "200" not in create
    process = spec["paths"]["/task_actions/process"]["post"]["responses"]
    assert "200" in process and "201" not in process
    ds = create_dataset(alice, "physics")
    r = alice.post(f"/datasets/{ds}/logs", json={"name": "stdout", "data": "x"})
    assert r.status_code == 201
    assert "201" in spec["paths"]["/datasets/{dataset_id}/logs"]["post"]["responses"]

"""Issue 10 §4 at the REST layer, case by case: all-or-nothing dataset creation, the rules a
new dataset gets (group read only, explicit group write), cross-dataset dependencies that
say nothing about unreadable datasets, integer query bounds, forwarding headers trusted only
from configured proxies, and private file modes (umask 077)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import create_dataset, minimal_config, wait_for

GOOD = {"description": "d", "jobs_submitted": 1, "tasks_submitted": 1, "tasks_per_job": 1,
        "group": "physics"}


def rows(server: Server, table: str) -> int:
    conn = sqlite3.connect(f"file:{server.data_dir / 'iceprod.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    finally:
        conn.close()


def number(client: httpx.Client, dataset_id: str) -> int:
    return client.get(f"/datasets/{dataset_id}").json()["dataset"]


def test_a_refused_dataset_writes_nothing_and_skips_no_number(
        server: Server, alice: httpx.Client) -> None:
    first = number(alice, create_dataset(alice, "physics"))
    datasets, auths = rows(server, "datasets"), rows(server, "auths")
    refused = [
        ((b'{"description": "d", "jobs_submitted": 1, "tasks_submitted": 1, '
         b'"tasks_per_job": 1, "group": "physics", "priority": NaN}'), 400, "priority"),
        ((b'{"description": "\\ud800", "jobs_submitted": 1, "tasks_submitted": 1, '
         b'"tasks_per_job": 1, "group": "physics"}'), 400, "description"),
        ((b'{"description": "d", "jobs_submitted": 100000000000000000000000000000, '
         b'"tasks_submitted": 1, "tasks_per_job": 1, "group": "physics"}'), 400,
         "jobs_submitted"),
        (b"[" * 100_000, 400, "body: nested deeper than 64 levels"),
    ]
    for body, code, field in refused:
        r = alice.post("/datasets", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == code, r.text
        assert r.json()["error"].startswith(field), r.text
    for extra, code in (({"max_failures": 2**63 - 1}, 400), ({"write_groups": ["astro"]}, 403),
                        ({"read_groups": ["astro"]}, 403)):
        r = alice.post("/datasets", json={**GOOD, **extra})
        assert r.status_code == code, r.text
        assert r.json()["error"].startswith(next(iter(extra))), r.text
    assert (rows(server, "datasets"), rows(server, "auths")) == (datasets, auths)
    assert number(alice, create_dataset(alice, "physics")) == first + 1


def test_a_new_datasets_group_reads_but_does_not_write(server: Server,
                                                       alice: httpx.Client) -> None:
    carol = server.client(server.token("carol", ["user"], ["physics"]))
    ds = create_dataset(alice, "physics")
    assert carol.get(f"/datasets/{ds}").status_code == 200
    r = carol.put(f"/datasets/{ds}/status", json={"status": "suspended"})
    assert r.status_code == 403, r.text
    assert alice.put(f"/datasets/{ds}/description", json={"description": "mine"}).status_code \
        == 200
    rules = alice.get(f"/auths/{ds}").json()
    assert rules["read_groups"] == ["physics"] and rules["write_groups"] == []
    assert rules["read_users"] == ["alice"] and rules["write_users"] == ["alice"]
    # write for the group is explicit: at creation, or with PUT /auths
    shared = create_dataset(alice, "physics", write_groups=["physics"])
    assert carol.put(f"/datasets/{shared}/description",
                     json={"description": "ours"}).status_code == 200
    assert alice.put(f"/auths/{ds}", json={"write_groups": ["physics"]}).status_code == 200
    assert carol.put(f"/datasets/{ds}/description", json={"description": "x"}).status_code \
        == 200


def test_admin_may_name_any_group(admin: httpx.Client) -> None:
    ds = create_dataset(admin, "physics", write_groups=["astro"], read_groups=["ops"])
    rules = admin.get(f"/auths/{ds}").json()
    assert rules["write_groups"] == ["astro"] and rules["read_groups"] == ["physics", "ops"]


def test_cli_submit_passes_write_and_read_groups(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps(minimal_config()))
    env = {**os.environ, "ICEPROD_URL": server.url,
           "ICEPROD_TOKEN": server.token("dora", ["user"], ["physics", "astro"]),
           "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "iceprod.client.cli", "submit", str(config), "--group", "physics",
         "--write-group", "astro", "--read-group", "physics", "--json"],
        check=False, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ds = json.loads(out.stdout)["dataset_id"]
    with server.client(env["ICEPROD_TOKEN"]) as dora:
        rules = dora.get(f"/auths/{ds}").json()
    assert rules["write_groups"] == ["astro"] and rules["read_groups"] == ["physics"]


def test_depends_on_an_unreadable_dataset_answers_like_a_missing_one(
        alice: httpx.Client, bob: httpx.Client) -> None:
    theirs = create_dataset(bob, "astro")
    assert bob.put(f"/config/{theirs}", json=minimal_config(["secret-task"])).status_code == 200
    missing = "f" * 32
    mine = create_dataset(alice, "physics")

    def put(other: str, name: str) -> httpx.Response:
        config = minimal_config(["a"])
        config["tasks"][0]["depends"] = [f"{other}:{name}"]
        return alice.put(f"/config/{mine}", json=config)

    answers = []
    for name in ("secret-task", "other"):
        hidden, absent = put(theirs, name), put(missing, name)
        assert hidden.status_code == absent.status_code == 400
        assert hidden.json()["error"] == absent.json()["error"].replace(missing, theirs)
        answers.append(hidden.json()["error"])
    assert answers[0] == answers[1]  # nor does it tell which task names exist
    # a readable dataset still answers precisely
    readable = create_dataset(alice, "physics")
    assert alice.put(f"/config/{readable}", json=minimal_config(["b"])).status_code == 200
    r = put(readable, "nope")
    assert r.status_code == 400 and "no task 'nope'" in r.json()["error"]
    assert put(readable, "b").status_code == 200


@pytest.mark.parametrize(("path", "query", "field"), [
    ("/datasets/{ds}/tasks/{task}/logs", "num=100000000000000000000", "num"),
    ("/datasets/{ds}/tasks/{task}/logs", f"num={2**63}", "num"),
    ("/datasets/{ds}/jobs", "job_index=1000000000000000000000000000000", "job_index"),
    ("/datasets/{ds}/jobs", "job_index=1_0", "job_index"),
    ("/datasets", f"limit={2**63 - 1}", "limit"),
    ("/datasets", "username=a%00b", "username"),
    ("/datasets", "status=%ED%A0%80", "status"),
])
def test_query_parameters_are_bounded(alice: httpx.Client, path: str, query: str,
                                      field: str) -> None:
    ds = create_dataset(alice, "physics")
    url = path.format(ds=ds, task="0" * 32) + "?" + query
    r = alice.get(url)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(f"{field}:"), r.text


def access_log_has(server: Server, text: str) -> bool:
    assert server.log_path is not None
    return text in server.log_path.read_text()


@pytest.mark.parametrize("trusted", [None, "127.0.0.0/8, ::1"])
def test_forwarding_headers_count_only_from_trusted_proxies(tmp_path: Path,
                                                            trusted: str | None) -> None:
    env = {"ICEPROD_TRUSTED_PROXIES": trusted} if trusted else {}
    srv = start_server(tmp_path / "data", env=env, args=["--only", "rest"])
    try:
        for n, header in enumerate(("X-Forwarded-For", "X-Real-Ip")):
            claimed = f"203.0.113.{n + 7}"
            # a 401 is logged by tornado's access log with the client's address
            r = httpx.get(srv.url + "/datasets", headers={header: claimed})
            assert r.status_code == 401
            marker = f"GET /datasets ({claimed})" if trusted else "GET /datasets (127.0.0.1)"
            wait_for(lambda m=marker: access_log_has(srv, m), what=marker)
            assert access_log_has(srv, f"({claimed})") == bool(trusted)
    finally:
        srv.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_server_writes_private_files(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    # the last --data-dir wins: the server, not the fixture, creates this one; and no
    # ICEPROD_SECRET, so the server generates the secret file itself
    srv = start_server(tmp_path / "logs", env={"ICEPROD_SECRET": ""},
                       args=["--only", "rest", "--data-dir", str(data)])
    try:
        srv.secret = (data / "secret").read_text().strip()
        with srv.client(srv.token("alice", ["user"], ["physics"])) as alice:
            ds = create_dataset(alice, "physics")
            r = alice.put(f"/datasets/{ds}/store/in/put.txt", content=b"payload")
            assert r.status_code == 201, r.text
        files: list[Any] = [data / "secret", data / "store" / ds / "in" / "put.txt"]
        files += [p for p in data.iterdir() if p.name.startswith("iceprod.sqlite3")]
        assert len(files) >= 3
        for path in files:
            assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
        for folder in (data, data / "store", data / "store" / ds, data / "store" / ds / "in"):
            assert mode(folder) == 0o700, f"{folder}: {oct(mode(folder))}"
    finally:
        srv.stop()

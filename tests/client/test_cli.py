"""The `iceprod` command, run as a subprocess against a real server: login, submit (and a
broken config), status, bulk actions, JSON output, help and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from iceprod.client import cli
from iceprod.client.api import Client
from tests.client.conftest import Scripted
from tests.conftest import Server
from tests.helpers import create_dataset, create_job, create_task, minimal_config

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "examples" / "chain.json"
BROKEN = """{
  "description": "broken",
  "tasks": [
    {"name": "gen", "requirements": {"cpu": 1, "memory": -2},
     "steps": [{"command": "/bin/true"}]}
  ]
}
"""


class CLI:
    """Runs `python -m iceprod.client.cli` with its own config dir and no inherited
    ICEPROD_* variables."""

    def __init__(self, home: Path, url: str) -> None:
        self.home = home
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}
        self.env["XDG_CONFIG_HOME"] = str(home)

    def __call__(self, *args: str, input: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "iceprod.client.cli", *args],
            env={**self.env, **(env or {})}, input=input, capture_output=True, text=True,
            timeout=60, cwd=ROOT, check=False,
        )

    def json(self, *args: str) -> object:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def login(self, token: str) -> None:
        result = self("login", "--url", self.url, "--token", token)
        assert result.returncode == 0, result.stderr


class InProcess:
    """`cli.main` in this process, for exit-code checks that need no subprocess; the same
    call shape as `CLI`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 home: Path, url: str, token: str | None) -> None:
        for name in ("ICEPROD_URL", "ICEPROD_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
        monkeypatch.setenv("ICEPROD_URL", url)
        if token:
            monkeypatch.setenv("ICEPROD_TOKEN", token)
        self.capsys = capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        code = cli.main(list(args))
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)


@pytest.fixture
def alice_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               tmp_path: Path, server: Server) -> InProcess:
    return InProcess(monkeypatch, capsys, tmp_path / "inproc", server.url,
                     server.token("alice", ["user"], ["physics"]))


@pytest.fixture(scope="module")
def alice_cli(tmp_path_factory: pytest.TempPathFactory, server: Server) -> CLI:
    run = CLI(tmp_path_factory.mktemp("alice") / "config", server.url)
    run.login(server.token("alice", ["user"], ["physics"]))
    return run


def test_login_whoami_logout(tmp_path: Path, server: Server) -> None:
    run = CLI(tmp_path / "config", server.url)
    assert run("whoami").returncode == cli.EXIT_AUTH
    token = server.token("alice", ["user"], ["physics", "astro"])
    result = run("login", "--url", server.url, "--token", token)
    assert result.returncode == 0 and "alice" in result.stderr
    path = tmp_path / "config" / "iceprod" / "token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    me = run.json("whoami")
    assert me["user"] == "alice" and me["roles"] == ["user"]
    assert me["groups"] == ["physics", "astro"] and me["expired"] is False
    assert me["url"] == server.url and me["expires"].endswith("Z")
    assert run("logout").returncode == 0 and not path.exists()
    assert run("datasets").returncode == cli.EXIT_AUTH


def test_expired_or_garbage_tokens_are_auth_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    server: Server,
) -> None:
    run = InProcess(monkeypatch, capsys, tmp_path / "config", server.url, None)
    expired = server.token("alice", ["user"], ["physics"], exp=-10)
    result = run("login", "--url", server.url, "--token", expired)
    assert result.returncode == cli.EXIT_AUTH and "expired" in result.stderr
    result = run("login", "--token", "garbage")
    assert result.returncode == cli.EXIT_AUTH and "invalid token" in result.stderr
    result = run("datasets", "--url", server.url, "--token", "x.y.z")
    assert result.returncode == cli.EXIT_AUTH and "invalid token" in result.stderr


def test_environment_and_flags_override_stored_login(alice_cli: CLI, server: Server) -> None:
    bob = server.token("bob", ["user"], ["astro"])
    assert alice_cli.json("whoami")["user"] == "alice"
    result = alice_cli("whoami", "--json", env={"ICEPROD_TOKEN": bob})
    assert json.loads(result.stdout)["user"] == "bob"
    assert json.loads(result.stdout)["token_source"] == "ICEPROD_TOKEN"
    result = alice_cli("whoami", "--json", "--token", server.token("carol", ["user"]),
                       env={"ICEPROD_TOKEN": bob})
    assert json.loads(result.stdout)["user"] == "carol"
    result = alice_cli("datasets", env={"ICEPROD_URL": "http://127.0.0.1:1"})
    assert result.returncode == cli.EXIT_API and "cannot reach" in result.stderr


def test_submit_chain_then_status(alice_cli: CLI, system: httpx.Client) -> None:
    out = alice_cli.json("submit", str(CHAIN), "--jobs", "2", "--group", "physics",
                         "--param", "OUTDIR=/tmp/elsewhere")
    ds, number = out["dataset_id"], out["dataset"]
    assert out["tasks_per_job"] == 3
    config = system.get(f"/config/{ds}").json()
    assert config["steering"]["parameters"]["OUTDIR"] == "/tmp/elsewhere"
    assert config["options"]["max_failures"] == 3
    before = alice_cli("status", ds)  # this server runs no scheduler: nothing materialized
    assert before.returncode == 0
    assert "no jobs yet: the scheduler creates them within a few seconds" in before.stdout
    assert "jobs by status" not in before.stdout
    for index in range(2):
        job = create_job(system, ds, index)
        for t, name in enumerate(["generate", "process", "finish"]):
            create_task(system, ds, job, t, name, status="queued" if t == 0 else "waiting")
    report = alice_cli.json("status", str(number))
    assert report["dataset"]["dataset_id"] == ds
    assert report["jobs"] == {"processing": 2}
    assert report["tasks"] == {"queued": 2, "waiting": 4}
    assert list(report["tasks_by_name"]) == ["generate", "process", "finish"]
    text = alice_cli("status", ds)
    assert text.returncode == 0
    assert "no jobs yet" not in text.stdout
    assert "generate" in text.stdout and "(all)" in text.stdout and "processing" in text.stdout
    listed = alice_cli.json("datasets", "--status", "processing")
    assert listed[ds]["dataset"] == number
    tasks = alice_cli.json("tasks", ds, "--name", "generate")
    assert {t["status"] for t in tasks.values()} == {"queued"} and len(tasks) == 2


def test_broken_config_names_the_line_and_creates_nothing(
    alice_cli: CLI, tmp_path: Path, admin: httpx.Client
) -> None:
    before = len(admin.get("/datasets").json())
    broken = tmp_path / "broken.json"
    broken.write_text(BROKEN)
    result = alice_cli("submit", str(broken), "--group", "physics")
    assert result.returncode == cli.EXIT_USAGE
    assert "invalid dataset config" in result.stderr
    assert "line 4: tasks[0].requirements.memory" in result.stderr
    assert '"memory": -2' in result.stderr  # the offending line itself
    syntax = tmp_path / "syntax.json"
    syntax.write_text('{\n  "tasks": [\n    {"name": "a",}\n  ]\n}\n')
    result = alice_cli("submit", str(syntax))
    assert result.returncode == cli.EXIT_USAGE and "line 3: not valid JSON" in result.stderr
    assert len(admin.get("/datasets").json()) == before


def test_server_refusing_the_config_reports_the_dataset(alice_cli: CLI, tmp_path: Path) -> None:
    config = minimal_config(["a"])
    config["tasks"][0]["depends"] = ["f" * 32 + ":other"]  # passes locally, not on the server
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(config))
    result = alice_cli("submit", str(path), "--group", "physics")
    assert result.returncode == cli.EXIT_USAGE
    assert "refused the config of dataset" in result.stderr


def test_not_found_and_usage_exit_codes(alice_main: InProcess) -> None:
    assert alice_main("status", "999999").returncode == cli.EXIT_NOT_FOUND
    result = alice_main("status", "f" * 32)
    assert result.returncode == cli.EXIT_NOT_FOUND and "dataset not found" in result.stderr
    assert alice_main("status", "not-a-dataset").returncode == cli.EXIT_USAGE
    assert alice_main("submit", "/nonexistent.json").returncode == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as usage:
        alice_main("no-such-command")
    assert usage.value.code == cli.EXIT_USAGE


def failed_tasks(server: Server, alice: httpx.Client, system: httpx.Client,
                 n: int) -> tuple[str, list[str]]:
    """A dataset with `n` tasks named "work" failed by a pilot, plus one complete "other"."""
    ds = create_dataset(alice, "physics", jobs=n + 1, tasks_per_job=1)
    # the highest priority in the shared queue, so the claims below take exactly these
    ids = [create_task(system, ds, create_job(system, ds, j), 0, "work", status="queued",
                       priority=1e12) for j in range(n)]
    create_task(system, ds, create_job(system, ds, n), 0, "other", status="waiting")
    with Client(server.url, server.token("pilot-cli", ["pilot"])) as pilot:
        pilot_id = pilot.pilots.create(resources={"cpu": 1})
        for _ in ids:
            task = pilot.tasks.claim({"cpu": 1, "memory": 1}, pilot_id)
            assert task is not None and task["task_id"] in ids
            pilot.tasks.failed(task["task_id"], task["instance_id"], reason="broken input")
    return ds, ids


def test_bulk_reset_of_failed_tasks(alice_cli: CLI, server: Server, alice: httpx.Client,
                                    system: httpx.Client) -> None:
    ds, ids = failed_tasks(server, alice, system, 3)
    assert alice_cli.json("tasks", ds, "--status", "failed").keys() == set(ids)
    refused = alice_cli("reset", ds)
    assert refused.returncode == cli.EXIT_USAGE and "--yes" in refused.stderr
    # the preview comes first, then one line refusing (no terminal to ask on)
    assert "would change 3 of 3 selected (3 failed)" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "refusing without a terminal; pass --yes")
    assert alice.get(f"/datasets/{ds}/task_counts/status").json()["failed"] == 3
    dry = alice_cli("reset", ds, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("reset failed task(s) of dataset ")
    assert "would change 3 of 3 selected (3 failed); first: " in dry.stdout
    preview = alice_cli.json("reset", ds, "--dry-run")
    assert preview["dry_run"] is True and preview["changed"] == 3
    assert preview["sample"] == sorted(ids) and preview["by_status"] == {"failed": 3}
    assert alice.get(f"/datasets/{ds}/task_counts/status").json()["failed"] == 3
    result = alice_cli("reset", ds, "--status", "failed", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reset: changed 3 of 3 failed task(s)"
    counts = alice.get(f"/datasets/{ds}/task_counts/status").json()
    assert counts == {"waiting": 4}
    again = alice_cli.json("reset", ds, "--yes")
    assert again["matched"] == 0 and again["changed"] == 0


def test_suspend_and_resume_by_task_name(alice_cli: CLI, alice: httpx.Client,
                                         system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=2)
    for j in range(2):
        job = create_job(system, ds, j)
        create_task(system, ds, job, 0, "a")
        create_task(system, ds, job, 1, "b")
    out = alice_cli.json("suspend", ds, "--task-name", "b", "--yes")
    assert out["matched"] == 2 and out["changed"] == 2
    assert alice.get(f"/datasets/{ds}").json()["status"] == "processing"
    counts = alice.get(f"/datasets/{ds}/task_counts/name_status").json()
    assert counts == {"a": {"waiting": 2}, "b": {"suspended": 2}}
    out = alice_cli.json("suspend", ds, "--yes")
    assert out["changed"] == 2 and alice.get(f"/datasets/{ds}").json()["status"] == "suspended"
    out = alice_cli.json("resume", ds, "--yes")
    assert out["changed"] == 4 and alice.get(f"/datasets/{ds}").json()["status"] == "processing"
    bad = alice_cli("reset", ds, "--status", "complete", "--yes")
    assert bad.returncode == cli.EXIT_USAGE and "cannot reset" in bad.stderr



def test_bulk_commands_take_dataset_numbers_and_refuse_unknown_names(
        alice_cli: CLI, alice: httpx.Client, system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=1)
    for j in range(2):
        create_task(system, ds, create_job(system, ds, j), 0, "a")
    number = str(alice.get(f"/datasets/{ds}").json()["dataset"])
    # a name no task has is the server's 404, naming it, and nothing changes
    typo = alice_cli("suspend", number, "--task-name", "aa", "--yes")
    assert typo.returncode == cli.EXIT_NOT_FOUND and "'aa'" in typo.stderr, typo.stderr
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == {"waiting": 2}
    out = alice_cli.json("suspend", number, "--task-name", "a", "--yes")
    assert out["dataset_id"] == ds and out["matched"] == 2 and out["changed"] == 2
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == {"suspended": 2}
    missing = alice_cli("status", "99999999999")
    assert missing.returncode == cli.EXIT_NOT_FOUND
    assert "dataset 99999999999 not found" in missing.stderr


def test_requirements_and_stats(alice_cli: CLI, alice_main: InProcess, alice: httpx.Client,
                                system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=1)
    for j in range(2):
        create_task(system, ds, create_job(system, ds, j), 0, "sim")
    refused = alice_cli("requirements", ds, "sim", "memory=4")
    assert refused.returncode == cli.EXIT_USAGE and "pass --yes" in refused.stderr
    dry = alice_cli.json("requirements", ds, "sim", "memory=4", "--dry-run")
    assert dry["matched"] == 2 and dry["changed"] == 2
    assert all("memory" not in t.get("requirements", {})
               for t in alice.get(f"/datasets/{ds}/tasks").json().values())
    result = alice_cli("requirements", ds, "sim", "memory=4", "cpu=2", "os=el8,el9", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("requirements of 2 sim task(s) set")
    tasks = alice.get(f"/datasets/{ds}/tasks").json()
    assert all(t["requirements"] == {"memory": 4.0, "cpu": 2, "os": ["el8", "el9"]}
               for t in tasks.values())
    assert alice_main("requirements", ds, "sim", "memory=lots", "--yes").returncode \
        == cli.EXIT_USAGE
    assert alice_main("requirements", ds, "sim", "colour=red", "--yes").returncode \
        == cli.EXIT_USAGE
    # each change above is in the dataset's audit trail, with its actor
    trail = alice_cli.json("audit", ds)
    assert [r["action"] for r in trail] == ["dataset.create", "tasks.bulk_requirements"]
    assert trail[1]["username"] == "alice" and trail[1]["counts"] == {"changed": 2}
    table = alice_cli("audit", ds, "--action", "tasks.bulk_requirements")
    assert table.returncode == 0 and "tasks.bulk_requirements" in table.stdout
    assert "changed=2" in table.stdout
    assert alice_cli("audit").returncode == cli.EXIT_AUTH  # everyone's trail: admins only
    stats = alice_cli.json("stats", ds)
    assert stats == {}  # nothing completed: IceProd leaves the name out


def test_logs_of_a_task(alice_cli: CLI, server: Server, alice: httpx.Client,
                        system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics")
    task = create_task(system, ds, create_job(system, ds, 0), 0, "only", status="queued")

    def add_log(name: str, data: str) -> None:
        r = system.post("/logs", json={"task_id": task, "name": name, "data": data})
        assert r.status_code == 201, r.text

    add_log("stdout", "hello\n")
    add_log("stderr", "oops\n")
    result = alice_cli("logs", task)  # the dataset is found
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("==> stdout") < result.stdout.index("hello")
    assert "oops" in result.stdout
    only = alice_cli.json("logs", task, "--dataset", ds, "--name", "stderr")
    assert [log["data"] for log in only.values()] == ["oops\n"]
    assert alice_cli("logs", "e" * 32).returncode == cli.EXIT_NOT_FOUND

    follow = subprocess.Popen(
        [sys.executable, "-m", "iceprod.client.cli", "logs", task, "--dataset", ds,
         "--follow", "--interval", "0.1"],
        env=alice_cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert follow.stdout is not None
        assert "hello" in follow.stdout.readline() + follow.stdout.readline()
        add_log("stdout", "later\n")
        assert system.put(f"/tasks/{task}/status", json={"status": "suspended"}).status_code == 200
        out, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert out.rstrip().endswith("later")


def test_grids_and_pilots_json(alice_cli: CLI, system: httpx.Client) -> None:
    grid = system.post("/grids", json={"host": "submit.example"}).json()["result"]
    assert alice_cli.json("grids")[grid]["host"] == "submit.example"
    assert isinstance(alice_cli.json("pilots"), dict)


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
              ) -> list[tuple[str, ...]]:
    """Every command path of the parser tree."""
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _commands(child, (*prefix, name))
    return out


def test_walltimes_carry_their_unit() -> None:
    assert cli.duration(None) == ""
    assert cli.duration(1.111e-06) == "0.004 s"
    assert cli.duration(30 / 3600) == "30 s"
    assert cli.duration(184 / 3600) == "3m04s"
    assert cli.duration(2.5) == "2.50 h"


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _commands(cli.build_parser())
    assert ("status",) in paths and ("admin", "rules", "set") in paths
    assert len(paths) > 30
    for path in paths:
        with pytest.raises(SystemExit) as done:
            cli.main([*path, "--help"])
        assert done.value.code == 0, path
        text = capsys.readouterr().out
        assert text.startswith("usage: iceprod"), path
        assert "--url" in text or path == (), path


def test_read_commands_all_take_json() -> None:
    parser = cli.build_parser()
    for path in [("datasets",), ("status",), ("tasks",), ("logs",), ("stats",), ("grids",),
                 ("pilots",), ("whoami",), ("admin", "users", "list"), ("admin", "rules", "show")]:
        sub = parser
        for name in path:
            sub = next(a for a in sub._actions
                       if isinstance(a, argparse._SubParsersAction)).choices[name]
        assert any("--json" in a.option_strings for a in sub._actions), path


def test_installed_script_help_documents_exit_codes() -> None:
    script = Path(sys.executable).parent / "iceprod"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0
    for line in ["0  success", "2  usage or validation error", "3  authentication",
                 "4  not found", "ICEPROD_URL", "ICEPROD_TOKEN"]:
        assert line in result.stdout


def test_password_login_stores_the_returned_token(tmp_path: Path, server: Server,
                                                  scripted: Scripted) -> None:
    # the LDAP bind itself is the server's subject (tests/rest); here: what the CLI sends,
    # stores and prints, against a stand-in for POST /ldap
    token = server.token("dana", ["user"], ["physics"])
    scripted.replies = [(200, {}, {"token": token, "username": "dana", "roles": ["user"],
                                   "groups": ["physics"]})]
    run = CLI(tmp_path / "config", scripted.url)
    result = run("login", "--url", scripted.url, "--username", "dana", "--password-stdin",
                 input="s3cret\n")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert [(m, p) for _, m, p in scripted.seen] == [("POST", "/ldap")]
    assert scripted.bodies == [{"username": "dana", "password": "s3cret"}]
    assert (tmp_path / "config" / "iceprod" / "token").read_text().strip() == token
    assert run.json("whoami")["user"] == "dana"


def test_password_login_errors_are_clear(tmp_path: Path, server: Server) -> None:
    run = CLI(tmp_path / "config", server.url)
    result = run("login", "--url", server.url, "--username", "x", "--password-stdin",
                 input="y\n")
    assert result.returncode == cli.EXIT_NOT_FOUND
    assert "LDAP login is not configured" in result.stderr
    assert not (tmp_path / "config" / "iceprod" / "token").exists()


def test_password_login_without_a_terminal_says_what_to_pass(tmp_path: Path,
                                                             scripted: Scripted) -> None:
    run = CLI(tmp_path / "config", scripted.url)
    result = run("login", "--url", scripted.url, "--username", "x")  # stdin is not a tty
    assert result.returncode == cli.EXIT_USAGE
    expected = ("error: no terminal to ask for the password on: pass --username with "
                "--password-stdin, or --token")
    assert result.stderr.strip().splitlines() == [expected]
    assert scripted.seen == []  # nothing asked of the server


def test_password_prompt_is_not_shown_when_ldap_is_off(tmp_path: Path, server: Server) -> None:
    """On a terminal, the CLI first asks the server whether it takes passwords at all."""
    run = CLI(tmp_path / "config", server.url)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "iceprod.client.cli", "login", "--url", server.url],
            env=run.env, stdin=follower, capture_output=True, text=True, timeout=60,
            check=False)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    assert "has no password login (LDAP is not configured there)" in proc.stderr
    assert "Username" not in proc.stdout + proc.stderr
    assert "Password" not in proc.stdout + proc.stderr


def test_a_long_retry_after_is_reported_not_waited_for(tmp_path: Path,
                                                       scripted: Scripted) -> None:
    scripted.replies = [(429, {"Retry-After": "300"},
                         {"code": 429, "error": "too many failed logins"})]
    run = CLI(tmp_path / "config", scripted.url)
    result = run("login", "--url", scripted.url, "--username", "x", "--password-stdin",
                 input="y\n")
    assert result.returncode == cli.EXIT_API
    assert "429 too many failed logins (retry in 5m 0s)" in result.stderr
    assert len(scripted.seen) == 1


def test_output_into_a_closed_pipe_is_quiet(server: Server, tmp_path: Path) -> None:
    """`iceprod datasets | head -1`: when the reader goes away the command stops quietly,
    without a BrokenPipeError traceback."""
    token = server.token("alice", ["user"], ["physics"])
    create_dataset(server.client(token), "physics")
    env = {**os.environ, "ICEPROD_URL": server.url, "ICEPROD_TOKEN": token,
           "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "iceprod.client.cli", "datasets"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err

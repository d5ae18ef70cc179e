"""`iceprod admin ...` and `iceprod token create`, run as subprocesses against a real server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from iceprod.client import cli
from tests.client.test_cli import CLI
from tests.conftest import Server
from tests.helpers import create_dataset


@pytest.fixture(scope="module")
def admin_cli(tmp_path_factory: pytest.TempPathFactory, server: Server) -> CLI:
    run = CLI(tmp_path_factory.mktemp("admin") / "config", server.url)
    run.login(server.token("root", ["admin"]))
    return run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_users_and_groups(admin_cli: CLI, admin: httpx.Client) -> None:
    group, other, user = unique("grp"), unique("grp"), unique("user")
    created = admin_cli.json("admin", "groups", "add", group, "--description", "a group")
    assert admin.get(f"/groups/{created['group_id']}").json()["name"] == group
    assert admin_cli("admin", "groups", "add", other).returncode == 0
    out = admin_cli.json("admin", "users", "add", user, "--group", group, "--role", "user")
    uid = out["user_id"]
    shown = admin_cli.json("admin", "users", "show", user)
    assert shown["user_id"] == uid and shown["groups"] == [group] and shown["roles"] == ["user"]
    assert uid in admin_cli.json("admin", "users", "list")
    listing = admin_cli("admin", "users")  # list is the default action
    assert user in listing.stdout and group in listing.stdout
    assert admin_cli.json("admin", "users", "add-group", user, other)["group"] == other
    assert admin.get(f"/users/{uid}/groups").json()["groups"] == [group, other]
    assert admin_cli.json("admin", "users", "set-groups", user, other)["groups"] == [other]
    assert admin_cli.json("admin", "users", "set-roles", user, "user,admin")["roles"] == [
        "user", "admin"]
    assert admin.get(f"/users/{uid}").json()["roles"] == ["user", "admin"]
    bad = admin_cli("admin", "users", "add-group", user, "no-such-group")
    assert bad.returncode == cli.EXIT_USAGE and "unknown group" in bad.stderr
    assert "not_before" in admin_cli.json("admin", "users", "revoke", user)
    assert admin_cli("admin", "users", "delete", user).returncode == 0
    assert admin_cli("admin", "users", "show", user).returncode == cli.EXIT_NOT_FOUND
    assert admin_cli("admin", "groups", "delete", other).returncode == 0
    assert other not in admin_cli("admin", "groups").stdout


def test_roles(admin_cli: CLI) -> None:
    name = unique("reader")
    doc = admin_cli.json("admin", "roles", "set", name, "--scope", "read:datasets,read:grids",
                         "--description", "looks only")
    assert doc["scopes"] == ["read:datasets", "read:grids"] and doc["builtin"] is False
    assert admin_cli.json("admin", "roles", "show", name)["description"] == "looks only"
    roles = admin_cli.json("admin", "roles")
    assert roles["admin"]["builtin"] is True and name in roles
    builtin = admin_cli("admin", "roles", "set", "admin", "--scope", "read:grids")
    assert builtin.returncode == cli.EXIT_API and "built in" in builtin.stderr
    assert admin_cli("admin", "roles", "delete", name).returncode == 0
    assert admin_cli("admin", "roles", "show", name).returncode == cli.EXIT_NOT_FOUND


def test_dataset_rules(admin_cli: CLI, alice: httpx.Client, server: Server,
                       tmp_path: Path) -> None:
    ds = create_dataset(alice, "physics")
    bob = CLI(tmp_path / "bob", server.url)
    bob.login(server.token("bob", ["user"], ["astro"]))
    assert bob("status", ds).returncode == cli.EXIT_AUTH
    rules = admin_cli.json("admin", "rules", "set", ds, "--read-groups", "physics,astro")
    assert rules["read_groups"] == ["physics", "astro"] and rules["write_users"] == ["alice"]
    assert admin_cli.json("admin", "rules", "show", ds)["read_groups"] == ["physics", "astro"]
    assert bob("status", ds).returncode == 0
    empty = admin_cli("admin", "rules", "set", ds)
    assert empty.returncode == cli.EXIT_USAGE


def test_token_create_share_and_temp(tmp_path: Path, server: Server,
                                     alice: httpx.Client) -> None:
    run = CLI(tmp_path / "config", server.url)
    run.login(server.token("alice", ["user"], ["physics"]))
    ds = create_dataset(alice, "physics")
    share = run("token", "create", "--dataset", ds, "--exp", "600")
    assert share.returncode == 0, share.stderr
    token = share.stdout.strip()
    reader = CLI(tmp_path / "reader", server.url)
    reader.env["ICEPROD_URL"] = server.url
    me = json.loads(reader("whoami", "--json", "--token", token).stdout)
    assert me["scope"].startswith(f"dataset:{ds}") and me["expires_in"] <= 600
    status = reader("status", ds, "--token", token)
    assert status.returncode == 0, status.stderr
    refused = reader("suspend", ds, "--yes", "--token", token)
    assert refused.returncode == cli.EXIT_AUTH
    temp = run.json("token", "create", "--type", "temp")
    assert temp["username"] == "alice" and temp["token"]
    bad = run("token", "create", "--type", "system")
    assert bad.returncode == cli.EXIT_AUTH

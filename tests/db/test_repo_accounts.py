"""The account repositories: ``UsersRepo``, ``GroupsRepo``, ``RolesRepo`` and ``RevocationsRepo``.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iceprod.common.errors import Conflict, NotFound
from iceprod.common.ids import is_id
from iceprod.db import Database
from iceprod.db.store import Doc
from tests.db.builders import (
    NOW,
)


def user_doc(user_id: str, username: str, **extra: Any) -> Doc:
    return {"user_id": user_id, "username": username, "roles": [], "groups": [], **extra}


async def test_users_create_and_lookups(db: Database) -> None:
    alice = user_doc("u1", "alice", email="a@example.org", roles=["user"], groups=["sim"])
    assert await db.users.create(alice) == alice
    with pytest.raises(Conflict, match="username: 'alice' already exists"):
        await db.users.create(user_doc("u9", "alice"))
    bob = user_doc("u2", "bob", email="shared@example.org", orcid="0000-0001")
    carol = user_doc("u3", "carol", email="shared@example.org")
    dave = user_doc("u4", "dave")
    for u in (bob, carol, dave):
        await db.users.create(u)

    assert await db.users.by_username("alice") == alice
    assert await db.users.by_username("nobody") is None
    assert await db.users.by_identity("email", "a@example.org") == [alice]
    assert await db.users.by_identity("orcid", "0000-0001") == [bob]
    shared = await db.users.by_identity("email", "shared@example.org")
    assert sorted(u["username"] for u in shared) == ["bob", "carol"]
    assert await db.users.by_identity("email", "none@example.org") == []
    with pytest.raises(ValueError, match="identity"):
        await db.users.by_identity("username", "alice")

    found = await db.users.find_many(["u3", "u1", "nope"])
    assert sorted(found, key=lambda u: u["user_id"]) == [alice, carol]
    assert await db.users.find_many([]) == []


async def test_users_set_fields_add_group_delete(db: Database) -> None:
    await db.users.create(user_doc("u1", "alice", email="a@example.org", groups=["sim"]))
    doc = await db.users.set_fields("u1", {"orcid": "0000-0002", "email": None})
    assert doc["orcid"] == "0000-0002" and "email" not in doc
    assert await db.users.by_identity("email", "a@example.org") == []
    assert await db.users.set_fields("u1", {}) == doc
    with pytest.raises(NotFound, match="user not found"):
        await db.users.set_fields("nope", {"orcid": "x"})
    with pytest.raises(NotFound):
        await db.users.set_fields("nope", {"email": None})
    with pytest.raises(NotFound):
        await db.users.set_fields("nope", {})

    assert (await db.users.add_group("u1", "ana"))["groups"] == ["sim", "ana"]
    assert (await db.users.add_group("u1", "ana"))["groups"] == ["sim", "ana"]
    with pytest.raises(NotFound, match="user not found"):
        await db.users.add_group("nope", "ana")

    deleted = await db.users.delete("u1")
    assert deleted["username"] == "alice" and deleted["groups"] == ["sim", "ana"]
    assert await db.users.by_username("alice") is None
    with pytest.raises(NotFound, match="user not found"):
        await db.users.delete("u1")


async def test_users_with_value_and_pull_everywhere(db: Database) -> None:
    for u in (
        user_doc("u1", "alice", roles=["admin", "user"], groups=["sim"]),
        user_doc("u2", "bob", roles=["user"], groups=["sim", "ana"]),
        user_doc("u3", "carol", roles=[], groups=["ana"]),
    ):
        await db.users.create(u)
    assert sorted(await db.users.with_value("roles", "user")) == ["alice", "bob"]
    assert sorted(await db.users.with_value("groups", "ana")) == ["bob", "carol"]
    assert await db.users.with_value("roles", "none") == []

    assert await db.users.pull_everywhere("groups", "sim") == 2
    assert (await db.users.get("u1"))["groups"] == []
    assert (await db.users.get("u2"))["groups"] == ["ana"]
    assert await db.users.with_value("groups", "sim") == []
    assert await db.users.pull_everywhere("roles", "admin") == 1
    assert (await db.users.get("u1"))["roles"] == ["user"]
    assert await db.users.pull_everywhere("roles", "admin") == 0


async def test_groups_create_ensure_missing_delete(db: Database) -> None:
    sim = await db.groups.create("sim", "simulation")
    assert is_id(sim["group_id"])
    assert (sim["name"], sim["description"]) == ("sim", "simulation")
    assert await db.groups.get(sim["group_id"]) == sim
    with pytest.raises(Conflict, match="group 'sim' already exists"):
        await db.groups.create("sim")

    assert await db.groups.missing(["ana", "sim", "zed"]) == ["ana", "zed"]
    assert await db.groups.missing([]) == []
    await db.groups.ensure(["ana", "sim", "zed"])
    await db.groups.ensure(["ana", "zed"])
    await db.groups.ensure([])
    assert await db.groups.missing(["ana", "sim", "zed"]) == []
    assert await db.groups.coll.count({}) == 3
    assert await db.groups.get(sim["group_id"]) == sim  # ensure never replaces

    await asyncio.gather(*(db.groups.ensure(["x", "y"]) for _ in range(5)))
    assert await db.groups.coll.count({"name": {"$in": ["x", "y"]}}) == 2

    assert await db.groups.delete(sim["group_id"]) == sim
    assert await db.groups.missing(["sim"]) == ["sim"]
    with pytest.raises(NotFound, match="group not found"):
        await db.groups.delete(sim["group_id"])


async def test_roles_put_all_scopes_delete(db: Database) -> None:
    doc, created = await db.roles.put("ops", ["read:tasks", "write:tasks", "read:tasks"], "o")
    assert created
    assert (doc["name"], doc["scopes"], doc["description"]) == (
        "ops", ["read:tasks", "write:tasks"], "o"
    )
    assert await db.roles.get("ops") == doc
    replaced, created = await db.roles.put("ops", ["read:datasets"])
    assert not created
    assert (replaced["scopes"], replaced["description"]) == (["read:datasets"], "")
    await db.roles.put("auditor", ["read:logs"])

    assert [r["name"] for r in await db.roles.all()] == ["auditor", "ops"]
    assert await db.roles.all() == [await db.roles.get("auditor"), await db.roles.get("ops")]
    assert await db.roles.scopes_of(["ops", "nope", "auditor"]) == {
        "ops": frozenset({"read:datasets"}), "auditor": frozenset({"read:logs"})
    }
    assert await db.roles.scopes_of([]) == {}

    await db.roles.delete("ops")
    assert await db.roles.scopes_of(["ops"]) == {}
    with pytest.raises(NotFound, match="role not found"):
        await db.roles.delete("ops")

    results = await asyncio.gather(*(db.roles.put("new", [f"s{i}"]) for i in range(5)))
    assert [created for _, created in results].count(True) == 1
    assert await db.roles.coll.count({"name": "new"}) == 1


async def test_revocations(db: Database) -> None:
    assert await db.revocations.not_before("alice") is None
    assert await db.revocations.revoke("alice", NOW) == NOW
    assert await db.revocations.not_before("alice") == NOW
    assert await db.revocations.revoke("alice", NOW - 100) == NOW  # never moves back
    assert await db.revocations.not_before("alice") == NOW
    assert await db.revocations.revoke("alice", NOW + 5.5) == NOW + 5.5
    assert await db.revocations.not_before("bob") is None

    times = [NOW + i for i in (3, 9, 1, 7)]
    got = await asyncio.gather(*(db.revocations.revoke("carol", t) for t in times))
    assert max(got) == NOW + 9
    assert await db.revocations.not_before("carol") == NOW + 9
    assert await db.revocations.coll.count({}) == 2

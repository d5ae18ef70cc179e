"""The dialects' repositories: ``ScriptsRepo``, ``SubmissionsRepo`` and ``ApiKeysRepo``.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees.
"""

from __future__ import annotations

import pytest

from iceprod.common.errors import Conflict, NotFound
from iceprod.db import Database


async def test_scripts_put_replace_window_delete(db: Database) -> None:
    assert await db.scripts.put({"name": "b", "command": "/bin/b", "param": [{"name": "x"}]})
    assert await db.scripts.put({"name": "a", "command": "/bin/a"})
    first = await db.scripts.get("b")
    # replacing keeps the creation time and drops the fields the new entry lacks
    assert not await db.scripts.put({"name": "b", "command": "/bin/b2"})
    again = await db.scripts.get("b")
    assert again["command"] == "/bin/b2" and "param" not in again
    assert again["created"] == first["created"] and again["updated"] >= first["updated"]
    assert await db.scripts.put({"name": "c", "command": "/bin/c"})
    count, docs = await db.scripts.window(0, 2)
    assert count == 3 and [d["name"] for d in docs] == ["a", "b"]
    count, docs = await db.scripts.window(2, 2)
    assert [d["name"] for d in docs] == ["c"]
    assert (await db.scripts.delete("a"))["command"] == "/bin/a"
    with pytest.raises(NotFound):
        await db.scripts.delete("a")
    assert (await db.scripts.window(0, 10))[0] == 2


async def test_submissions_by_user_kind_and_deletion(db: Database) -> None:
    for i, (user, kind) in enumerate([("alice", "batch"), ("alice", "drmaatic"),
                                      ("alice", "batch"), ("bob", "batch")]):
        await db.submissions.create({"dataset_id": f"d{i}", "username": user, "kind": kind,
                                     "deleted": False, "created": f"2026-01-0{i + 1}T00:00:00Z",
                                     "updated": f"2026-01-0{i + 1}T00:00:00Z"})
    mine = await db.submissions.of_user("alice", "batch")
    assert [d["dataset_id"] for d in mine] == ["d0", "d2"]
    assert (await db.submissions.of_kind("d1", "drmaatic"))["username"] == "alice"
    with pytest.raises(NotFound, match="task not found"):
        await db.submissions.of_kind("d0", "drmaatic")
    assert await db.submissions.mark_deleted(["d0", "d3"]) == 2
    assert await db.submissions.mark_deleted(["d0"]) == 0
    assert await db.submissions.mark_deleted([]) == 0
    assert [d["dataset_id"] for d in await db.submissions.of_user("alice", "batch")] == ["d2"]
    both = await db.submissions.of_user("alice", "batch", deleted=True)
    assert [(d["dataset_id"], d["deleted"]) for d in both] == [("d0", True), ("d2", False)]
    assert len(await db.submissions.of_user("alice", "batch", deleted=True, limit=1)) == 1


async def test_apikeys_create_list_delete(db: Database) -> None:
    await db.apikeys.create({"key_id": "k1", "username": "alice", "name": "laptop",
                             "hash": "h1"})
    await db.apikeys.create({"key_id": "k2", "username": "alice", "name": "ci", "hash": "h2"})
    await db.apikeys.create({"key_id": "k3", "username": "bob", "name": "ci", "hash": "h3"})
    with pytest.raises(Conflict, match="name: an API key named 'ci' exists"):
        await db.apikeys.create({"key_id": "k4", "username": "alice", "name": "ci",
                                 "hash": "h4"})
    assert [k["name"] for k in await db.apikeys.of_user("alice")] == ["ci", "laptop"]
    assert (await db.apikeys.delete_named("alice", "ci"))["key_id"] == "k2"
    with pytest.raises(NotFound, match="name: no API key named 'ci'"):
        await db.apikeys.delete_named("alice", "ci")
    assert [k["key_id"] for k in await db.apikeys.of_user("bob")] == ["k3"]
    assert (await db.apikeys.get("k1"))["name"] == "laptop"

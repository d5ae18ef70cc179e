"""``AuthsRepo``: a dataset's read/write rules.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

from iceprod.db import Database
from iceprod.db.auths import allows


async def test_auths_set_rules_and_readable(db: Database) -> None:
    created = await db.auths.set_rules("d1", {"read_users": ["bob"], "write_groups": ["sim"]})
    assert created == {
        "dataset_id": "d1", "read_users": ["bob"], "read_groups": [], "write_users": [],
        "write_groups": ["sim"],
    }
    assert await db.auths.get("d1") == created
    await db.auths.set_rules("d2", {"read_groups": ["ana"], "write_users": ["carol"]})
    await db.auths.set_rules("d3", {"write_users": ["bob"], "read_users": ["bob"]})
    await db.auths.set_rules("d4", {})

    assert sorted(await db.auths.readable("bob", [])) == ["d1", "d3"]
    assert sorted(await db.auths.readable("carol", ["ana"])) == ["d2"]
    assert sorted(await db.auths.readable("dave", ["sim", "ana"])) == ["d1", "d2"]
    assert await db.auths.readable("eve", ["nobody"]) == []

    replaced = await db.auths.set_rules("d1", {"read_users": ["eve"]})
    assert replaced == {
        "dataset_id": "d1", "read_users": ["eve"], "read_groups": [], "write_users": [],
        "write_groups": [],
    }
    assert await db.auths.get("d1") == replaced
    assert await db.auths.readable("bob", []) == ["d3"]
    assert await db.auths.readable("eve", []) == ["d1"]
    assert await db.auths.coll.count({}) == 4

    assert await db.auths.remove("d1") == 1
    assert await db.auths.remove("d1") == 0
    assert await db.auths.find("d1") is None and await db.auths.readable("eve", []) == []
    assert await db.auths.coll.count({}) == 3


def test_allows_write_implies_read() -> None:
    rules = {"read_users": ["r"], "read_groups": ["rg"], "write_users": ["w"],
             "write_groups": ["wg"]}
    assert allows(rules, "read", "r", [])
    assert not allows(rules, "write", "r", [])
    assert allows(rules, "read", "w", []) and allows(rules, "write", "w", [])
    assert allows(rules, "read", "x", ["other", "rg"])
    assert not allows(rules, "write", "x", ["rg"])
    assert allows(rules, "write", "x", ["wg"]) and allows(rules, "read", "x", ["wg"])
    assert not allows(rules, "read", "x", [])
    assert not allows({}, "read", "r", ["rg"])
    assert allows({"write_groups": ["wg"]}, "read", "x", ("wg",))

"""``PilotsRepo``, ``GridsRepo`` and ``SettingsRepo`` (counters and the scheduler lease).

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iceprod.common.errors import DuplicateKey, NotFound
from iceprod.common.timeutil import parse
from iceprod.db import Database


async def test_pilots_create_heartbeat_delete(db: Database) -> None:
    pilot = {"pilot_id": "p1", "grid_id": "g1", "status": "submitted", "owner": "svc"}
    assert await db.pilots.create(pilot) == pilot
    with pytest.raises(DuplicateKey):
        await db.pilots.create(pilot)
    before = time.time()
    beat = await db.pilots.heartbeat("p1", {"status": "running", "free": {"cpu": 3}})
    assert beat["status"] == "running" and beat["free"] == {"cpu": 3}
    assert beat["owner"] == "svc" and beat["grid_id"] == "g1"
    assert before - 1 <= parse(beat["last_update"]) <= time.time() + 1
    assert await db.pilots.get("p1") == beat
    beat2 = await db.pilots.heartbeat("p1", {})
    assert beat2["last_update"] >= beat["last_update"] and beat2["free"] == {"cpu": 3}
    with pytest.raises(NotFound, match="pilot not found"):
        await db.pilots.heartbeat("nope", {"status": "running"})

    await db.pilots.create({"pilot_id": "p2", "grid_id": "g1", "status": "running"})
    await db.pilots.delete("p1")
    assert await db.pilots.find("p1") is None
    assert await db.pilots.find("p2") is not None
    with pytest.raises(NotFound, match="pilot not found"):
        await db.pilots.delete("p1")


async def test_grids_set_fields(db: Database) -> None:
    await db.grids.create({"grid_id": "g1", "host": "h1"})
    doc = await db.grids.set_fields("g1", {"isolation": "none", "single_user": "ops"})
    assert doc == {"grid_id": "g1", "host": "h1", "isolation": "none", "single_user": "ops"}
    assert await db.grids.get("g1") == doc
    assert await db.grids.set_fields("nope", {"isolation": "bwrap"}) is None


async def test_grids_create(db: Database) -> None:
    grid = {"grid_id": "g1", "host": "h1", "queues": {"short": {"max": 10}}}
    assert await db.grids.create(grid) == grid
    with pytest.raises(DuplicateKey):
        await db.grids.create({"grid_id": "g1", "host": "h2"})
    assert await db.grids.get("g1") == grid


async def test_settings_next_counter(db: Database) -> None:
    assert [await db.settings.next_counter("dataset") for _ in range(3)] == [1, 2, 3]
    assert await db.settings.next_counter("other") == 1
    assert await db.settings.next_counter("dataset") == 4
    assert (await db.settings.get("dataset"))["value"] == 4


async def test_settings_next_counter_is_atomic(db: Database) -> None:
    values = await asyncio.gather(*(db.settings.next_counter("c") for _ in range(10)))
    assert sorted(values) == list(range(1, 11))
    more = await asyncio.gather(*(db.settings.next_counter("c") for _ in range(10)))
    assert sorted(more) == list(range(11, 21))


async def test_settings_leases(db: Database) -> None:
    assert await db.settings.acquire_lease("scheduler", "a", 60)
    assert not await db.settings.acquire_lease("scheduler", "b", 60)
    assert await db.settings.acquire_lease("scheduler", "a", 60)  # renewal
    assert await db.settings.acquire_lease("other", "b", 60)  # leases are independent
    await db.settings.release_lease("scheduler", "b")  # not the holder: no effect
    assert not await db.settings.acquire_lease("scheduler", "b", 60)
    await db.settings.release_lease("scheduler", "a")
    assert await db.settings.acquire_lease("scheduler", "b", 60)
    assert not await db.settings.acquire_lease("scheduler", "a", 60)
    await db.settings.release_lease("nope", "a")  # releasing an unknown lease is harmless

    # an expired lease goes to the next caller
    assert await db.settings.acquire_lease("short", "a", -1)
    assert await db.settings.acquire_lease("short", "b", 60)
    assert not await db.settings.acquire_lease("short", "a", 60)


async def test_settings_lease_has_one_holder_under_concurrency(db: Database) -> None:
    got = await asyncio.gather(
        *(db.settings.acquire_lease("scheduler", f"h{i}", 60) for i in range(8))
    )
    assert got.count(True) == 1
    winner = f"h{got.index(True)}"
    assert await db.settings.acquire_lease("scheduler", winner, 60)


async def test_settings_values(db: Database) -> None:
    assert await db.settings.get_value("metrics") is None
    await db.settings.put_value("metrics", {"tasks": {"queued": 3}})
    got = await db.settings.get_value("metrics")
    assert got is not None and got["value"] == {"tasks": {"queued": 3}}
    await db.settings.put_value("metrics", {"tasks": {"queued": 1}})
    again = await db.settings.get_value("metrics")
    assert again is not None and again["value"] == {"tasks": {"queued": 1}}
    assert again["updated"] >= got["updated"]
    # values and leases live side by side
    assert await db.settings.acquire_lease("scheduler", "a", 60)
    assert (await db.settings.get_value("metrics") or {})["value"] == {"tasks": {"queued": 1}}
    assert await db.settings.get_value("scheduler") is None
async def test_settings_entries(db: Database) -> None:
    assert await db.settings.entries("maintenance") == []
    doc = await db.settings.put_entry("maintenance", "site.a", {"status": "on", "message": "m"})
    assert doc["name"] == "site.a" and doc["status"] == "on" and doc["message"] == "m"
    await db.settings.put_entry("maintenance", "all", {"status": "on", "retry_after": 60})
    again = await db.settings.put_entry("maintenance", "site.a", {"message": "m2"})
    assert again["status"] == "on" and again["message"] == "m2"  # fields merge
    await db.settings.put_entry("other", "site.a", {"x": 1})  # kinds are separate
    got = await db.settings.entries("maintenance")
    assert [d["name"] for d in got] == ["all", "site.a"]
    assert got[0]["retry_after"] == 60 and got[1]["message"] == "m2"
    assert await db.settings.delete_entry("maintenance", "site.a")
    assert not await db.settings.delete_entry("maintenance", "site.a")
    assert [d["name"] for d in await db.settings.entries("maintenance")] == ["all"]
    assert [d["x"] for d in await db.settings.entries("other")] == [1]
    # counters and leases live beside entries without being listed as one
    await db.settings.next_counter("maintenance")
    assert len(await db.settings.entries("maintenance")) == 1

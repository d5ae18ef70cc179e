"""``EventsRepo``: the append-only log of state changes, numbered by one sequence.

Part of the repository contract: each test runs against every backend (see ``conftest.store``).
"""

from __future__ import annotations

import asyncio

from iceprod.db import Database


async def test_events_append_since_and_prune(db: Database) -> None:
    assert await db.events.last_seq() == 0
    assert await db.events.first_seq() is None
    first = await db.events.append([{"type": "task", "dataset_id": "d1", "status": "queued"},
                                    {"type": "job", "dataset_id": "d2", "status": "complete"}])
    assert [e["seq"] for e in first] == [1, 2]
    # concurrent appends never share a number
    batches = await asyncio.gather(*(db.events.append([{"type": "task", "dataset_id": "d1"}])
                                     for _ in range(5)))
    seqs = sorted(e["seq"] for b in batches for e in b)
    assert seqs == [3, 4, 5, 6, 7]
    assert await db.events.reserve(3) == 8
    assert await db.events.last_seq() == 10
    assert [e["seq"] for e in await db.events.since(0)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["seq"] for e in await db.events.since(5, limit=1)] == [6]
    only = await db.events.since(0, dataset_ids=["d2"])
    assert [(e["seq"], e["status"]) for e in only] == [(2, "complete")]
    assert [e["seq"] for e in await db.events.between(2, 4)] == [3, 4]
    assert await db.events.first_seq() == 1

    # by count: keep the newest (last handed-out number 10, keep 5 -> seq > 5)
    assert await db.events.prune(max_age=3600, max_count=5) == 5
    assert [e["seq"] for e in await db.events.since(0)] == [6, 7]
    # by age
    assert await db.events.prune(max_age=60, max_count=100, now=first[0]["ts"] + 3600) == 2
    assert await db.events.since(0) == []
    assert (await db.events.append([{"type": "dataset", "dataset_id": "d1"}]))[0]["seq"] == 11

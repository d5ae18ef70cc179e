"""Events: an append-only log of dataset, job and task state changes, numbered by a
monotonic sequence shared by every process on the store.

Every REST replica and the scheduler append here when they change a state
(``iceprod.core.events``), and every replica reads it back (``since``), so wake-ups
(waiting claims, the grid manager) and ``GET /events`` streams see changes made by any
process, not only their own. The sequence comes from one atomic counter in ``settings``
(``$inc`` by the batch size), so a batch of events costs two writes whatever its size.

Two writers may reserve 9 and 10 and insert 10 first: a reader can briefly see a gap. The
reader (``core.events.EventHub``) holds back what follows a gap until it fills or a short
grace passes, so streams stay in order and ``Last-Event-ID`` resumes miss nothing.

The log is pruned by age and count (``prune``) so it stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from iceprod.db.base import Repository
from iceprod.db.settings import SettingsRepo
from iceprod.db.store import CollectionSpec, Doc, Index

COUNTER = "event_seq"


def event_id(seq: int) -> str:
    """The document id of event ``seq``: zero-padded, so id order is sequence order."""
    return f"{seq:020d}"


class EventsRepo(Repository):
    spec = CollectionSpec(
        name="events",
        id_field="event_id",
        columns={"seq": "INTEGER", "dataset_id": "TEXT", "ts": "REAL"},
        indexes=(
            Index((("seq", 1),), unique=True),
            Index((("dataset_id", 1), ("seq", 1))),
            Index((("ts", 1),)),
        ),
    )
    kind = "event"

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.counter = store.collection(SettingsRepo.spec)
        self._counter_made = False

    async def reserve(self, n: int) -> int:
        """Reserve ``n`` sequence numbers; answers the first of them. The counter is created
        once per process (again if it went missing), not before every reservation."""
        if not self._counter_made:
            await self._make_counter()
        doc = await self.counter.update_one({"key": COUNTER}, {"$inc": {"value": n}})
        if doc is None:  # the counter was removed under us (a store restored, a test reset)
            await self._make_counter()
            doc = await self.counter.update_one({"key": COUNTER}, {"$inc": {"value": n}})
        assert doc is not None
        return int(doc["value"]) - n + 1

    async def _make_counter(self) -> None:
        await self.counter.insert_many([{"key": COUNTER, "value": 0}], skip_duplicates=True)
        self._counter_made = True

    async def append(self, events: Sequence[Doc]) -> list[Doc]:
        """Number and store ``events`` (each gets ``seq`` and ``ts``); answers them as
        stored, in sequence order."""
        if not events:
            return []
        first = await self.reserve(len(events))
        now = time.time()
        docs = []
        for i, e in enumerate(events):
            seq = first + i
            docs.append({**e, "event_id": event_id(seq), "seq": seq, "ts": now})
        await self.coll.insert_many(docs)
        return docs

    async def since(self, seq: int, limit: int = 1000,
                    dataset_ids: Sequence[str] | None = None) -> list[Doc]:
        """Events after ``seq`` in sequence order (only those datasets' when given)."""
        query: dict[str, Any] = {"seq": {"$gt": seq}}
        if dataset_ids is not None:
            query["dataset_id"] = {"$in": list(dataset_ids)}
        return await self.coll.find(query, sort=[("seq", 1)], limit=limit)

    async def between(self, low: int, high: int) -> list[Doc]:
        """Events with ``low < seq <= high`` (a reader re-reading a gap)."""
        return await self.coll.find({"seq": {"$gt": low, "$lte": high}}, sort=[("seq", 1)])

    async def last_seq(self) -> int:
        """The highest sequence number handed out so far (0 when none)."""
        doc = await self.counter.find_one({"key": COUNTER})
        return int(doc["value"]) if doc else 0

    async def first_seq(self) -> int | None:
        """The oldest event still kept (None when the log is empty)."""
        doc = await self.coll.find_one({}, keys=["seq"], sort=[("seq", 1)])
        return int(doc["seq"]) if doc else None

    async def prune(self, max_age: float, max_count: int, now: float | None = None) -> int:
        """Drop events older than ``max_age`` seconds and all but the newest ``max_count``;
        answers how many were dropped."""
        now = time.time() if now is None else now
        dropped = await self.coll.delete_many({"ts": {"$lt": now - max_age}})
        last = await self.last_seq()
        if last > max_count:
            dropped += await self.coll.delete_many({"seq": {"$lte": last - max_count}})
        return dropped

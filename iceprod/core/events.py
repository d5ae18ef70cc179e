"""State-change events and the wake-ups they drive.

Whoever changes a dataset, job or task state (REST handlers, the scheduler) builds an event
with ``task_event`` / ``job_event`` / ``dataset_event`` -- or, when many of one dataset's
tasks change at once (an operator's bulk action, a cascade from a dataset or job, fair-share
unqueueing, expired leases), one ``tasks_event`` for the lot -- and hands the batch to
``EventHub.publish``, which appends it to the store's events log (``db.events``: one
monotonic sequence for every process on the store).

Each process that serves the API runs one ``EventHub`` reader: it reads the log after its
cursor (at once when this process published, else every ``poll_interval`` seconds, so
changes made by another REST replica or the scheduler arrive too) and, in sequence order,

- hands events to subscribers (``GET /events`` streams);
- fires ``queued`` when tasks were queued (waiting claims try again) and records the
  sequence of the last one (``GET /task_demand?wait=`` answers a grid manager).

A gap in the sequence (two writers reserved 9 and 10 and 10 landed first) holds back what
follows until the gap fills or ``grace`` seconds pass, so each subscriber sees events in
order and a ``Last-Event-ID`` resume misses nothing.

A process that misses an event (a reader that fell behind a prune, a lost notification) is
covered by the rounds: waiting claims time out, the grid manager and the scheduler keep
their intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

TASK_FIELDS = ("dataset_id", "job_id", "task_id", "name")
KEEP_SECONDS = 86400.0
KEEP_COUNT = 200_000
READ_BATCH = 1000


def task_event(task: Doc, prev_status: str | None) -> Doc:
    """The event of a task now in ``task["status"]`` (it was ``prev_status``)."""
    out: Doc = {"type": "task", **{k: task.get(k) for k in TASK_FIELDS},
                "status": task.get("status"), "prev_status": prev_status,
                "time": task.get("status_changed")}
    return out


def job_event(job: Doc, status: str, prev_status: str | None, when: str) -> Doc:
    return {"type": "job", "dataset_id": job.get("dataset_id"), "job_id": job.get("job_id"),
            "status": status, "prev_status": prev_status, "time": when}


def dataset_event(dataset_id: str, status: str, prev_status: str | None, when: str) -> Doc:
    return {"type": "dataset", "dataset_id": dataset_id, "status": status,
            "prev_status": prev_status, "time": when}


def tasks_event(dataset_id: str, status: str, changed: int, cause: str,
                when: str | None = None) -> Doc:
    """``changed`` of a dataset's tasks went to ``status`` at once, because of ``cause``
    (``bulk_status``, ``cascade``, ``unqueued``, ``lease_expired``): one event for the lot,
    so a 100k-task bulk action costs one log entry; a watcher reads the dataset again."""
    return {"type": "tasks", "dataset_id": dataset_id, "status": status, "prev_status": None,
            "changed": changed, "cause": cause, "time": when or iso()}


def public_event(doc: Doc) -> Doc:
    """What a client sees of a stored event (the SSE ``data``): job and dataset events
    carry no task fields; a ``tasks`` event carries how many changed and why."""
    keys = ["seq", "type", "dataset_id"]
    if doc.get("type") in ("task", "job"):
        keys.append("job_id")
    if doc.get("type") == "task":
        keys += ["task_id", "name"]
    keys += ["status", "prev_status", "time"]
    if doc.get("type") == "tasks":
        keys += ["changed", "cause"]
    return {k: doc.get(k) for k in keys}


class Signal:
    """A counter with waiters: ``fire`` bumps it and wakes everyone waiting. A waiter
    reads ``gen`` before looking (a claim), and waits only if it has not moved since, so a
    fire between the look and the wait is never lost."""

    def __init__(self) -> None:
        self.gen = 0
        self._event = asyncio.Event()

    def fire(self) -> None:
        self.gen += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, since: int, timeout: float) -> bool:
        """Wait until ``gen`` moves past ``since`` or ``timeout``; True when it moved."""
        if self.gen != since:
            return True
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.gen != since


class Subscription:
    """One reader of the live stream: events in sequence order, or None when the hub
    dropped it (it fell too far behind, or the hub stopped)."""

    def __init__(self, hub: EventHub, limit: int) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[Doc | None] = asyncio.Queue()
        self.limit = limit
        self.closed = False

    def put(self, doc: Doc | None) -> None:
        if self.closed:
            return
        if doc is not None and self.queue.qsize() >= self.limit:
            self.closed = True  # a reader this far behind resumes from the store instead
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(doc)

    async def get(self, timeout: float) -> Doc | None | bool:
        """The next event, None when dropped, False on timeout."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return False

    def close(self) -> None:
        self.closed = True
        self.hub.subscribers.discard(self)


class EventHub:
    """Publishes this process's events and reads everyone's (see the module docstring)."""

    def __init__(self, db: Database, poll_interval: float = 0.5, grace: float = 2.0,
                 keep_seconds: float = KEEP_SECONDS, keep_count: int = KEEP_COUNT) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.grace = grace
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.cursor = 0
        self.last_queued_seq = 0
        self.queued = Signal()
        self.delivered = Signal()
        self.subscribers: set[Subscription] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: list[tuple[list[Doc], asyncio.Future[list[Doc]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._gap_since: float | None = None
        self._last_prune = 0.0

    # -- writing ---------------------------------------------------------------------------

    async def publish(self, events: Iterable[Doc], wait: bool = False) -> list[Doc]:
        """Append ``events`` to the store's log and have this process's reader look at
        once. With ``wait``, answers them with their sequence numbers once stored;
        otherwise at once (the request that made the change does not wait for its events;
        they are stored in the order published).

        Batches published while an append is under way are appended together by the next
        one (one counter update and one insert for all of them), so under load the log
        costs two writes per burst of requests, not per request."""
        batch = [e for e in events if e]
        if not batch:
            return []
        done: asyncio.Future[list[Doc]] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await done if wait else []

    async def flush(self) -> None:
        """Wait until what was published so far is stored."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._pending:
            items, self._pending = self._pending, []
            try:
                stored = await self.db.events.append([e for batch, _ in items for e in batch])
            except Exception:
                # the changes themselves are done; lost events only delay wake-ups to the
                # rounds
                log.exception("could not record %d event(s)", sum(len(b) for b, _ in items))
                stored = []
            at = 0
            for batch, done in items:
                if not done.done():
                    done.set_result(stored[at:at + len(batch)])
                at += len(batch)
            self._kick.set()

    # -- reading ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading after what the log holds now."""
        if self._task is None:
            self.cursor = await self.db.events.last_seq()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self.subscribers):
            sub.put(None)
            sub.close()

    def subscribe(self, limit: int = 10_000) -> Subscription:
        sub = Subscription(self, limit)
        self.subscribers.add(sub)
        return sub

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.poll_interval)
            self._kick.clear()
            try:
                while await self.read_once():
                    pass
                await self._maybe_prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading events failed")
                await asyncio.sleep(self.poll_interval)

    async def read_once(self) -> bool:
        """Deliver what follows the cursor; True when a full batch was read (read again)."""
        rows = await self.db.events.since(self.cursor, READ_BATCH)
        for row in rows:
            seq = int(row["seq"])
            if seq > self.cursor + 1:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < self.grace:
                    # hold back: look again soon, the missing writer may still land
                    asyncio.get_running_loop().call_later(0.05, self._kick.set)
                    return False
                log.debug("events %d..%d never arrived; skipping", self.cursor + 1, seq - 1)
            self._gap_since = None
            self.cursor = seq
            self._deliver(row)
        if rows:
            self.delivered.fire()
        return len(rows) == READ_BATCH

    def _deliver(self, row: Doc) -> None:
        if row.get("type") == "task" and row.get("status") == "queued":
            self.last_queued_seq = int(row["seq"])
            self.queued.fire()
        for sub in list(self.subscribers):
            sub.put(row)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        dropped = await self.db.events.prune(self.keep_seconds, self.keep_count)
        if dropped:
            log.info("pruned %d old event(s)", dropped)

"""The scheduler: background loops that turn datasets into runnable work and keep the books
(materialize, queue with fair share, refresh priorities, expire leases, roll up).

With several schedulers against one store, a lease in ``settings`` lets exactly one act: it
is renewed while a round runs and a round stops the moment it is lost
(``core.lease.under_lease``); a scheduler that stops releases it, so a standby takes over at
its next round. Each round also leaves the counts ``/metrics`` shows (``METRICS_SNAPSHOT``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from iceprod.common.config import ServerConfig
from iceprod.common.ids import new_id
from iceprod.core import archive
from iceprod.core.events import EventHub, tasks_event
from iceprod.core.lease import LeaseLost, under_lease
from iceprod.core.materialize import materialize_all
from iceprod.core.queue import queue_exclusively, refresh_priorities
from iceprod.core.rollup import rollup_all
from iceprod.core.taskflow import publish_queued
from iceprod.db import Database
from iceprod.db.settings import METRICS_SNAPSHOT
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

LEASE = "scheduler"
ARCHIVE_BATCH = 10
"""Datasets the archive policy archives per round at most, so a backlog never holds up the
scheduler's other duties for long."""


class Scheduler:
    """One scheduler process's loop; ``tick`` does one round of every duty."""

    def __init__(self, db: Database, config: ServerConfig,
                 on_round: Callable[[], None] | None = None,
                 remove_files: archive.RemoveFiles | None = None,
                 events: EventHub | None = None) -> None:
        self.db = db
        # empties a dataset's file store when the archive policy archives it
        self.remove_files = remove_files
        # where the round's changes are published (queued tasks wake waiting claims)
        self.events = events
        self.config = config
        # called after each round done while holding the lease (a metrics counter), so a
        # watcher can tell "the scheduler looked and did nothing" from "it has not looked yet"
        self.on_round = on_round
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self.last_refresh = 0.0
        self.last_archive = 0.0
        self.active = False

    @property
    def ttl(self) -> float:
        return max(3 * self.config.scheduler_interval, 1.0)

    async def tick(self) -> bool:
        """One round; False when another scheduler holds the lease (or took it during the
        round, which then stopped at once)."""
        if not await self.db.settings.acquire_lease(LEASE, self.holder, self.ttl):
            if self.active:
                log.info("scheduler lease lost to another scheduler")
            self.active = False
            return False
        if not self.active:
            log.info("scheduler %s is active", self.holder)
        self.active = True
        try:
            await under_lease(self.db, LEASE, self.holder, self.ttl, self.round)
        except LeaseLost:
            self.active = False
            return False
        return True

    async def round(self) -> None:
        """Every duty once, in order; run under the lease (``under_lease`` stops it the
        moment the lease is lost)."""
        changes: list[Doc] = []
        by_dataset: dict[str, int] = {}
        expired = await self.db.tasks.expire_leases(by_dataset=by_dataset)
        if expired:
            log.info("requeued %d task(s) whose pilot lease expired", expired)
            changes += [tasks_event(ds, "waiting", n, "lease_expired")
                        for ds, n in sorted(by_dataset.items())]
        cfg = self.config
        await materialize_all(self.db, cfg.materialize_buffer, cfg.materialize_batch)
        now = time.monotonic()
        score = None
        if now - self.last_refresh >= cfg.priority_refresh:
            score = await refresh_priorities(self.db, cfg.group_weights)
            self.last_refresh = now
        # under the queue lease, which POST /task_actions/queue takes too: queue_max holds
        queued: list[str] = []
        await queue_exclusively(self.db, self.holder, cfg.queue_max, cfg.group_weights,
                                score=score, queued_ids=queued, events=changes)
        await publish_queued(self.db, self.events, queued)
        await rollup_all(self.db, changes)
        if self.events is not None and changes:
            await self.events.publish(changes)
        await self.archive_policy(now)
        await self.snapshot_metrics()

    async def snapshot_metrics(self) -> None:
        """Count tasks and datasets by status for ``/metrics``, once a round: scrapes read
        this snapshot and never count themselves (a scrape costs one document read)."""
        await self.db.settings.put_value(METRICS_SNAPSHOT, {
            "tasks": await self.db.tasks.status_counts(),
            "datasets": await self.db.datasets.status_counts(),
        })

    async def archive_policy(self, now: float) -> None:
        """Archive finished datasets older than ``archive_after_days`` (off when 0), at
        most every ``archive_interval`` seconds."""
        cfg = self.config
        if cfg.archive_after_days <= 0 or self.remove_files is None \
                or now - self.last_archive < cfg.archive_interval:
            return
        self.last_archive = now
        sel = archive.Selection(older_than_days=cfg.archive_after_days, logs=cfg.archive_logs,
                                limit=ARCHIVE_BATCH)
        done = await archive.run(self.db, sel, cfg.data_dir, self.remove_files)
        if done["changed"]:
            log.info("archive policy: archived %d dataset(s)", done["changed"])
        if done["matched"] >= ARCHIVE_BATCH:
            self.last_archive = 0.0  # a backlog: the next round goes on with it

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; then (also when cancelled) the lease is released, so a
        standby scheduler takes over at its next round instead of after the lease's time."""
        try:
            while not stop.is_set():
                try:
                    if await self.tick() and self.on_round is not None:
                        self.on_round()
                except Exception:
                    log.exception("scheduler round failed")
                try:
                    await asyncio.wait_for(stop.wait(), self.config.scheduler_interval)
                except TimeoutError:
                    pass
        finally:
            if self.active:
                self.active = False
                await self.db.settings.release_lease(LEASE, self.holder)
                log.info("scheduler %s released its lease", self.holder)

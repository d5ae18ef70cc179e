"""The scheduler: background loops that turn datasets into runnable work and keep the books
(materialize, queue with fair share, refresh priorities, expire leases, roll up).

With several schedulers against one store, a lease in ``settings`` lets exactly one act.
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
from iceprod.core.events import EventHub
from iceprod.core.materialize import materialize_all
from iceprod.core.queue import queue_tasks, refresh_priorities
from iceprod.core.rollup import rollup_all
from iceprod.core.taskflow import publish_queued
from iceprod.db import Database
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

LEASE = "scheduler"


class Scheduler:
    """One scheduler process's loop; ``tick`` does one round of every duty."""

    def __init__(self, db: Database, config: ServerConfig,
                 on_round: Callable[[], None] | None = None,
                 events: EventHub | None = None) -> None:
        self.db = db
        # where the round's changes are published (queued tasks wake waiting claims)
        self.events = events
        self.config = config
        # called after each round done while holding the lease (a metrics counter), so a
        # watcher can tell "the scheduler looked and did nothing" from "it has not looked yet"
        self.on_round = on_round
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self.last_refresh = 0.0
        self.active = False

    async def tick(self) -> bool:
        """One round; False when another scheduler holds the lease."""
        ttl = max(3 * self.config.scheduler_interval, 1.0)
        if not await self.db.settings.acquire_lease(LEASE, self.holder, ttl):
            if self.active:
                log.info("scheduler lease lost to another scheduler")
            self.active = False
            return False
        if not self.active:
            log.info("scheduler %s is active", self.holder)
        self.active = True
        expired = await self.db.tasks.expire_leases()
        if expired:
            log.info("requeued %d task(s) whose pilot lease expired", expired)
        cfg = self.config
        await materialize_all(self.db, cfg.materialize_buffer, cfg.materialize_batch)
        now = time.monotonic()
        score = None
        if now - self.last_refresh >= cfg.priority_refresh:
            score = await refresh_priorities(self.db, cfg.group_weights)
            self.last_refresh = now
        queued: list[str] = []
        await queue_tasks(self.db, cfg.queue_max, cfg.group_weights, score=score,
                          queued_ids=queued)
        await publish_queued(self.db, self.events, queued)
        changes: list[Doc] = []
        await rollup_all(self.db, changes)
        if self.events is not None and changes:
            await self.events.publish(changes)
        return True

    async def run(self, stop: asyncio.Event) -> None:
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
        if self.active:
            await self.db.settings.release_lease(LEASE, self.holder)

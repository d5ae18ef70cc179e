"""Work done under a lease in the store (``settings``), renewed while the work runs and
stopped the moment the lease is lost.

``under_lease`` runs a coroutine while renewing the named lease every third of its time to
live; when a renewal fails (another holder took it: a pause longer than the lease, an
operator's hand-over), the work is cancelled at its next await and ``LeaseLost`` raised, so
a holder that lost its lease never acts again on what it read under it.
``acquire_waiting`` takes a lease, waiting up to a deadline while someone else holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from iceprod.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseLost(Exception):
    """The lease went to another holder while its work ran; the work was stopped."""


async def acquire_waiting(db: Database, name: str, holder: str, ttl: float,
                          wait: float, poll: float = 0.05) -> bool:
    """Take (or renew) lease ``name`` for ``holder``, retrying while another holds it, for
    at most ``wait`` seconds. True once held."""
    deadline = time.monotonic() + wait
    while True:
        if await db.settings.acquire_lease(name, holder, ttl):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)


async def under_lease(db: Database, name: str, holder: str, ttl: float,
                      work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` while ``holder`` keeps lease ``name`` (already taken), renewing it
    every ``ttl / 3`` seconds; raises ``LeaseLost`` (after cancelling the work) when a
    renewal finds the lease held by another."""
    task: asyncio.Task[T] = asyncio.ensure_future(work())
    lost = asyncio.Event()

    async def keep() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            if not await db.settings.acquire_lease(name, holder, ttl):
                log.warning("lease %s lost by %s: stopping its work", name, holder)
                lost.set()
                task.cancel()
                return

    keeper = asyncio.ensure_future(keep())
    try:
        return await task
    except asyncio.CancelledError:
        if lost.is_set():
            raise LeaseLost(name) from None
        raise
    finally:
        keeper.cancel()
        if not task.done():
            task.cancel()

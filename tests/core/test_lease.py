"""``core.lease``: work under a lease stops the moment the lease is lost (issue 11 §5), on a
real store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from iceprod.core.lease import LeaseLost, acquire_waiting, under_lease
from iceprod.db import Database


async def test_work_stops_when_its_lease_is_taken(tmp_path: Path) -> None:
    db = await Database.open(None, str(tmp_path / "data"))
    try:
        ttl = 0.3
        assert await db.settings.acquire_lease("scheduler", "a", ttl)
        steps: list[float] = []
        # the store's own acquire_lease, with each successful call (a renewal) counted
        renewals = [0]
        renewed = asyncio.Event()
        acquire = db.settings.acquire_lease

        async def counted(name: str, holder: str, lease_ttl: float) -> bool:
            held = await acquire(name, holder, lease_ttl)
            if held:
                renewals[0] += 1
                renewed.set()
            return held

        db.settings.acquire_lease = counted  # type: ignore[method-assign]

        async def next_renewal() -> None:
            renewed.clear()
            await renewed.wait()

        async def work() -> None:
            while True:  # a round that would go on acting, a step every 10 ms
                steps.append(time.monotonic())
                await asyncio.sleep(0.01)

        async def take_over() -> float:
            # renewals (every ttl / 3) keep it alive for three ttls; then another holder
            # takes it
            while renewals[0] < 9:
                await next_renewal()
            await db.settings.release_lease("scheduler", "a")
            assert await db.settings.acquire_lease("scheduler", "b", 60)
            return time.monotonic()

        taker = asyncio.ensure_future(take_over())
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(under_lease(db, "scheduler", "a", ttl, work), timeout=30)
        taken = await taker
        # the work outlived its ttl while renewed, and stopped within one renewal of the loss
        assert steps[-1] - steps[0] > 2 * ttl
        assert steps[-1] - taken <= ttl / 3 + 0.2
        # it acts no more: nothing of the work (nor its renewer) is left on the loop
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        # the lease stays with its new holder; the old one waits for it in vain
        assert not await acquire_waiting(db, "scheduler", "a", ttl, wait=0.2)
        # a work that ends keeps its result and leaves the lease held
        assert await db.settings.acquire_lease("q", "c", ttl)

        async def quick() -> int:
            await next_renewal()  # a work that spans a renewal
            return 7

        assert await under_lease(db, "q", "c", ttl, quick) == 7
        assert not await db.settings.acquire_lease("q", "d", ttl)
    finally:
        await db.close()

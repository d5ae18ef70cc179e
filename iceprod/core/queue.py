"""Queueing with fair share: waiting -> queued for tasks whose dependencies are complete,
at most ``queue_max`` queued in all, each processing dataset getting its share of the slots
(see ``priority.py``); slots a dataset cannot use go to the others.

Every queuer (the scheduler's round, ``POST /task_actions/queue`` on any replica) queues
under one lease, ``QUEUE_LEASE``, so two never count the same free slots: ``queue_max``
holds however many queue at once."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from iceprod.common.errors import Unavailable
from iceprod.core.events import tasks_event
from iceprod.core.lease import LeaseLost, acquire_waiting, under_lease
from iceprod.core.priority import load_from_docs, quotas, scores
from iceprod.core.quota import QuotaGate
from iceprod.db import Database
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

QUEUE_LEASE = "queue"
QUEUE_LEASE_TTL = 30.0
"""Renewed while queueing runs, so a long round keeps it; a crashed queuer's ends soon."""


async def dataset_scores(db: Database, group_weights: Mapping[str, float]) -> dict[str, float]:
    """The current score of every processing dataset."""
    datasets = await db.datasets.processing()
    running = await db.tasks.counts_by_dataset("processing")
    return scores(load_from_docs(datasets, running), group_weights)


async def refresh_priorities(db: Database, group_weights: Mapping[str, float]) -> dict[str, float]:
    """Recompute scores and stamp them on each dataset's queued tasks."""
    score = await dataset_scores(db, group_weights)
    for dataset_id, s in score.items():
        await db.tasks.set_dataset_priority(dataset_id, s)
    return score


async def queue_tasks(db: Database, queue_max: int, group_weights: Mapping[str, float],
                      num: int | None = None, score: Mapping[str, float] | None = None,
                      queued_ids: list[str] | None = None,
                      events: list[Doc] | None = None) -> int:
    """Bring every dataset towards its share of ``queue_max`` queued slots and fill the
    rest; returns how many tasks were newly queued (at most ``num`` when given).

    1. each dataset below its share queues ready tasks up to its share;
    2. if the queue is now over ``queue_max``, datasets above their share give back their
       lowest-priority queued tasks (to waiting) down to their share;
    3. slots still free go to the datasets that had ready work, best score first.

    ``score`` lets a caller that just computed the scores pass them in; the ids of the
    tasks queued are appended to ``queued_ids`` when given (for their events), and the
    ``tasks`` events of step 2's give-backs to ``events``.
    """
    budget = num if num is not None else queue_max
    queued_now = await db.tasks.counts_by_dataset("queued")
    if score is None:
        score = await dataset_scores(db, group_weights)
    target = quotas(queue_max, score, {})
    order = sorted(score, key=lambda d: -score[d])
    gate = await QuotaGate.load(db, await db.datasets.processing())  # project quotas
    total = 0
    has_more: list[str] = []
    for dataset_id in order:
        deficit = min(target[dataset_id] - queued_now.get(dataset_id, 0), budget - total)
        await gate.prepare(db, dataset_id)
        deficit = gate.allow(dataset_id, deficit)
        if deficit <= 0:
            if target[dataset_id] > 0:
                has_more.append(dataset_id)
            continue
        got = await db.tasks.queue_dataset(dataset_id, deficit, score[dataset_id],
                                           out=queued_ids)
        gate.took(dataset_id, got)
        queued_now[dataset_id] = queued_now.get(dataset_id, 0) + got
        total += got
        if got == deficit:
            has_more.append(dataset_id)
    await _trim(db, queued_now, target, queue_max, events)
    room = min(queue_max - sum(queued_now.values()), budget - total)
    for dataset_id in has_more:
        if room <= 0:
            break
        got = await db.tasks.queue_dataset(dataset_id, gate.allow(dataset_id, room),
                                           score[dataset_id], out=queued_ids)
        gate.took(dataset_id, got)
        queued_now[dataset_id] = queued_now.get(dataset_id, 0) + got
        total += got
        room -= got
    if total:
        log.info("queued %d task(s)", total)
    return total


async def _trim(db: Database, queued: dict[str, int], target: Mapping[str, int],
                queue_max: int, events: list[Doc] | None = None) -> None:
    """Give back slots held above a dataset's share while the queue is over-full."""
    excess = sum(queued.values()) - queue_max
    for dataset_id, n in sorted(queued.items(), key=lambda kv: target.get(kv[0], 0) - kv[1]):
        if excess <= 0:
            return
        over = n - target.get(dataset_id, 0)
        if over <= 0:
            continue
        back = await db.tasks.unqueue_dataset(dataset_id, min(over, excess))
        if back and events is not None:
            events.append(tasks_event(dataset_id, "waiting", back, "unqueued"))
        queued[dataset_id] = n - back
        excess -= back


async def queue_exclusively(db: Database, holder: str, queue_max: int,
                            group_weights: Mapping[str, float], num: int | None = None,
                            score: Mapping[str, float] | None = None,
                            wait: float = 10.0, queued_ids: list[str] | None = None,
                            events: list[Doc] | None = None) -> int:
    """``queue_tasks`` under the queue lease: waits up to ``wait`` seconds for another
    queuer to finish (then ``Unavailable``), renews the lease while queueing and releases
    it after."""
    if not await acquire_waiting(db, QUEUE_LEASE, holder, QUEUE_LEASE_TTL, wait):
        raise Unavailable("another queuer is busy: try again shortly")
    try:
        return await under_lease(
            db, QUEUE_LEASE, holder, QUEUE_LEASE_TTL,
            lambda: queue_tasks(db, queue_max, group_weights, num, score, queued_ids, events))
    except LeaseLost:
        raise Unavailable("queueing stopped: the queue lease went to another queuer") from None
    finally:
        await db.settings.release_lease(QUEUE_LEASE, holder)

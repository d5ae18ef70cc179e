"""A task's way through a pilot, event-driven: claim (several at once, optionally waiting
for work), complete (queueing the dependents that became ready in the same call), and the
events each step publishes. Used by the REST handlers and the scheduler alike.

Dependents queued by a completion skip the fair-share quota of ``core.queue``: they take
the slot their parent just left (it was processing, not queued). A dependent in another
dataset (``"<dataset_id>:<name>"``) is left to the scheduler's round.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.core.events import EventHub, dataset_event, task_event
from iceprod.core.materialize import materialize_dataset
from iceprod.core.queue import queue_tasks
from iceprod.core.quota import quota_allows
from iceprod.core.rollup import cascade_dataset, rollup_job
from iceprod.db import Database
from iceprod.db.store import Doc

MAX_WAIT = 20.0
"""The longest a claim (or a demand read) may wait for work, seconds."""
MAX_TASKS = 100


def remaining(offer: Mapping[str, Any], requirements: Mapping[str, Any]) -> dict[str, Any]:
    """What is left of an offer once a task with ``requirements`` holds its share: cpu (1
    when the task names none), gpu, memory and disk are used up; time and the rest are
    not (the pilot's own accounting, ``pilot.resources.allocation_for``)."""
    out = dict(offer)
    used = {"cpu": requirements.get("cpu") or 1, "gpu": requirements.get("gpu") or 0,
            "memory": requirements.get("memory") or 0, "disk": requirements.get("disk") or 0}
    for key, n in used.items():
        if out.get(key) is not None:
            out[key] = max(0, out[key] - n)
    return out


async def claim_tasks(db: Database, hub: EventHub | None, resources: Doc, pilot_id: str,
                      lease_seconds: float, dataset_ids: Sequence[str] | None = None,
                      max_tasks: int = 1) -> list[Doc]:
    """Claim up to ``max_tasks`` tasks that fit together in ``resources``, best first."""
    offer: dict[str, Any] = dict(resources)
    tasks: list[Doc] = []
    while len(tasks) < max_tasks:
        task = await db.tasks.claim(offer, pilot_id, lease_seconds, dataset_ids=dataset_ids)
        if task is None:
            break
        tasks.append(task)
        offer = remaining(offer, task.get("requirements") or {})
        if offer.get("cpu") is not None and offer["cpu"] < 1:
            break
    if hub is not None and tasks:
        await hub.publish([task_event(t, "queued") for t in tasks])
    return tasks


async def claim_waiting(db: Database, hub: EventHub | None, resources: Doc, pilot_id: str,
                        lease_seconds: float, dataset_ids: Sequence[str] | None = None,
                        max_tasks: int = 1, wait: float = 0.0,
                        on_wait: Callable[[], None] | None = None,
                        refused: Callable[[], Awaitable[bool]] | None = None) -> list[Doc]:
    """``claim_tasks``; when nothing fits, wait up to ``wait`` seconds (at most
    ``MAX_WAIT``) and try again each time tasks are queued anywhere on the store
    (``on_wait`` is called each time it starts waiting)."""
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
    first = True
    while True:
        gen = hub.queued.gen if hub is not None else 0
        # a claim woken later asks again whether it may take work (maintenance, drain)
        if not first and refused is not None and await refused():
            return []
        first = False
        tasks = await claim_tasks(db, hub, resources, pilot_id, lease_seconds, dataset_ids,
                                  max_tasks)
        left = deadline - time.monotonic()
        if tasks or left <= 0 or hub is None:
            return tasks
        if on_wait is not None:
            on_wait()
        await hub.queued.wait(gen, left)


async def complete_task(db: Database, hub: EventHub | None, task_id: str, instance_id: str,
                        time_used: float | None = None, site: str | None = None) -> Doc:
    """Complete a held task (fenced), queue its now-ready dependents in the same job, roll
    the job (and dataset) up, and publish every change. Answers the completed task."""
    doc = await db.tasks.complete(task_id, instance_id, time_used, site)
    events = [task_event(doc, "processing")]
    job_tasks = await db.tasks.of_job(doc["job_id"])
    queued = await queue_dependents(db, doc, job_tasks)
    events += [task_event(q, "waiting") for q in queued]
    moved = {q["task_id"] for q in queued}
    for t in job_tasks:
        if t["task_id"] in moved:
            t["status"] = "queued"
    await rollup_job(db, doc["job_id"], events, tasks=job_tasks)
    if hub is not None:
        await hub.publish(events)
    return doc


async def queue_dependents(db: Database, parent: Doc, job_tasks: list[Doc]) -> list[Doc]:
    """Queue the waiting tasks of the parent's job that depend on it and whose every
    dependency is now complete."""
    parent_id = parent["task_id"]
    waiting = [t for t in job_tasks
               if t.get("status") == "waiting" and parent_id in (t.get("depends") or [])]
    if not waiting:
        return []
    status = {t["task_id"]: t.get("status") for t in job_tasks}
    status[parent_id] = "complete"
    outside = {d for t in waiting for d in t.get("depends") or [] if d not in status}
    done = await db.tasks.complete_ids(sorted(outside)) if outside else set()
    ready = [t["task_id"] for t in waiting
             if all(status.get(d) == "complete" or d in done for d in t.get("depends") or [])]
    # a project over its quota queues nothing more here: the round queues it when quota frees
    ready = ready[:await quota_allows(db, parent["dataset_id"], len(ready))] if ready else []
    if not ready:
        return []
    return await db.tasks.queue_ready(ready, float(parent.get("dataset_priority") or 0.0))


async def carry_dataset_status(db: Database, hub: EventHub | None, dataset: Doc,
                               previous: str) -> int:
    """After a dataset's status was set (``dataset`` as stored now; it was ``previous``):
    carry it to the dataset's jobs and tasks (``cascade_dataset``) and publish the dataset's
    event and its tasks'. Answers how many tasks changed."""
    status = dataset["status"]
    events = [dataset_event(dataset["dataset_id"], status, previous,
                            dataset.get("status_changed", ""))]
    changed = await cascade_dataset(db, dataset["dataset_id"], status, events)
    if hub is not None:
        await hub.publish(events)
    return changed


async def release_pilot(db: Database, hub: EventHub | None, pilot_id: str) -> int:
    """Send a pilot's processing tasks back to waiting (it is gone or done) and publish each
    one's change; answers how many went back."""
    held = await db.tasks.held_by(pilot_id) if hub is not None else []
    released = await db.tasks.release_pilot(pilot_id)
    if hub is not None and released and held:
        briefs = await db.tasks.briefs(held)
        await hub.publish([task_event(t, "processing") for t in briefs
                           if t.get("status") != "processing"])
    return released


async def publish_queued(db: Database, hub: EventHub | None, task_ids: Sequence[str],
                         prev_status: str = "waiting") -> None:
    """Publish the events of tasks a bulk step just queued (the scheduler's round)."""
    if hub is None or not task_ids:
        return
    briefs = await db.tasks.briefs(task_ids)
    await hub.publish([task_event({**t, "status": "queued"}, prev_status) for t in briefs])


async def materialize_now(db: Database, hub: EventHub | None, dataset_id: str, buffer: int,
                          batch_jobs: int, queue_max: int,
                          group_weights: Mapping[str, float]) -> int:
    """Materialize a processing dataset's first batch of jobs and queue what is ready, at
    once (a config PUT), instead of at the scheduler's next round. Answers how many tasks
    were created; a config the materializer refuses is left to the round (which logs it)."""
    ds = await db.datasets.find(dataset_id)
    if ds is None or ds.get("status") != "processing":
        return 0
    try:
        created = await materialize_dataset(db, ds, buffer, batch_jobs, max_batches=1)
    except Invalid:
        return 0
    if created:
        queued: list[str] = []
        await queue_tasks(db, queue_max, group_weights, queued_ids=queued)
        await publish_queued(db, hub, queued)
    return created


async def wait_for_demand(db: Database, hub: EventHub, wait: float,
                          after: int | None) -> list[Doc]:
    """Queued demand (``db.tasks.demand``), waiting up to ``wait`` seconds (at most
    ``MAX_WAIT``) for tasks queued after event ``after`` or, without ``after``, for any
    demand at all: a grid manager's long poll."""
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
    while True:
        gen = hub.queued.gen
        if after is None:
            groups = await db.tasks.demand()
            if groups:
                return groups
        elif hub.last_queued_seq > after:
            return await db.tasks.demand()
        left = deadline - time.monotonic()
        if left <= 0:
            return await db.tasks.demand() if after is not None else groups
        await hub.queued.wait(gen, left)

"""Tasks: the unit of work. Claim, complete, reset and fail are fenced, conditional updates;
counts, summaries and stats are grouped natively by the backend."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from iceprod.common.errors import BadTransition, Conflict, NotFound
from iceprod.common.ids import new_id
from iceprod.common.reasons import EVICTED
from iceprod.common.states import allowed_from
from iceprod.common.timeutil import iso
from iceprod.db.base import ALL, Page, Paging, Repository, between, one_of, where
from iceprod.db.store import CollectionSpec, Doc, Filter, Index

NUMERIC_REQUIREMENTS = ("cpu", "gpu", "memory", "disk", "time")
LEAVING_PROCESSING = {"pilot_id": "", "instance_id": "", "lease_expires": ""}
BATCH = 1000
SAMPLE = 20
"""How many ids a dry run lists."""
# claims take the best-scored dataset's queued tasks first, then by priority inside it
CLAIM_ORDER = [("dataset_priority", -1), ("priority", -1), ("task_id", 1)]


@dataclass(frozen=True)
class TaskSelection:
    """Which of a dataset's tasks an operator's bulk action touches: the listed ids, or the
    tasks matching every given filter (statuses, names, a job-index range). An empty
    selection selects nothing: "all" has to be said (e.g. every status)."""

    task_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    job_index_min: int | None = None
    job_index_max: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.task_ids or self.statuses or self.names
                    or self.job_index_min is not None or self.job_index_max is not None)


def selection_filter(dataset_id: str, selection: TaskSelection) -> dict[str, Any]:
    """The store filter of a selection (the state machine's sources are added by the caller)."""
    return where(dataset_id=dataset_id,
                 task_id=one_of(selection.task_ids) if selection.task_ids else None,
                 name=one_of(selection.names) if selection.names else None,
                 job_index=between(selection.job_index_min, selection.job_index_max))


def selected_filters(dataset_id: str, status: str, selection: TaskSelection
                     ) -> tuple[dict[str, Any], dict[str, Any], list[str] | None]:
    """For a bulk status change of ``selection``: the filter of the tasks it selects, the
    filter of those the state machine lets change (without the ids when ids are given:
    those are batched separately), and the ids."""
    allowed = allowed_from("task", status)
    matched = selection_filter(dataset_id, selection)
    if selection.statuses:
        allowed = [s for s in allowed if s in selection.statuses]
        matched["status"] = {"$in": list(selection.statuses)}
    changing = {**selection_filter(dataset_id, selection), "status": {"$in": allowed}}
    ids = list(selection.task_ids) or None
    if ids is not None:
        del changing["task_id"], matched["task_id"]
    return matched, changing, ids


def bulk_status_filter(dataset_id: str, status: str, name: str | None, job_id: str | None,
                       from_status: Sequence[str] | None) -> dict[str, Any]:
    """The tasks of a dataset (narrowed by name, job and ``from_status``) that the state
    machine lets go to ``status``."""
    allowed = allowed_from("task", status)
    if from_status is not None:
        allowed = [s for s in allowed if s in from_status]
    base: dict[str, Any] = {"dataset_id": dataset_id, "status": {"$in": allowed}}
    if name:
        base["name"] = name
    if job_id:
        base["job_id"] = job_id
    return base


def requirements_filter(dataset_id: str, name: str) -> dict[str, Any]:
    """The tasks a requirements edit changes: every unfinished one with that name."""
    return {"dataset_id": dataset_id, "name": name, "status": {"$ne": "complete"}}


class TasksRepo(Repository):
    spec = CollectionSpec(
        name="tasks",
        id_field="task_id",
        columns={
            "dataset_id": "TEXT",
            "job_id": "TEXT",
            "job_index": "INTEGER",
            "task_index": "INTEGER",
            "name": "TEXT",
            "status": "TEXT",
            "priority": "REAL",
            "dataset_priority": "REAL",
            "pilot_id": "TEXT",
            "lease_expires": "TEXT",
            "requirements.cpu": "REAL",
            "requirements.gpu": "REAL",
            "requirements.memory": "REAL",
            "requirements.disk": "REAL",
            "requirements.time": "REAL",
            "requirements.site": "TEXT",
            "container_runtime": "TEXT",
        },
        indexes=(
            Index((("status", 1), ("dataset_priority", -1), ("priority", -1))),
            Index((("dataset_id", 1), ("status", 1), ("priority", -1), ("task_id", 1))),
            Index((("dataset_id", 1), ("job_index", 1), ("task_index", 1)), unique=True),
            Index((("job_id", 1),)),
            Index((("pilot_id", 1),)),
            Index((("status", 1), ("lease_expires", 1))),
        ),
        array_fields=frozenset({"depends", "requirements.os"}),
        scalar_fields=frozenset({"instance_id"}),
        counts=(("dataset_id", "status"),),
    )
    kind = "task"
    machine = "task"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def insert_missing(self, docs: Sequence[Doc]) -> int:
        """Insert tasks whose (dataset_id, job_index, task_index) is new; idempotent."""
        return await self.coll.insert_many(docs, skip_duplicates=True)

    async def set_status(self, task_id: str, status: str, dataset_id: str | None = None) -> Doc:
        query: dict[str, Any] = {"task_id": task_id}
        if dataset_id:
            query["dataset_id"] = dataset_id
        extra: dict[str, dict[str, Any]] = {}
        if status != "processing":
            extra["$unset"] = dict(LEAVING_PROCESSING)
        return await self._transition(query, status, extra)

    async def patch(self, task_id: str, fields: Doc) -> Doc:
        fields = dict(fields)
        status = fields.pop("status", None)
        if status is not None:
            await self.set_status(task_id, status)
        if fields:
            sets = _flatten_requirements(fields)
            doc = await self.coll.update_one({"task_id": task_id}, {"$set": sets})
            if doc is None:
                raise NotFound("task not found")
            return doc
        return await self.get(task_id)

    # -- the pilot's side: claim, complete, reset, fail ---------------------------------

    async def claim(
        self, resources: Doc, pilot_id: str, lease_seconds: float, now: float | None = None,
        dataset_ids: Sequence[str] | None = None,
    ) -> Doc | None:
        """Atomically hand the highest-priority queued task that fits ``resources`` to a
        pilot, with a fresh fencing ``instance_id`` and a lease. None when nothing fits.
        ``dataset_ids`` restricts the claim to those datasets (a single-user pilot)."""
        now = time.time() if now is None else now
        query = claim_filter(resources)
        if dataset_ids is not None:
            query = {"$and": [*query["$and"], {"dataset_id": {"$in": list(dataset_ids)}}]}
        return await self.coll.update_one(
            query,
            {
                "$set": {
                    "status": "processing",
                    "status_changed": iso(now),
                    "pilot_id": pilot_id,
                    "instance_id": new_id(),
                    "lease_expires": iso(now + lease_seconds),
                }
            },
            sort=CLAIM_ORDER,
        )

    async def _fenced(self, task_id: str, instance_id: str, new: str, update: dict) -> Doc:
        update.setdefault("$set", {}).update({"status": new, "status_changed": iso()})
        update.setdefault("$unset", {}).update(LEAVING_PROCESSING)
        doc = await self.coll.update_one(
            {"task_id": task_id, "instance_id": instance_id, "status": "processing"}, update
        )
        if doc is not None:
            return doc
        cur = await self.coll.find_one({"task_id": task_id}, keys=["status", "instance_id"])
        if cur is None:
            raise NotFound("task not found")
        if cur.get("status") != "processing":
            raise BadTransition(cur.get("status"), new)
        raise Conflict("instance_id: stale, the task was handed to another pilot")

    async def complete(
        self, task_id: str, instance_id: str, time_used: float | None = None,
        site: str | None = None,
    ) -> Doc:
        sets: dict[str, Any] = {}
        if time_used is not None:
            sets["walltime"] = time_used / 3600.0
        if site:
            sets["site"] = site
        # a task's reason is its last run's: a completed run leaves none
        return await self._fenced(task_id, instance_id, "complete",
                                  {"$set": sets, "$unset": {"reason": "", "reason_class": ""}})

    async def requeue(self, task_id: str, instance_id: str, reason: str,
                      site: str | None = None) -> Doc:
        """Send a processing task back to ``waiting`` because its run was stopped from
        outside (a planned pilot shutdown): an eviction, not a failure, with ``reason``."""
        update = _evicted(None)
        update["$set"].update({"reason": reason, "reason_class": EVICTED})
        if site:
            update["$set"]["site"] = site
        return await self._fenced(task_id, instance_id, "waiting", update)

    async def reset(
        self,
        task_id: str,
        instance_id: str,
        max_failures: int,
        time_used: float | None = None,
        resources: Doc | None = None,
        site: str | None = None,
        reason: str | None = None,
        reason_class: str | None = None,
        fail: bool = False,
        debug: bool = False,
    ) -> Doc:
        """Count a failure and send the task back to ``waiting``, or to ``failed`` once it has
        failed ``max_failures`` times (or at once with ``fail``). Measured overuse raises the
        requirements, never lowering them."""
        cur = await self.coll.find_one({"task_id": task_id})
        if cur is None:
            raise NotFound("task not found")
        failures = int(cur.get("failures", 0)) + 1
        if debug:
            new = "suspended"
        elif fail or failures >= max_failures:
            new = "failed"
        else:
            new = "waiting"
        update: dict[str, Any] = {
            "$inc": {"failures": 1, f"failure_classes.{reason_class or 'unknown'}": 1},
            "$set": {"reason": reason or "", "reason_class": reason_class or "unknown"},
        }
        if time_used:
            update["$inc"]["walltime_err"] = time_used / 3600.0
            update["$inc"]["walltime_err_n"] = 1
        if site:
            update["$set"]["site"] = site
        raised = grown_requirements(cur.get("requirements") or {}, resources or {})
        if raised:
            update["$max"] = {f"requirements.{k}": v for k, v in raised.items()}
        return await self._fenced(task_id, instance_id, new, update)

    async def release_pilot(self, pilot_id: str) -> int:
        """Send a pilot's processing tasks back to ``waiting`` (an eviction, not a failure)."""
        return await self.coll.update_many(
            {"pilot_id": pilot_id, "status": "processing"}, _evicted(None))

    async def held_by(self, pilot_id: str) -> list[str]:
        """Ids of the tasks a pilot is processing now."""
        docs = await self.coll.find(
            {"pilot_id": pilot_id, "status": "processing"}, keys=["task_id"]
        )
        return [d["task_id"] for d in docs]

    async def renew_leases(self, pilot_id: str, lease_seconds: float) -> int:
        return await self.coll.update_many(
            {"pilot_id": pilot_id, "status": "processing"},
            {"$set": {"lease_expires": iso(time.time() + lease_seconds)}},
        )

    async def expire_leases(self, now: float | None = None,
                            by_dataset: dict[str, int] | None = None) -> int:
        """Requeue processing tasks whose lease ran out (their pilot went silent). With
        ``by_dataset``, fills it with how many of each dataset's tasks were found expired."""
        query = {"status": "processing", "lease_expires": {"$lt": iso(now)}}
        if by_dataset is not None:
            for row in await self.coll.group_count(query, ["dataset_id"]):
                if row["dataset_id"]:
                    by_dataset[row["dataset_id"]] = row["count"]
        return await self.coll.update_many(query, _evicted(now))

    # -- queueing ------------------------------------------------------------------------

    async def queue_dataset(self, dataset_id: str, num: int, dataset_priority: float,
                            scan_budget: int = 100_000, out: list[str] | None = None) -> int:
        """Move up to ``num`` of a dataset's waiting tasks whose dependencies are complete to
        ``queued``, in priority order, scanning at most ``scan_budget`` waiting tasks. The
        ids of the tasks queued are appended to ``out`` when given."""
        queued = 0
        after: tuple[float, str] | None = None
        scanned = 0
        while queued < num and scanned < scan_budget:
            query: dict[str, Any] = {"dataset_id": dataset_id, "status": "waiting"}
            if after is not None:
                query["$or"] = [{"priority": {"$lt": after[0]}},
                                {"priority": after[0], "task_id": {"$gt": after[1]}}]
            page = await self.coll.find(
                query, keys=["task_id", "depends", "priority"],
                sort=[("priority", -1), ("task_id", 1)], limit=BATCH,
            )
            if not page:
                break
            scanned += len(page)
            after = (page[-1].get("priority") or 0.0, page[-1]["task_id"])
            ready = (await self._ready(page))[: num - queued]
            for chunk in _chunks(ready, BATCH):
                stamp = iso()
                got = await self.coll.update_many(
                    {"task_id": {"$in": chunk}, "status": "waiting"},
                    {"$set": {"status": "queued", "status_changed": stamp,
                              "dataset_priority": dataset_priority}},
                )
                queued += got
                if out is not None and got:
                    out += chunk if got == len(chunk) else await self._queued_at(chunk, stamp)
            if len(page) < BATCH:
                break
        return queued

    async def _queued_at(self, task_ids: list[str], stamp: str) -> list[str]:
        rows = await self.coll.find({"task_id": {"$in": task_ids}, "status": "queued",
                                     "status_changed": stamp}, keys=["task_id"])
        return [r["task_id"] for r in rows]

    async def queue_ready(self, task_ids: Sequence[str], dataset_priority: float) -> list[Doc]:
        """Queue these waiting tasks (their dependencies are known complete: a parent's
        completion queues its dependents at once); answers those that moved."""
        out = []
        for task_id in task_ids:
            doc = await self.coll.update_one(
                {"task_id": task_id, "status": "waiting"},
                {"$set": {"status": "queued", "status_changed": iso(),
                          "dataset_priority": dataset_priority}})
            if doc is not None:
                out.append(doc)
        return out

    async def complete_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these tasks are complete."""
        done: set[str] = set()
        for chunk in _chunks(sorted(set(task_ids)), BATCH):
            rows = await self.coll.find({"task_id": {"$in": chunk}, "status": "complete"},
                                        keys=["task_id"])
            done.update(r["task_id"] for r in rows)
        return done

    async def briefs(self, task_ids: Sequence[str]) -> list[Doc]:
        """What an event names of each task: ids, name, status and its time."""
        out: list[Doc] = []
        for chunk in _chunks(list(task_ids), BATCH):
            out += await self.coll.find(
                {"task_id": {"$in": chunk}},
                keys=["task_id", "dataset_id", "job_id", "name", "status", "status_changed"])
        return out

    async def unqueue_dataset(self, dataset_id: str, num: int) -> int:
        """Send a dataset's ``num`` lowest-priority queued tasks back to waiting (their
        slots go to datasets below their fair share)."""
        rows = await self.coll.find({"dataset_id": dataset_id, "status": "queued"},
                                    keys=["task_id"], sort=[("priority", 1), ("task_id", -1)],
                                    limit=num)
        back = 0
        for chunk in _chunks([r["task_id"] for r in rows], BATCH):
            back += await self.coll.update_many(
                {"task_id": {"$in": chunk}, "status": "queued"},
                {"$set": {"status": "waiting", "status_changed": iso()}},
            )
        return back

    async def set_dataset_priority(self, dataset_id: str, score: float) -> int:
        """Refresh the score carried by a dataset's queued tasks; returns how many changed
        (those already carrying it are not rewritten)."""
        return await self.coll.update_many(
            {"dataset_id": dataset_id, "status": "queued", "dataset_priority": {"$ne": score}},
            {"$set": {"dataset_priority": score}},
        )

    async def counts_by_dataset(self, status: str) -> dict[str, int]:
        """How many tasks of each dataset are in ``status``."""
        rows = await self.coll.group_count({"status": status}, ["dataset_id"])
        return {r["dataset_id"]: r["count"] for r in rows if r["dataset_id"]}

    async def _ready(self, candidates: list[Doc]) -> list[str]:
        dep_ids = {d for c in candidates for d in (c.get("depends") or [])}
        done: set[str] = set()
        for chunk in _chunks(sorted(dep_ids), BATCH):
            rows = await self.coll.find(
                {"task_id": {"$in": chunk}, "status": "complete"}, keys=["task_id"]
            )
            done.update(r["task_id"] for r in rows)
        return [c["task_id"] for c in candidates if set(c.get("depends") or []) <= done]

    # -- operators' bulk actions ---------------------------------------------------------

    async def bulk_status(
        self, dataset_id: str, status: str, task_ids: Sequence[str] | None,
        name: str | None = None, job_id: str | None = None,
        from_status: Sequence[str] | None = None,
    ) -> int:
        """Set ``status`` on the given tasks (when None: all of the dataset's, narrowed by
        ``name``, ``job_id`` and ``from_status``) that the state machine allows; returns how
        many changed. Works in batches so a 100k-task change never holds the store for
        long. Resetting to waiting clears the failure count."""
        base = bulk_status_filter(dataset_id, status, name, job_id, from_status)
        return await self._bulk_update(base, status, task_ids)

    async def bulk_status_selected(self, dataset_id: str, status: str,
                                   selection: TaskSelection) -> int:
        """Set ``status`` on the selected tasks the state machine allows (an operator's bulk
        action); returns how many changed. An empty selection changes nothing."""
        if selection.empty:
            return 0
        _, base, ids = selected_filters(dataset_id, status, selection)
        return await self._bulk_update(base, status, ids)

    async def preview_selected(self, dataset_id: str, status: str,
                               selection: TaskSelection) -> Doc:
        """What ``bulk_status_selected`` would change, changing nothing (a dry run)."""
        if selection.empty:
            return {"matched": 0, "changed": 0, "by_status": {}, "sample": []}
        matched, changing, ids = selected_filters(dataset_id, status, selection)
        return await self._preview(matched, changing, "task_id", ids)

    async def preview_status(
        self, dataset_id: str, status: str, name: str | None = None,
        job_id: str | None = None, from_status: Sequence[str] | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> Doc:
        """What ``bulk_status`` (with no ids: a cascade) would change, changing nothing; the
        matched tasks are all of the dataset's (narrowed by ``name`` and ``job_id``, or to
        the tasks of ``job_ids``: a cascade from several jobs)."""
        changing = bulk_status_filter(dataset_id, status, name, job_id, from_status)
        matched = {k: v for k, v in changing.items() if k != "status"}
        if job_ids is not None:
            return await self._preview(matched, changing, "job_id", job_ids)
        return await self._preview(matched, changing)

    async def preview_requirements(self, dataset_id: str, name: str) -> Doc:
        """What ``bulk_requirements`` would change, changing nothing."""
        matched = {"dataset_id": dataset_id, "name": name}
        return await self._preview(matched, requirements_filter(dataset_id, name))

    async def _preview(self, matched: Filter, changing: Filter, field: str = "task_id",
                       values: Sequence[str] | None = None) -> Doc:
        """A dry run's answer: how many tasks ``matched`` selects, how many of them
        ``changing`` (the update's own filter) would change, those by current status, and
        the first ``SAMPLE`` of their ids in id order. With ``values`` both filters are
        narrowed to the tasks whose ``field`` (``task_id`` or ``job_id``) is one of them
        (read in batches)."""
        chunks: Iterable[list[str] | None] = (
            _chunks(sorted(set(values)), BATCH) if values is not None else [None])
        total = 0
        by_status: dict[str, int] = {}
        sample: list[str] = []
        for chunk in chunks:
            narrow: dict[str, Any] = {field: {"$in": chunk}} if chunk is not None else {}
            total += await self.coll.count({**matched, **narrow})
            for row in await self.coll.group_count({**changing, **narrow}, ["status"]):
                by_status[row["status"]] = by_status.get(row["status"], 0) + row["count"]
            # task id chunks come in id order; job id chunks may each hold the first ones
            want = SAMPLE - len(sample) if field == "task_id" else SAMPLE
            if want > 0:
                rows = await self.coll.find({**changing, **narrow}, keys=["task_id"],
                                            sort=[("task_id", 1)], limit=want)
                sample = sorted([*sample, *(r["task_id"] for r in rows)])[:SAMPLE]
        return {"matched": total, "changed": sum(by_status.values()),
                "by_status": dict(sorted(by_status.items())), "sample": sample}

    async def _bulk_update(self, base: dict[str, Any], status: str,
                           task_ids: Sequence[str] | None) -> int:
        update: dict[str, Any] = {"$set": {"status": status, "status_changed": iso()}}
        if status != "processing":
            update["$unset"] = dict(LEAVING_PROCESSING)
        if status == "waiting":
            update["$set"]["failures"] = 0
        if task_ids is None:
            task_ids = await self._ids(base)
        changed = 0
        for chunk in _chunks(list(task_ids), BATCH):
            changed += await self.coll.update_many({**base, "task_id": {"$in": chunk}}, update)
            await asyncio.sleep(0)
        return changed

    async def names(self, dataset_id: str) -> set[str]:
        """The names of a dataset's existing tasks."""
        rows = await self.coll.group_count({"dataset_id": dataset_id}, ["name"])
        return {r["name"] for r in rows}

    async def _ids(self, query: Filter) -> list[str]:
        """Every matching task id, read in pages."""
        ids: list[str] = []
        while True:
            q = {**query, "task_id": {"$gt": ids[-1]}} if ids else query
            page = await self.coll.find(q, keys=["task_id"], sort=[("task_id", 1)],
                                        limit=BATCH * 5)
            ids += [d["task_id"] for d in page]
            if len(page) < BATCH * 5:
                return ids

    async def of_job(self, job_id: str) -> list[Doc]:
        """A job's tasks (status and dependencies), in task order."""
        return await self.coll.find({"job_id": job_id},
                                    keys=["task_id", "status", "depends", "task_index"],
                                    sort=[("task_index", 1)])

    async def bulk_requirements(self, dataset_id: str, name: str, reqs: Doc) -> int:
        return await self.coll.update_many(
            requirements_filter(dataset_id, name),
            {"$set": {f"requirements.{k}": v for k, v in reqs.items()}},
        )

    # -- reading -------------------------------------------------------------------------

    async def queued_groups(self) -> list[Doc]:
        """Queued tasks counted by requirements (cpu, gpu, memory, disk, time, site): what
        the grid manager sizes pilots from."""
        return await self.coll.group_count(
            {"status": "queued"},
            [f"requirements.{k}" for k in (*NUMERIC_REQUIREMENTS, "site")])

    async def demand(self) -> list[Doc]:
        """Queued tasks grouped by requirements, largest groups first:
        ``[{"requirements": {cpu, gpu, memory, disk, time, site (those set)}, "count": n}]``
        (``GET /task_demand``, what a grid manager sizes its pilots from)."""
        out = []
        for row in await self.queued_groups():
            need = {k: row[f"requirements.{k}"] for k in (*NUMERIC_REQUIREMENTS, "site")
                    if row.get(f"requirements.{k}") not in (None, "")}
            out.append({"requirements": need, "count": int(row["count"])})
        return sorted(out, key=lambda g: -g["count"])

    async def counts_by_status(self, dataset_id: str) -> dict[str, int]:
        return await self._status_counts({"dataset_id": dataset_id})

    async def ids_by_status(self, dataset_id: str) -> dict[str, list[str]]:
        return await self._ids_grouped_by_status(
            {"dataset_id": dataset_id}, [("job_index", 1), ("task_index", 1)])

    async def page(self, paging: Paging = ALL, *, dataset_id: str | None = None,
                   status: Sequence[str] | None = None, job_id: str | None = None,
                   job_index: int | None = None, name: str | None = None,
                   pilot_id: str | None = None, ids: Sequence[str] | None = None) -> Page:
        """One page of the tasks matching every given criterion (``status`` and ``ids``:
        any of)."""
        return await self._page(where(dataset_id=dataset_id, status=one_of(status),
                                      job_id=job_id, job_index=job_index, name=name,
                                      pilot_id=pilot_id, task_id=one_of(ids)), paging)

    async def count(self, *, dataset_id: str | None = None,
                    status: Sequence[str] | None = None, pilot_id: str | None = None) -> int:
        """How many tasks match every given criterion (``status``: any of)."""
        return await self._count(where(dataset_id=dataset_id, status=one_of(status),
                                       pilot_id=pilot_id))

    async def queued_ahead(self, dataset_priority: float, priority: float) -> int:
        """How many queued tasks a claim takes before a queued task with these priorities
        (a higher dataset priority, or the same one and a higher task priority)."""
        return await self._count({"status": "queued", "$or": [
            {"dataset_priority": {"$gt": dataset_priority}},
            {"dataset_priority": dataset_priority, "priority": {"$gt": priority}}]})

    async def counts_by_datasets(self, dataset_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Task counts by status for several datasets at once: ``{dataset_id: {status: n}}``
        (one grouped query, not one per dataset)."""
        out: dict[str, dict[str, int]] = {d: {} for d in dataset_ids}
        for chunk in _chunks(list(dataset_ids), 500):
            rows = await self.coll.group_count({"dataset_id": {"$in": chunk}},
                                               ["dataset_id", "status"])
            for r in rows:
                if r["status"] is not None:
                    out[r["dataset_id"]][r["status"]] = int(r["count"])
        return out

    async def for_plots(self, dataset_id: str) -> list[Doc]:
        """What the dataset page plots from each task: name, status, when it last changed,
        walltime, failures and the last reason."""
        return await self.coll.find(
            {"dataset_id": dataset_id},
            keys=["name", "status", "status_changed", "walltime", "failures", "reason"])

    async def counts_by_name_status(self, dataset_id: str) -> dict[str, dict[str, int]]:
        rows = await self.coll.group_count(
            {"dataset_id": dataset_id}, ["task_index", "name", "status"]
        )
        rows.sort(key=lambda r: (r["task_index"] if r["task_index"] is not None else -1))
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["name"], {})[r["status"]] = r["count"]
        return out

    async def stats_by_name(self, dataset_id: str) -> dict[str, Doc]:
        """Per task name, in task-index order, IceProd's summary: ``count`` (completed
        tasks), ``total_hrs``, ``avg_hrs``, ``stddev_hrs`` (population), ``min_hrs`` and
        ``max_hrs`` of their walltime, ``total_err_hrs`` (walltime of failed runs, every
        task of the name) and ``efficiency`` (good / (good + error) hours). Names with
        nothing completed are left out."""
        good = await self.coll.group_stats(
            {"dataset_id": dataset_id, "status": "complete"},
            ["task_index", "name"],
            {"total": ("sum", "walltime"), "min": ("min", "walltime"), "max": ("max", "walltime")},
        )
        if not good:
            return {}
        bad = await self.coll.group_stats(
            {"dataset_id": dataset_id}, ["name"], {"err": ("sum", "walltime_err")})
        errors = {r["name"]: float(r["err"] or 0.0) for r in bad}
        good.sort(key=lambda r: r["task_index"] if r["task_index"] is not None else -1)
        out: dict[str, Doc] = {}
        for r in good:
            count, total = int(r["count"]), float(r["total"] or 0.0)
            err = errors.get(r["name"], 0.0)
            out[r["name"]] = {
                "count": count, "total_hrs": total, "total_err_hrs": err,
                "avg_hrs": total / count, "stddev_hrs": 0.0,
                "min_hrs": r["min"], "max_hrs": r["max"],
                "efficiency": total / (total + err) if total + err > 0 else None,
            }
        squares = await self._squared_deviations(dataset_id, {n: s["avg_hrs"]
                                                              for n, s in out.items()})
        for name, s in out.items():
            s["stddev_hrs"] = math.sqrt(squares.get(name, 0.0) / s["count"])
        return out

    async def _squared_deviations(self, dataset_id: str, means: dict[str, float]
                                  ) -> dict[str, float]:
        """Per name, the sum of squared deviations of completed tasks' walltime from
        ``means`` (read in pages; the stores aggregate only sums, minima and maxima)."""
        out: dict[str, float] = {}
        after = ""
        while True:
            page = await self.coll.find(
                {"dataset_id": dataset_id, "status": "complete", "task_id": {"$gt": after}},
                keys=["name", "walltime"], sort=[("task_id", 1)], limit=BATCH * 5)
            for d in page:
                dev = float(d.get("walltime") or 0.0) - means.get(d.get("name", ""), 0.0)
                out[d.get("name", "")] = out.get(d.get("name", ""), 0.0) + dev * dev
            if len(page) < BATCH * 5:
                return out
            after = page[-1]["task_id"]
            await asyncio.sleep(0)


ANY_RUNTIME = "*"
"""``container_runtime`` of a task whose image may run under any of a pilot's runtimes."""


def claim_filter(resources: Doc) -> Filter:
    """The claim query: queued tasks whose requirements fit the pilot's free resources.

    Built only from validated, typed values (never from raw client filter fragments).
    Numeric requirements match when absent or <= the offer; a GPU offer takes only GPU
    tasks; ``os`` must contain the pilot's os when set; ``site`` must equal when set; a task
    with a container image needs its runtime (any, for ``*``) among the offer's
    ``containers``.
    """
    clauses: list[Doc] = [{"status": "queued"}]
    gpu = resources.get("gpu") or 0
    for key in NUMERIC_REQUIREMENTS:
        field = f"requirements.{key}"
        if key == "gpu":
            if gpu > 0:
                clauses.append({field: {"$gte": 1, "$lte": gpu}})
            else:
                clauses.append({"$or": [{field: None}, {field: {"$lte": 0}}]})
        elif resources.get(key) is not None:
            clauses.append({"$or": [{field: None}, {field: {"$lte": resources[key]}}]})
    os_any: list[Doc] = [{"requirements.os": None}, {"requirements.os": []}]
    if resources.get("os"):
        os_any.append({"requirements.os": resources["os"]})
    clauses.append({"$or": os_any})
    site_any: list[Doc] = [{"requirements.site": None}, {"requirements.site": ""}]
    if resources.get("site"):
        site_any.append({"requirements.site": resources["site"]})
    clauses.append({"$or": site_any})
    # a task running in a container image goes only to a pilot offering its runtime
    runtimes = [str(r) for r in resources.get("containers") or []]
    if runtimes:
        clauses.append({"$or": [{"container_runtime": None},
                                {"container_runtime": {"$in": [ANY_RUNTIME, *runtimes]}}]})
    else:
        clauses.append({"container_runtime": None})
    return {"$and": clauses}


def grown_requirements(current: Doc, measured: Doc) -> Doc:
    """New requirement floors from measured overuse: cpu +1 when clearly more cores were
    used than requested; memory, disk and time to 1.5x the measured value when it exceeded
    the request. A requirement the task never set is not created from a measurement: the
    pilot enforces requirements as limits, so a floor taken from a run cut short (a few
    seconds of time) would kill every retry."""
    out: dict[str, float] = {}
    cpu_req = current.get("cpu") or 1
    if (measured.get("cpu") or 0) > cpu_req * 1.1:
        out["cpu"] = int(cpu_req) + 1
    for key in ("memory", "disk", "time"):
        used = measured.get(key)
        req = current.get(key)
        if used is not None and req is not None and used > req:
            out[key] = round(used * 1.5, 6)
    return out


def _evicted(now: float | None) -> dict[str, Any]:
    """The update that takes a task from a pilot that is gone: back to waiting, counted as
    an eviction (not a failure)."""
    return {
        "$set": {"status": "waiting", "status_changed": iso(now)},
        "$unset": dict(LEAVING_PROCESSING),
        "$inc": {"evictions": 1},
    }


def _flatten_requirements(fields: Doc) -> Doc:
    reqs = fields.pop("requirements", None) or {}
    fields.update({f"requirements.{k}": v for k, v in reqs.items()})
    return fields


def _chunks(items: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])

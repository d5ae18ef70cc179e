"""The batch API (seed ``002``) over datasets: a batch is a dataset of one job whose tasks
are the batch's jobs, each running the catalog entry ``tool_id`` with its own ``args``.

A batch's ``batch_id`` is the dataset id; a batch job's ``job_id`` is its task's id (known
at submission: task ids are derived from the dataset and indexes), and so is its ``log_id``:
``GET /datasets/{batch_id}/tasks/{log_id}/logs`` answers the task's logs.

Status mapping (iceprod task -> batch job): not created yet -> ``SUBMITTED``; waiting ->
``PENDING``; queued -> ``RUNNABLE``; processing -> ``RUNNING`` (``STARTING`` while the pilot
stages its inputs is not distinguished: a claim starts the task); complete ->
``SUCCEEDED``; failed -> ``FAILED``; suspended -> ``PENDING`` with reason "suspended". Once
the batch is deleted, every job that has not run (created or not) is ``FAILED`` with reason
"deleted".
"""

from __future__ import annotations

import logging
from typing import Any

from iceprod.common.errors import Invalid, NotFound
from iceprod.common.timeutil import iso, parse
from iceprod.core.keys import task_id_for
from iceprod.core.scripts import check_values, task_config
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.dialects.common import dataset_group, stop, submit, usable_script
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import FLAG, query
from iceprod.rest.responses import responds

log = logging.getLogger(__name__)
CREATE_BODY = body("batches_create")
STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
STATUS = {"waiting": "PENDING", "queued": "RUNNABLE", "processing": "RUNNING",
          "complete": "SUCCEEDED", "failed": "FAILED"}
SAMPLE = 10
MAX_BATCHES = 10_000


def seed_status(task: Doc | None, deleted: bool) -> tuple[str, str | None]:
    """A task's status in the seed's names, and the reason to show."""
    status = task.get("status", "waiting") if task else None
    if deleted and status not in ("processing", "complete", "failed"):
        # a deleted batch's dataset is suspended: what has not run never will (a task the
        # materializer created while the batch was being deleted included)
        return "FAILED", "deleted"
    if status is None:
        return "SUBMITTED", None
    if status == "suspended":
        return "PENDING", "suspended"
    return STATUS.get(status, "PENDING"), (task or {}).get("reason")


def batch_model(sub: Doc) -> Doc:
    return {"batch_id": sub["dataset_id"], "tool_id": sub["tool_id"], "n_jobs": sub["n_jobs"],
            "hardware": sub["hardware"]}


def _before(when: str, hours: float) -> str:
    return iso(parse(when) - hours * 3600)


class BatchBase(APIHandler):
    async def batch(self, batch_id: str, action: str = "read") -> Doc:
        await self.authorize_dataset(batch_id, action)
        return await self.db.submissions.of_kind(batch_id, "batch")

    async def counts(self, sub: Doc) -> tuple[int, dict[str, int]]:
        """``(n_submitted, {seed status: n})``: jobs handed to the scheduler, and every job
        counted under its seed status."""
        by_status = await self.db.tasks.counts_by_status(sub["dataset_id"])
        counts = dict.fromkeys(STATUSES, 0)
        made = 0
        for status, n in by_status.items():
            made += n
            counts[seed_status({"status": status}, sub["deleted"])[0]] += n
        counts[seed_status(None, sub["deleted"])[0]] += sub["n_jobs"] - made
        return made, counts

    def job_model(self, sub: Doc, index: int, task: Doc | None, detail: bool) -> Doc:
        job_id = task_id_for(sub["dataset_id"], 0, index)
        out: Doc = {"job_id": job_id, "log_id": job_id, "args": sub["job_args"][index]}
        if not detail:
            return out
        status, reason = seed_status(task, sub["deleted"])
        changed = (task or {}).get("status_changed")
        start = stop_time = None
        if status == "RUNNING":
            start = changed
        elif status in ("SUCCEEDED", "FAILED") and changed and task and \
                task.get("status") in ("complete", "failed"):
            stop_time = changed
            start = _before(changed, float(task.get("walltime") or 0.0))
        return {**out, "hardware": sub["hardware"], "status": status, "reason": reason,
                "create_time": sub["created"], "start_time": start, "stop_time": stop_time}


class BatchesHandler(BatchBase):
    @responds("Batches")
    @requires("read:datasets")
    async def get(self) -> None:
        """The caller's batches (not deleted), oldest first."""
        subs = await self.db.submissions.of_user(self.principal.username, "batch",
                                                 limit=MAX_BATCHES)
        self.write_json([batch_model(s) for s in subs])

    @responds("Batch")
    @requires("create:datasets", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Submit a batch of `n_jobs` jobs running the catalog entry `tool_id`, each with its
        `args` (`n_jobs` objects, or one for every job; checked against the entry's
        parameters before anything is created) on `hardware` (cpu cores, memory in MiB)."""
        b = self.body
        script = await usable_script(self, b["tool_id"], "tool_id")
        n = b["n_jobs"]
        given = b.get("args") or [{}]
        if len(given) not in (1, n):
            raise Invalid(f"args: expected {n} entries (one per job) or one for every job",
                          field="args")
        per_job = given if len(given) == n else given * n
        values = []
        for i, args in enumerate(per_job):
            try:
                values.append(check_values(script, args, {}))
            except Invalid as e:
                where = f"args[{i if len(given) == n else 0}]"
                raise Invalid(f"{where}.{e.message}", field=f"{where}.{e.field}") from None
        hardware = b.get("hardware") or {}
        tasks = [task_config(script, f"job{i}", v, hardware) for i, v in enumerate(values)]
        config = {"version": 3, "description": f"batch of {n} running {b['tool_id']}",
                  "options": {"max_failures": 1}, "tasks": tasks}
        batch_id = await submit(
            self, description=f"batch: {n} x {b['tool_id']}",
            group=dataset_group(self.principal, script), tasks_per_job=n, config=config,
            submission={"kind": "batch", "tool_id": b["tool_id"], "n_jobs": n,
                        "hardware": hardware, "job_args": values})
        self.set_header("Location", f"/batches/{batch_id}")
        sub = await self.db.submissions.of_kind(batch_id, "batch")
        self.write_json(batch_model(sub), 201)

    @responds("BatchesCancelled")
    @query(dry_run=FLAG)
    @requires("write:datasets")
    async def delete(self) -> None:
        """Delete all the caller's batches: stop their unfinished jobs and mark them deleted.
        With `dry_run=true` nothing changes and the answer previews what would:
        `{dry_run, matched (batches), changed (jobs stopped), by_status (jobs by seed
        status), sample (batch ids)}`."""
        raw = self.get_argument("dry_run", "false").lower()
        if raw not in ("true", "false", "1", "0"):
            raise Invalid("dry_run: must be true or false", field="dry_run")
        dry_run = raw in ("true", "1")
        subs = await self.db.submissions.of_user(self.principal.username, "batch",
                                                 limit=MAX_BATCHES)
        by_status = dict.fromkeys(STATUSES, 0)
        changed = 0
        for sub in subs:
            _, counts = await self.counts(sub)
            for k, v in counts.items():
                by_status[k] += v
            if dry_run:
                changed += sum(n for s, n in (await self.db.tasks.counts_by_status(
                    sub["dataset_id"])).items() if s in ("waiting", "queued", "processing"))
            else:
                stopped = await stop(self, sub["dataset_id"])
                changed += stopped
                await audit(self, "batch.delete", sub["dataset_id"],
                            {"batches": "all of the caller's"}, {"changed": stopped})
        ids = [s["dataset_id"] for s in subs]
        if not dry_run:
            await self.db.submissions.mark_deleted(ids)
            log.info("%s deleted %d batch(es), %d job(s) stopped", self.principal.username,
                     len(ids), changed)
        self.write_json({"dry_run": dry_run, "matched": len(ids), "changed": changed,
                         "by_status": by_status, "sample": ids[:SAMPLE]})


class BatchHandler(BatchBase):
    @responds("BatchStatus")
    @requires("read:datasets")
    async def get(self, batch_id: str) -> None:
        """A batch with `n_submitted` (jobs handed to the scheduler) and `submitted_jobs`
        (every job counted under its status: SUBMITTED, PENDING, RUNNABLE, STARTING,
        RUNNING, SUCCEEDED, FAILED)."""
        sub = await self.batch(batch_id)
        made, counts = await self.counts(sub)
        self.write_json({**batch_model(sub), "n_submitted": made, "submitted_jobs": counts,
                         "deleted": sub["deleted"]})

    @responds("BatchDeleted")
    @requires("write:datasets")
    async def delete(self, batch_id: str) -> None:
        """Delete a batch: stop its unfinished jobs (running ones are killed by their
        pilots) and mark it deleted."""
        sub = await self.batch(batch_id, "write")
        changed = await stop(self, batch_id)
        await self.db.submissions.mark_deleted([sub["dataset_id"]])
        await audit(self, "batch.delete", batch_id, {"batches": [batch_id]},
                    {"changed": changed})
        self.write_json({"batch_id": batch_id, "deleted": True, "changed": changed})


class BatchJobsHandler(BatchBase):
    @responds("BatchJobs")
    @requires("read:datasets")
    async def get(self, batch_id: str) -> None:
        """The batch's jobs in order: `[{job_id, log_id, args}]`."""
        sub = await self.batch(batch_id)
        self.write_json([self.job_model(sub, i, None, False) for i in range(sub["n_jobs"])])


class BatchJobHandler(BatchBase):
    @responds("BatchJob")
    @requires("read:datasets")
    async def get(self, batch_id: str, job_id: str) -> None:
        """One job: `args`, `status`, `reason`, `create_time`, `start_time`, `stop_time`,
        `hardware`, and `log_id` (its logs: `/datasets/{batch_id}/tasks/{log_id}/logs`)."""
        sub = await self.batch(batch_id)
        index = next((i for i in range(sub["n_jobs"])
                      if task_id_for(batch_id, 0, i) == job_id), None)
        if index is None:
            raise NotFound("job not found")
        task: Any = await self.db.tasks.find(job_id)
        if task is not None and task.get("dataset_id") != batch_id:
            task = None
        self.write_json(self.job_model(sub, index, task, True))


B = r"(?P<batch_id>[0-9a-f]{32})"
routes = [
    (r"/batches", BatchesHandler),
    (rf"/batches/{B}", BatchHandler),
    (rf"/batches/{B}/jobs", BatchJobsHandler),
    (rf"/batches/{B}/jobs/(?P<job_id>[0-9a-f]{{32}})", BatchJobHandler),
]

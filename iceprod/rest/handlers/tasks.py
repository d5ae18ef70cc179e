"""Tasks: per-dataset listing, status, counts, bulk actions and stats; internal
create/get/patch; and the pilot's side: claim (process), complete, reset, failed, queue."""

from __future__ import annotations

import contextlib
from typing import Any

from iceprod.common import strict_json
from iceprod.common.errors import (
    BadTransition,
    Conflict,
    IceProdError,
    Invalid,
    NotFound,
    TooLarge,
)
from iceprod.common.ids import new_id
from iceprod.common.reasons import classify
from iceprod.common.schema import validate
from iceprod.common.states import statuses
from iceprod.common.timeutil import iso
from iceprod.core.events import task_event, tasks_event
from iceprod.core.maintenance import claim_refusal
from iceprod.core.preview import preview_task_status
from iceprod.core.queue import queue_exclusively
from iceprod.core.rollup import rollup_job
from iceprod.core.taskflow import (
    carry_dataset_status,
    claim_waiting,
    complete_task,
    publish_queued,
)
from iceprod.core.usage import store_run
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.db.tasks import TaskSelection
from iceprod.rest.audit import audit, selection_record
from iceprod.rest.base import APIHandler, OwnershipMixin, requires
from iceprod.rest.dryrun import DryRunHandler
from iceprod.rest.handlers.schemas import body, definition
from iceprod.rest.openapi import KEYS, PAGE, STATUS, TEXT, path, query
from iceprod.rest.responses import responds

STATUS_BODY = body("task_status")
MAX_BULK = 100_000

CREATE_BODY = body("tasks_create")
PATCH_BODY = body("tasks_patch")
PROCESS_BODY = body("tasks_process")
COMPLETE_BODY = body("tasks_complete")
FAILED_BODY = body("tasks_failed")
RESET_BODY = body("tasks_reset")
QUEUE_BODY = body("tasks_queue")
BULK_STATUS_BODY = body("tasks_bulk_status")
BULK_REQ_BODY = body("tasks_bulk_req")


def task_model(privileged: bool, page: bool = False) -> str:
    """The fencing token is a capability: only the server's own roles, the claim and the
    pilot holding the task see it (``HeldTask``); others get ``Task``, without it."""
    if page:
        return "HeldTaskPage" if privileged else "TaskPage"
    return "HeldTask" if privileged else "Task"


class DatasetTasksHandler(APIHandler):
    @responds("TaskPage", "HeldTaskPage")
    @query(**PAGE, status=STATUS, job_id=TEXT, name=TEXT, pilot_id=TEXT)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's tasks as `{task_id: task}` (`status=`, `job_id=`, `name=`, `keys=`,
        paged)."""
        status = self.status_arg()
        job_id, name, pilot_id = (self.get_argument(arg, "") or None
                                  for arg in ("job_id", "name", "pilot_id"))
        await self.list_page(self.db.tasks, lambda paging: self.db.tasks.page(
            paging, dataset_id=dataset_id, status=status, job_id=job_id, name=name,
            pilot_id=pilot_id), model=task_model(self.principal.privileged, page=True))


class DatasetTaskHandler(APIHandler):
    @responds("Task", "HeldTask")
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str) -> None:
        """One task of a dataset."""
        task = await self.db.tasks.get_in(task_id, dataset_id, self.keys_arg())
        self.reply(task, task_model(self.principal.privileged))


class DatasetTaskStatusHandler(DryRunHandler):
    @responds("Changed", "DryRun")
    @requires("write:datasets", dataset="write", body=STATUS_BODY)
    async def put(self, dataset_id: str, task_id: str) -> None:
        """Set a task's status (state machine; illegal -> 409); `"dry_run": true` answers
        what would change. Answers `{"changed": 0|1}`."""
        status = self.body["status"]
        plan = await preview_task_status(self.db, dataset_id, task_id, status)
        if self.dry_run:
            self.write_preview(plan)
            return
        old = await self.db.tasks.get_in(task_id, dataset_id, ["status"])
        doc = await self.db.tasks.set_status(task_id, status, dataset_id=dataset_id)
        await publish_change(self, doc, old.get("status"))
        await audit(self, "task.status", dataset_id, {"tasks": [task_id]},
                    {"changed": plan["changed"]}, {"status": status})
        self.write_json({"changed": plan["changed"]})


async def publish_change(h: APIHandler, doc: Doc, prev: str | None) -> None:
    """The event of one task's status set by hand (none when it did not change)."""
    if doc.get("status") != prev:
        await h.ctx.events.publish([task_event(doc, prev)])


class TaskSummariesHandler(APIHandler):
    @responds("DatasetSummary")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Task ids grouped by status: `{status: [task_id, ...]}`."""
        self.write_json(await self.db.tasks.ids_by_status(dataset_id))


class TaskCountsHandler(APIHandler):
    @responds("StatusCounts")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Task counts by status: `{status: n}`."""
        self.write_json(await self.db.tasks.counts_by_status(dataset_id))


class TaskCountsNameHandler(APIHandler):
    @responds("NameStatusCounts")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Task counts by name and status, in task-index order: `{name: {status: n}}`."""
        self.write_json(await self.db.tasks.counts_by_name_status(dataset_id))


def check_selection_given(body: Any) -> None:
    """Say clearly what a bulk body lacks (the schema's `oneOf` would only say it matches
    neither or both): nothing selected is refused, so a forgotten body never changes a
    whole dataset."""
    if not isinstance(body, dict):
        return  # the schema names the type
    if "tasks" in body and "filter" in body:
        raise Invalid("tasks: give tasks or filter, not both", field="tasks")
    if "tasks" not in body and "filter" not in body:
        raise Invalid("selection: give tasks (a list of task ids) or filter "
                      "(status, name, job_index)", field="selection")


def task_selection(body: Doc) -> TaskSelection:
    """The explicit selection of a (validated) bulk body: `tasks` (ids) or `filter`."""
    if "tasks" in body:
        return TaskSelection(task_ids=tuple(body["tasks"]))
    f = body["filter"]
    index = f.get("job_index", {})
    return TaskSelection(statuses=tuple(f.get("status", ())), names=tuple(f.get("name", ())),
                         job_index_min=index.get("min"), job_index_max=index.get("max"))


async def check_task_names(h: APIHandler, dataset_id: str, names: tuple[str, ...]) -> None:
    """404 naming the task names neither the dataset's config nor its tasks know (a typo
    must not answer "changed 0" as if there were nothing to do)."""
    if not names:
        return
    known = await h.db.config.task_names(dataset_id) | await h.db.tasks.names(dataset_id)
    unknown = sorted(set(names) - known)
    if unknown:
        raise NotFound(f"name: no task named {', '.join(map(repr, unknown))} in this dataset")


class BulkStatusHandler(DryRunHandler):
    def parse_body(self, schema: Doc) -> Doc:
        data = self.raw_body()
        check_selection_given(data)
        validate(data, schema)
        return data  # type: ignore[no-any-return]

    @responds("Changed", "DryRun")
    @path(status=definition("task_status")["properties"]["status"])
    @requires("write:datasets", dataset="write", body=BULK_STATUS_BODY)
    async def post(self, dataset_id: str, status: str) -> None:
        """Set a status on the selected tasks (`{"tasks": [ids]}` or `{"filter": {"status",
        "name", "job_index": {"min", "max"}}}`; an empty selection is a 400, unknown names a
        404); tasks the state machine does not allow are left alone. Sending tasks back to
        waiting reopens a dataset in errors (it becomes processing again). With
        `"dry_run": true` answers what would change, changing nothing."""
        if status not in statuses("task") or status == "processing":
            raise Invalid(f"status: cannot bulk-set {status!r}")
        selection = task_selection(self.body)
        await check_task_names(self, dataset_id, selection.names)
        if self.dry_run:
            self.write_preview(
                await self.db.tasks.preview_selected(dataset_id, status, selection))
            return
        changed = await self.db.tasks.bulk_status_selected(dataset_id, status, selection)
        if changed:
            await self.ctx.events.publish([tasks_event(dataset_id, status, changed,
                                                       "bulk_status")])
        if changed and status == "waiting":
            await reopen_dataset(self, dataset_id)
        await audit(self, "tasks.bulk_status", dataset_id, selection_record(self.body),
                    {"changed": changed}, {"status": status})
        self.write_json({"changed": changed})


async def reopen_dataset(h: APIHandler, dataset_id: str) -> None:
    """Retried work makes a dataset in errors live again: it goes back to processing, with
    the same cascade as `PUT /datasets/{id}/status`."""
    dataset = await h.db.datasets.get(dataset_id, keys=["status"])
    if dataset.get("status") == "errors":
        doc = await h.db.datasets.set_status(dataset_id, "processing")
        await carry_dataset_status(h.db, h.ctx.events, doc, "errors")


class BulkRequirementsHandler(DryRunHandler):
    @responds("Changed", "DryRun")
    @requires("write:datasets", dataset="write", body=BULK_REQ_BODY)
    async def patch(self, dataset_id: str, name: str) -> None:
        """Set requirements on every unfinished task with this name (unknown name -> 404);
        `"dry_run": true` answers what would change, changing nothing."""
        await check_task_names(self, dataset_id, (name,))
        if self.dry_run:
            self.write_preview(await self.db.tasks.preview_requirements(dataset_id, name))
            return
        changed = await self.db.tasks.bulk_requirements(dataset_id, name, self.body)
        await audit(self, "tasks.bulk_requirements", dataset_id, {"filter": {"name": [name]}},
                    {"changed": changed}, {"requirements": self.body})
        self.write_json({"changed": changed})


class DatasetTaskStatsHandler(APIHandler):
    @responds("TaskStatsSummary")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Per task name with completed tasks (IceProd's summary): `count`, `total_hrs`,
        `avg_hrs`, `stddev_hrs`, `min_hrs`, `max_hrs`, `total_err_hrs`, `efficiency`."""
        self.write_json(await self.db.tasks.stats_by_name(dataset_id))


class TasksHandler(APIHandler):
    @responds("HeldTaskPage")
    @query(**PAGE, dataset_id=TEXT, status=STATUS, job_id=TEXT, name=TEXT, pilot_id=TEXT)
    @requires("internal")
    async def get(self) -> None:
        """Every dataset's tasks as `{task_id: task}` (admin, system): `dataset_id=`,
        `status=a|b`, `job_id=`, `name=`, `pilot_id=`, `keys=`, paged."""
        status = self.status_arg()
        dataset_id, job_id, name, pilot_id = (
            self.get_argument(arg, "") or None
            for arg in ("dataset_id", "job_id", "name", "pilot_id"))
        await self.list_page(self.db.tasks, lambda paging: self.db.tasks.page(
            paging, dataset_id=dataset_id, status=status, job_id=job_id, name=name,
            pilot_id=pilot_id))

    @responds("Created")
    @requires("internal", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Create a task (internal)."""
        b = self.body
        job = await self.db.jobs.get(b["job_id"], keys=["dataset_id", "job_index"])
        if job["dataset_id"] != b["dataset_id"]:
            raise Invalid("job_id: the job belongs to another dataset")
        task_id = new_id()
        await self.db.tasks.create({
            "task_id": task_id,
            "dataset_id": b["dataset_id"],
            "job_id": b["job_id"],
            "job_index": job["job_index"],
            "task_index": b["task_index"],
            "name": b["name"],
            "depends": b.get("depends", []),
            "requirements": b.get("requirements", {}),
            "status": b.get("status", "waiting"),
            "status_changed": iso(),
            "priority": b.get("priority", 0.0),
            "failures": 0,
            "evictions": 0,
            "walltime": 0.0,
            "walltime_err": 0.0,
            "walltime_err_n": 0,
            "steps": b.get("steps", []),
            "data": b.get("data", []),
            "env": b.get("env", {}),
        })
        self.write_json({"result": task_id}, 201)


class TaskHandler(OwnershipMixin, APIHandler):
    @responds("Task", "HeldTask")
    @query(keys=KEYS)
    @requires("read:datasets", "internal", "pilot")
    async def get(self, task_id: str) -> None:
        """One task by id alone (so a client finds a task's dataset in one request): for
        whoever may read its dataset, the server's own roles, and a pilot holding it."""
        p = self.principal
        holder = False
        if not p.has("internal"):
            found = await self.db.tasks.get(task_id, ["task_id", "dataset_id", "pilot_id"])
            holder = bool(p.pilot_id) and found.get("pilot_id") == p.pilot_id
            if p.has("read:datasets") and not holder:
                await self.authorize_dataset(found["dataset_id"], "read")
            else:
                await self.check_task_holder(found)
        task = await self.db.tasks.get(task_id, self.keys_arg())
        self.reply(task, task_model(p.privileged or p.has("internal") or holder))

    def parse_body(self, schema: Doc) -> Doc:
        raw = self.request.body
        data = strict_json.loads(raw) if raw else {}
        if self.request.method == "PATCH" and isinstance(data, dict) and "status" in data:
            raise Invalid("status: PATCH does not change a task's status; use "
                          "PUT /tasks/{task_id}/status (the state machine)", field="status")
        validate(data, schema)
        return data  # type: ignore[no-any-return]

    @responds("HeldTask")
    @requires("internal", body=PATCH_BODY)
    async def patch(self, task_id: str) -> None:
        """Update a task's fields (internal): priority, requirements, reason, site,
        failures. Never its status (400): that changes through `PUT /tasks/{id}/status`."""
        doc = await self.db.tasks.patch(task_id, self.body)
        await audit(self, "task.patch", doc.get("dataset_id"), {"tasks": [task_id]},
                    {"changed": 1}, self.body)
        self.write_json(doc)


class TaskStatusHandler(DryRunHandler):
    @responds("Changed", "DryRun")
    @requires("internal", body=STATUS_BODY)
    async def put(self, task_id: str) -> None:
        """Set a task's status by id alone (admin, system; IceProd v2.7): through the state
        machine (illegal -> 409), never processing (only a claim sets that). Answers
        `{"changed": 0|1}`; `"dry_run": true` answers what would change."""
        status = self.body["status"]
        task = await self.db.tasks.get(task_id, keys=["dataset_id"])
        dataset_id = task["dataset_id"]
        plan = await preview_task_status(self.db, dataset_id, task_id, status)
        if self.dry_run:
            self.write_preview(plan)
            return
        old = await self.db.tasks.get(task_id, keys=["status"])
        doc = await self.db.tasks.set_status(task_id, status, dataset_id=dataset_id)
        await publish_change(self, doc, old.get("status"))
        await audit(self, "task.status", dataset_id, {"tasks": [task_id]},
                    {"changed": plan["changed"]}, {"status": status})
        self.write_json({"changed": plan["changed"]})


class ClaimMixin(OwnershipMixin):
    """Hands a pilot its next tasks: the claim of ``POST /task_actions/process`` and of a
    completion that asks for the next work in the same request."""

    ctx: Any
    closed = False

    def on_connection_close(self) -> None:
        self.closed = True

    async def claim_for(self, pilot_id: str, requirements: Doc, max_tasks: int,
                        wait: float = 0.0, via: str = "process") -> tuple[list[Doc], str | None]:
        """Claim up to ``max_tasks`` tasks fitting ``requirements`` for the pilot (waiting up
        to ``wait`` s when none is queued): the tasks, and why none were claimed when
        maintenance or a drain refuses the pilot. ``via`` labels the claimed-tasks metric
        (``process``, ``completion``)."""
        pilot = await self.check_pilot(pilot_id)
        if (why := await claim_refusal(self.db, pilot)) is not None:
            return [], why
        # a pilot of a grid without isolation runs only its operator's datasets
        only = await self.db.datasets.ids_of_user(pilot["only_user"]) \
            if pilot.get("only_user") else None
        tasks = await claim_waiting(
            self.db, self.ctx.events, requirements, pilot_id,
            self.ctx.config.lease_seconds, dataset_ids=only, max_tasks=max_tasks,
            wait=min(wait, self.ctx.config.max_wait),
            on_wait=lambda: self.ctx.metrics.inc(
                "iceprod_claim_waits_total", help="claims that found nothing and waited"),
            refused=lambda: self.still_refused(pilot),
        )
        if self.closed:
            await self.give_back(tasks)  # nobody is left to run them
            return [], None
        if tasks:
            self.ctx.metrics.inc("iceprod_tasks_claimed_total",
                                 help="tasks handed to pilots, by the request that claimed them",
                                 amount=len(tasks), via=via)
        else:
            self.ctx.metrics.inc("iceprod_claims_empty_total",
                                 help="claims that found no task (after waiting, if asked)")
        return tasks, None

    async def still_refused(self, pilot: Doc) -> bool:
        """Whether maintenance or a drain now stops this pilot's claim (a waiting claim asks
        again each time it wakes)."""
        return await claim_refusal(self.db, pilot) is not None

    async def give_back(self, tasks: list[Doc]) -> None:
        for t in tasks:
            with contextlib.suppress(IceProdError):
                doc = await self.db.tasks.requeue(t["task_id"], t["instance_id"],
                                                  "the claim's answer was not delivered")
                await self.ctx.events.publish([task_event(doc, "processing")])


class ProcessHandler(ClaimMixin, APIHandler):
    @responds("HeldTask", "ClaimedTasks")
    @requires("pilot", "internal", body=PROCESS_BODY)
    async def post(self) -> None:
        """Claim the highest-priority queued task that fits the pilot's free resources;
        answers the task with its fencing `instance_id` and lease, or 404 (also while the
        server is in maintenance or the pilot's site, host or grid is drained). With
        `max_tasks: N`, up to N tasks that fit together, answered as `{"tasks": [...]}`
        (200, possibly empty). With `wait: s` (at most 20), a claim that finds nothing waits
        up to s seconds and is answered as soon as a fitting task is queued."""
        b = self.body
        tasks, why = await self.claim_for(b["pilot_id"], b["requirements"],
                                          b.get("max_tasks", 1), b.get("wait", 0.0))
        if why is not None:
            raise NotFound(f"no task for this pilot now: {why}", quiet=True)
        if self.closed:
            return
        if "max_tasks" in b:
            self.reply({"tasks": tasks}, "ClaimedTasks")
            return
        if not tasks:
            raise NotFound("no task fits these resources", quiet=True)
        self.write_json(tasks[0])


class FencedAction(OwnershipMixin, APIHandler):
    """Complete/reset/failed: a pilot must hold the task (else 403, whatever instance_id it
    sends, so a non-holder learns nothing of the task's state), and must present the task's
    current instance_id (else 409: the holder's own stale run)."""

    async def held_task(self, task_id: str) -> Doc:
        task = await self.db.tasks.get(task_id)
        await self.check_task_holder(task)
        return task


class CompleteHandler(ClaimMixin, FencedAction):
    @responds("Empty", "ClaimedTasks")
    @requires("pilot", "internal", body=COMPLETE_BODY)
    async def post(self, task_id: str) -> None:
        """Mark a processing task complete (not the caller's pilot's -> 403; stale
        instance_id -> 409). Optional inline `stats` (stored as by `POST
        /tasks/{id}/task_stats`) and `log` (`{stdout, stderr, stdlog}`, each at most 64 KiB;
        bigger logs go through the log routes) make it the one request that finishes a task.
        Dependents whose every dependency is now complete are queued before the answer.
        With `claim: {requirements, max_tasks}` the holding pilot also claims its next tasks
        in the same request (as `POST /task_actions/process` would), answered as
        `{"tasks": [...]}`: one request per task in steady state."""
        task = await self.held_task(task_id)
        b = self.body
        inline_log = check_inline_log(b.get("log") or {})
        if task.get("status") != "processing":
            raise BadTransition(task.get("status"), "complete")
        if task.get("instance_id") != b["instance_id"]:
            raise Conflict("instance_id: stale, the task was handed to another pilot")
        await store_inline(self.db, task, b.get("stats"), inline_log)
        await complete_task(self.db, self.ctx.events, task_id, b["instance_id"],
                            b.get("time_used"), b.get("site"))
        self.ctx.metrics.inc("iceprod_tasks_finished_total", help="tasks finished by outcome",
                             outcome="complete")
        claim = b.get("claim")
        if claim is None:
            self.write_json({})
            return
        # the completion stands whatever the claim answers: a refusal is no tasks
        tasks: list[Doc] = []
        if task.get("pilot_id"):
            tasks, _why = await self.claim_for(task["pilot_id"], claim["requirements"],
                                               claim.get("max_tasks", 1), via="completion")
        if not self.closed:
            self.reply({"tasks": tasks}, "ClaimedTasks")


INLINE_LOG_BYTES = 64 * 1024


def check_inline_log(logs: Doc) -> dict[str, str]:
    """The inline logs of a completion, each within ``INLINE_LOG_BYTES`` (else 413 naming
    it), checked before anything is written."""
    for name, text in logs.items():
        if len(text.encode()) > INLINE_LOG_BYTES:
            raise TooLarge(f"log.{name}: larger than {INLINE_LOG_BYTES} bytes inline; "
                           "upload it through POST /logs")
    return dict(logs)


async def store_inline(db: Database, task: Doc, stats: Doc | None, logs: dict[str, str]
                       ) -> None:
    now = iso()
    for name, text in logs.items():
        await db.logs.create({"log_id": new_id(), "dataset_id": task["dataset_id"],
                              "task_id": task["task_id"], "name": name, "data": text,
                              "timestamp": now})
    if stats is not None:
        await store_run(db, task, stats, now)


class ResetHandler(FencedAction):
    fail = False

    @responds("RunReport")
    @requires("pilot", "internal", body=RESET_BODY)
    async def post(self, task_id: str) -> None:
        """Report a failed run: count it, grow requirements from measured use, and retry the
        task (or fail it past the dataset's max_failures). Stale instance_id -> 409."""
        await self.report(task_id)

    async def report(self, task_id: str) -> None:
        task = await self.held_task(task_id)
        b = self.body
        if b.get("requeue"):
            await self.requeue(task_id)
            return
        dataset = await self.db.datasets.get(task["dataset_id"], keys=["max_failures", "debug"])
        doc = await self.db.tasks.reset(
            task_id, b["instance_id"],
            max_failures=int(dataset.get("max_failures") or self.ctx.config.max_failures),
            time_used=b.get("time_used"), resources=b.get("resources"), site=b.get("site"),
            reason=b.get("reason"), reason_class=classify(b.get("reason")), fail=self.fail,
            debug=bool(dataset.get("debug")),
        )
        events = [task_event(doc, "processing")]
        await rollup_job(self.db, doc["job_id"], events)
        await self.ctx.events.publish(events)
        self.ctx.metrics.inc("iceprod_tasks_finished_total", help="tasks finished by outcome",
                             outcome="failed" if doc["status"] == "failed" else "reset")
        self.ctx.metrics.inc("iceprod_task_failures_total", help="failed runs by reason class",
                             reason_class=doc.get("reason_class", "unknown"))
        self.write_json({"status": doc["status"], "failures": doc.get("failures", 0)})

    async def requeue(self, task_id: str) -> None:
        b = self.body
        doc = await self.db.tasks.requeue(task_id, b["instance_id"],
                                          b.get("reason") or "stopped from outside", b.get("site"))
        await self.ctx.events.publish([task_event(doc, "processing")])
        self.ctx.metrics.inc("iceprod_tasks_finished_total", help="tasks finished by outcome",
                             outcome="requeued")
        self.write_json({"status": doc["status"], "failures": doc.get("failures", 0)})


class FailedHandler(ResetHandler):
    fail = True

    @responds("RunReport")
    @requires("pilot", "internal", body=FAILED_BODY)
    async def post(self, task_id: str) -> None:
        """Report a run that must not be retried: the task goes straight to failed."""
        await self.report(task_id)


class QueueHandler(APIHandler):
    @responds("Queued")
    @requires("internal", body=QUEUE_BODY)
    async def post(self) -> None:
        """Queue up to `num_tasks` waiting tasks whose dependencies are complete, under the
        queue lease the scheduler queues under too, so concurrent queuers never exceed
        `queue_max` (503 when another queuer holds it for more than a few seconds)."""
        cfg = self.ctx.config
        ids: list[str] = []
        given_back: list[Doc] = []
        queued = await queue_exclusively(self.db, f"rest:{new_id()}", cfg.queue_max,
                                         cfg.group_weights, self.body.get("num_tasks", 100),
                                         queued_ids=ids, events=given_back)
        await publish_queued(self.db, self.ctx.events, ids)
        await self.ctx.events.publish(given_back)
        self.write_json({"queued": queued})


D = r"(?P<dataset_id>[0-9a-f]{32})"
T = r"(?P<task_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/tasks", DatasetTasksHandler),
    (rf"/datasets/{D}/tasks/{T}", DatasetTaskHandler),
    (rf"/datasets/{D}/tasks/{T}/status", DatasetTaskStatusHandler),
    (rf"/datasets/{D}/task_summaries/status", TaskSummariesHandler),
    (rf"/datasets/{D}/task_counts/status", TaskCountsHandler),
    (rf"/datasets/{D}/task_counts/name_status", TaskCountsNameHandler),
    (rf"/datasets/{D}/task_actions/bulk_status/(?P<status>\w+)", BulkStatusHandler),
    (rf"/datasets/{D}/task_actions/bulk_requirements/(?P<name>[A-Za-z0-9_.-]+)",
     BulkRequirementsHandler),
    (rf"/datasets/{D}/task_stats", DatasetTaskStatsHandler),
    (r"/tasks", TasksHandler),
    (rf"/tasks/{T}", TaskHandler),
    (rf"/tasks/{T}/status", TaskStatusHandler),
    (rf"/tasks/{T}/task_actions/complete", CompleteHandler),
    (rf"/tasks/{T}/task_actions/reset", ResetHandler),
    (rf"/tasks/{T}/task_actions/failed", FailedHandler),
    (r"/task_actions/queue", QueueHandler),
    (r"/task_actions/process", ProcessHandler),
]

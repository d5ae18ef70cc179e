"""Datasets: submit, read, change status/description/jobs_submitted, summaries by status."""

from __future__ import annotations

from iceprod.common.errors import Forbidden, Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.maintenance import submission_refusal
from iceprod.core.preview import preview_dataset_status
from iceprod.core.projects import project_for_submission
from iceprod.core.taskflow import carry_dataset_status
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.auth.tokens import Principal
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.dryrun import DryRunHandler
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import KEYS, PAGE, STATUS, TEXT, query
from iceprod.rest.responses import responds

MAX_TASKS = 1000
CREATE_BODY = body("datasets_create")
STATUS_BODY = body("dataset_status")
DESCRIPTION_BODY = body("datasets_description")
JOBS_BODY = body("datasets_jobs")
PRIORITY_BODY = body("datasets_priority")


async def visible_ids(h: APIHandler) -> list[str] | None:
    """None when the caller sees every dataset, else the ids its rules allow."""
    p = h.principal
    if p.scope and p.scope.startswith("dataset:"):
        return [p.scope.split(":")[1]]
    if p.privileged:
        return None
    return await h.db.auths.readable(p.username, p.groups)


class DatasetsHandler(APIHandler):
    @responds("DatasetPage")
    @query(**PAGE, status=STATUS, username=TEXT)
    @requires("read:datasets")
    async def get(self) -> None:
        """List the datasets the caller may read (`status=`, `username=`, `keys=`, paged)."""
        status = self.status_arg()
        username = self.get_argument("username", "") or None
        ids = await visible_ids(self)
        await self.list_page(self.db.datasets, lambda paging: self.db.datasets.page(
            paging, status=status, username=username, ids=ids))

    @responds("DatasetCreated")
    @requires("create:datasets", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Submit a dataset; answers its path. Rules: the submitter reads and writes, its
        group reads; `read_groups`/`write_groups` add groups (the caller's own, unless admin
        or system). `project`: one the submitter is a member of (default: its default
        project). All or nothing: a refused request writes nothing. In maintenance: 503
        with the operator's message and `Retry-After`."""
        await submission_refusal(self.db)
        b = self.body
        if b["tasks_submitted"] != b["jobs_submitted"] * b["tasks_per_job"]:
            raise Invalid(
                "tasks_submitted: must equal jobs_submitted * tasks_per_job "
                f"({b['jobs_submitted'] * b['tasks_per_job']})"
            )
        p = self.principal
        if not p.privileged and b["group"] not in p.groups:
            raise Forbidden(f"group: you are not a member of {b['group']!r}")
        rules = initial_rules(p, b)
        project = await project_for_submission(self.db, p, b.get("project"), p.privileged)
        dataset_id = new_id()
        doc = {
            "dataset_id": dataset_id,
            "description": b["description"],
            "group": b["group"],
            "username": p.username,
            "status": "processing",
            "priority": b.get("priority", 0.5),
            "jobs_submitted": b["jobs_submitted"],
            "tasks_submitted": b["tasks_submitted"],
            "tasks_per_job": b["tasks_per_job"],
            "debug": b.get("debug", False),
            "jobs_immutable": b.get("jobs_immutable", False),
            "max_failures": b.get("max_failures", self.ctx.config.max_failures),
            "start_date": iso(),
            "status_changed": iso(),
            "project": project,
            "tags": b.get("tags", []),
        }
        # everything is checked above; the writes follow, and a failing one undoes the rule
        # (the number is the last write that can fail before the document, so a failure
        # there leaves neither a rule nor a document behind)
        doc["dataset"] = await self.db.settings.next_counter("dataset")
        await self.db.auths.set_rules(dataset_id, rules)
        try:
            await self.db.datasets.create(doc)
        except BaseException:
            await self.db.auths.remove(dataset_id)
            raise
        await audit(self, "dataset.create", dataset_id,
                    detail={"description": b["description"], "group": b["group"],
                            "jobs_submitted": b["jobs_submitted"], "rules": rules})
        self.set_header("Location", f"/datasets/{dataset_id}")
        self.write_json({"result": f"/datasets/{dataset_id}", "dataset_id": dataset_id}, 201)


def initial_rules(p: Principal, body: Doc) -> Doc:
    """A new dataset's rules: the submitter reads and writes; the dataset's group reads
    only (group write is explicit); ``read_groups``/``write_groups`` add groups, which must
    be the caller's own unless it is admin or system."""
    extra_read, extra_write = body.get("read_groups", []), body.get("write_groups", [])
    if not p.privileged:
        for field, groups in (("read_groups", extra_read), ("write_groups", extra_write)):
            foreign = sorted(set(groups) - set(p.groups))
            if foreign:
                raise Forbidden(f"{field}: you are not a member of {foreign[0]!r}")
    return {"read_users": [p.username], "write_users": [p.username],
            "read_groups": _unique([body["group"], *extra_read]),
            "write_groups": _unique(extra_write)}


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


class DatasetHandler(APIHandler):
    @responds("Dataset")
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """One dataset."""
        self.write_json(await self.db.datasets.get(dataset_id, self.keys_arg()))


class DatasetStatusHandler(DryRunHandler):
    @responds("TasksChanged", "DryRun")
    @requires("write:datasets", dataset="write", body=STATUS_BODY)
    async def put(self, dataset_id: str) -> None:
        """Change a dataset's status (state machine; illegal -> 409). Suspending suspends its
        unfinished jobs and tasks; resuming sends suspended tasks back to waiting. Answers
        how many tasks changed (`changed`, also as `tasks_changed`); `"dry_run": true`
        answers what would change, changing nothing."""
        status = self.body["status"]
        old = await self.db.datasets.get(dataset_id, keys=["status"])
        if status == "archived" and old["status"] != "archived":
            raise Invalid("status: a dataset is archived through POST /archive, which "
                          "compacts its tasks", field="status")
        if self.dry_run:
            self.write_preview(await preview_dataset_status(self.db, dataset_id, status))
            return
        doc = await self.db.datasets.set_status(dataset_id, status)
        changed = 0
        if status != old["status"]:
            changed = await carry_dataset_status(self.db, self.ctx.events, doc, old["status"])
        await audit(self, "dataset.status", dataset_id, None, {"changed": changed},
                    {"status": status, "previous": old["status"]})
        self.write_json({"changed": changed, "tasks_changed": changed})


class DatasetPriorityHandler(DryRunHandler):
    @responds("Changed", "DryRun")
    @requires("write:datasets", dataset="write", body=PRIORITY_BODY)
    async def put(self, dataset_id: str) -> None:
        """Set a dataset's priority (0..1; the scheduler weighs datasets by it). Answers
        `{"changed": 0|1}`; `"dry_run": true` answers what would change."""
        priority = self.body["priority"]
        old = await self.db.datasets.get(dataset_id, keys=["priority"])
        changed = int(old.get("priority") != priority)
        if self.dry_run:
            self.write_preview({"matched": 1, "changed": changed, "by_status": {},
                                "sample": [dataset_id] if changed else [],
                                "before": {"priority": old.get("priority")},
                                "after": {"priority": priority}})
            return
        await self.db.datasets.set_fields(dataset_id, {"priority": priority})
        await audit(self, "dataset.priority", dataset_id, None, {"changed": changed},
                    {"priority": priority, "previous": old.get("priority")})
        self.write_json({"changed": changed})


class DatasetDescriptionHandler(APIHandler):
    @responds("Empty")
    @requires("write:datasets", dataset="write", body=DESCRIPTION_BODY)
    async def put(self, dataset_id: str) -> None:
        """Change a dataset's description."""
        await self.db.datasets.set_fields(dataset_id, {"description": self.body["description"]})
        await audit(self, "dataset.description", dataset_id, None, {"changed": 1},
                    {"description": self.body["description"]})
        self.write_json({})


class DatasetJobsSubmittedHandler(APIHandler):
    @responds("Empty")
    @requires("write:datasets", dataset="write", body=JOBS_BODY)
    async def put(self, dataset_id: str) -> None:
        """Raise jobs_submitted (it may only grow; refused when jobs_immutable)."""
        await self.db.datasets.grow_jobs(dataset_id, self.body["jobs_submitted"])
        await audit(self, "dataset.jobs_submitted", dataset_id, None, {"changed": 1},
                    {"jobs_submitted": self.body["jobs_submitted"]})
        self.write_json({})


class DatasetSummariesStatusHandler(APIHandler):
    @responds("DatasetSummary")
    @requires("read:datasets")
    async def get(self) -> None:
        """Dataset ids grouped by status: `{status: [dataset_id, ...]}`."""
        self.write_json(await self.db.datasets.ids_by_status(await visible_ids(self)))


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (r"/datasets", DatasetsHandler),
    (rf"/datasets/{D}", DatasetHandler),
    (rf"/datasets/{D}/status", DatasetStatusHandler),
    (rf"/datasets/{D}/priority", DatasetPriorityHandler),
    (rf"/datasets/{D}/description", DatasetDescriptionHandler),
    (rf"/datasets/{D}/jobs_submitted", DatasetJobsSubmittedHandler),
    (r"/dataset_summaries/status", DatasetSummariesStatusHandler),
]

"""Datasets: submit, read, change status/description/jobs_submitted, summaries by status."""

from __future__ import annotations

from iceprod.common.errors import Forbidden, Invalid
from iceprod.common.ids import new_id
from iceprod.common.states import statuses
from iceprod.common.timeutil import iso
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import obj
from iceprod.server.scheduler.rollup import cascade_dataset

CREATE_BODY = obj(
    ["description", "jobs_submitted", "tasks_submitted", "tasks_per_job", "group"],
    description={"type": "string", "maxLength": 10000, "description": "what this dataset is"},
    jobs_submitted={"type": "integer", "minimum": 1, "maximum": 100_000_000},
    tasks_submitted={"type": "integer", "minimum": 1},
    tasks_per_job={"type": "integer", "minimum": 1, "maximum": 1000},
    group={"type": "string", "minLength": 1, "description": "the submitting group"},
    priority={"type": "number", "minimum": 0, "maximum": 1, "description": "0..1, default 0.5"},
    debug={"type": "boolean", "description": "suspend failing tasks instead of retrying"},
    jobs_immutable={"type": "boolean", "description": "forbid growing jobs_submitted"},
    max_failures={"type": "integer", "minimum": 1, "description": "retries before failed"},
)
STATUS_BODY = obj(["status"], status={"type": "string", "enum": statuses("dataset")})
DESCRIPTION_BODY = obj(["description"], description={"type": "string", "maxLength": 10000})
JOBS_BODY = obj(["jobs_submitted"], jobs_submitted={"type": "integer", "minimum": 1})


async def visible_ids(h: APIHandler) -> list[str] | None:
    """None when the caller sees every dataset, else the ids its rules allow."""
    p = h.principal
    if p.scope and p.scope.startswith("dataset:"):
        return [p.scope.split(":")[1]]
    if p.privileged:
        return None
    return await h.db.auths.readable(p.username, p.groups)


class DatasetsHandler(APIHandler):
    @requires("read:datasets")
    async def get(self) -> None:
        """List the datasets the caller may read (`status=`, `username=`, `keys=`, paged)."""
        query: dict = {}
        if status := self.status_arg():
            query["status"] = {"$in": status}
        if username := self.get_argument("username", ""):
            query["username"] = username
        ids = await visible_ids(self)
        if ids is not None:
            query["dataset_id"] = {"$in": ids}
        await self.list_page(self.db.datasets, query)

    @requires("create:datasets", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Submit a dataset; answers its path and sets default read/write rules."""
        b = self.body
        if b["tasks_submitted"] != b["jobs_submitted"] * b["tasks_per_job"]:
            raise Invalid(
                "tasks_submitted: must equal jobs_submitted * tasks_per_job "
                f"({b['jobs_submitted'] * b['tasks_per_job']})"
            )
        p = self.principal
        if not p.privileged and b["group"] not in p.groups:
            raise Forbidden(f"group: you are not a member of {b['group']!r}")
        dataset_id = new_id()
        doc = {
            "dataset_id": dataset_id,
            "dataset": await self.db.settings.next_counter("dataset"),
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
        }
        await self.db.auths.set_rules(
            dataset_id,
            {"read_users": [p.username], "write_users": [p.username],
             "read_groups": [b["group"]], "write_groups": []},
        )
        await self.db.datasets.create(doc)
        self.set_header("Location", f"/datasets/{dataset_id}")
        self.write_json({"result": f"/datasets/{dataset_id}", "dataset_id": dataset_id}, 201)

class DatasetHandler(APIHandler):
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """One dataset."""
        self.write_json(await self.db.datasets.get(dataset_id, self.keys_arg()))


class DatasetStatusHandler(APIHandler):
    @requires("write:datasets", dataset="write", body=STATUS_BODY)
    async def put(self, dataset_id: str) -> None:
        """Change a dataset's status (state machine; illegal -> 409). Suspending suspends its
        unfinished jobs and tasks; resuming sends suspended tasks back to waiting."""
        old = await self.db.datasets.get(dataset_id, keys=["status"])
        status = self.body["status"]
        await self.db.datasets.set_status(dataset_id, status)
        changed = 0
        if status != old["status"]:
            changed = await cascade_dataset(self.db, dataset_id, status)
        self.write_json({"tasks_changed": changed})


class DatasetDescriptionHandler(APIHandler):
    @requires("write:datasets", dataset="write", body=DESCRIPTION_BODY)
    async def put(self, dataset_id: str) -> None:
        """Change a dataset's description."""
        await self.db.datasets.set_fields(dataset_id, {"description": self.body["description"]})
        self.write_json({})


class DatasetJobsSubmittedHandler(APIHandler):
    @requires("write:datasets", dataset="write", body=JOBS_BODY)
    async def put(self, dataset_id: str) -> None:
        """Raise jobs_submitted (it may only grow; refused when jobs_immutable)."""
        await self.db.datasets.grow_jobs(dataset_id, self.body["jobs_submitted"])
        self.write_json({})


class DatasetSummariesStatusHandler(APIHandler):
    @requires("read:datasets")
    async def get(self) -> None:
        """Dataset ids grouped by status: `{status: [dataset_id, ...]}`."""
        self.write_json(await self.db.datasets.ids_by_status(await visible_ids(self)))


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (r"/datasets", DatasetsHandler),
    (rf"/datasets/{D}", DatasetHandler),
    (rf"/datasets/{D}/status", DatasetStatusHandler),
    (rf"/datasets/{D}/description", DatasetDescriptionHandler),
    (rf"/datasets/{D}/jobs_submitted", DatasetJobsSubmittedHandler),
    (r"/dataset_summaries/status", DatasetSummariesStatusHandler),
]

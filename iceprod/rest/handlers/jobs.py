"""Jobs: per-dataset listing, status, counts and summaries; internal create/get/patch."""

from __future__ import annotations

from typing import Any

from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.events import job_event
from iceprod.core.rollup import cascade_job
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import MAX_INDEX, body
from iceprod.rest.openapi import INDEX, KEYS, PAGE, STATUS, query

STATUS_BODY = body("job_status")
CREATE_BODY = body("jobs_create")
PATCH_BODY = body("jobs_patch")


class DatasetJobsHandler(APIHandler):
    @query(**PAGE, status=STATUS, job_index=INDEX)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's jobs as `{job_id: job}` (`status=`, `job_index=`, `keys=`, paged)."""
        query: dict[str, Any] = {"dataset_id": dataset_id}
        if status := self.status_arg():
            query["status"] = {"$in": status}
        if (idx := self.int_arg("job_index", maximum=MAX_INDEX)) is not None:
            query["job_index"] = idx
        await self.list_page(self.db.jobs, query)


class DatasetJobHandler(APIHandler):
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, job_id: str) -> None:
        """One job of a dataset."""
        job = await self.db.jobs.get_in(job_id, {"dataset_id": dataset_id}, self.keys_arg())
        self.write_json(job)


class DatasetJobStatusHandler(APIHandler):
    @requires("write:datasets", dataset="write", body=STATUS_BODY)
    async def put(self, dataset_id: str, job_id: str) -> None:
        """Set a job's status (state machine; illegal -> 409)."""
        status = self.body["status"]
        old = await self.db.jobs.get(job_id, keys=["status", "dataset_id"])
        job = await self.db.jobs.set_status(job_id, status, dataset_id=dataset_id)
        changed = 0
        if status != old["status"]:
            changed = await cascade_job(self.db, job, status)
            await self.ctx.events.publish([job_event(job, status, old["status"],
                                                     job.get("status_changed", ""))])
        self.write_json({"tasks_changed": changed})


class JobSummariesHandler(APIHandler):
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Job ids grouped by status: `{status: [job_id, ...]}`."""
        self.write_json(await self.db.jobs.ids_by_status(dataset_id))


class JobCountsHandler(APIHandler):
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Job counts by status: `{status: n}`."""
        self.write_json(await self.db.jobs.counts_by_status(dataset_id))


class JobsHandler(APIHandler):
    @requires("internal", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Create a job (internal)."""
        await self.db.datasets.get(self.body["dataset_id"], keys=["status"])
        job_id = new_id()
        await self.db.jobs.create({
            "job_id": job_id,
            "dataset_id": self.body["dataset_id"],
            "job_index": self.body["job_index"],
            "status": self.body.get("status", "processing"),
            "status_changed": iso(),
        })
        self.write_json({"result": job_id}, 201)


class JobHandler(APIHandler):
    @query(keys=KEYS)
    @requires("internal")
    async def get(self, job_id: str) -> None:
        """One job (internal)."""
        self.write_json(await self.db.jobs.get(job_id, self.keys_arg()))

    @requires("internal", body=PATCH_BODY)
    async def patch(self, job_id: str) -> None:
        """Update a job (internal); a status change follows the state machine."""
        self.write_json(await self.db.jobs.patch(job_id, self.body))


D = r"(?P<dataset_id>[0-9a-f]{32})"
J = r"(?P<job_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/jobs", DatasetJobsHandler),
    (rf"/datasets/{D}/jobs/{J}", DatasetJobHandler),
    (rf"/datasets/{D}/jobs/{J}/status", DatasetJobStatusHandler),
    (rf"/datasets/{D}/job_summaries/status", JobSummariesHandler),
    (rf"/datasets/{D}/job_counts/status", JobCountsHandler),
    (r"/jobs", JobsHandler),
    (rf"/jobs/{J}", JobHandler),
]

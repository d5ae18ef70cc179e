"""Jobs: per-dataset listing, status, counts and summaries; internal create/get/patch."""

from __future__ import annotations

from iceprod.common.errors import Invalid
from iceprod.common.ids import new_id
from iceprod.common.schema import validate
from iceprod.common.timeutil import iso
from iceprod.core.events import job_event
from iceprod.core.job_actions import preview_jobs_status, set_jobs_status
from iceprod.core.preview import preview_job_status
from iceprod.core.rollup import cascade_job
from iceprod.db.store import Doc
from iceprod.rest.audit import audit, selection_record
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.dryrun import DryRunHandler
from iceprod.rest.handlers.schemas import MAX_INDEX, body
from iceprod.rest.openapi import INDEX, KEYS, PAGE, STATUS, query
from iceprod.rest.responses import responds

STATUS_BODY = body("job_status")
CREATE_BODY = body("jobs_create")
PATCH_BODY = body("jobs_patch")
BULK_STATUS_BODY = body("jobs_bulk_status")


class DatasetJobsHandler(APIHandler):
    @responds("JobPage")
    @query(**PAGE, status=STATUS, job_index=INDEX)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's jobs as `{job_id: job}` (`status=`, `job_index=`, `keys=`, paged)."""
        status = self.status_arg()
        idx = self.int_arg("job_index", maximum=MAX_INDEX)
        await self.list_page(self.db.jobs, lambda paging: self.db.jobs.page(
            paging, dataset_id=dataset_id, status=status, job_index=idx))


class DatasetJobHandler(APIHandler):
    @responds("Job")
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, job_id: str) -> None:
        """One job of a dataset."""
        job = await self.db.jobs.get_in(job_id, dataset_id, self.keys_arg())
        self.write_json(job)


class DatasetJobStatusHandler(DryRunHandler):
    @responds("TasksChanged", "DryRun")
    @requires("write:datasets", dataset="write", body=STATUS_BODY)
    async def put(self, dataset_id: str, job_id: str) -> None:
        """Set a job's status (state machine; illegal -> 409); suspending or resuming
        carries to its tasks. Answers how many tasks changed (`changed`, also as
        `tasks_changed`); `"dry_run": true` answers what would change, changing nothing."""
        status = self.body["status"]
        if self.dry_run:
            self.write_preview(await preview_job_status(self.db, dataset_id, job_id, status))
            return
        old = await self.db.jobs.get_in(job_id, dataset_id,
                                        keys=["status", "dataset_id"])
        job = await self.db.jobs.set_status(job_id, status, dataset_id=dataset_id)
        changed = 0
        if status != old["status"]:
            events = [job_event(job, status, old["status"], job.get("status_changed", ""))]
            changed = await cascade_job(self.db, job, status, events)
            await self.ctx.events.publish(events)
        await audit(self, "job.status", dataset_id, {"jobs": [job_id]}, {"changed": changed},
                    {"status": status, "previous": old["status"]})
        self.write_json({"changed": changed, "tasks_changed": changed})


class JobBulkStatusHandler(DryRunHandler):
    def parse_body(self, schema: Doc) -> Doc:
        data = self.raw_body()
        if isinstance(data, dict) and "jobs" not in data:
            raise Invalid("jobs: give the ids of the jobs to change", field="jobs")
        validate(data, schema)
        return data  # type: ignore[no-any-return]

    @responds("TasksChanged", "DryRun")
    @requires("write:datasets", dataset="write", body=BULK_STATUS_BODY)
    async def post(self, dataset_id: str, status: str) -> None:
        """Set a status on the listed jobs (`{"jobs": [ids]}`; an empty list is a 400):
        those the state machine does not allow are left alone; suspending or resuming
        carries to their tasks. Answers `{"changed": jobs, "tasks_changed": n}`;
        `"dry_run": true` answers what would change (over the jobs), changing nothing."""
        if status not in ("processing", "suspended", "errors", "complete"):
            raise Invalid(f"status: not a job status: {status!r}", field="status")
        jobs = self.body["jobs"]
        if self.dry_run:
            self.write_preview(await preview_jobs_status(self.db, dataset_id, status, jobs))
            return
        events: list[Doc] = []
        result = await set_jobs_status(self.db, dataset_id, status, jobs, events)
        await self.ctx.events.publish(events)
        await audit(self, "jobs.bulk_status", dataset_id, selection_record(self.body),
                    result, {"status": status})
        self.write_json(result)


class JobSummariesHandler(APIHandler):
    @responds("DatasetSummary")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Job ids grouped by status: `{status: [job_id, ...]}`."""
        self.write_json(await self.db.jobs.ids_by_status(dataset_id))


class JobCountsHandler(APIHandler):
    @responds("StatusCounts")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Job counts by status: `{status: n}`."""
        self.write_json(await self.db.jobs.counts_by_status(dataset_id))


class JobsHandler(APIHandler):
    @responds("Created")
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
    @responds("Job")
    @query(keys=KEYS)
    @requires("internal")
    async def get(self, job_id: str) -> None:
        """One job (internal)."""
        self.write_json(await self.db.jobs.get(job_id, self.keys_arg()))

    @responds("Job")
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
    (rf"/datasets/{D}/job_actions/bulk_status/(?P<status>\w+)", JobBulkStatusHandler),
    (rf"/datasets/{D}/job_summaries/status", JobSummariesHandler),
    (rf"/datasets/{D}/job_counts/status", JobCountsHandler),
    (r"/jobs", JobsHandler),
    (rf"/jobs/{J}", JobHandler),
]

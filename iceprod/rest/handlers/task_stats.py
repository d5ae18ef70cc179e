"""Task stats: records of measured use per run, read per task, written by pilots."""

from __future__ import annotations

import json

from iceprod.common import strict_json
from iceprod.common.errors import Invalid
from iceprod.common.schema import validate
from iceprod.core.usage import store_run
from iceprod.db.base import Paging
from iceprod.db.store import Doc
from iceprod.rest.base import APIHandler, OwnershipMixin, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import FLAG, KEYS, PAGE, query
from iceprod.rest.responses import responds

CREATE_BODY = body("task_stats_create")


class DatasetTaskStatsListHandler(APIHandler):
    @responds("TaskStatPage")
    @query(**PAGE, last=FLAG)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str) -> None:
        """A task's stats records as `{task_stat_id: record}` (paged; `last=true` gives the
        newest only)."""
        if self.get_argument("last", "false").lower() == "true":
            docs = await self.db.task_stats.latest(dataset_id, task_id, self.keys_arg())
            self.write_page(docs, "task_stat_id", None)
            return
        await self.list_page(self.db.task_stats, lambda paging: self.db.task_stats.page(
            paging, dataset_id=dataset_id, task_id=task_id))


class DatasetTaskStatHandler(APIHandler):
    @responds("TaskStat")
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str, task_stat_id: str) -> None:
        """One stats record."""
        doc = await self.db.task_stats.get_of_task(
            task_stat_id, dataset_id, task_id, self.keys_arg())
        self.write_json(doc)


class TaskStatsCreateHandler(OwnershipMixin, APIHandler):
    def parse_body(self, schema: Doc) -> Doc:
        raw = self.request.body
        data = strict_json.loads(raw) if raw else {}
        if isinstance(data, dict) and "stats" in data and "dataset_id" not in data:
            raise Invalid("dataset_id: required with stats (or post the stats dict itself, "
                          "as IceProd's pilots do)", field="dataset_id")
        validate(data, schema)
        return data  # type: ignore[no-any-return]

    @responds("Created")
    @requires("pilot", "internal", body=CREATE_BODY, created=True)
    async def post(self, task_id: str) -> None:
        """Store a stats record for a task (a pilot only for tasks it holds). The body is
        ours, `{"dataset_id", "stats": {...}}`, or IceProd's flat one, the stats dict
        itself (a `dataset_id` in it must be the task's)."""
        task = await self.db.tasks.get(task_id, keys=["dataset_id", "pilot_id", "name"])
        if "stats" in self.body:
            stats = self.body["stats"]
        else:
            stats = {k: v for k, v in self.body.items() if k != "dataset_id"}
        if task["dataset_id"] != self.body.get("dataset_id", task["dataset_id"]):
            raise Invalid("dataset_id: the task belongs to another dataset")
        if not self.principal.has("internal"):
            await self.check_task_holder(task)
        stat_id = await store_run(self.db, {**task, "task_id": task_id}, stats)
        self.write_json({"result": stat_id}, 201)


class DatasetTaskStatsExportHandler(APIHandler):
    PAGE = 1000

    @responds(media="application/x-ndjson")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Every stats record of the dataset as NDJSON (one JSON document per line), in id
        order, streamed a page at a time (IceProd v2.7's bulk export)."""
        self.set_header("Content-Type", "application/x-ndjson")
        after: str | None = None
        while True:
            page = await self.db.task_stats.page(Paging(None, self.PAGE, after),
                                                 dataset_id=dataset_id)
            if page.docs:
                self.write("".join(json.dumps(d) + "\n" for d in page.docs))
                await self.flush()
            if page.next_after is None:
                break
            after = page.next_after
        self.finish()


D = r"(?P<dataset_id>[0-9a-f]{32})"
T = r"(?P<task_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/tasks/{T}/task_stats", DatasetTaskStatsListHandler),
    (rf"/datasets/{D}/tasks/{T}/task_stats/(?P<task_stat_id>[0-9a-f]{{32}})",
     DatasetTaskStatHandler),
    (rf"/tasks/{T}/task_stats", TaskStatsCreateHandler),
    (rf"/datasets/{D}/bulk/task_stats", DatasetTaskStatsExportHandler),
]

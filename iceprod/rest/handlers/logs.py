"""Logs: stdout/stderr/stdlog and other named texts of a task, up to a size limit."""

from __future__ import annotations

from iceprod.common.errors import Invalid, TooLarge
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.rest.base import APIHandler, OwnershipMixin, requires
from iceprod.rest.handlers.schemas import MAX_LOGS, body
from iceprod.rest.openapi import FLAG, KEYS, NUM, ORDER, query
from iceprod.rest.responses import responds

DATASET_LOG_BODY = body("logs_dataset_log")
LOG_BODY = body("logs_log")


class LogWriter(OwnershipMixin, APIHandler):
    async def store(self, dataset_id: str | None, task_id: str | None) -> None:
        data = self.body["data"]
        limit = self.ctx.config.max_log_bytes
        if len(data) > limit or len(data.encode()) > limit:
            raise TooLarge(f"data: log larger than the limit of {limit} bytes")
        log_id = new_id()
        await self.db.logs.create({
            "log_id": log_id, "dataset_id": dataset_id, "task_id": task_id,
            "name": self.body["name"], "data": data, "timestamp": iso(),
        })
        self.write_json({"result": log_id}, 201)


class DatasetLogsHandler(LogWriter):
    @responds("Created")
    @requires("write:datasets", dataset="write", body=DATASET_LOG_BODY, created=True)
    async def post(self, dataset_id: str) -> None:
        """Attach a log to a dataset (or one of its tasks)."""
        task_id = self.body.get("task_id")
        if task_id:
            task = await self.db.tasks.get(task_id, keys=["dataset_id"])
            if task["dataset_id"] != dataset_id:
                raise Invalid("task_id: the task belongs to another dataset")
        await self.store(dataset_id, task_id)


class DatasetLogHandler(APIHandler):
    @responds("Log")
    @query(keys=KEYS)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, log_id: str) -> None:
        """One log of a dataset."""
        doc = await self.db.logs.get_in(log_id, dataset_id, self.keys_arg())
        self.write_json(doc)


class DatasetTaskLogsHandler(APIHandler):
    @responds("LogPage")
    @query(keys=KEYS, num=NUM, group=FLAG, order=ORDER)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str) -> None:
        """A task's logs as `{log_id: log}`: `num=N`, `group=true` (newest per name),
        `order=asc|desc`, `keys=`."""
        order = self.get_argument("order", "asc")
        if order not in ("asc", "desc"):
            raise Invalid("order: must be asc or desc")
        docs = await self.db.logs.for_task(
            dataset_id, task_id, self.int_arg("num", minimum=1, maximum=MAX_LOGS),
            self.get_argument("group", "false").lower() == "true", order == "desc",
            self.keys_arg(),
        )
        self.write_page(docs, "log_id", None)


class LogsHandler(LogWriter):
    @responds("Created")
    @requires("pilot", "internal", body=LOG_BODY, created=True)
    async def post(self) -> None:
        """Store a log (internal; a pilot only for the tasks it holds)."""
        dataset_id = self.body.get("dataset_id")
        task_id = self.body.get("task_id")
        if task_id:
            task = await self.db.tasks.get(task_id, keys=["dataset_id", "pilot_id"])
            if dataset_id and task["dataset_id"] != dataset_id:
                raise Invalid("dataset_id: the task belongs to another dataset")
            dataset_id = task["dataset_id"]
            if not self.principal.has("internal"):
                await self.check_task_holder(task)
        elif not self.principal.has("internal"):
            raise Invalid("task_id: a pilot's log must name its task")
        await self.store(dataset_id, task_id)


class LogHandler(APIHandler):
    @responds("Log")
    @query(keys=KEYS)
    @requires("internal")
    async def get(self, log_id: str) -> None:
        """One log (internal)."""
        self.write_json(await self.db.logs.get(log_id, self.keys_arg()))


D = r"(?P<dataset_id>[0-9a-f]{32})"
L = r"(?P<log_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/logs", DatasetLogsHandler),
    (rf"/datasets/{D}/logs/{L}", DatasetLogHandler),
    (rf"/datasets/{D}/tasks/(?P<task_id>[0-9a-f]{{32}})/logs", DatasetTaskLogsHandler),
    (r"/logs", LogsHandler),
    (rf"/logs/{L}", LogHandler),
]

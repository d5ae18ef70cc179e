"""Why isn't my task running? `GET /tasks/{id}/explain` and `GET /datasets/{id}/explain`
answer in plain words with the data behind them (see ``iceprod.core.explain``), for whoever
may read the dataset."""

from __future__ import annotations

from iceprod.core.explain import explain_dataset, explain_task
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.responses import responds


class TaskExplainHandler(APIHandler):
    @responds("TaskExplanation")
    @requires("read:datasets")
    async def get(self, task_id: str) -> None:
        """Why the task is (not) running: `{task_id, status, summary, blockers: [{kind,
        message, ...data}]}`; kinds: dependency, suspended, quota, queue, resources, drained,
        maintenance, failures."""
        found = await self.db.tasks.get(task_id, ["task_id", "dataset_id"])
        await self.authorize_dataset(found["dataset_id"], "read")
        c = self.ctx.config
        self.write_json(await explain_task(self.db, task_id, c.queue_max, c.max_failures))


class DatasetExplainHandler(APIHandler):
    @responds("DatasetExplanation")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """Why the dataset's tasks are (not) running, per task name and status: `{dataset_id,
        status, summary, blockers, blocker_counts, tasks: [{name, status, count,
        example_task_id, summary, blockers}]}`."""
        c = self.ctx.config
        self.write_json(await explain_dataset(self.db, dataset_id, c.queue_max,
                                              c.max_failures))


routes = [
    (r"/tasks/(?P<task_id>[0-9a-f]{32})/explain", TaskExplainHandler),
    (r"/datasets/(?P<dataset_id>[0-9a-f]{32})/explain", DatasetExplainHandler),
]

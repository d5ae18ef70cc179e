"""Dataset configs: read and replace, validated against the dataset config schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from iceprod.common.configcheck import ConfigError, check_text
from iceprod.common.errors import Forbidden, Invalid, NotFound
from iceprod.common.schema import load_schema, validate_dataset_config
from iceprod.core.keys import foreign_task_index
from iceprod.core.taskflow import materialize_now
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds

CHECK_BODY = body("config_check")


class ConfigHandler(APIHandler):
    @responds("DatasetConfig")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's config."""
        self.write_json(await self.db.config.get_config(dataset_id))

    @responds("Empty")
    @requires("write:datasets", dataset="write", body=load_schema("dataset_config"))
    async def put(self, dataset_id: str) -> None:
        """Create or replace a dataset's config (schema-checked; errors name the field).
        The config's `options` (max_failures, debug) apply to the dataset. A processing
        dataset's first batch of jobs is materialized and queued before the answer."""
        validate_dataset_config(self.body)
        dataset = await self.db.datasets.get(dataset_id, keys=["tasks_per_job"])
        n = len(self.body["tasks"])
        if n != dataset["tasks_per_job"]:
            raise Invalid(
                f"tasks: the dataset has tasks_per_job={dataset['tasks_per_job']} "
                f"but the config defines {n} task(s)"
            )
        await check_foreign_depends(self.db, dataset_id, self.body, self.may_read)
        await self.db.config.put(dataset_id, self.body)
        options = self.body.get("options") or {}
        settings = {k: options[k] for k in ("max_failures", "debug") if k in options}
        if settings:
            await self.db.datasets.set_fields(dataset_id, settings)
        await audit(self, "dataset.config", dataset_id,
                    detail={"tasks": [t.get("name") for t in self.body["tasks"]], **settings})
        # the first batch now, not at the scheduler's next round (issue 13)
        c = self.ctx.config
        if c.materialize_on_put:
            await materialize_now(self.db, self.ctx.events, dataset_id, c.materialize_buffer,
                                  c.materialize_batch, c.queue_max, c.group_weights)
        self.write_json({})

    async def may_read(self, dataset_id: str) -> bool:
        try:
            await self.authorize_dataset(dataset_id, "read")
        except (Forbidden, NotFound):
            return False
        return True


async def check_foreign_depends(db: Database, dataset_id: str, config: Doc,
                                may_read: Callable[[str], Awaitable[bool]]) -> None:
    """``"<dataset_id>:<name>"`` must name a task of another dataset's config that the
    caller may read. One it may not read answers exactly like one that does not exist, so
    the answer tells nothing about other users' datasets or their task names."""
    for i, task in enumerate(config["tasks"]):
        for k, dep in enumerate(task.get("depends", [])):
            if isinstance(dep, str) and ":" in dep:
                other, name = dep.split(":", 1)
                if other == dataset_id:
                    raise Invalid(f"tasks[{i}].depends[{k}]: name tasks of this dataset "
                                  "without a dataset id")
                try:
                    if not await may_read(other):
                        # the words foreign_task_index uses for a dataset without a config
                        # (a test compares the two answers)
                        raise Invalid(f"depends: dataset {other} has no config")
                    await foreign_task_index(db, other, name)
                except Invalid as e:
                    raise Invalid(f"tasks[{i}].depends[{k}]: {e.message.split(': ', 1)[1]}"
                                  ) from None


class ConfigCheckHandler(APIHandler):
    @responds("ConfigCheck")
    @requires("create:datasets", body=CHECK_BODY)
    async def post(self) -> None:
        """Check a config's text with the schema and cross-checks a submission applies,
        creating nothing: `{"valid": true, "tasks": n}` or `{"valid": false, "problems":
        [{field, message, line, column}]}` (line and column 1-based, of the field in the
        text; null when not found). What the dashboard's submit page shows before it
        creates a dataset."""
        try:
            config = check_text(self.body["text"])
        except ConfigError as e:
            self.write_json({"valid": False, "problems": [
                {"field": p.field, "message": p.message, "line": p.line, "column": p.column}
                for p in e.problems]})
            return
        self.write_json({"valid": True, "tasks": len(config.get("tasks", []))})


routes = [
    (r"/config/(?P<dataset_id>[0-9a-f]{32})", ConfigHandler),
    (r"/config_check", ConfigCheckHandler),
]

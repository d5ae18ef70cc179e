"""Dataset configs: read and replace, validated against the dataset config schema."""

from __future__ import annotations

from iceprod.common.errors import Invalid
from iceprod.common.schema import load_schema, validate_dataset_config
from iceprod.rest.base import APIHandler, requires


class ConfigHandler(APIHandler):
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's config."""
        self.write_json(await self.db.config.get_config(dataset_id))

    @requires("write:datasets", dataset="write", body=load_schema("dataset_config"))
    async def put(self, dataset_id: str) -> None:
        """Create or replace a dataset's config (schema-checked; errors name the field)."""
        validate_dataset_config(self.body)
        dataset = await self.db.datasets.get(dataset_id, keys=["tasks_per_job"])
        n = len(self.body["tasks"])
        if n != dataset["tasks_per_job"]:
            raise Invalid(
                f"tasks: the dataset has tasks_per_job={dataset['tasks_per_job']} "
                f"but the config defines {n} task(s)"
            )
        await self.db.config.put(dataset_id, self.body)
        self.write_json({})


routes = [(r"/config/(?P<dataset_id>[0-9a-f]{32})", ConfigHandler)]

"""Dataset configs: one document per dataset holding the validated config."""

from __future__ import annotations

from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc


class ConfigRepo(Repository):
    spec = CollectionSpec(name="config", id_field="dataset_id")
    kind = "config"

    async def get_config(self, dataset_id: str) -> Doc:
        doc = await self.get(dataset_id)
        return doc["config"]

    async def put(self, dataset_id: str, config: Doc) -> None:
        updated = await self.coll.update_one(
            {"dataset_id": dataset_id}, {"$set": {"config": config, "updated": iso()}}
        )
        if updated is None:
            await self.coll.insert_many(
                [{"dataset_id": dataset_id, "config": config, "updated": iso()}],
                skip_duplicates=True,
            )
            await self.coll.update_one(
                {"dataset_id": dataset_id}, {"$set": {"config": config, "updated": iso()}}
            )

    async def task_names(self, dataset_id: str) -> set[str]:
        """The task names a dataset's config declares (none without a config)."""
        doc = await self.find(dataset_id)
        tasks = (doc or {}).get("config", {}).get("tasks", [])
        return {t["name"] for t in tasks if isinstance(t, dict) and "name" in t}

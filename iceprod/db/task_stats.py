"""Task stats: measured walltime, cpu, memory, exit codes and the like, one record per run."""

from __future__ import annotations

from iceprod.db.base import ALL, Page, Paging, Repository, where
from iceprod.db.store import CollectionSpec, Doc, Index


class TaskStatsRepo(Repository):
    spec = CollectionSpec(
        name="task_stats",
        id_field="task_stat_id",
        columns={"task_id": "TEXT", "dataset_id": "TEXT", "create_date": "TEXT"},
        indexes=(
            Index((("task_id", 1), ("create_date", 1))),
            Index((("dataset_id", 1),)),
        ),
    )
    kind = "task_stat"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def page(self, paging: Paging = ALL, *, dataset_id: str,
                   task_id: str | None = None) -> Page:
        """One page of a dataset's records (of one task when given)."""
        return await self._page(where(dataset_id=dataset_id, task_id=task_id), paging)

    async def get_of_task(self, task_stat_id: str, dataset_id: str, task_id: str,
                          keys: list[str] | None = None) -> Doc:
        """A record by id that must belong to this dataset's task."""
        return await self._get_where(task_stat_id, {"dataset_id": dataset_id,
                                                    "task_id": task_id}, keys)

    async def latest(self, dataset_id: str, task_id: str, keys: list[str] | None = None
                     ) -> list[Doc]:
        """The newest record of a task, as a one-element list (empty when none)."""
        return await self.coll.find(
            {"dataset_id": dataset_id, "task_id": task_id}, keys,
            sort=[("create_date", -1)], limit=1,
        )

    async def of_dataset(self, dataset_id: str) -> list[Doc]:
        """Every record of a dataset's runs (task, measured use, outcome, reason)."""
        return await self.coll.find({"dataset_id": dataset_id},
                                    keys=["task_id", "create_date", "stats"])

"""Dataset files: inputs and outputs declared for a dataset or one of its tasks.

A file registered for a task by its job index and name before the task existed carries
``task_id: None`` with ``job_index`` and ``task_name``; it belongs to the task with that job
index and name (``task_files_filter``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.db.base import ALL, Page, Paging, Repository
from iceprod.db.store import CollectionSpec, Doc, Index


def task_files_filter(dataset_id: str, task_id: str, job_index: int | None = None,
                      task_name: str | None = None) -> dict[str, Any]:
    """A task's files: registered with its id, or (given its job index and name) by them."""
    if job_index is None or task_name is None:
        return {"dataset_id": dataset_id, "task_id": task_id}
    return {"dataset_id": dataset_id, "$or": [
        {"task_id": task_id},
        {"task_id": None, "job_index": job_index, "task_name": task_name}]}


class FilesRepo(Repository):
    spec = CollectionSpec(
        name="files",
        id_field="file_id",
        columns={"dataset_id": "TEXT", "task_id": "TEXT"},
        indexes=(Index((("dataset_id", 1), ("task_id", 1))),),
        scalar_fields=frozenset({"job_index", "task_name"}),
    )
    kind = "file"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def for_task(self, dataset_id: str, task_id: str, job_index: int | None = None,
                       task_name: str | None = None, keys: Sequence[str] | None = None,
                       limit: int | None = None, after: str | None = None) -> Page:
        """One page of a task's files (see ``task_files_filter``)."""
        return await self._page(task_files_filter(dataset_id, task_id, job_index, task_name),
                                Paging(keys, limit, after))

    async def of_dataset(self, dataset_id: str, paging: Paging = ALL) -> Page:
        """One page of a dataset's files (its own and its tasks')."""
        return await self._page({"dataset_id": dataset_id}, paging)

    async def delete_for_task(self, dataset_id: str, task_id: str,
                              job_index: int | None = None,
                              task_name: str | None = None) -> int:
        """Remove a task's files (see ``task_files_filter``); answers how many."""
        return await self.coll.delete_many(
            task_files_filter(dataset_id, task_id, job_index, task_name))

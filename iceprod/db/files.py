"""Dataset files: inputs and outputs declared for a dataset or one of its tasks."""

from __future__ import annotations

from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc, Index


class FilesRepo(Repository):
    spec = CollectionSpec(
        name="files",
        id_field="file_id",
        columns={"dataset_id": "TEXT", "task_id": "TEXT"},
        indexes=(Index((("dataset_id", 1), ("task_id", 1))),),
    )
    kind = "file"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def delete_for_task(self, dataset_id: str, task_id: str) -> int:
        return await self.coll.delete_many({"dataset_id": dataset_id, "task_id": task_id})

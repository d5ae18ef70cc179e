"""Dataset files: the inputs and outputs registered for a dataset or a task."""

from __future__ import annotations

from iceprod.common.errors import Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import PAGE, query

DATASET_FILE_BODY = body("files_dataset_file")
TASK_FILE_BODY = body("files_task_file")


class FileWriter(APIHandler):
    async def add(self, dataset_id: str, task_id: str | None) -> None:
        if task_id:
            task = await self.db.tasks.get(task_id, keys=["dataset_id"])
            if task["dataset_id"] != dataset_id:
                raise Invalid("task_id: the task belongs to another dataset")
        file_id = new_id()
        doc = {
            "movement": "input", "local": self.body["remote"].rstrip("/").rsplit("/", 1)[-1],
            **self.body, "file_id": file_id, "dataset_id": dataset_id, "task_id": task_id,
            "create_date": iso(),
        }
        await self.db.files.create(doc)
        self.write_json({"result": file_id}, 201)


class DatasetFilesHandler(FileWriter):
    @query(**PAGE)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's files as `{file_id: file}` (paged)."""
        await self.list_page(self.db.files, {"dataset_id": dataset_id})

    @requires("write:datasets", dataset="write", body=DATASET_FILE_BODY, created=True)
    async def post(self, dataset_id: str) -> None:
        """Register a file for a dataset (optionally for a task, by id)."""
        await self.add(dataset_id, self.body.pop("task_id", None))


class TaskFilesHandler(FileWriter):
    @query(**PAGE)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str) -> None:
        """A task's files as `{file_id: file}` (paged)."""
        await self.list_page(self.db.files, {"dataset_id": dataset_id, "task_id": task_id})

    @requires("write:datasets", dataset="write", body=TASK_FILE_BODY, created=True)
    async def post(self, dataset_id: str, task_id: str) -> None:
        """Register a file for a task."""
        await self.add(dataset_id, task_id)

    @requires("write:datasets", dataset="write")
    async def delete(self, dataset_id: str, task_id: str) -> None:
        """Remove every file registered for a task."""
        removed = await self.db.files.delete_for_task(dataset_id, task_id)
        self.write_json({"deleted": removed})


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/files", DatasetFilesHandler),
    (rf"/datasets/{D}/files/(?P<task_id>[0-9a-f]{{32}})", TaskFilesHandler),
]

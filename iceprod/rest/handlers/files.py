"""Dataset files: the inputs and outputs registered for a dataset or a task.

IceProd's shapes: lists answer `{"files": [...]}` (paged: the cursor in `X-Next-After`), a
file is named by `filename` (`remote` is kept as an alias), and a file registered for a
dataset by `job_index` + `task_name` belongs to that task: its `task_id` is resolved when
the task exists, and until then it shows under the task as soon as the task is created."""

from __future__ import annotations

from iceprod.common.errors import Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.db.base import Page, Paging
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import MAX_LIMIT_ARG, APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import PAGE, query
from iceprod.rest.responses import responds

DATASET_FILE_BODY = body("files_dataset_file")
TASK_FILE_BODY = body("files_task_file")


def file_url(b: Doc) -> str:
    """The file's URL: `filename` (IceProd) or its alias `remote` (the schema takes one)."""
    return str(b.get("filename") or b.get("remote"))


class FileHandler(APIHandler):
    async def add(self, dataset_id: str, task_id: str | None) -> None:
        b = dict(self.body)
        url = file_url(b)
        if task_id:
            task = await self.db.tasks.get(task_id, keys=["dataset_id", "job_index", "name"])
            if task["dataset_id"] != dataset_id:
                raise Invalid("task_id: the task belongs to another dataset")
            b.setdefault("job_index", task.get("job_index"))
            b.setdefault("task_name", task.get("name"))
        elif "job_index" in b and "task_name" in b:
            found = await self.db.tasks.page(
                Paging(["task_id"], 1), dataset_id=dataset_id, job_index=b["job_index"],
                name=b["task_name"])
            task_id = found.docs[0]["task_id"] if found.docs else None
        elif "job_index" in b or "task_name" in b:
            missing = "task_name" if "job_index" in b else "job_index"
            raise Invalid(f"{missing}: give job_index and task_name together", field=missing)
        file_id = new_id()
        doc = {
            "movement": "input", "local": url.rstrip("/").rsplit("/", 1)[-1],
            **b, "filename": url, "remote": url, "file_id": file_id,
            "dataset_id": dataset_id, "task_id": task_id, "create_date": iso(),
        }
        await self.db.files.create(doc)
        self.write_json({"result": file_id}, 201)

    def answer(self, page: Page) -> None:
        if page.next_after:
            self.set_header("X-Next-After", page.next_after)
        self.write_json({"files": page.docs})

    async def task_of(self, dataset_id: str, task_id: str) -> tuple[int | None, str | None]:
        """The task's job index and name (404 for a task of another dataset)."""
        task = await self.db.tasks.get_in(task_id, dataset_id,
                                          ["job_index", "name"])
        return task.get("job_index"), task.get("name")


class DatasetFilesHandler(FileHandler):
    @responds("FileList")
    @query(**PAGE)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's files: `{"files": [file, ...]}` (paged)."""
        self.answer(await self.db.files.of_dataset(dataset_id, Paging(
            self.keys_arg(), self.int_arg("limit", minimum=1, maximum=MAX_LIMIT_ARG),
            self.get_argument("after", None))))

    @responds("Created")
    @requires("write:datasets", dataset="write", body=DATASET_FILE_BODY, created=True)
    async def post(self, dataset_id: str) -> None:
        """Register a file (`filename`, or `remote`) for a dataset, optionally for one task:
        by `task_id`, or by `job_index` + `task_name` (resolved to the task's id when it
        exists; shown under the task once it does)."""
        await self.add(dataset_id, self.body.pop("task_id", None))


class TaskFilesHandler(FileHandler):
    @responds("FileList")
    @query(**PAGE)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str, task_id: str) -> None:
        """A task's files: `{"files": [file, ...]}` (paged)."""
        job_index, name = await self.task_of(dataset_id, task_id)
        self.answer(await self.db.files.for_task(
            dataset_id, task_id, job_index, name, self.keys_arg(),
            self.int_arg("limit", minimum=1, maximum=MAX_LIMIT_ARG),
            self.get_argument("after", None)))

    @responds("Created")
    @requires("write:datasets", dataset="write", body=TASK_FILE_BODY, created=True)
    async def post(self, dataset_id: str, task_id: str) -> None:
        """Register a file (`filename`, or `remote`) for a task."""
        await self.add(dataset_id, task_id)

    @responds("Deleted")
    @requires("write:datasets", dataset="write")
    async def delete(self, dataset_id: str, task_id: str) -> None:
        """Remove every file registered for a task (by id, or by its job and name)."""
        job_index, name = await self.task_of(dataset_id, task_id)
        removed = await self.db.files.delete_for_task(dataset_id, task_id, job_index, name)
        await audit(self, "files.delete", dataset_id, {"tasks": [task_id]},
                    {"deleted": removed})
        self.write_json({"deleted": removed})


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/files", DatasetFilesHandler),
    (rf"/datasets/{D}/files/(?P<task_id>[0-9a-f]{{32}})", TaskFilesHandler),
]

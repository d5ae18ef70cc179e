"""DRMAAtic's task API over datasets: a task is a one-job dataset running a catalog entry.

``POST /task`` takes DRMAAtic's multipart form (``task_name``, one field per parameter,
uploaded files, optional ``depends_on`` and ``dependency_type``), checks every value against
the entry before anything is written, stores the uploads in the new dataset's file store
(``input/<param>/<file>``, staged into the task directory under the file's name) and submits
the dataset. The task's ``uuid`` is the dataset id. When the entry's outputs are visible the
pilot keeps the task directory's files in the store (``output/<script>/...``), which
``/file`` lists and ``/download`` streams as a zip.

Status mapping (iceprod task -> DRMAAtic): not created yet -> ``created``; waiting, queued ->
``queued``; processing -> ``running``; complete -> ``completed``; failed -> ``failed``;
suspended (by ``DELETE`` or an operator), or not run yet in a deleted or suspended task ->
``stopped``.
"""

from __future__ import annotations

import re
import zipfile
from typing import Any

from iceprod.common.errors import Forbidden, Invalid, NotFound, TooLarge
from iceprod.common.ids import new_id
from iceprod.core.scripts import INPUT_PREFIX, OUTPUT_PREFIX, check_values, task_config
from iceprod.db.base import Paging
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.dialects.common import dataset_group, stop, submit, usable_script
from iceprod.rest.handlers.schemas import definition
from iceprod.rest.responses import responds

RESERVED = ("task_name", "depends_on", "dependency_type")
DEPENDENCY_TYPES = ("afterok",)
STATUS = {"waiting": "queued", "queued": "queued", "processing": "running",
          "complete": "completed", "failed": "failed", "suspended": "stopped"}
MAX_FIELDS = 200
MAX_DEPENDS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
CHUNK = 1 << 16
FORM = definition("drmaatic_task_form")


def safe_file_name(name: str) -> str:
    """An uploaded file's name as it appears in the task directory: its last path
    component, characters other than letters, digits, ``.``, ``_``, ``-`` replaced by ``_``."""
    base = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1])[:200]
    if base in ("", ".", ".."):
        return "upload"
    return f"upload{base}" if base.startswith(".") else base


def _text(raw: bytes, field: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{field}: not valid UTF-8 text", field=field) from None
    if "\x00" in text:
        raise Invalid(f"{field}: holds a NUL", field=field)
    return text


class DrmaaticBase(APIHandler):
    async def submission(self, uuid: str, action: str = "read") -> Doc:
        """The DRMAAtic task ``uuid`` after the caller's rights on its dataset are checked."""
        await self.authorize_dataset(uuid, action)
        return await self.db.submissions.of_kind(uuid, "drmaatic")

    async def task_model(self, sub: Doc) -> Doc:
        dataset_id = sub["dataset_id"]
        ds = await self.db.datasets.get(dataset_id, keys=["status", "status_changed"])
        page = await self.db.tasks.page(Paging(limit=1), dataset_id=dataset_id)
        task = page.docs[0] if page.docs else None
        status = STATUS.get(task["status"], task["status"]) if task else "created"
        if (sub["deleted"] or ds["status"] == "suspended") and \
                (task is None or task["status"] in ("waiting", "queued", "suspended")):
            status = "stopped"  # it will not run (even one created while it was deleted)
        times = [sub["updated"], ds.get("status_changed") or sub["created"]]
        if task is not None and task.get("status_changed"):
            times.append(task["status_changed"])
        return {
            "uuid": dataset_id,
            "task_name": sub["task_name"],
            "status": status,
            "param": sub["param"],
            "files_name": sub["files_name"],
            "depends_on": sub["depends_on"],
            "dependency_type": sub["dependency_type"],
            "creation_date": sub["created"],
            "update_date": max(times),
            "deleted": sub["deleted"],
            "sender_ip_addr": sub["sender_ip_addr"],
            "drm_job_id": task["task_id"] if task else None,
            "reason": task.get("reason") if task else None,
        }


class TasksHandler(DrmaaticBase):
    @responds("DrmaaticTask")
    @requires("create:datasets", created=True)
    async def post(self) -> None:
        """Submit a task: a one-job dataset running the catalog entry `task_name` with the
        form's parameter values and uploaded files (checked first: a bad value answers 400
        naming the parameter and creates nothing; a caller outside the entry's groups gets
        403). Answers the task as `GET /task/{uuid}` does."""
        form, uploads = self.form()
        task_name = form.pop("task_name", [""])[-1]
        if not task_name:
            raise Invalid("task_name: required", field="task_name")
        script = await usable_script(self, task_name, "task_name")
        depends_on = [d.strip() for v in form.pop("depends_on", []) for d in v.split(",")
                      if d.strip()]
        dependency_type = (form.pop("dependency_type", [""])[-1] or "afterok").strip()
        if dependency_type not in DEPENDENCY_TYPES:
            raise Invalid(f"dependency_type: only {', '.join(DEPENDENCY_TYPES)} is supported",
                          field="dependency_type")
        for name, vals in form.items():
            if len(vals) > 1:
                raise Invalid(f"{name}: given more than once", field=name)
        given = {k: v[0] for k, v in form.items()}
        files = {name: safe_file_name(f["filename"]) for name, f in uploads.items()}
        if len(set(files.values())) < len(files):
            raise Invalid("files: two uploads have the same file name", field="files")
        values = check_values(script, given, files)
        depends = await self.dependencies(depends_on)
        config = {"version": 3, "description": f"DRMAAtic task running {task_name}",
                  "options": {"max_failures": 1},
                  "tasks": [task_config(script, task_name, values, depends=depends)]}
        dataset_id = new_id()
        stored = []
        try:
            for param, f in uploads.items():
                name = f"{INPUT_PREFIX}/{param}/{files[param]}"
                upload = await self.ctx.files.open_upload(dataset_id)
                try:
                    await upload.write(f["body"])
                    await upload.commit(name)
                finally:
                    await upload.discard()
                stored.append(name)
            await submit(self, description=f"DRMAAtic task: {task_name}",
                         group=dataset_group(self.principal, script), tasks_per_job=1,
                         config=config, submission={
                             "dataset_id": dataset_id, "kind": "drmaatic",
                             "task_name": task_name,
                             "param": [{"name": k, "value": v} for k, v in values.items()],
                             "files_name": {p: files[p] for p in uploads},
                             "depends_on": depends_on, "dependency_type": dependency_type,
                             "sender_ip_addr": self.request.remote_ip,
                             "is_output_visible": script.get("is_output_visible", True)})
        except BaseException:
            for name in stored:
                try:
                    await self.ctx.files.delete(dataset_id, name)
                except NotFound:
                    pass
            raise
        sub = await self.db.submissions.of_kind(dataset_id, "drmaatic")
        self.set_header("Location", f"/task/{dataset_id}")
        self.write_json(await self.task_model(sub), 201)

    def form(self) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
        """The form's text fields and its uploads (one file per field)."""
        fields = self.request.body_arguments
        files = self.request.files
        if len(fields) + len(files) > MAX_FIELDS:
            raise Invalid(f"form: more than {MAX_FIELDS} fields", field="form")
        text = {k: [_text(v, k) for v in vs] for k, vs in fields.items()}
        if any("\x00" in k for k in text):
            raise Invalid("form: a field name holds a NUL", field="form")
        uploads: dict[str, dict[str, Any]] = {}
        for name, items in files.items():
            if name in RESERVED or name in text:
                raise Invalid(f"{name}: must be a text field, not a file", field=name)
            if len(items) != 1:
                raise Invalid(f"{name}: one file per parameter", field=name)
            uploads[name] = {"filename": items[0]["filename"] or name, "body": items[0]["body"]}
        return text, uploads

    async def dependencies(self, uuids: list[str]) -> list[str]:
        """Config dependencies on other DRMAAtic tasks the caller may read."""
        if len(uuids) > MAX_DEPENDS:
            raise Invalid(f"depends_on: at most {MAX_DEPENDS} tasks", field="depends_on")
        out = []
        for uuid in uuids:
            try:
                if not re.fullmatch(r"[0-9a-f]{32}", uuid):
                    raise NotFound("no such task")
                sub = await self.submission(uuid)
            except (NotFound, Forbidden):
                raise Invalid(f"depends_on: no task {uuid!r} you may read",
                              field="depends_on") from None
            out.append(f"{uuid}:{sub['task_name']}")
        return out


class TaskHandler(DrmaaticBase):
    @responds("DrmaaticTask")
    @requires("read:datasets")
    async def get(self, uuid: str) -> None:
        """A task in DRMAAtic's fields (status mapped as the module docstring says), plus
        `reason` when it failed."""
        self.write_json(await self.task_model(await self.submission(uuid)))

    @responds("DrmaaticTask")
    @requires("write:datasets")
    async def delete(self, uuid: str) -> None:
        """Stop the task if it has not finished (its pilot kills a running one) and mark it
        deleted; answers the task."""
        await self.submission(uuid, "write")
        changed = await stop(self, uuid)
        await self.db.submissions.mark_deleted([uuid])
        await audit(self, "drmaatic.delete", uuid, {"tasks": [uuid]}, {"changed": changed})
        self.write_json(await self.task_model(await self.db.submissions.of_kind(uuid,
                                                                                "drmaatic")))


async def output_files(h: APIHandler, sub: Doc) -> dict[str, dict[str, Any]]:
    """The kept files of the task's directory, by their path in it."""
    prefix = f"{OUTPUT_PREFIX}/{sub['task_name']}/"
    stored = await h.ctx.files.list(sub["dataset_id"])
    return {name[len(prefix):]: meta for name, meta in stored.items()
            if name.startswith(prefix)}


class TaskFilesHandler(DrmaaticBase):
    @responds("FileNames")
    @requires("read:datasets")
    async def get(self, uuid: str) -> None:
        """The files of the task's working directory after it ran (`[path, ...]`; empty
        before, or when the script's outputs are not visible)."""
        sub = await self.submission(uuid)
        self.write_json(sorted(await output_files(self, sub)))


class _Sink:
    """What zipfile writes to: bytes collected until the handler sends them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class TaskDownloadHandler(DrmaaticBase):
    @responds(media="application/zip")
    @requires("read:datasets")
    async def get(self, uuid: str) -> None:
        """The task's working directory as a zip, streamed as it is built (a directory
        larger than `ICEPROD_MAX_DOWNLOAD_BYTES` is refused with 413)."""
        sub = await self.submission(uuid)
        files = await output_files(self, sub)
        total = sum(int(m.get("size", 0)) for m in files.values())
        limit = self.ctx.config.max_download_bytes
        if total > limit:
            raise TooLarge(f"download: {total} bytes is more than the limit of {limit}")
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{uuid}.zip"')
        sink = _Sink()
        prefix = f"{OUTPUT_PREFIX}/{sub['task_name']}/"
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[call-overload]
            for rel in sorted(files):
                f = await self.ctx.files.open_read(uuid, prefix + rel)
                try:
                    with zf.open(rel, "w", force_zip64=True) as dest:
                        async for chunk in f.chunks():
                            dest.write(chunk)
                            if sink.size >= CHUNK:
                                await self._send(sink)
                finally:
                    await f.close()
                await self._send(sink)
        await self._send(sink)
        self.finish()

    async def _send(self, sink: _Sink) -> None:
        data = sink.take()
        sink.size = 0
        if data:
            self.write(data)
            await self.flush()


class TasksSlashHandler(TasksHandler):
    """``POST /task/``: DRMAAtic's usage examples post there."""


TasksHandler.post.form_body = FORM  # type: ignore[attr-defined]

U = r"(?P<uuid>[0-9a-f]{32})"
routes = [
    (r"/task", TasksHandler),
    (r"/task/", TasksSlashHandler),
    (rf"/task/{U}", TaskHandler),
    (rf"/task/{U}/file", TaskFilesHandler),
    (rf"/task/{U}/download", TaskDownloadHandler),
]

"""The file store's routes: bytes uploaded to the server for a dataset, kept by the process's
``FileStore`` (``iceprod.rest.filestore``; by default on local disk under
``<data_dir>/store/<dataset_id>/<name>``). These handlers use only that interface.

Users put a dataset's inputs here and pilots stage them with ``iceprod:NAME`` remotes; a pilot
holding a processing task of the dataset may also write outputs here. Bodies are streamed to a
temporary file (``@stream_request_body``), so authorization runs in ``prepare`` before the body
arrives; the ``@requires`` specs below are what ``prepare`` enforces (and what the OpenAPI
document shows). A file appears under its name only once complete (temp file + rename), and
one larger than ``max_file_bytes`` is refused with 413 and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import tornado.web

from iceprod.common.errors import Forbidden, IceProdError, Invalid, NotFound, TooLarge
from iceprod.core.quota import storage_message, storage_room
from iceprod.rest.base import APIHandler, AuthSpec, requires
from iceprod.rest.filestore import Upload
from iceprod.rest.responses import responds
from iceprod.rest.storeops import stored_bytes

CHUNK = 1 << 20
PILOT_VERBS = ("get", "put")  # a pilot holding a task of the dataset may read and write


MAX_SEGMENT_BYTES = 255  # NAME_MAX of every common filesystem
MAX_NAME_BYTES = 1024  # well inside PATH_MAX (4096) with the data dir in front


def check_name(name: str) -> str:
    """A stored name: relative `/`-separated segments, none empty, `.` or `..`, each at most
    255 bytes of UTF-8 and the whole at most 1024 (longer ones the filesystem would refuse
    with an OSError, i.e. a 500)."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\\" in name or "\x00" in name:
        raise Invalid("name: must be a relative path of non-empty segments without '..'",
                      field="name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise Invalid(f"name: longer than {MAX_NAME_BYTES} bytes", field="name")
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES for p in parts):
        raise Invalid(f"name: a segment is longer than {MAX_SEGMENT_BYTES} bytes",
                      field="name")
    return "/".join(parts)


@tornado.web.stream_request_body
class StoreHandler(APIHandler):
    """One handler for the store's routes; `name` is absent for the listing."""

    _authorized = False
    _upload: Upload | None = None
    _received = 0
    _overflow = False
    _refused_early = False
    _quota: tuple[str, int, int] | None = None  # project, stored-bytes limit, bytes kept

    # -- authorization before the body ------------------------------------------------------

    async def prepare(self) -> None:
        try:
            await self._prepare()
        except Exception:
            self._refused_early = True
            raise

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        body = getattr(self.request, "_body_future", None)
        if self._refused_early or (body is not None and not body.done()):
            # answered before the request was read to its end (streamed handlers answer from
            # prepare, or tornado refused the path's encoding before it): tornado then closes
            # the connection, so the client must not reuse it
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    async def _prepare(self) -> None:
        await super().prepare()
        verb = (self.request.method or "").lower()
        fn = getattr(type(self), verb, None)
        spec: AuthSpec | None = getattr(fn, "auth_spec", None)
        if spec is None:  # an unsupported method: tornado answers 405
            return
        # tornado decodes (and unquotes) the path arguments before calling prepare
        dataset_id: str = self.path_kwargs["dataset_id"]
        await self._authorize(spec, dataset_id, verb)
        self._authorized = True
        name: str | None = self.path_kwargs.get("name")
        if name is not None:
            check_name(name)
        if verb == "put":
            await self._check_quota(dataset_id, name or "")
            await self._open_upload(dataset_id)

    async def _authorize(self, spec: AuthSpec, dataset_id: str, verb: str) -> None:
        try:
            super().check_scopes(spec.scopes)
            if spec.dataset:
                await super().authorize_dataset(dataset_id, spec.dataset)
        except Forbidden:
            if verb in PILOT_VERBS and await self._holds_task(dataset_id):
                return
            raise

    async def _holds_task(self, dataset_id: str) -> bool:
        """Is the caller a pilot holding a processing task of the dataset? (That the pilot
        its token names is still active was checked when the token was resolved.)"""
        p = self.principal
        if not p.authenticated or not p.has("pilot"):
            return False
        scope = p.scope or ""
        if scope.startswith("dataset:") and scope.split(":")[1] != dataset_id:
            return False
        if not p.pilot_id:  # a registration token holds nothing
            return False
        held = await self.db.tasks.count(dataset_id=dataset_id, status=["processing"],
                                         pilot_id=p.pilot_id)
        return held > 0

    def check_scopes(self, scopes: tuple[str, ...]) -> None:
        if not self._authorized:  # prepare already enforced the method's spec
            super().check_scopes(scopes)

    async def authorize_dataset(self, dataset_id: str, action: str) -> None:
        if not self._authorized:
            await super().authorize_dataset(dataset_id, action)

    # -- the project's stored-bytes quota ------------------------------------------------------

    async def _check_quota(self, dataset_id: str, name: str) -> None:
        """Refuse an upload that would take the project over its stored-bytes quota: at
        once when ``Content-Length`` says so, else as soon as the body passes it (a file it
        replaces does not count)."""
        dataset = await self.db.datasets.get(dataset_id, keys=["project"])
        room = await storage_room(self.db, dataset, stored_bytes(self.ctx.files))
        if room is None:
            return
        project, limit, used = room
        try:
            used -= await self.ctx.files.size(dataset_id, name)
        except NotFound:
            pass
        self._quota = (project, limit, used)
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and used + int(length) > limit:
            raise TooLarge(storage_message(project, limit, used, int(length)))

    def _over_quota(self) -> bool:
        return self._quota is not None and self._quota[2] + self._received > self._quota[1]

    # -- the body, streamed to a temporary file ----------------------------------------------

    async def _open_upload(self, dataset_id: str) -> None:
        limit = self.ctx.config.max_file_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooLarge(f"body: larger than the limit of {limit} bytes")
        # only this route accepts bodies this large; the rest keep the server's default
        self.request.connection.set_max_body_size(limit + CHUNK)  # type: ignore[union-attr]
        self._upload = await self.ctx.files.open_upload(dataset_id)

    async def data_received(self, chunk: bytes) -> None:
        if self._upload is None:  # refused in prepare, or not an upload: discard
            return
        self._received += len(chunk)
        if self._received > self.ctx.config.max_file_bytes or self._over_quota():
            self._overflow = True
            await self._discard()
            return
        await self._upload.write(chunk)

    async def _discard(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            await upload.discard()

    def on_finish(self) -> None:
        if self._upload is not None:
            # a failed or abandoned upload leaves nothing behind
            _background(self._discard())
        super().on_finish()

    def on_connection_close(self) -> None:
        if self._upload is not None:
            _background(self._discard())
        super().on_connection_close()


class StoreFileHandler(StoreHandler):
    @responds(media="application/octet-stream")
    @requires("read:datasets", "pilot", dataset="read")
    async def get(self, dataset_id: str, name: str) -> None:
        """A stored file's bytes (`application/octet-stream`). Pilots may read the files of
        a dataset one of whose tasks they are processing."""
        f = await self.ctx.files.open_read(dataset_id, check_name(name))
        try:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", str(f.size))
            async for chunk in f.chunks():
                self.write(chunk)
                await self.flush()
        finally:
            await f.close()
        self.finish()

    @responds("StoredFile")
    @requires("write:datasets", "pilot", dataset="write", created=True)
    async def put(self, dataset_id: str, name: str) -> None:
        """Store the raw request body as `name` (replacing any file of that name), at most
        `ICEPROD_MAX_FILE_BYTES`. Pilots may write to a dataset one of whose tasks they are
        processing."""
        if self._overflow and self._quota is not None and self._over_quota():
            project, limit, used = self._quota
            raise TooLarge(storage_message(project, limit, used, self._received))
        if self._overflow:
            limit = self.ctx.config.max_file_bytes
            raise TooLarge(f"body: larger than the limit of {limit} bytes")
        if self._upload is None:
            raise IceProdError("upload was not opened")
        try:
            await self._upload.commit(check_name(name))
        finally:
            await self._discard()
        self.write_json({"name": check_name(name), "size": self._received}, 201)

    @responds("Deleted")
    @requires("write:datasets", dataset="write")
    async def delete(self, dataset_id: str, name: str) -> None:
        """Remove a stored file."""
        await self.ctx.files.delete(dataset_id, check_name(name))
        self.write_json({"deleted": 1})


class StoreListHandler(StoreHandler):
    @responds("StoredFiles")
    @requires("read:datasets", "pilot", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """The dataset's stored files as `{name: {name, size, modified}}`."""
        self.write_json(await self.ctx.files.list(dataset_id))


_pending: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run clean-up the synchronous tornado callbacks cannot await (a reference is kept so
    the task is not collected before it ends)."""
    task = asyncio.get_running_loop().create_task(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (rf"/datasets/{D}/store", StoreListHandler),
    (rf"/datasets/{D}/store/(?P<name>.+)", StoreFileHandler),
]

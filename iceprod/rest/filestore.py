"""The file store's interface (``FileStore``) and its local-disk implementation.

The store keeps bytes per dataset under a name (relative ``/``-separated segments, checked by
the handlers). The REST handlers (``handlers/filestore.py``) use only this interface; which
implementation serves a process is chosen in one place, ``make_file_store``, from
``ICEPROD_FILE_STORE``:

- unset: ``LocalFileStore`` under ``<data dir>/store`` (one REST process, the default);
- an absolute path (or ``file:///path``): ``LocalFileStore`` rooted there. Several REST
  replicas must see one store, so point them all at the same shared filesystem mount.

A stored file appears under its name only once complete (a temporary file, then a rename on
the same filesystem), so a reader never sees half an upload.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from iceprod.common.config import ServerConfig
from iceprod.common.errors import Invalid, NotFound
from iceprod.common.timeutil import iso

CHUNK = 1 << 20
MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class Upload(Protocol):
    """A file being written; nothing is visible under its name before ``commit``."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, name: str) -> None:
        """Make the bytes written so far the file ``name`` (replacing any)."""

    async def discard(self) -> None:
        """Drop what was written (safe to call twice, or after ``commit``)."""


class StoredFile(Protocol):
    """A stored file opened for reading."""

    size: int

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class FileStore(Protocol):
    """Per-dataset named files. ``NotFound`` when a name is not stored; ``Invalid`` (naming
    the field ``name``) when a name collides with the store's layout."""

    async def open_upload(self, dataset_id: str) -> Upload: ...

    async def open_read(self, dataset_id: str, name: str) -> StoredFile: ...

    async def delete(self, dataset_id: str, name: str) -> None: ...

    async def list(self, dataset_id: str) -> dict[str, dict[str, Any]]:
        """``{name: {name, size, modified}}`` of the dataset's files."""

    async def size(self, dataset_id: str, name: str) -> int: ...


# -- the local-disk implementation -------------------------------------------------------------


@dataclass
class LocalUpload:
    root: Path
    dataset_id: str
    tmp: Path | None
    file: IO[bytes] | None

    async def write(self, chunk: bytes) -> None:
        if self.file is not None:
            await asyncio.to_thread(self.file.write, chunk)

    async def commit(self, name: str) -> None:
        if self.file is None or self.tmp is None:
            raise RuntimeError("upload already committed or discarded")
        await asyncio.to_thread(self.file.close)
        self.file = None
        await asyncio.to_thread(_commit, self.tmp, self.root / self.dataset_id / name)
        self.tmp = None

    async def discard(self) -> None:
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


@dataclass
class LocalFile:
    file: IO[bytes]
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(self.file.read, CHUNK):
            yield chunk

    async def close(self) -> None:
        await asyncio.to_thread(self.file.close)


class LocalFileStore:
    """Files under ``<root>/<dataset_id>/<name>``; uploads are written to
    ``<root>/.partial/`` first (the same filesystem, so the final rename is atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def open_upload(self, dataset_id: str) -> Upload:
        tmp_dir = self.root / ".partial"
        await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
        tmp = tmp_dir / f"{dataset_id}-{uuid.uuid4().hex}"
        file = await asyncio.to_thread(open, tmp, "wb")
        return LocalUpload(self.root, dataset_id, tmp, file)

    async def open_read(self, dataset_id: str, name: str) -> StoredFile:
        try:
            f = await asyncio.to_thread(open, self.root / dataset_id / name, "rb")
        except MISSING:
            raise _missing(name) from None
        size = (await asyncio.to_thread(os.fstat, f.fileno())).st_size
        return LocalFile(f, size)

    async def delete(self, dataset_id: str, name: str) -> None:
        try:
            await asyncio.to_thread(_remove, self.root / dataset_id / name,
                                    self.root / dataset_id)
        except MISSING:
            raise _missing(name) from None

    async def list(self, dataset_id: str) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(_list, self.root / dataset_id)

    async def size(self, dataset_id: str, name: str) -> int:
        path = self.root / dataset_id / name
        try:
            st = await asyncio.to_thread(path.stat)
        except MISSING:
            raise _missing(name) from None
        if not path.is_file():
            raise _missing(name)
        return st.st_size


def _missing(name: str) -> NotFound:
    return NotFound(f"name: {name} is not in the dataset's store")


def _list(root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            name = path.relative_to(root).as_posix()
            out[name] = {"name": name, "size": st.st_size, "modified": iso(st.st_mtime)}
    return out


def _remove(path: Path, root: Path) -> None:
    """Remove a file and the directories it leaves empty (up to the dataset's root)."""
    path.unlink()
    parent = path.parent
    while parent != root and parent.is_relative_to(root):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def _commit(tmp: Path, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Invalid("name: a file is stored where a directory would go", field="name") from None
    if dest.is_dir():
        raise Invalid("name: a directory of that name exists", field="name")
    os.replace(tmp, dest)


# -- the one place an implementation is chosen ---------------------------------------------------


def make_file_store(config: ServerConfig) -> FileStore:
    """The file store ``ICEPROD_FILE_STORE`` names (see the module docstring)."""
    where = config.file_store
    if not where:
        return LocalFileStore(Path(config.data_dir) / "store")
    path = where.removeprefix("file://")
    if not path.startswith("/"):
        raise Invalid("ICEPROD_FILE_STORE: expected an absolute path (a shared mount for "
                      f"several REST replicas) or file:///path, not {where!r}")
    return LocalFileStore(Path(path))

"""Moving a task's files: inputs into its directory before its steps run, outputs out after
they succeed.

A task's `data` entries are `{remote, local, movement: input|output|both, type, transfer}`.
`remote` is one of

- a `file://` URL or a plain absolute path, only inside the pilot's staging roots
  (`--stage-root`): the path is resolved, symlinks and `..` included, before it is checked,
  so nothing escapes a root; anything else is refused, and the reason says so;
- an `http(s)://` URL (downloaded with GET, uploaded with PUT; the pilot's token is never
  sent to these URLs);
- `iceprod:NAME` (also `iceprod:/datasets/<id>/store/NAME`): a file in the server's store of
  the task's dataset, moved through `iceprod.client` with the pilot's own token.

`local` is a name inside the task's directory (default: the last component of `remote`) and
may not escape it. `transfer` is true (the file must move), false (skip it) or `"maybe"`
(move it when it exists). Files are written atomically: a reader of an output path never
sees a partial file. An output is taken from the task's directory only when it resolves
inside it (a step cannot stage out a symlink to the pilot's token file), and directories
are copied with their symlinks kept as links, never followed. Failures raise
`StagingError`, whose message is the reason the task reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from iceprod.client.api import APIError, AsyncClient
from iceprod.client.api import NotFound as APINotFound

log = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(300.0, connect=30.0)
CHUNK = 1 << 20


class StagingError(Exception):
    """A file could not be staged; the message says which and why."""


@dataclass(frozen=True)
class DataEntry:
    """One file of a task."""

    remote: str
    local: str
    movement: str = "input"
    transfer: bool | str = True
    type: str = "permanent"

    @property
    def is_input(self) -> bool:
        return self.movement in ("input", "both")

    @property
    def is_output(self) -> bool:
        return self.movement in ("output", "both")

    @property
    def optional(self) -> bool:
        return self.transfer == "maybe"

    @property
    def skipped(self) -> bool:
        return self.transfer is False or str(self.transfer).lower() == "false"


def entry_from_doc(doc: Mapping[str, Any]) -> DataEntry:
    """A `DataEntry` from a task's data document, checking its local name."""
    remote = str(doc.get("remote") or "")
    local = str(doc.get("local") or "")
    if not local:
        if not remote:
            raise StagingError("data: an entry has neither remote nor local")
        local = PurePosixPath(urlparse(remote).path or remote).name
    movement = str(doc.get("movement") or "input")
    if not (local == KEEP_DIR and movement == "output"):
        check_local_name(local)
    if not remote:
        raise StagingError(f"data: {local!r} has no remote location")
    return DataEntry(remote=remote, local=local, movement=movement,
                     transfer=doc.get("transfer", True), type=str(doc.get("type") or "permanent"))


KEEP_DIR = "."
"""An output whose `local` is `.` keeps the whole task directory: to an `iceprod:NAME` remote,
each regular file is stored as `NAME/<path in the directory>` (symlinks are not followed)."""


def check_local_name(local: str) -> None:
    """A local name must stay inside the task's directory."""
    path = PurePosixPath(local)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise StagingError(f"data: local name {local!r} must be a relative path inside the "
                           "task directory")


@dataclass(frozen=True)
class ServerStore:
    """The server's file store as the pilot reaches it: its client and the task's dataset."""

    client: AsyncClient
    dataset_id: str


STORE_PREFIX = "iceprod:"


def store_location(remote: str, default_dataset: str) -> tuple[str, str]:
    """`(dataset_id, name)` of an `iceprod:` remote."""
    rest = remote[len(STORE_PREFIX):]
    dataset_id = default_dataset
    if rest.startswith("/"):
        parts = rest.strip("/").split("/", 3)
        if len(parts) < 4 or parts[0] != "datasets" or parts[2] != "store" or not parts[1]:
            raise StagingError(f"stage: {remote!r}: expected iceprod:NAME or "
                               "iceprod:/datasets/<id>/store/NAME")
        dataset_id, rest = parts[1], parts[3]
    segments = rest.split("/")
    if not rest or any(p in ("", ".", "..") for p in segments):
        raise StagingError(f"stage: {remote!r}: bad store name")
    if not dataset_id:
        raise StagingError(f"stage: {remote!r}: the task has no dataset")
    return dataset_id, rest


def remote_kind(remote: str) -> tuple[str, str]:
    """`("file", path)`, `("http", url)` or `("iceprod", remote)`; other schemes are
    refused."""
    if remote.startswith("/"):
        return "file", remote
    if remote.startswith(STORE_PREFIX):
        return "iceprod", remote
    parsed = urlparse(remote)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StagingError(f"stage: file URL with a remote host is not supported: {remote}")
        return "file", unquote(parsed.path)
    if parsed.scheme in ("http", "https"):
        return "http", remote
    raise StagingError(f"stage: unsupported location {remote!r} (use file://, an absolute "
                       "path, http(s)://, or iceprod:NAME)")


def confine(path: str, roots: Sequence[str]) -> Path:
    """``path`` resolved (symlinks, ``..``), when inside one of the resolved ``roots``;
    otherwise ``StagingError`` saying so."""
    real = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if real == base or real.is_relative_to(base):
            return real
    allowed = ", ".join(roots) if roots else "none configured"
    raise StagingError(f"staging refused: {path} is outside this pilot's staging roots "
                       f"({allowed})")


def task_file(run_dir: Path, local: str) -> Path:
    """A task's output file, which must resolve inside its directory."""
    src = run_dir / local
    real = Path(os.path.realpath(src))
    base = Path(os.path.realpath(run_dir))
    if real != base and not real.is_relative_to(base):
        raise StagingError(f"staging refused: output {local!r} points outside the task's "
                           "directory")
    return real


def _copy_in(src: Path, dest: Path) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
        return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    shutil.copyfile(src, dest)
    return dest.stat().st_size


def _copy_out(src: Path, dest: Path) -> int:
    """Copy to `dest` through a temporary name beside it, then rename: atomic."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if src.is_dir():
            shutil.copytree(src, tmp, symlinks=True)
            if dest.is_dir():
                shutil.rmtree(dest)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.is_dir() \
        else dest.stat().st_size


async def _download(http: httpx.AsyncClient, url: str, dest: Path) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    size = 0
    async with http.stream("GET", url) as response:
        if response.status_code == 404:
            raise FileNotFoundError(url)
        response.raise_for_status()
        f = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in response.aiter_bytes(CHUNK):
                await asyncio.to_thread(f.write, chunk)
                size += len(chunk)
        finally:
            f.close()
    os.replace(tmp, dest)
    return size


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


async def _upload(http: httpx.AsyncClient, src: Path, url: str) -> int:
    if src.is_dir():
        raise StagingError(f"stage out: {src.name} is a directory; http uploads take files")
    size = src.stat().st_size
    response = await http.put(url, content=_file_chunks(src),
                              headers={"Content-Length": str(size)})
    response.raise_for_status()
    return size


def _need_store(store: ServerStore | None, remote: str) -> ServerStore:
    if store is None:
        raise StagingError(f"stage: {remote!r}: no server store is reachable here")
    return store


async def stage_in_one(entry: DataEntry, run_dir: Path, http: httpx.AsyncClient,
                       store: ServerStore | None = None, roots: Sequence[str] = ()) -> int:
    """Bring one input into `run_dir`; answers its size in bytes (0 when skipped)."""
    kind, where = remote_kind(entry.remote)
    dest = run_dir / entry.local
    try:
        if kind == "file":
            return await asyncio.to_thread(_copy_in, confine(where, roots), dest)
        if kind == "iceprod":
            server = _need_store(store, where)
            dataset_id, name = store_location(where, server.dataset_id)
            return await server.client.files.store_get(dataset_id, name, dest)
        return await _download(http, where, dest)
    except (FileNotFoundError, APINotFound):
        if entry.optional:
            return 0
        raise StagingError(f"stage in: input not found: {entry.remote}") from None
    except (OSError, httpx.HTTPError, APIError) as e:
        raise StagingError(f"stage in: {entry.remote} -> {entry.local} failed: {e}") from None


async def stage_out_one(entry: DataEntry, run_dir: Path, http: httpx.AsyncClient,
                        store: ServerStore | None = None, roots: Sequence[str] = ()) -> int:
    """Send one output from `run_dir`; answers its size in bytes (0 when skipped)."""
    if not (run_dir / entry.local).exists():
        if entry.optional:
            return 0
        raise StagingError(f"stage out: output {entry.local!r} was not produced")
    src = task_file(run_dir, entry.local)
    kind, where = remote_kind(entry.remote)
    try:
        if kind == "file":
            return await asyncio.to_thread(_copy_out, src, confine(where, roots))
        if kind == "iceprod":
            server = _need_store(store, where)
            dataset_id, name = store_location(where, server.dataset_id)
            if src.is_dir() and entry.local == KEEP_DIR:
                return await _store_tree(server, dataset_id, name, src)
            if src.is_dir():
                raise StagingError(f"stage out: {src.name} is a directory; the server store "
                                   "takes files")
            result = await server.client.files.store_put(dataset_id, name, src)
            return int(result.get("size", 0))
        return await _upload(http, src, where)
    except (OSError, httpx.HTTPError, APIError) as e:
        raise StagingError(f"stage out: {entry.local} -> {entry.remote} failed: {e}") from None


def _tree_files(root: Path) -> list[tuple[str, Path]]:
    """The regular files under `root`, never through a symlink."""
    out = []
    for parent, _, files in os.walk(root, followlinks=False):
        for f in files:
            path = Path(parent) / f
            if path.is_file() and not path.is_symlink():
                out.append((path.relative_to(root).as_posix(), path))
    return sorted(out)


async def _store_tree(server: ServerStore, dataset_id: str, name: str, root: Path) -> int:
    """Store every regular file under `root` as `name/<relative path>`."""
    total = 0
    for rel, path in await asyncio.to_thread(_tree_files, root):
        result = await server.client.files.store_put(dataset_id, f"{name}/{rel}", path)
        total += int(result.get("size", 0))
    return total


def entries(data: Sequence[Mapping[str, Any]]) -> list[DataEntry]:
    """The task's data entries that move (transfer not false)."""
    out = [entry_from_doc(d) for d in data]
    return [e for e in out if not e.skipped]


async def stage_in(data: Sequence[DataEntry], run_dir: Path,
                   http: httpx.AsyncClient | None = None,
                   store: ServerStore | None = None, roots: Sequence[str] = ()) -> int:
    """Stage every input; answers the bytes moved. The first failure raises."""
    async with _client(http) as client:
        total = 0
        for entry in data:
            if entry.is_input:
                total += await stage_in_one(entry, run_dir, client, store, roots)
        return total


async def stage_out(data: Sequence[DataEntry], run_dir: Path,
                    http: httpx.AsyncClient | None = None,
                    store: ServerStore | None = None, roots: Sequence[str] = ()) -> int:
    """Stage every output; answers the bytes moved. The first failure raises."""
    async with _client(http) as client:
        total = 0
        for entry in data:
            if entry.is_output:
                total += await stage_out_one(entry, run_dir, client, store, roots)
        return total


class _client:
    """Use the given http client, or a fresh one closed afterwards."""

    def __init__(self, http: httpx.AsyncClient | None) -> None:
        self.given = http
        self.own: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        if self.given is not None:
            return self.given
        self.own = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=True)
        return self.own

    async def __aexit__(self, *exc: object) -> None:
        if self.own is not None:
            await self.own.aclose()

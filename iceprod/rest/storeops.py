"""Whole-dataset operations over the file store interface (``filestore.FileStore``): the
bytes a dataset keeps (for the stored-bytes quota) and removing everything it keeps (for
archiving). Built on ``list``/``delete`` only, so any file store implementation serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from iceprod.common.errors import NotFound
from iceprod.rest.filestore import FileStore


def stored_bytes(files: FileStore) -> Callable[[str], Awaitable[int]]:
    async def total(dataset_id: str) -> int:
        return sum(int(f["size"]) for f in (await files.list(dataset_id)).values())

    return total


def remover(files: FileStore) -> Callable[[str], Awaitable[int]]:
    async def remove(dataset_id: str) -> int:
        n = 0
        for name in await files.list(dataset_id):
            try:
                await files.delete(dataset_id, name)
            except NotFound:  # removed meanwhile
                continue
            n += 1
        return n

    return remove

"""Archiving finished datasets: what goes, what stays.

A finished dataset (``complete`` or ``errors``) whose status last changed more than
``older_than_days`` ago (and, when given, that carries ``tag``) is archived:

1. its summary is computed and kept on the dataset (``archive``): tasks by name and status,
   jobs by status, per-task-name stats (``/datasets/{id}/task_stats``'s answer), walltime,
   failures and evictions, and its usage totals; task stats records are kept;
2. its logs are written to ``<data_dir>/archive/<dataset_id>.logs.jsonl.gz`` (policy
   ``compress``, one JSON document per line) or dropped (``drop``), then removed from the store;
3. its file-store contents are removed;
4. its task and job documents are removed;
5. it moves to status ``archived`` and stays listed, with its summary and config.

The summary is stored before anything is removed, and a second run reuses it, so an archiving
interrupted half way is finished by running it again without losing what the summary says.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.db.base import Paging
from iceprod.db.store import Doc

log = logging.getLogger(__name__)

LOG_POLICIES = ("compress", "drop")
LOG_PAGE = 200
RemoveFiles = Callable[[str], Awaitable[int]]
"""Removes a dataset's file-store contents, answering how many files went."""


@dataclass(frozen=True)
class Selection:
    older_than_days: float = 0.0
    tag: str | None = None
    logs: str = "compress"
    dry_run: bool = False
    limit: int | None = None


def archive_dir(data_dir: str) -> Path:
    return Path(data_dir) / "archive"


async def matching(db: Database, sel: Selection) -> list[Doc]:
    cutoff = iso(time.time() - sel.older_than_days * 86400.0)
    docs = await db.archive.candidates(cutoff, sel.tag)
    return docs[: sel.limit] if sel.limit is not None else docs


async def summarize(db: Database, dataset: Doc) -> Doc:
    dataset_id = dataset["dataset_id"]
    usage = await db.usage.totals({"dataset_id": dataset_id})
    return {
        "finished_status": dataset["status"],
        "finished_at": dataset.get("status_changed"),
        "tasks": await db.archive.task_summary(dataset_id),
        "jobs": await db.jobs.counts_by_status(dataset_id),
        "task_stats": await db.tasks.stats_by_name(dataset_id),
        "totals": await db.archive.task_totals(dataset_id),
        "usage": usage[0] if usage else {},
    }


async def write_logs(db: Database, dataset_id: str, dest: Path) -> tuple[int, int]:
    """Write every log of a dataset, one JSON document per line, to a gzip file (complete
    or absent: written to a temporary name and renamed); answers (logs, bytes written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    n = 0
    fh: IO[bytes] = await asyncio.to_thread(gzip.open, tmp, "wb")  # type: ignore[arg-type]
    try:
        after: str | None = None
        while True:
            page = await db.logs.page(Paging(limit=LOG_PAGE, after=after), dataset_id=dataset_id)
            if page.docs:
                data = "".join(json.dumps(d) + "\n" for d in page.docs).encode()
                await asyncio.to_thread(fh.write, data)
                n += len(page.docs)
            if page.next_after is None:
                break
            after = page.next_after
    finally:
        await asyncio.to_thread(fh.close)
    await asyncio.to_thread(os.replace, tmp, dest)
    return n, dest.stat().st_size


async def archive_one(db: Database, dataset: Doc, logs: str, data_dir: str,
                      remove_files: RemoveFiles) -> Doc:
    """Archive one finished dataset (see the module's docstring); answers its record."""
    dataset_id = dataset["dataset_id"]
    summary = dataset.get("archive") or await summarize(db, dataset)
    await db.datasets.set_fields(dataset_id, {"archive": summary})
    logs_done: Doc = {"policy": logs}
    if logs == "compress":
        dest = archive_dir(data_dir) / f"{dataset_id}.logs.jsonl.gz"
        count, size = await write_logs(db, dataset_id, dest)
        logs_done.update(count=count, file=str(dest), compressed_bytes=size)
    removed_logs = await db.logs.delete_for_dataset(dataset_id)
    logs_done.setdefault("count", removed_logs)
    files = await remove_files(dataset_id)
    removed = await db.archive.compact(dataset_id)
    summary = {**summary, "logs": logs_done, "files_removed": files, "removed": removed}
    await db.datasets.set_fields(dataset_id, {"archive": {**summary, "archived_at": iso()}})
    await db.datasets.set_status(dataset_id, "archived")
    log.info("dataset %s archived: %d task(s), %d log(s) (%s), %d file(s) removed",
             dataset_id, removed["tasks"], logs_done["count"], logs, files)
    return await db.archive.record(dataset_id, {"dataset": dataset.get("dataset"),
                                                "logs": logs_done, "files_removed": files,
                                                "removed": removed})


async def run(db: Database, sel: Selection, data_dir: str, remove_files: RemoveFiles) -> Doc:
    """Archive what ``sel`` matches, or with ``dry_run`` only say what would go:
    ``{"dry_run", "matched", "changed", "datasets": [...]}``."""
    found = await matching(db, sel)
    shown: list[Doc] = []
    changed = 0
    for ds in found:
        item: dict[str, Any] = {
            "dataset_id": ds["dataset_id"], "dataset": ds.get("dataset"),
            "status": ds["status"], "finished_at": ds.get("status_changed"),
            "tags": ds.get("tags") or [],
            "tasks": await db.tasks.count(dataset_id=ds["dataset_id"]),
            "logs": await db.logs.count(dataset_id=ds["dataset_id"]),
        }
        if not sel.dry_run:
            record = await archive_one(db, ds, sel.logs, data_dir, remove_files)
            item.update(status="archived", archived_at=record["archived_at"],
                        files_removed=record["files_removed"])
            changed += 1
        shown.append(item)
    return {"dry_run": sel.dry_run, "matched": len(found), "changed": changed,
            "logs": sel.logs, "older_than_days": sel.older_than_days, "tag": sel.tag,
            "datasets": shown}

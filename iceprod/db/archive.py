"""Archive: what archiving a finished dataset does to the store, and the record of it.

A dataset's tasks and jobs are compacted to a summary (counts by task name and status) and
then removed, so the store's size and its query times stay bounded as history grows; the
record of each archiving (``archives``: when, by what policy, what was removed, where the
logs went) is kept. Logs are read and removed through ``LogsRepo``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.datasets import DatasetsRepo
from iceprod.db.jobs import JobsRepo
from iceprod.db.store import CollectionSpec, Doc, Index, Store
from iceprod.db.tasks import TasksRepo

FINISHED = ("complete", "errors")


class ArchiveRepo(Repository):
    spec = CollectionSpec(
        name="archives",
        id_field="dataset_id",
        columns={"archived_at": "TEXT"},
        indexes=(Index((("archived_at", 1),)),),
    )
    kind = "archive"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.datasets = store.collection(DatasetsRepo.spec)
        self.tasks = store.collection(TasksRepo.spec)
        self.jobs = store.collection(JobsRepo.spec)

    async def candidates(self, finished_before: str, tag: str | None = None,
                         dataset_ids: Sequence[str] | None = None) -> list[Doc]:
        """Finished (complete or errors) datasets whose status last changed before
        ``finished_before`` (ISO time), carrying ``tag`` when given, in number order."""
        query: dict[str, Any] = {"status": {"$in": list(FINISHED)},
                                 "status_changed": {"$lt": finished_before}}
        if dataset_ids is not None:
            query["dataset_id"] = {"$in": list(dataset_ids)}
        docs = await self.datasets.find(query, sort=[("dataset", 1)])
        if tag is not None:
            docs = [d for d in docs if tag in (d.get("tags") or [])]
        return docs

    async def task_summary(self, dataset_id: str) -> dict[str, dict[str, int]]:
        """``{task name: {status: n}}`` of a dataset's tasks."""
        rows = await self.tasks.group_count({"dataset_id": dataset_id}, ["name", "status"])
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(str(r["name"]), {})[str(r["status"])] = r["count"]
        return out

    async def task_totals(self, dataset_id: str) -> Doc:
        """Walltime (good and error hours), failures and evictions summed over the tasks."""
        rows = await self.tasks.group_stats(
            {"dataset_id": dataset_id}, [],
            {"walltime_hours": ("sum", "walltime"), "error_hours": ("sum", "walltime_err"),
             "failures": ("sum", "failures"), "evictions": ("sum", "evictions")})
        row = rows[0] if rows else {}
        return {k: row.get(k) or 0 for k in
                ("walltime_hours", "error_hours", "failures", "evictions")}

    async def compact(self, dataset_id: str) -> dict[str, int]:
        """Remove a dataset's task and job documents; answers how many of each went."""
        tasks = await self.tasks.delete_many({"dataset_id": dataset_id})
        jobs = await self.jobs.delete_many({"dataset_id": dataset_id})
        return {"tasks": tasks, "jobs": jobs}

    async def record(self, dataset_id: str, summary: Doc) -> Doc:
        """Keep the record of an archiving (a second archiving replaces it)."""
        doc = {"dataset_id": dataset_id, "archived_at": iso(), **summary}
        await self.coll.delete_many({"dataset_id": dataset_id})
        await self.coll.insert_one(doc)
        return doc

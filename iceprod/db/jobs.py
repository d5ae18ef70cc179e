"""Jobs: one per (dataset, job_index); status by the state machine; counts and summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.timeutil import iso
from iceprod.db.base import ALL, Page, Paging, Repository, one_of, where
from iceprod.db.store import CollectionSpec, Doc, Index


class JobsRepo(Repository):
    spec = CollectionSpec(
        name="jobs",
        id_field="job_id",
        columns={"dataset_id": "TEXT", "job_index": "INTEGER", "status": "TEXT"},
        indexes=(
            Index((("dataset_id", 1), ("job_index", 1)), unique=True),
            Index((("dataset_id", 1), ("status", 1))),
        ),
        counts=(("dataset_id", "status"),),
    )
    kind = "job"
    machine = "job"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def insert_missing(self, docs: Sequence[Doc]) -> int:
        """Insert jobs whose (dataset_id, job_index) does not exist yet; idempotent."""
        return await self.coll.insert_many(docs, skip_duplicates=True)

    async def set_status(self, job_id: str, status: str, dataset_id: str | None = None) -> Doc:
        query: dict[str, Any] = {"job_id": job_id}
        if dataset_id:
            query["dataset_id"] = dataset_id
        return await self._transition(query, status)

    async def patch(self, job_id: str, fields: Doc) -> Doc:
        if "status" in fields:
            await self.set_status(job_id, fields["status"])
            fields = {k: v for k, v in fields.items() if k != "status"}
        if not fields:
            return await self.get(job_id)
        doc = await self.coll.update_one({"job_id": job_id}, {"$set": fields})
        if doc is None:
            return await self.get(job_id)
        return doc

    async def counts_by_status(self, dataset_id: str) -> dict[str, int]:
        return await self._status_counts({"dataset_id": dataset_id})

    async def ids_by_status(self, dataset_id: str) -> dict[str, list[str]]:
        return await self._ids_grouped_by_status({"dataset_id": dataset_id}, [("job_index", 1)])

    async def page(self, paging: Paging = ALL, *, dataset_id: str,
                   status: Sequence[str] | None = None, job_index: int | None = None,
                   ids: Sequence[str] | None = None) -> Page:
        """One page of a dataset's jobs matching every given criterion (``status`` and
        ``ids``: any of)."""
        return await self._page(where(dataset_id=dataset_id, status=one_of(status),
                                      job_index=job_index, job_id=one_of(ids)), paging)

    async def bulk_status(self, dataset_id: str, status: str,
                          from_status: Sequence[str]) -> int:
        """Move a dataset's jobs in ``from_status`` to ``status``."""
        return await self.coll.update_many(
            {"dataset_id": dataset_id, "status": {"$in": list(from_status)}},
            {"$set": {"status": status, "status_changed": iso()}},
        )

    async def any_with_status(self, dataset_id: str, status: str) -> bool:
        """Whether some job of the dataset is in ``status`` (one index probe)."""
        return await self.coll.find_one({"dataset_id": dataset_id, "status": status},
                                        keys=["job_id"]) is not None

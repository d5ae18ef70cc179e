"""Datasets: creation with a human number, status changes by the state machine, summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.errors import Conflict, Invalid, NotFound
from iceprod.db.base import ALL, Page, Paging, Repository, one_of, where
from iceprod.db.store import CollectionSpec, Doc, Index


class DatasetsRepo(Repository):
    spec = CollectionSpec(
        name="datasets",
        id_field="dataset_id",
        columns={"status": "TEXT", "username": "TEXT", "group": "TEXT", "dataset": "INTEGER"},
        indexes=(
            Index((("dataset", 1),), unique=True),
            Index((("status", 1),)),
            Index((("username", 1),)),
        ),
        scalar_fields=frozenset({"jobs_submitted", "status_changed", "project"}),
    )
    kind = "dataset"
    machine = "dataset"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def set_status(self, dataset_id: str, status: str) -> Doc:
        return await self._transition({"dataset_id": dataset_id}, status)

    async def set_fields(self, dataset_id: str, fields: dict[str, Any]) -> Doc:
        doc = await self.coll.update_one({"dataset_id": dataset_id}, {"$set": fields})
        if doc is None:
            raise NotFound("dataset not found")
        return doc

    async def grow_jobs(self, dataset_id: str, jobs_submitted: int) -> Doc:
        """Raise ``jobs_submitted`` (and ``tasks_submitted``); it may only grow."""
        cur = await self.get(dataset_id)
        if cur.get("jobs_immutable"):
            raise Conflict("jobs_submitted: dataset has jobs_immutable set")
        if jobs_submitted < cur["jobs_submitted"]:
            raise Invalid(
                f"jobs_submitted: may only grow (currently {cur['jobs_submitted']})"
            )
        doc = await self.coll.update_one(
            {"dataset_id": dataset_id, "jobs_submitted": {"$lte": jobs_submitted}},
            {
                "$set": {
                    "jobs_submitted": jobs_submitted,
                    "tasks_submitted": jobs_submitted * cur["tasks_per_job"],
                }
            },
        )
        if doc is None:
            raise Conflict("jobs_submitted: changed concurrently, retry")
        return doc

    async def ids_by_status(self, dataset_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        query: dict[str, Any] = {}
        if dataset_ids is not None:
            query["dataset_id"] = {"$in": list(dataset_ids)}
        return await self._ids_grouped_by_status(query, [("dataset_id", 1)])

    async def id_of_number(self, number: int) -> str | None:
        """The id of the dataset with this human number, if any."""
        docs = await self.coll.find({"dataset": number}, keys=["dataset_id"], limit=1)
        return str(docs[0]["dataset_id"]) if docs else None

    async def ids_of_user(self, username: str) -> list[str]:
        """The ids of the datasets ``username`` submitted (single-user pilots' claims)."""
        docs = await self.coll.find({"username": username}, keys=["dataset_id"])
        return [d["dataset_id"] for d in docs]

    async def page(self, paging: Paging = ALL, *, status: Sequence[str] | None = None,
                   username: str | None = None, group: str | None = None,
                   ids: Sequence[str] | None = None) -> Page:
        """One page of the datasets in ``status`` (any of), of ``username`` and ``group``,
        among ``ids`` (each criterion only when given; ``ids=[]`` matches nothing)."""
        return await self._page(where(status=one_of(status), username=username, group=group,
                                      dataset_id=one_of(ids)), paging)

    async def listing(self, keys: Sequence[str], *, status: Sequence[str] | None = None,
                      username: str | None = None, group: str | None = None,
                      ids: Sequence[str] | None = None) -> list[Doc]:
        """Every matching dataset (``keys`` only; criteria as for ``page``), newest number
        first: the dashboard's table filters and pages these in memory (a search on the
        description included)."""
        return await self.coll.find(
            where(status=one_of(status), username=username, group=group,
                  dataset_id=one_of(ids)),
            keys=list(keys), sort=[("dataset", -1)])

    async def advance_materialized(self, dataset_id: str, jobs: int) -> None:
        """Record that jobs ``[0, jobs)`` exist (a resume hint; never moves back)."""
        await self.coll.update_one({"dataset_id": dataset_id},
                                   {"$max": {"jobs_materialized": jobs}})

    async def processing(self) -> list[Doc]:
        """Every processing dataset (the scheduler's working set)."""
        return await self.coll.find({"status": "processing"}, sort=[("dataset_id", 1)])

    async def needing_materialization(self) -> list[Doc]:
        return [d for d in await self.processing()
                if int(d.get("jobs_materialized", 0)) < int(d["jobs_submitted"])]


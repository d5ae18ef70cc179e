"""Projects: named sets of users and groups that datasets belong to, with quotas (concurrent
cores, CPU-hours per period, stored bytes). The id is the project's name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.errors import Conflict, DuplicateKey, NotFound
from iceprod.common.timeutil import iso
from iceprod.db.base import ALL, Page, Paging, Repository
from iceprod.db.datasets import DatasetsRepo
from iceprod.db.store import CollectionSpec, Doc, Store
from iceprod.db.tasks import TasksRepo

DEFAULT_PROJECT = "default"
"""The project of a submitter who belongs to no other: open to everyone, no quotas unless
an admin creates it with some."""

QUOTA_FIELDS = ("cores", "cpu_hours", "period_days", "stored_bytes")


class ProjectsRepo(Repository):
    spec = CollectionSpec(name="projects", id_field="name",
                          array_fields=frozenset({"users", "groups"}))
    kind = "project"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.datasets = store.collection(DatasetsRepo.spec)
        self.tasks = store.collection(TasksRepo.spec)

    @staticmethod
    def new_doc(name: str, description: str = "", users: Sequence[str] = (),
                groups: Sequence[str] = (), quota: Doc | None = None) -> Doc:
        return {"name": name, "description": description, "users": list(users),
                "groups": list(groups), "quota": dict(quota or {}), "created": iso()}

    async def create(self, doc: Doc) -> Doc:
        """Insert a new project; a taken name is a ``Conflict``."""
        try:
            await self.coll.insert_one(doc)
        except DuplicateKey:
            raise Conflict(f"name: project {doc['name']!r} already exists") from None
        return doc

    async def page(self, paging: Paging = ALL) -> Page:
        """One page of the projects."""
        return await self._page({}, paging)

    async def update(self, name: str, fields: dict[str, Any]) -> Doc:
        """``$set`` the given top-level fields (description, users, groups)."""
        if not fields:
            return await self.get(name)
        doc = await self.coll.update_one({"name": name}, {"$set": fields})
        if doc is None:
            raise NotFound("project not found")
        return doc

    async def set_quota(self, name: str, quota: dict[str, Any]) -> Doc:
        """Set the given quota fields; a ``None`` value removes that quota (unlimited)."""
        update: dict[str, dict[str, Any]] = {}
        sets = {f"quota.{k}": v for k, v in quota.items() if v is not None}
        unsets = {f"quota.{k}": "" for k, v in quota.items() if v is None}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = unsets
        if not update:
            return await self.get(name)
        doc = await self.coll.update_one({"name": name}, update)
        if doc is None:
            raise NotFound("project not found")
        return doc

    async def delete(self, name: str) -> Doc:
        doc = await self.get(name)
        await self.coll.delete_many({"name": name})
        return doc

    async def of_member(self, username: str, groups: Sequence[str]) -> list[Doc]:
        """The projects naming ``username`` or one of ``groups``, by name."""
        query: dict[str, Any] = {"$or": [{"users": username},
                                         *({"groups": g} for g in groups)]}
        return await self.coll.find(query, sort=[("name", 1)])

    async def with_quota(self, names: Sequence[str]) -> list[Doc]:
        """The projects among ``names`` that exist (those without one have no quota)."""
        if not names:
            return []
        return await self.coll.find({"name": {"$in": list(names)}}, sort=[("name", 1)])

    async def dataset_ids(self, name: str, statuses: Sequence[str] | None = None) -> list[str]:
        """The datasets of a project (a dataset naming no project is in ``default``)."""
        query: dict[str, Any] = {"project": name}
        if name == DEFAULT_PROJECT:
            query = {"$or": [{"project": name}, {"project": None}]}
        if statuses is not None:
            query = {**query, "status": {"$in": list(statuses)}}
        docs = await self.datasets.find(query, keys=["dataset_id"], sort=[("dataset_id", 1)])
        return [d["dataset_id"] for d in docs]

    async def cores_held(self, dataset_ids: Sequence[str]) -> dict[str, float]:
        """Cores requested by the datasets' tasks, by status, for ``queued`` and
        ``processing`` (a task naming no cpu holds one)."""
        out = {"queued": 0.0, "processing": 0.0}
        if not dataset_ids:
            return out
        rows = await self.tasks.group_count(
            {"dataset_id": {"$in": list(dataset_ids)},
             "status": {"$in": ["queued", "processing"]}},
            ["status", "requirements.cpu"])
        for r in rows:
            cpu = r.get("requirements.cpu")
            out[r["status"]] += float(cpu if cpu else 1) * r["count"]
        return out

    async def largest_waiting_cpu(self, dataset_id: str) -> float:
        """The most cores any waiting task of the dataset asks for (1 when none says)."""
        rows = await self.tasks.group_stats({"dataset_id": dataset_id, "status": "waiting"},
                                            [], {"cpu": ("max", "requirements.cpu")})
        cpu = rows[0].get("cpu") if rows else None
        return float(cpu) if cpu else 1.0

"""Project quotas: what holds a dataset's work back, and how much more the queue may take.

A project's ``quota`` may set:

- ``cores``: cores its datasets' tasks may hold at once. Queued and processing tasks count
  (a queued task is about to run); a task naming no cpu holds one.
- ``cpu_hours`` over ``period_days`` (default 30): core-hours (cores held x walltime, from
  the usage rollups) its runs may use in the last ``period_days`` days, today included.
- ``stored_bytes``: bytes its datasets may keep in the file store (checked on upload).

Over-quota work is not queued: it waits, and ``quota_blockers`` says why in plain words.
When quota frees (tasks finish, the period moves on) the next queueing round queues it.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from iceprod.db import Database
from iceprod.db.projects import DEFAULT_PROJECT
from iceprod.db.store import Doc

DEFAULT_PERIOD_DAYS = 30
StoredBytes = Callable[[str], Awaitable[int]]
"""The bytes one dataset keeps in the file store (the REST layer's file store answers)."""


def project_of(dataset: Doc) -> str:
    return str(dataset.get("project") or DEFAULT_PROJECT)


def period_start(days: int, today: datetime.date | None = None) -> str:
    """The first day (ISO date) of a period of ``days`` days ending today."""
    today = today or datetime.datetime.now(datetime.UTC).date()
    return (today - datetime.timedelta(days=max(days, 1) - 1)).isoformat()


@dataclass
class ProjectLoad:
    """A project's quota and what its datasets hold against it now."""

    name: str
    quota: Doc
    cores_held: float = 0.0
    core_hours: float = 0.0
    period_days: int = DEFAULT_PERIOD_DAYS

    def blockers(self, need: float = 1.0) -> list[Doc]:
        """What holds back a task needing ``need`` cores (the project's quotas only)."""
        out = []
        cores = self.quota.get("cores")
        if cores is not None and self.cores_held + need > cores:
            message = f"project {self.name}: {self.cores_held:g} cores in use of {cores:g}"
            if need > 1:
                message += f"; its next task needs {need:g}"
            out.append({"kind": "quota", "quota": "cores", "project": self.name,
                        "used": self.cores_held, "limit": cores, "message": message})
        hours = self.quota.get("cpu_hours")
        if hours is not None and self.core_hours >= hours:
            out.append({"kind": "quota", "quota": "cpu_hours", "project": self.name,
                        "used": round(self.core_hours, 3), "limit": hours,
                        "period_days": self.period_days,
                        "message": f"project {self.name}: {self.core_hours:.1f} CPU-hours "
                                   f"used of {hours:g} in the last {self.period_days} days"})
        return out

    def cores_left(self) -> float:
        cores = self.quota.get("cores")
        return math.inf if cores is None else cores - self.cores_held


async def project_load(db: Database, project: Doc, everything: bool = False) -> ProjectLoad:
    """Measure what a project's datasets hold against its quota (only the quotas it has,
    unless ``everything``)."""
    quota = dict(project.get("quota") or {})
    load = ProjectLoad(project["name"], quota,
                       period_days=int(quota.get("period_days") or DEFAULT_PERIOD_DAYS))
    if everything or quota.get("cores") is not None:
        ids = await db.projects.dataset_ids(project["name"], ["processing", "suspended",
                                                              "errors"])
        held = await db.projects.cores_held(ids)
        load.cores_held = held["queued"] + held["processing"]
    if everything or quota.get("cpu_hours") is not None:
        rows = await db.usage.totals({"project": project["name"]},
                                     start=period_start(load.period_days))
        load.core_hours = float(rows[0]["core_hours"]) if rows else 0.0
    return load


async def quota_blockers(db: Database, dataset: Doc) -> list[Doc]:
    """Why the dataset's project quota holds its work back (empty when it does not):
    ``[{"kind": "quota", "quota": "cores", "project": ..., "used", "limit", "message":
    "project X: 64 cores in use of 64"}]``."""
    name = project_of(dataset)
    project = await db.projects.find(name)
    if project is None or not project.get("quota"):
        return []
    need = 1.0
    if project["quota"].get("cores") is not None:
        need = await db.projects.largest_waiting_cpu(dataset["dataset_id"])
    return (await project_load(db, project)).blockers(need)


@dataclass
class QuotaGate:
    """How many more tasks each dataset may queue this round, so that no project goes over
    its core quota and none over its CPU-hours queues anything. ``allow`` answers, ``took``
    charges what was queued to the project's remaining cores."""

    project: dict[str, str] = field(default_factory=dict)  # dataset -> gated project
    loads: dict[str, ProjectLoad] = field(default_factory=dict)
    task_cores: dict[str, float] = field(default_factory=dict)

    @classmethod
    async def load(cls, db: Database, datasets: Iterable[Doc]) -> QuotaGate:
        gate = cls()
        by_project: dict[str, list[str]] = {}
        for ds in datasets:
            by_project.setdefault(project_of(ds), []).append(ds["dataset_id"])
        for project in await db.projects.with_quota(sorted(by_project)):
            if not project.get("quota"):
                continue
            gate.loads[project["name"]] = await project_load(db, project)
            for dataset_id in by_project[project["name"]]:
                gate.project[dataset_id] = project["name"]
        return gate

    async def prepare(self, db: Database, dataset_id: str) -> None:
        """Learn the cores a dataset's next task may need (only for gated datasets)."""
        name = self.project.get(dataset_id)
        if name is not None and dataset_id not in self.task_cores \
                and self.loads[name].quota.get("cores") is not None:
            self.task_cores[dataset_id] = await db.projects.largest_waiting_cpu(dataset_id)

    def allow(self, dataset_id: str, n: int) -> int:
        name = self.project.get(dataset_id)
        if name is None or n <= 0:
            return n
        load = self.loads[name]
        if load.blockers(self.task_cores.get(dataset_id, 1.0)):
            return 0
        left = load.cores_left()
        if math.isinf(left):
            return n
        return max(0, min(n, int(left // self.task_cores.get(dataset_id, 1.0))))

    def took(self, dataset_id: str, got: int) -> None:
        name = self.project.get(dataset_id)
        if name is not None and got:
            self.loads[name].cores_held += got * self.task_cores.get(dataset_id, 1.0)


async def quota_allows(db: Database, dataset_id: str, n: int) -> int:
    """How many of ``n`` ready tasks the dataset's project quota lets it queue now (what a
    completion may queue of its dependents at once; the rest wait for a queueing round)."""
    dataset = await db.datasets.find(dataset_id)
    if dataset is None:
        return 0
    gate = await QuotaGate.load(db, [dataset])
    await gate.prepare(db, dataset_id)
    return gate.allow(dataset_id, n)


async def storage_room(db: Database, dataset: Doc, stored: StoredBytes) -> tuple[str, int, int] | None:
    """``(project, limit, used)`` when the dataset's project has a stored-bytes quota, else
    None: ``used`` is what all the project's datasets keep in the file store now."""
    name = project_of(dataset)
    project = await db.projects.find(name)
    limit = (project or {}).get("quota", {}).get("stored_bytes")
    if limit is None:
        return None
    used = 0
    for dataset_id in await db.projects.dataset_ids(name):
        used += await stored(dataset_id)
    return name, int(limit), used


def storage_message(project: str, limit: int, used: int, incoming: int) -> str:
    return (f"stored_bytes: project {project}'s quota of {limit} stored bytes would be "
            f"exceeded ({used} stored + {incoming} uploaded)")

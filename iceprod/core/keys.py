"""Materialization keys: the ids of a dataset's jobs and tasks, derived from
``(dataset_id, job_index[, task_index])`` (UUID5), and how a dependency on another dataset's
task resolves to that task's index.

Deriving ids makes materialization idempotent (the store's unique keys refuse a duplicate),
and lets a task name its dependencies in another dataset before they exist. The config
handler checks cross-dataset dependencies with ``foreign_task_index`` as the scheduler
resolves them.
"""

from __future__ import annotations

import uuid

from iceprod.common.errors import Invalid
from iceprod.db import Database

NAMESPACE = uuid.UUID("5f1f4c8e-6c1a-4f55-9d43-3a1c8e2b7d10")


def job_id_for(dataset_id: str, job_index: int) -> str:
    return uuid.uuid5(NAMESPACE, f"job:{dataset_id}:{job_index}").hex


def task_id_for(dataset_id: str, job_index: int, task_index: int) -> str:
    return uuid.uuid5(NAMESPACE, f"task:{dataset_id}:{job_index}:{task_index}").hex


async def foreign_task_index(db: Database, dataset_id: str, name: str) -> int:
    """The index of task ``name`` in another dataset's config (400 when unknown)."""
    other = await db.config.find(dataset_id)
    if other is None:
        raise Invalid(f"depends: dataset {dataset_id} has no config")
    for i, t in enumerate(other["config"]["tasks"]):
        if t["name"] == name:
            return i
    raise Invalid(f"depends: dataset {dataset_id} has no task {name!r}")

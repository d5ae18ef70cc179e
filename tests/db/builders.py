"""Documents and small actions the repository contract tests (``test_repo_*.py``) build
their worlds from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.db import Database
from iceprod.db.store import Doc

LEASE = 600.0
NOW = 1_700_000_000.0


def dataset_doc(dataset_id: str, number: int, **extra: Any) -> Doc:
    return {
        "dataset_id": dataset_id,
        "dataset": number,
        "status": "processing",
        "jobs_submitted": 2,
        "tasks_per_job": 3,
        "username": "alice",
        "group": "users",
        **extra,
    }


def job_doc(dataset_id: str, job_index: int, status: str = "processing", **extra: Any) -> Doc:
    return {
        "job_id": f"{dataset_id}-j{job_index}",
        "dataset_id": dataset_id,
        "job_index": job_index,
        "status": status,
        **extra,
    }


def task_doc(
    task_id: str,
    *,
    dataset_id: str = "d1",
    job_index: int = 0,
    task_index: int = 0,
    name: str = "main",
    status: str = "queued",
    priority: float | None = 0.0,
    requirements: Doc | None = None,
    depends: Sequence[str] = (),
    **extra: Any,
) -> Doc:
    return {
        "task_id": task_id,
        "dataset_id": dataset_id,
        "job_id": f"{dataset_id}-j{job_index}",
        "job_index": job_index,
        "task_index": task_index,
        "name": name,
        "status": status,
        "priority": priority,
        "requirements": dict(requirements or {}),
        "depends": list(depends),
        "failures": 0,
        "evictions": 0,
        **extra,
    }


def queued(specs: dict[str, Doc]) -> list[Doc]:
    """Queued tasks from ``{task_id: requirements}``, one job each, all in dataset d1."""
    return [
        task_doc(tid, job_index=i, requirements=reqs) for i, (tid, reqs) in enumerate(specs.items())
    ]


async def claim_all(db: Database, resources: Doc, pilot_id: str = "p1") -> list[str]:
    """Claim until nothing fits; the task ids in claim order."""
    got = []
    while (task := await db.tasks.claim(resources, pilot_id, LEASE)) is not None:
        got.append(task["task_id"])
        assert len(got) <= 50, "claim never ran dry"
    return got


async def processing_task(db: Database, task_id: str = "t1", **extra: Any) -> Doc:
    """A task just claimed by pilot p1 (the only queued task)."""
    await db.tasks.create(task_doc(task_id, **extra))
    task = await db.tasks.claim({}, "p1", LEASE)
    assert task is not None and task["task_id"] == task_id
    return task

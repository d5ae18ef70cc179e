"""State machines for datasets, jobs, tasks and pilots, as data.

Every status change in the store is one conditional update naming the allowed previous
states (see ``allowed_from``), never a read-modify-write.
"""

from __future__ import annotations

from enum import StrEnum


class DatasetStatus(StrEnum):
    PROCESSING = "processing"
    SUSPENDED = "suspended"
    ERRORS = "errors"
    COMPLETE = "complete"
    ARCHIVED = "archived"


class JobStatus(StrEnum):
    PROCESSING = "processing"
    SUSPENDED = "suspended"
    ERRORS = "errors"
    COMPLETE = "complete"


class TaskStatus(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETE = "complete"
    FAILED = "failed"
    SUSPENDED = "suspended"


class PilotStatus(StrEnum):
    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHED = "finished"
    LOST = "lost"


DATASET_TRANSITIONS: dict[str, set[str]] = {
    "processing": {"suspended", "errors", "complete"},
    "suspended": {"processing"},
    "errors": {"processing", "suspended", "archived"},
    "complete": {"archived"},
    "archived": set(),  # POST /archive: tasks compacted to a summary (core/archive.py)
}

JOB_TRANSITIONS: dict[str, set[str]] = {
    "processing": {"suspended", "errors", "complete"},
    "suspended": {"processing"},
    "errors": {"processing"},
    "complete": set(),
}

TASK_TRANSITIONS: dict[str, set[str]] = {
    "waiting": {"queued", "suspended"},
    "queued": {"processing", "waiting", "suspended"},
    "processing": {"complete", "waiting", "failed", "suspended"},
    "failed": {"waiting"},
    "suspended": {"waiting"},
    "complete": set(),
}

PILOT_TRANSITIONS: dict[str, set[str]] = {
    "submitted": {"running", "finished", "lost"},
    "running": {"finished", "lost"},
    "finished": set(),
    "lost": set(),
}

MACHINES: dict[str, dict[str, set[str]]] = {
    "dataset": DATASET_TRANSITIONS,
    "job": JOB_TRANSITIONS,
    "task": TASK_TRANSITIONS,
    "pilot": PILOT_TRANSITIONS,
}


def statuses(kind: str) -> list[str]:
    """All statuses of one kind of document, in declaration order."""
    return list(MACHINES[kind])


def allowed_from(kind: str, new: str) -> list[str]:
    """The statuses from which ``new`` may be reached (the conditional update's filter)."""
    return [old for old, targets in MACHINES[kind].items() if new in targets]


def is_allowed(kind: str, old: str, new: str) -> bool:
    return new in MACHINES[kind].get(old, set())

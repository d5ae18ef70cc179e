"""Fair-share priorities: one documented formula, in one place.

Dataset share (how much of the queue a processing dataset should get), for dataset ``d`` of
user ``u`` in group ``g``::

    share(d) = W(g) / sum(W over active groups)          # groups by weight
             * 1 / n_users(g)                             # users of a group equally
             * p(d) / sum(p over u's datasets in g)       # a user's datasets by priority

where ``p(d)`` is the dataset's priority (0..1; a dataset at 0 gets nothing while others
have work) and ``W(g)`` the group weight (configured, default 1). Shares of all active
datasets sum to 1.

Dataset score, the share damped by what the dataset already has and by its size::

    score(d) = share(d)
             / (1 + running(d) / (R * share(d)))          # 1 when idle, 1/2 at its share
             / (1 + log10(1 + size(d)) / 10)              # large datasets yield a little

with ``running(d)`` its processing tasks, ``R`` all processing tasks (at least 1) and
``size(d)`` its ``tasks_submitted``.

Task priority inside a dataset (0..1), later tasks of started jobs and low job indexes
first::

    within(t) = 0.5 * (task_index + 1) / tasks_per_job
              + 0.5 * (1 - job_index / jobs_submitted)

The queue gives each dataset ``queue_max * score(d) / sum(score)`` slots and fills them in
``within`` order; claims take queued tasks by ``dataset_priority`` (the score) then
``priority`` (within).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SIZE_DAMPING = 10.0


@dataclass(frozen=True)
class DatasetLoad:
    """What the formula needs to know about one processing dataset."""

    dataset_id: str
    username: str
    group: str
    priority: float
    size: int
    running: int


def shares(datasets: Sequence[DatasetLoad], group_weights: Mapping[str, float]
           ) -> dict[str, float]:
    """Each dataset's fair share of the queue; they sum to 1 (or are all 0)."""
    by_group: dict[str, dict[str, list[DatasetLoad]]] = defaultdict(lambda: defaultdict(list))
    for d in datasets:
        by_group[d.group][d.username].append(d)
    weights = {g: max(float(group_weights.get(g, 1.0)), 0.0) for g in by_group}
    total_weight = sum(weights.values())
    out = {d.dataset_id: 0.0 for d in datasets}
    if total_weight <= 0:
        return out
    for group, users in by_group.items():
        group_share = weights[group] / total_weight
        for user_datasets in users.values():
            user_share = group_share / len(users)
            total_p = sum(max(d.priority, 0.0) for d in user_datasets)
            for d in user_datasets:
                if total_p > 0:
                    out[d.dataset_id] = user_share * max(d.priority, 0.0) / total_p
    return out


def scores(datasets: Sequence[DatasetLoad], group_weights: Mapping[str, float]
           ) -> dict[str, float]:
    """Each dataset's score: its share damped by its running work and its size."""
    share = shares(datasets, group_weights)
    total_running = max(sum(d.running for d in datasets), 1)
    out = {}
    for d in datasets:
        s = share[d.dataset_id]
        if s <= 0:
            out[d.dataset_id] = 0.0
            continue
        running_damp = 1.0 / (1.0 + d.running / (total_running * s))
        size_damp = 1.0 / (1.0 + math.log10(1 + max(d.size, 0)) / SIZE_DAMPING)
        out[d.dataset_id] = s * running_damp * size_damp
    return out


def within_dataset(job_index: int, task_index: int, jobs_submitted: int,
                   tasks_per_job: int) -> float:
    """A task's priority inside its dataset, 0..1."""
    later = (task_index + 1) / max(tasks_per_job, 1)
    earlier_job = 1.0 - job_index / max(jobs_submitted, 1)
    return round(0.5 * later + 0.5 * earlier_job, 9)


def quotas(slots: int, score: Mapping[str, float], queued: Mapping[str, int]
           ) -> dict[str, int]:
    """How many more tasks each dataset may queue: its score's part of all queue slots
    (``slots`` = queue_max, split by largest remainder so the parts add up exactly), less
    what it has queued already."""
    total = sum(score.values())
    if total <= 0 or slots <= 0:
        return {k: 0 for k in score}
    exact = {ds: slots * s / total for ds, s in score.items()}
    target = {ds: math.floor(x) for ds, x in exact.items()}
    left = slots - sum(target.values())
    for ds in sorted(exact, key=lambda d: (target[d] - exact[d], d))[:left]:
        target[ds] += 1
    return {ds: max(target[ds] - queued.get(ds, 0), 0) for ds in score}


def load_from_docs(datasets: Sequence[Mapping[str, Any]], running: Mapping[str, int]
                   ) -> list[DatasetLoad]:
    return [
        DatasetLoad(
            dataset_id=d["dataset_id"], username=d.get("username", ""),
            group=d.get("group", ""), priority=float(d.get("priority", 0.5)),
            size=int(d.get("tasks_submitted", 0)), running=int(running.get(d["dataset_id"], 0)),
        )
        for d in datasets
    ]

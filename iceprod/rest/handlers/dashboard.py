"""Aggregations the dashboard needs and the per-dataset routes do not give: the datasets
table with each row's task counts in one request, and what a dataset page plots (tasks
completed over time, walltime and memory distributions per task name, failures by reason
class). Ordinary API routes: the same auth and the same answers for any client."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from iceprod.common.reasons import classify
from iceprod.common.timeutil import iso, parse
from iceprod.db.store import Doc
from iceprod.rest.base import MAX_LIMIT_ARG, APIHandler, requires
from iceprod.rest.handlers.datasets import visible_ids
from iceprod.rest.openapi import LIMIT, OFFSET, STATUS, TEXT, query
from iceprod.rest.responses import responds

OVERVIEW_KEYS = ("dataset_id", "dataset", "description", "username", "group", "status",
                 "priority", "start_date", "jobs_submitted", "tasks_submitted")
PAGE_SIZE = 25
MAX_PAGE_SIZE = 500
BINS = 12
"""Histogram bins per task name."""
TIME_BUCKETS = 60
"""At most this many points in the completed-over-time series."""


class DatasetOverviewHandler(APIHandler):
    @responds("DatasetOverview")
    @query(status=STATUS, username=TEXT, group=TEXT, search=TEXT, limit=LIMIT, offset=OFFSET)
    @requires("read:datasets")
    async def get(self) -> None:
        """The datasets the caller may read, newest first, each with its task counts by
        status: `{"total": n, "offset": k, "datasets": [{dataset_id, dataset, description,
        username, group, status, priority, start_date, jobs_submitted, tasks_submitted,
        task_counts: {status: n}}]}`. Filters: `status=a|b`, `username=`, `group=`,
        `search=` (words that must all appear in the description, or a dataset number);
        `limit` rows (default 25, at most 500) from `offset`."""
        rows = await self.db.datasets.listing(
            OVERVIEW_KEYS, status=self.status_arg(),
            username=self.get_argument("username", "") or None,
            group=self.get_argument("group", "") or None, ids=await visible_ids(self))
        if search := self.get_argument("search", "").strip():
            rows = [r for r in rows if _matches(r, search)]
        limit = min(self.int_arg("limit", PAGE_SIZE, minimum=1, maximum=MAX_LIMIT_ARG)
                    or PAGE_SIZE, MAX_PAGE_SIZE)
        offset = self.int_arg("offset", 0) or 0
        page = rows[offset:offset + limit]
        counts = await self.db.tasks.counts_by_datasets([r["dataset_id"] for r in page])
        for r in page:
            r["task_counts"] = counts.get(r["dataset_id"], {})
        self.write_json({"total": len(rows), "offset": offset, "datasets": page})


def _matches(row: Doc, search: str) -> bool:
    if search.isdigit():
        return str(row.get("dataset")) == search
    text = str(row.get("description", "")).lower()
    return all(word in text for word in search.lower().split())


class TaskPlotsHandler(APIHandler):
    @responds("TaskPlots")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """What the dataset page plots: `{"completed": [{"time": iso, "count": n}] (tasks
        completed per time bucket, by when they completed), "walltime": {name: histogram}
        (hours, from the runs' stats), "memory": {name: histogram} (GB of peak RSS),
        "failures": {class: n} (failed runs by reason class: node, resources, payload,
        unknown, evicted)}`; a histogram is `{"edges": [b0..bn], "counts": [c1..cn]}`."""
        tasks = await self.db.tasks.for_plots(dataset_id)
        runs = await self.db.task_stats.of_dataset(dataset_id)
        names = {t["task_id"]: t.get("name", "") for t in tasks}
        walltime: dict[str, list[float]] = {}
        memory: dict[str, list[float]] = {}
        failures: Counter[str] = Counter()
        for run in runs:
            stats = run.get("stats") or {}
            name = names.get(run.get("task_id", ""), "")
            if stats.get("outcome") == "reset":
                failures[classify(stats.get("reason"))] += 1
            if isinstance(stats.get("walltime"), (int, float)):
                walltime.setdefault(name, []).append(float(stats["walltime"]) / 3600)
            if isinstance(stats.get("max_rss"), (int, float)):
                memory.setdefault(name, []).append(float(stats["max_rss"]) / 1e9)
        if not runs:
            # no stats records (tasks reported by other means): the tasks' own fields
            for t in tasks:
                if t.get("status") == "complete" and isinstance(t.get("walltime"), (int, float)):
                    walltime.setdefault(t.get("name", ""), []).append(float(t["walltime"]))
                if t.get("failures"):
                    failures[classify(t.get("reason"))] += int(t["failures"])
        self.write_json({
            "completed": completed_series(
                [t.get("status_changed") for t in tasks if t.get("status") == "complete"]),
            "walltime": {n: histogram(v) for n, v in walltime.items()},
            "memory": {n: histogram(v) for n, v in memory.items()},
            "failures": dict(failures),
        })


def histogram(values: list[float], bins: int = BINS) -> Doc:
    """Equal-width bins from the smallest to the largest value."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        return {"edges": [lo, lo], "counts": [len(values)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def completed_series(stamps: list[Any]) -> list[Doc]:
    """Completions counted per time bucket (at most ``TIME_BUCKETS`` buckets, whole seconds
    wide), in time order."""
    times = sorted(t for t in (_epoch(s) for s in stamps) if t is not None)
    if not times:
        return []
    start, end = math.floor(times[0]), math.floor(times[-1])
    width = max(1, math.ceil((end - start + 1) / TIME_BUCKETS))
    counts: Counter[int] = Counter(int((t - start) // width) for t in times)
    return [{"time": iso(start + i * width), "count": counts[i]} for i in sorted(counts)]


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return parse(stamp)
    except ValueError:
        return None


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (r"/dataset_overview", DatasetOverviewHandler),
    (rf"/datasets/{D}/task_plots", TaskPlotsHandler),
]

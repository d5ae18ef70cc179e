"""Usage and billing: each task run's stats record adds to the daily usage rollups of its
user, group, project, site and dataset; billing prices a month of rollups with the rate
table admins keep.

What one run adds (from the pilot's stats record, ``walltime`` and ``cpu_time`` in seconds,
``max_rss`` in bytes, ``requirements`` the cores/GPUs it held):

- ``walltime_hours``: walltime / 3600
- ``cpu_hours``: measured CPU time / 3600
- ``core_hours``: cores held (``requirements.cpu``, default 1) x walltime hours
- ``gpu_hours``: GPUs held (``requirements.gpu``, default 0) x walltime hours
- ``memory_gb_hours``: peak resident memory in GB x walltime hours
- ``tasks_complete`` / ``tasks_reset`` / ``tasks_failed``: one, by the run's outcome
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.quota import project_of
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.db.usage import KEY_FIELDS, METRICS

RATE_METRICS = ("cpu_hours", "core_hours", "walltime_hours", "gpu_hours", "memory_gb_hours")
DEFAULT_RATES: Doc = {"currency": "units", **{m: 0.0 for m in RATE_METRICS}}
OUTCOMES = {"complete": "tasks_complete", "reset": "tasks_reset", "failed": "tasks_failed"}
GB = 1024 ** 3


def _num(value: Any, cap: float) -> float:
    """A non-negative number from an untrusted stats field, at most ``cap`` (so no sum
    can overflow), else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return min(max(float(value), 0.0), cap)


def run_amounts(stats: Mapping[str, Any]) -> dict[str, float]:
    """What one run's stats record adds to the usage rollups."""
    hours = _num(stats.get("walltime"), 1e9) / 3600.0
    raw = stats.get("requirements")
    req: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    cores = _num(req.get("cpu"), 1e6) or 1.0
    out = {
        "walltime_hours": hours,
        "cpu_hours": _num(stats.get("cpu_time"), 1e12) / 3600.0,
        "core_hours": cores * hours,
        "gpu_hours": _num(req.get("gpu"), 1e6) * hours,
        "memory_gb_hours": _num(stats.get("max_rss"), 1e18) / GB * hours,
    }
    outcome = OUTCOMES.get(str(stats.get("outcome", "")))
    if outcome:
        out[outcome] = 1
    return out


async def record_run(db: Database, dataset: Doc, stats: Mapping[str, Any],
                     when: str | None = None) -> None:
    """Add a run's stats to today's rollup of the dataset's user, group, project, site."""
    site = stats.get("site")
    key = {"day": (when or iso())[:10], "user": str(dataset.get("username") or ""),
           "group": str(dataset.get("group") or ""), "project": project_of(dataset),
           "site": site if isinstance(site, str) else "",
           "dataset_id": dataset["dataset_id"]}
    await db.usage.add(key, run_amounts(stats))


async def store_run(db: Database, task: Doc, stats: Doc, when: str | None = None) -> str:
    """Keep one run's stats of ``task``: its stats record (answers its id) and its share of
    the usage rollups, whichever route brought them (task_stats, or inline on complete)."""
    now = when or iso()
    stat_id = new_id()
    await db.task_stats.create({"task_stat_id": stat_id, "task_id": task["task_id"],
                                "dataset_id": task["dataset_id"], "name": task.get("name"),
                                "create_date": now, "stats": stats})
    dataset = await db.datasets.get(task["dataset_id"], keys=["username", "group", "project"])
    await record_run(db, dataset, stats, now)
    return stat_id


def check_group_by(raw: str) -> list[str]:
    fields = [f for f in raw.split("|") if f]
    for f in fields:
        if f not in KEY_FIELDS:
            raise Invalid(f"group_by: {f!r} is not one of {', '.join(KEY_FIELDS)}",
                          field="group_by")
    return fields


def month_range(year: int, month: int) -> tuple[str, str]:
    if not 1000 <= year <= 9999:
        raise Invalid("year: expected 1000..9999", field="year")
    if not 1 <= month <= 12:
        raise Invalid("month: expected 1..12", field="month")
    last = calendar.monthrange(year, month)[1]
    return f"{year:04d}-{month:02d}-01", f"{year:04d}-{month:02d}-{last:02d}"


async def rates(db: Database) -> Doc:
    return {**DEFAULT_RATES, **(await db.usage.get_rates() or {})}


async def set_rates(db: Database, new: Mapping[str, Any]) -> Doc:
    """Change the given rates (the others stay) and answer the whole table."""
    merged = {**await rates(db), **new}
    await db.usage.put_rates(merged)
    return merged


def price(rows: Sequence[Doc], table: Mapping[str, Any]) -> list[Doc]:
    """Each row with its ``cost`` (sum of metric x rate) and the rate table's currency."""
    out = []
    for r in rows:
        cost = sum(float(r.get(m) or 0) * float(table.get(m) or 0) for m in RATE_METRICS)
        out.append({**r, "cost": cost, "currency": table.get("currency", "")})
    return out


async def billing(db: Database, kind: str, name: str, year: int, month: int) -> Doc:
    """A month's usage of a user, group or project, per project, priced."""
    start, end = month_range(year, month)
    table = await rates(db)
    rows = price(await db.usage.totals({kind: name}, start, end, ["project"]), table)
    total = {m: sum(float(r[m]) for r in rows) for m in METRICS}
    cost = sum(r["cost"] for r in rows)
    return {kind: name, "year": year, "month": month, "start": start, "end": end,
            "rates": table, "projects": rows, "total": {**total, "cost": cost,
                                                        "currency": table.get("currency")}}


def to_csv(rows: Sequence[Doc], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return buf.getvalue()

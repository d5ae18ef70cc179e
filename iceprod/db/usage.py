"""Usage: measured resource use in daily rollups, one document per (day, user, group,
project, site, dataset), each run's figures added with ``$inc`` so concurrent reports never
lose one another. Queries sum the rollups over a day range, grouped as asked."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from iceprod.db.base import Repository, between, where
from iceprod.db.store import CollectionSpec, Doc, Index, Store

KEY_FIELDS = ("day", "user", "group", "project", "site", "dataset_id")
"""What a rollup is per; ``group_by`` takes any of these."""

METRICS = ("cpu_hours", "core_hours", "walltime_hours", "gpu_hours", "memory_gb_hours",
           "tasks_complete", "tasks_reset", "tasks_failed")
"""What a rollup sums: measured CPU time, cores held x walltime, walltime, GPUs held x
walltime, peak memory (GB) x walltime, and runs by outcome."""


RATES_SPEC = CollectionSpec(name="billing_rates", id_field="key")


def rollup_id(key: Mapping[str, str]) -> str:
    text = "\x1f".join(str(key.get(f, "")) for f in KEY_FIELDS)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class UsageRepo(Repository):
    spec = CollectionSpec(
        name="usage",
        id_field="usage_id",
        columns={"day": "TEXT", "user": "TEXT", "group": "TEXT", "project": "TEXT",
                 "site": "TEXT", "dataset_id": "TEXT"},
        indexes=(
            Index((("day", 1),)),
            Index((("project", 1), ("day", 1))),
            Index((("user", 1), ("day", 1))),
            Index((("group", 1), ("day", 1))),
            Index((("dataset_id", 1),)),
        ),
    )
    extra_specs = (RATES_SPEC,)
    kind = "usage"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.rates = store.collection(RATES_SPEC)

    async def get_rates(self) -> Doc | None:
        """The billing rate table admins keep (None until one is set)."""
        doc = await self.rates.find_one({"key": "rates"})
        return None if doc is None else doc.get("rates")

    async def put_rates(self, table: Mapping[str, Any]) -> None:
        """Replace the rate table."""
        await self.rates.insert_many([{"key": "rates", "rates": {}}], skip_duplicates=True)
        await self.rates.update_one({"key": "rates"}, {"$set": {"rates": dict(table)}})

    async def add(self, key: Mapping[str, str], amounts: Mapping[str, float]) -> None:
        """Add ``amounts`` (of ``METRICS``) to the rollup of ``key`` (every ``KEY_FIELDS``
        entry), creating it at zero first."""
        doc_id = rollup_id(key)
        inc = {m: v for m, v in amounts.items() if m in METRICS and v}
        if inc and await self.coll.update_one({"usage_id": doc_id}, {"$inc": inc}):
            return  # the usual case: the rollup exists (one statement)
        base: Doc = {"usage_id": doc_id, **{f: str(key.get(f, "")) for f in KEY_FIELDS},
                     **{m: 0 for m in METRICS}}
        await self.coll.insert_many([base], skip_duplicates=True)
        if inc:
            await self.coll.update_one({"usage_id": doc_id}, {"$inc": inc})

    @staticmethod
    def query(filters: Mapping[str, str | None], start: str | None = None,
              end: str | None = None) -> dict[str, Any]:
        """The filter for rollups matching ``filters`` (key fields) with ``start <= day <=
        end`` (ISO dates, either may be absent)."""
        criteria: dict[str, Any] = {k: v for k, v in filters.items() if k in KEY_FIELDS}
        if (window := between(start or None, end or None)) is not None:
            criteria["day"] = window  # a range replaces an exact day
        return where(**criteria)

    async def totals(self, filters: Mapping[str, str | None], start: str | None = None,
                     end: str | None = None, group_by: Sequence[str] = ()) -> list[Doc]:
        """Summed metrics of the matching rollups, one row per ``group_by`` value (one row
        in all without it; none when nothing matched), ordered by the grouping fields."""
        rows = await self.coll.group_stats(
            self.query(filters, start, end), list(group_by),
            {m: ("sum", m) for m in METRICS})
        out = []
        for r in rows:
            row = {k: r.get(k) for k in group_by}
            row.update({m: _number(r.get(m)) for m in METRICS})
            row["rollups"] = r["count"]
            out.append(row)
        out.sort(key=lambda r: tuple(str(r.get(k) or "") for k in group_by))
        return [r for r in out if r["rollups"]]


def _number(value: Any) -> float | int:
    return 0 if value is None else value

"""Usage and billing: summed usage rollups with filters and a day range, monthly bills of a
user, group or project priced with the admins' rate table, and CSV export of both
(`Accept: text/csv` or `?format=csv`)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from iceprod.common.errors import Forbidden, Invalid
from iceprod.core.projects import is_member
from iceprod.core.usage import billing, check_group_by, rates, set_rates, to_csv
from iceprod.db.store import Doc
from iceprod.db.usage import METRICS
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body, definition
from iceprod.rest.openapi import TEXT, path, query
from iceprod.rest.responses import responds

RATES_BODY = body("billing_rates")
FORMAT = definition("csv_format")
DAY = definition("iso_day")
YEAR = definition("billing_year")
MONTH = definition("billing_month")
GROUP_BY = definition("usage_group_by")


class CsvMixin(APIHandler):
    def wants_csv(self, fmt: str) -> bool:
        """``format=csv``, or no ``format`` and ``Accept: text/csv``."""
        if fmt not in ("", "json", "csv"):
            raise Invalid("format: expected json or csv", field="format")
        return fmt == "csv" or (not fmt and "text/csv" in self.request.headers.get("Accept", ""))

    def write_csv(self, rows: Sequence[Doc], columns: Sequence[str]) -> None:
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.finish(to_csv(rows, columns))


def _day(name: str, value: str | None) -> str | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise Invalid(f"{name}: expected a date YYYY-MM-DD", field=name) from None


class UsageHandler(CsvMixin):
    @responds("Usage", media="text/csv")
    @query(user=TEXT, group=TEXT, project=TEXT, site=TEXT, dataset_id=TEXT, start=DAY,
           end=DAY, group_by=GROUP_BY, format=FORMAT)
    @requires("account")
    async def get(self) -> None:
        """Summed usage (`cpu_hours, core_hours, walltime_hours, gpu_hours, memory_gb_hours,
        tasks_complete, tasks_reset, tasks_failed`) of the rollups matching `user`, `group`,
        `project`, `site`, `dataset_id` with `start <= day <= end`, one row per `group_by`
        value (`day|user|group|project|site|dataset_id`): `{"usage": [rows]}`. Users see
        their own usage, or a project's they are a member of."""
        filters = {f: self.get_argument(f, None) or None
                   for f in ("user", "group", "project", "site", "dataset_id")}
        start = _day("start", self.get_argument("start", None))
        end = _day("end", self.get_argument("end", None))
        group_by = check_group_by(self.get_argument("group_by", ""))
        await self.restrict(filters)
        rows = await self.db.usage.totals(filters, start, end, group_by)
        if self.wants_csv(self.get_argument("format", "")):
            self.write_csv(rows, [*group_by, *METRICS])
            return
        self.write_json({"filters": {k: v for k, v in filters.items() if v},
                         "start": start, "end": end, "group_by": group_by, "usage": rows})

    async def restrict(self, filters: dict[str, str | None]) -> None:
        p = self.principal
        if p.has("read:accounts"):
            return
        if filters["project"]:
            project = await self.db.projects.find(filters["project"])
            if project is not None and is_member(project, p):
                return
            raise Forbidden(f"project: you are not a member of {filters['project']!r}")
        if filters["user"] not in (None, p.username):
            raise Forbidden("user: you may read only your own usage")
        filters["user"] = p.username


class BillingHandler(CsvMixin):
    kind = ""

    async def bill(self, name: str, year: str, month: str, fmt: str) -> None:
        await self.check_access(name)
        doc = await billing(self.db, self.kind, name, int(year), int(month))
        if self.wants_csv(fmt):
            self.write_csv(doc["projects"], ["project", *METRICS, "cost", "currency"])
            return
        self.write_json(doc)

    async def check_access(self, name: str) -> None:
        p = self.principal
        if p.has("read:accounts"):
            return
        if self.kind == "user" and name == p.username:
            return
        if self.kind == "group" and name in p.groups:
            return
        if self.kind == "project":
            project = await self.db.projects.find(name)
            if project is not None and is_member(project, p):
                return
        raise Forbidden(f"{self.kind}: you may not read the billing of {name!r}")


class UserBillingHandler(BillingHandler):
    kind = "user"

    @responds("Bill", media="text/csv")
    @query(format=FORMAT)
    @path(year=YEAR, month=MONTH)
    @requires("account")
    async def get(self, username: str, year: str, month: str) -> None:
        """A user's usage in a month, per project, priced with the rate table (the user
        and admins)."""
        await self.bill(username, year, month, self.get_argument("format", ""))


class GroupBillingHandler(BillingHandler):
    kind = "group"

    @responds("Bill", media="text/csv")
    @query(format=FORMAT)
    @path(year=YEAR, month=MONTH)
    @requires("account")
    async def get(self, group: str, year: str, month: str) -> None:
        """A group's usage in a month, per project, priced (its members and admins)."""
        await self.bill(group, year, month, self.get_argument("format", ""))


class ProjectBillingHandler(BillingHandler):
    kind = "project"

    @responds("Bill", media="text/csv")
    @query(format=FORMAT)
    @path(year=YEAR, month=MONTH)
    @requires("account")
    async def get(self, name: str, year: str, month: str) -> None:
        """A project's usage in a month, priced (its members and admins)."""
        await self.bill(name, year, month, self.get_argument("format", ""))


class RatesHandler(APIHandler):
    @responds("Rates")
    @requires("account")
    async def get(self) -> None:
        """The billing rate table: a price per unit of each metric, and the currency."""
        self.write_json(await rates(self.db))

    @responds("Rates")
    @requires("facility", body=RATES_BODY)
    async def put(self) -> None:
        """Change rates (those not given stay); answers the whole table."""
        table = await set_rates(self.db, self.body)
        await audit(self, "billing.rates", detail=dict(self.body))
        self.write_json(table)


Y = r"(?P<year>[0-9]{4})/(?P<month>[0-9]{1,2})"
routes = [
    (r"/usage", UsageHandler),
    (rf"/users/(?P<username>[^/]+)/billing/{Y}", UserBillingHandler),
    (rf"/groups/(?P<group>[^/]+)/billing/{Y}", GroupBillingHandler),
    (rf"/projects/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}})/billing/{Y}",
     ProjectBillingHandler),
    (r"/billing/rates", RatesHandler),
]

"""The audit trail: `GET /audit` (admin: every record) and `GET /datasets/{id}/audit`
(whoever may read the dataset: that dataset's records). Records are appended by the
handlers that change things (``iceprod.rest.audit``); no route changes or removes one."""

from __future__ import annotations

from datetime import UTC, datetime

from iceprod.common.errors import Invalid
from iceprod.common.timeutil import iso
from iceprod.rest.base import MAX_LIMIT_ARG, APIHandler, requires
from iceprod.rest.openapi import AFTER, LIMIT, TEXT, TIME, query
from iceprod.rest.responses import responds

FILTERS = {"username": TEXT, "action": TEXT, "since": TIME, "until": TIME}


class AuditBase(APIHandler):
    def parse_time(self, name: str, raw: str) -> str | None:
        """An ISO-8601 time argument (``2026-11-29T18:00:00Z``; UTC when no zone is
        given), in the store's fixed-width form so it compares as text."""
        if not raw:
            return None
        try:
            when = datetime.fromisoformat(raw.upper())
        except ValueError:
            raise Invalid(f"{name}: expected an ISO-8601 time such as 2026-11-29T18:00:00Z",
                          field=name) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return iso(when.timestamp())

    async def answer(self, dataset_id: str | None, username: str, action: str, since: str,
                     until: str, limit: int | None, after: str | None) -> None:
        """A page of records, oldest first: `{"records": [...], "next_after": cursor}`; the
        cursor also travels in `X-Next-After`."""
        page = await self.db.audit.search(
            dataset_id=dataset_id or None, username=username or None, action=action or None,
            since=self.parse_time("since", since), until=self.parse_time("until", until),
            limit=limit, after=after)
        if page.next_after:
            self.set_header("X-Next-After", page.next_after)
        self.write_json({"records": page.docs, "next_after": page.next_after})


class AuditHandler(AuditBase):
    @responds("AuditPage")
    @query(dataset_id=TEXT, **FILTERS, limit=LIMIT, after=AFTER)
    @requires("read:audit")
    async def get(self) -> None:
        """Every audit record (admin), filtered by `dataset_id`, `username`, `action` and a
        time range (`since`, `until`, ISO-8601), oldest first, paged."""
        await self.answer(
            self.get_argument("dataset_id", ""), self.get_argument("username", ""),
            self.get_argument("action", ""), self.get_argument("since", ""),
            self.get_argument("until", ""),
            self.int_arg("limit", minimum=1, maximum=MAX_LIMIT_ARG),
            self.get_argument("after", None))


class DatasetAuditHandler(AuditBase):
    @responds("AuditPage")
    @query(**FILTERS, limit=LIMIT, after=AFTER)
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's audit records, for whoever may read the dataset (same filters)."""
        await self.answer(
            dataset_id, self.get_argument("username", ""), self.get_argument("action", ""),
            self.get_argument("since", ""), self.get_argument("until", ""),
            self.int_arg("limit", minimum=1, maximum=MAX_LIMIT_ARG),
            self.get_argument("after", None))


routes = [
    (r"/audit", AuditHandler),
    (r"/datasets/(?P<dataset_id>[0-9a-f]{32})/audit", DatasetAuditHandler),
]

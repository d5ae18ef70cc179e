"""The audit trail: one record per change made by a person or a service through the API
(status changes, requirement edits, priority, rules, accounts, token revocation, ...).

Append-only: this repository has no update or delete. A record's id starts with its time in
nanoseconds (hex, fixed width), so id order is time order and the shared cursor pagination
lists records oldest first.
"""

from __future__ import annotations

import secrets
import time

from iceprod.common.timeutil import iso
from iceprod.db.base import Page, Paging, Repository, between, where
from iceprod.db.store import CollectionSpec, Doc, Index


def audit_id(now_ns: int | None = None) -> str:
    """A 32-hex id ordered by time: 16 hex digits of nanoseconds, 16 random."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return f"{now_ns:016x}{secrets.token_hex(8)}"


class AuditRepo(Repository):
    spec = CollectionSpec(
        name="audit",
        id_field="audit_id",
        columns={"dataset_id": "TEXT", "username": "TEXT", "action": "TEXT", "time": "TEXT"},
        indexes=(
            Index((("dataset_id", 1), ("audit_id", 1))),
            Index((("username", 1), ("audit_id", 1))),
            Index((("action", 1), ("audit_id", 1))),
        ),
    )
    kind = "audit record"

    async def append(self, record: Doc) -> Doc:
        """Store one record (``audit_id`` and ``time`` are set here) and answer it."""
        now_ns = time.time_ns()
        doc = {**record, "audit_id": audit_id(now_ns), "time": iso(now_ns / 1e9)}
        await self.coll.insert_one(doc)
        return doc

    async def search(
        self, dataset_id: str | None = None, username: str | None = None,
        action: str | None = None, since: str | None = None, until: str | None = None,
        limit: int | None = None, after: str | None = None,
    ) -> Page:
        """One page of records, oldest first, matching every given filter (``since`` and
        ``until`` are ISO times, inclusive)."""
        query = where(dataset_id=dataset_id or None, username=username or None,
                      action=action or None, time=between(since or None, until or None))
        return await self._page(query, Paging(None, limit, after))

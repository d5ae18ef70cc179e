"""``AuditRepo``: the append-only audit trail.

Part of the repository contract: each test runs against every backend (see ``conftest.store``)
and asserts on what a caller sees, never on how a backend stores things; ``test_repo_coverage``
fails when a repository method has no contract test in these files.
"""

from __future__ import annotations

import time

from iceprod.common.timeutil import iso
from iceprod.db import Database
from iceprod.db.audit import AuditRepo


async def test_audit_append_and_search(db: Database) -> None:
    start = iso(time.time() - 1)
    records = []
    for i, (ds, user, action) in enumerate([
        ("d1", "alice", "tasks.bulk_status"), ("d1", "root", "datasets.status"),
        ("d2", "alice", "tasks.bulk_status"), (None, "root", "users.revoke_tokens"),
    ]):
        rec = await db.audit.append({"dataset_id": ds, "username": user, "action": action,
                                     "counts": {"changed": i}, "roles": ["user"]})
        records.append(rec)
    # ids are time-ordered, times are ours, the record is kept whole
    assert [r["audit_id"] for r in records] == sorted(r["audit_id"] for r in records)
    assert all(len(r["audit_id"]) == 32 for r in records)
    assert all(start <= r["time"] <= iso() for r in records)
    assert await db.audit.get(records[0]["audit_id"]) == records[0]
    # filters, oldest first
    page = await db.audit.search(dataset_id="d1")
    assert [r["action"] for r in page.docs] == ["tasks.bulk_status", "datasets.status"]
    page = await db.audit.search(username="alice", action="tasks.bulk_status")
    assert [r["dataset_id"] for r in page.docs] == ["d1", "d2"]
    page = await db.audit.search(since=records[2]["time"])
    assert [r["audit_id"] for r in page.docs] == [r["audit_id"] for r in records[2:]]
    page = await db.audit.search(until=records[1]["time"], username="root")
    assert [r["action"] for r in page.docs] == ["datasets.status"]
    # paginated: every record exactly once
    seen, after = [], None
    while True:
        page = await db.audit.search(limit=3, after=after)
        seen += [r["audit_id"] for r in page.docs]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [r["audit_id"] for r in records]
    # append-only: the repository offers no way to change or remove a record
    assert not {"update", "delete", "set_fields", "remove"} & set(dir(AuditRepo))

"""`iceprod audit [DATASET]`: who changed what, oldest first (a dataset's trail for its
readers; everyone's for an admin)."""

from __future__ import annotations

from typing import Any

from iceprod.client.cli.context import EXIT_OK, Context, short
from iceprod.client.cli.parsing import Sub, command

PAGE = 500


def counts_text(counts: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in (counts or {}).items())


def cmd_audit(ctx: Context) -> int:
    """Print the audit records matching the filters (at most --limit, newest last)."""
    a = ctx.args
    client = ctx.client()
    dataset_id = ctx.dataset(a.dataset)["dataset_id"] if a.dataset else None
    records: list[dict[str, Any]] = []
    after = None
    while len(records) < a.limit:
        page = client.audit.list(dataset_id, username=a.user, action=a.action, since=a.since,
                                 until=a.until, limit=min(PAGE, a.limit - len(records)),
                                 after=after)
        records += page["records"]
        after = page.get("next_after")
        if not after:
            break
    if a.json:
        ctx.out.json(records)
        return EXIT_OK
    ctx.out.table(
        ["time", "user", "token", "action", "dataset", "counts", "detail", "client"],
        [[r["time"], r["username"], r.get("token_kind"), r["action"],
          r.get("dataset_id") or "", counts_text(r.get("counts")),
          short(r.get("detail"), 50), r.get("client")] for r in records])
    if after:
        ctx.out.info(f"more records follow: raise --limit (now {a.limit}) or narrow with "
                     "--since")
    return EXIT_OK


def add_audit_command(sub: Sub) -> None:
    p = command(sub, "audit", cmd_audit, "show the audit trail (who changed what)",
                description="Show audit records, oldest first: a dataset's (for whoever may "
                            "read it) or, without DATASET, everyone's (admin).")
    p.add_argument("dataset", metavar="DATASET", nargs="?", help="dataset id or number")
    p.add_argument("--user", help="only changes made by this user")
    p.add_argument("--action", help="only this action (e.g. tasks.bulk_status)")
    p.add_argument("--since", help="only from this time (ISO-8601, e.g. 2026-11-29T18:00:00Z)")
    p.add_argument("--until", help="only up to this time (ISO-8601)")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")

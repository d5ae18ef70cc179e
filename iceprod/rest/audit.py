"""Recording who changed what: ``await audit(handler, action, ...)`` appends one record to
the audit trail (``db.audit``) for a change made through the API.

A record holds who (user, roles, token kind), when, the route and method, the action, the
dataset, the selection, the counts and the client's address. Call it once per change, after
the change succeeded (a refused or dry-run request leaves no record). Any handler may call
it, including routes added later (maintenance, quotas).
"""

from __future__ import annotations

import logging
from typing import Any

from iceprod.db.store import Doc
from iceprod.rest.auth.tokens import Principal
from iceprod.rest.base import APIHandler

log = logging.getLogger(__name__)
SAMPLE_IDS = 20
"""How many of a bulk body's listed ids its audit record keeps."""


def token_kind(p: Principal) -> str:
    """What kind of token acted: a dataset share, a pilot's, the server's own (system), an
    admin's or a user's."""
    if p.scope and p.scope.startswith("dataset:"):
        return "share"
    if p.pilot_id or "pilot" in p.roles:
        return "pilot"
    if "system" in p.roles:
        return "system"
    if "admin" in p.roles:
        return "admin"
    if "grid" in p.roles:
        return "grid"
    return "user"


async def audit(
    handler: APIHandler, action: str, dataset_id: str | None = None,
    selection: Any = None, counts: Doc | None = None, detail: Any = None,
) -> Doc:
    """Append the audit record of one change made by ``handler``'s request: ``action`` (e.g.
    ``tasks.bulk_status``), the dataset it touched, the ``selection`` it was given, the
    ``counts`` of what changed and any ``detail`` (new status, requirements, ...)."""
    p = handler.principal
    request = handler.request
    record: Doc = {
        "username": p.username,
        "roles": list(p.roles),
        "token_kind": token_kind(p),
        "method": request.method,
        "route": handler.route,
        "path": request.path,
        "action": action,
        "dataset_id": dataset_id,
        "selection": selection,
        "counts": counts or {},
        "detail": detail,
        "client": request.remote_ip,
    }
    doc = await handler.db.audit.append(record)
    log.info("audit: %s by %s on %s %s", action, p.username, dataset_id or "-", counts or {})
    return doc


def selection_record(body: Doc) -> Doc:
    """A bulk body as its audit record keeps it: a filter whole, a list of ids as its
    length and first ids (a 100k-id list does not belong in every record)."""
    for key in ("tasks", "jobs"):
        if key in body:
            ids = body[key]
            return {key: ids[:SAMPLE_IDS], f"{key}_count": len(ids)}
    return {k: v for k, v in body.items() if k == "filter"}

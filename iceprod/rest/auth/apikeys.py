"""API keys: long-lived, named, revocable credentials a user creates for scripts and the
seed systems' clients (issue 15).

A key is ``ipk_<key_id>_<secret>``; the store keeps the key's id, name, owner, the rights it
was created with (the creator's roles and groups, or the user record's when an admin creates
it for someone) and the SHA-256 of the secret, never the secret. A key is accepted as
``Authorization: Bearer <key>``, as ``Authorization: <key>`` or as ``X-Api-Key: <key>`` (what
the batch API's clients send), and is refused once deleted, expired, or issued before its
user's tokens were revoked (``POST /users/{id}/actions/revoke_tokens``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from iceprod.common.errors import Unauthorized
from iceprod.common.timeutil import parse
from iceprod.db import Database

PREFIX = "ipk_"
_KEY = re.compile(r"^ipk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
FOREVER = 100 * 365 * 86400.0
"""A key without an expiry: its principal's ``exp`` this far after its creation."""


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def new_key() -> tuple[str, str, str]:
    """``(key_id, key, hash)`` of a fresh key (the key is shown once, to its creator)."""
    key_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def key_claims(db: Database, token: str) -> dict[str, Any]:
    """The claims an API key stands for, as a token's would be (``iat`` its creation)."""
    m = _KEY.match(token)
    if m is None:
        raise Unauthorized("invalid API key")
    doc = await db.apikeys.find(m.group(1))
    if doc is None or not hmac.compare_digest(doc["hash"], digest(m.group(2))):
        raise Unauthorized("invalid API key")
    created = parse(doc["created"])
    exp = parse(doc["expires"]) if doc.get("expires") else created + FOREVER
    if exp <= time.time():
        raise Unauthorized("API key expired")
    return {"sub": doc["username"], "roles": doc.get("roles", []),
            "groups": doc.get("groups", []), "iat": created, "exp": exp}

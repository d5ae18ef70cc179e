"""Minting tokens: JWTs signed by the server (HS256 with the server secret).

Claims: ``sub``, ``roles`` (built-in or custom), ``groups``, ``iat`` (fractional seconds, so a
revocation separates tokens issued within the same second), ``exp``, and optionally
``pilot_id`` and ``scope``. ``scope`` is either ``dataset:<id>:read`` (a read-only share token
for one dataset) or a space-separated list of scopes the token is restricted to.

Pilot tokens come in two kinds. A *bound* token names its pilot (``pilot_id``): it is minted
for a registered pilot record (by the grid manager, or answered by ``POST /pilots``), lives
``ICEPROD_PILOT_TOKEN_SECONDS``, is renewed through the pilot's heartbeat, and is refused once
its pilot is no longer active (``iceprod.rest.auth.resolver``). A *registration* token is a pilot-role token
naming no pilot (minted by hand with ``iceprod-server token --role pilot``): it may only
register a pilot (``POST /pilots``), which answers a bound token for the new record.

Minting is shared by the REST API (login, sub-tokens, ``POST /pilots``), the grid manager and
``iceprod-server token``; verifying a token is ``iceprod.rest.auth.tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import jwt

from iceprod.common.errors import Invalid
from iceprod.core.roles import ROLES

ALGORITHM = "HS256"


def create_token(
    secret: str,
    username: str,
    roles: Sequence[str],
    groups: Sequence[str] = (),
    exp: int = 86400,
    scope: str | None = None,
    pilot_id: str | None = None,
    *,
    custom_roles: Collection[str] = (),
    not_after: float | None = None,
) -> str:
    """Sign a token valid for ``exp`` seconds, and never past ``not_after`` (a parent
    token's expiry). ``custom_roles`` names the custom roles the caller has checked exist."""
    for role in roles:
        if role not in ROLES and role not in custom_roles:
            raise Invalid(f"role: unknown role {role!r}")
    now = time.time()
    expires = now + int(exp)
    if not_after is not None:
        expires = min(expires, not_after)
    claims: dict[str, object] = {
        "sub": username,
        "roles": list(roles),
        "groups": list(groups),
        "iat": now,
        "exp": int(expires),
    }
    if scope:
        claims["scope"] = scope
    if pilot_id:
        claims["pilot_id"] = pilot_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def pilot_token(secret: str, pilot_id: str, seconds: int) -> str:
    """A token bound to one registered pilot (its own subject, role ``pilot``)."""
    return create_token(secret, pilot_subject(pilot_id), ["pilot"], exp=seconds,
                        pilot_id=pilot_id)


def pilot_subject(pilot_id: str) -> str:
    return f"pilot-{pilot_id}"


def token_expiry(token: str) -> float:
    """The ``exp`` of a token this process just signed (not verified again)."""
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])

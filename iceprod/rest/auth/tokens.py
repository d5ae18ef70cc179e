"""JWT tokens signed by the server (HS256 with the server secret) and the principal they
describe.

Claims: ``sub``, ``roles`` (built-in or custom), ``groups``, ``iat`` (fractional seconds, so a
revocation separates tokens issued within the same second), ``exp``, and optionally
``pilot_id`` and ``scope``. ``scope`` is either ``dataset:<id>:read`` (a read-only share token
for one dataset) or a space-separated list of scopes the token is restricted to.

Pilot tokens come in two kinds. A *bound* token names its pilot (``pilot_id``): it is minted
for a registered pilot record (by the grid manager, or answered by ``POST /pilots``), lives
``ICEPROD_PILOT_TOKEN_SECONDS``, is renewed through the pilot's heartbeat, and is refused once
its pilot is no longer active (``TokenResolver``). A *registration* token is a pilot-role token
naming no pilot (minted by hand with ``iceprod-server token --role pilot``): it may only
register a pilot (``POST /pilots``), which answers a bound token for the new record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from iceprod.common.errors import Invalid, Unauthorized
from iceprod.rest.auth.roles import ALL, BYPASS_RULES, ROLES, scopes_for

ALGORITHM = "HS256"
SHARE_SCOPE = re.compile(r"^dataset:([0-9a-f]{32}):read$")
PILOT_ID = re.compile(r"^[0-9a-f]{32}$")
REGISTRATION_SCOPES = frozenset({"write:pilots"})
"""All a registration token may do: register a pilot (``POST /pilots``)."""
UNBOUND_PILOT = ("this pilot token names no pilot: it may only register one (POST /pilots); "
                 "use the token that answers")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, roles, groups and derived scopes."""

    username: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    exp: float | None = None
    scope: str | None = None
    pilot_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    iat: float | None = None

    @property
    def authenticated(self) -> bool:
        return bool(self.username)

    @property
    def privileged(self) -> bool:
        """Admin and system bypass per-dataset rules and ownership checks."""
        return bool(BYPASS_RULES & set(self.roles))

    def has(self, scope: str) -> bool:
        return ALL in self.scopes or scope in self.scopes

    @property
    def registration_only(self) -> bool:
        """A pilot token naming no pilot: it may only register one."""
        return self.roles == ("pilot",) and not self.pilot_id

    def renewal_due(self, now: float | None = None) -> bool:
        """Past half its life: a bound pilot token is renewed through the heartbeat then."""
        if self.exp is None or self.iat is None:
            return True
        now = time.time() if now is None else now
        return now >= self.iat + (self.exp - self.iat) / 2


ANONYMOUS = Principal(username="", roles=("anonymous",))


def share_scope(dataset_id: str) -> str:
    """The ``scope`` claim of a read-only share token for one dataset."""
    return f"dataset:{dataset_id}:read"


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


def decode_claims(secret: str, token: str) -> dict[str, Any]:
    """Verify the signature and expiry; answers the claims."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token") from None
    return claims


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def custom_role_names(claims: Mapping[str, Any]) -> list[str]:
    """The roles a token names that are not built in (to be resolved from the store)."""
    return [r for r in _strings(claims.get("roles")) if r not in ROLES]


def restrict(scopes: frozenset[str], scope: str) -> frozenset[str]:
    """Narrow a role's scopes by a token's ``scope`` claim (never widening them)."""
    if scope.startswith("dataset:"):
        if not SHARE_SCOPE.match(scope):
            raise Unauthorized("invalid token")
        return frozenset({"read:datasets"})  # a share token: read-only, one dataset
    wanted = frozenset(scope.split())
    return wanted if ALL in scopes else scopes & wanted


def principal_from_claims(
    claims: Mapping[str, Any], custom: Mapping[str, frozenset[str]] | None = None
) -> Principal:
    """The principal of verified claims; ``custom`` maps the custom roles that exist to
    their scopes (a role deleted since the token was issued grants nothing)."""
    custom = custom or {}
    roles = tuple(r for r in _strings(claims.get("roles")) if r in ROLES or r in custom)
    scope = claims.get("scope")
    scopes = scopes_for(roles, custom)
    if scope is not None:
        if not isinstance(scope, str):
            raise Unauthorized("invalid token")
        scopes = restrict(scopes, scope)
    pilot_id = claims.get("pilot_id")
    if pilot_id is not None and not (isinstance(pilot_id, str) and PILOT_ID.match(pilot_id)):
        raise Unauthorized("invalid token")
    iat = claims.get("iat")
    principal = Principal(
        username=str(claims["sub"]),
        roles=roles,
        groups=tuple(_strings(claims.get("groups"))),
        exp=float(claims["exp"]),
        scope=scope,
        pilot_id=pilot_id,
        scopes=scopes,
        iat=float(iat) if isinstance(iat, int | float) else None,
    )
    if principal.registration_only:
        return replace(principal, scopes=principal.scopes & REGISTRATION_SCOPES)
    return principal


def decode_token(
    secret: str, token: str, custom: Mapping[str, frozenset[str]] | None = None
) -> Principal:
    return principal_from_claims(decode_claims(secret, token), custom)

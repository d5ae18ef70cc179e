"""JWT tokens signed by the server (HS256 with the server secret) and the principal they
describe."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jwt

from iceprod.common.errors import Invalid, Unauthorized
from iceprod.rest.auth.roles import ALL, BYPASS_RULES, ROLES, scopes_for

ALGORITHM = "HS256"


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

    @property
    def authenticated(self) -> bool:
        return bool(self.username)

    @property
    def privileged(self) -> bool:
        """Admin and system bypass per-dataset rules and ownership checks."""
        return bool(BYPASS_RULES & set(self.roles))

    def has(self, scope: str) -> bool:
        return ALL in self.scopes or scope in self.scopes


ANONYMOUS = Principal(username="", roles=("anonymous",))


def create_token(
    secret: str,
    username: str,
    roles: Sequence[str],
    groups: Sequence[str] = (),
    exp: int = 86400,
    scope: str | None = None,
    pilot_id: str | None = None,
) -> str:
    for role in roles:
        if role not in ROLES:
            raise Invalid(f"role: unknown role {role!r}")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": username,
        "roles": list(roles),
        "groups": list(groups),
        "iat": now,
        "exp": now + int(exp),
    }
    if scope:
        claims["scope"] = scope
    if pilot_id:
        claims["pilot_id"] = pilot_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token") from None
    roles = tuple(r for r in claims.get("roles", []) if r in ROLES)
    scope = claims.get("scope")
    scopes = scopes_for(roles)
    if scope and scope.startswith("dataset:"):
        # a share token: read-only, one dataset
        scopes = frozenset({"read:datasets"})
    return Principal(
        username=str(claims["sub"]),
        roles=roles,
        groups=tuple(claims.get("groups", [])),
        exp=float(claims["exp"]),
        scope=scope,
        pilot_id=claims.get("pilot_id"),
        scopes=scopes,
    )

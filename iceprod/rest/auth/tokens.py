"""Verifying tokens (signed by ``iceprod.core.tokens``) and the principal they describe.

A token's signature and expiry are checked here, its roles resolved to scopes (built-in roles
from ``iceprod.core.roles``, custom ones from the store) and narrowed by its ``scope`` claim.
See ``iceprod.core.tokens`` for the claims and the two kinds of pilot token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from iceprod.common.errors import Unauthorized
from iceprod.core.roles import ALL, BYPASS_RULES, ROLES, scopes_for
from iceprod.core.tokens import ALGORITHM

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
    pilot: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The pilot record its token is bound to, as read when the request was authorized."""

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


VERIFIED_CACHE = 4096
"""How many verified tokens ``decode_claims`` remembers (pilots send the same token with every
request; checking its HMAC again each time cost more than the claim it authorizes)."""

_verified: dict[tuple[str, str], dict[str, Any]] = {}


def decode_claims(secret: str, token: str) -> dict[str, Any]:
    """Verify the signature and expiry; answers the claims.

    A token whose signature was verified before is not verified again: the same bytes under
    the same secret verify the same way. Its expiry is checked on every call, and revocation
    and pilot state are the resolver's, also on every call."""
    key = (secret, token)
    claims = _verified.get(key)
    if claims is None:
        claims = _verify(secret, token)
        if len(_verified) >= VERIFIED_CACHE:
            _verified.pop(next(iter(_verified)))  # the oldest entry
        _verified[key] = claims
    if float(claims["exp"]) <= time.time():
        _verified.pop(key, None)
        raise Unauthorized("token expired")
    return dict(claims)


def _verify(secret: str, token: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token") from None
    if not isinstance(claims.get("exp"), int | float) or isinstance(claims["exp"], bool):
        raise Unauthorized("invalid token")
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

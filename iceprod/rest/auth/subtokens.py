"""What ``POST /create_token`` may mint from the caller's token: the rules that keep a
sub-token's rights within its parent's. Expiry is capped separately (``not_after``).

- ``temp`` / ``user``: a token for the caller itself, with one of its roles (``role``) or all
  of them, its groups, and optionally fewer scopes (``scope``). ``temp`` defaults to an hour.
- ``share``: a read-only token for one dataset the caller may read (``dataset_id``).
- ``pilot``: admin or system only; a pilot token bound to one ``pilot_id`` (valid while that
  pilot is active), or without one a registration token (it may only register a pilot).
  Each gets its own subject. Lives ``ICEPROD_PILOT_TOKEN_SECONDS`` unless ``exp`` says.
- ``system``: admin only (an unrestricted admin token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iceprod.common.errors import Forbidden, Invalid
from iceprod.common.ids import new_id
from iceprod.core.roles import ALL, ROLE_SCOPES, ROLES, SCOPES
from iceprod.rest.auth.tokens import Principal, share_scope

TYPES = ("temp", "user", "share", "pilot", "system")
TEMP_EXP = 3600
SYSTEM_SUBJECT = "iceprod-system"


@dataclass(frozen=True)
class Grant:
    """The claims of the token to mint (besides its expiry)."""

    username: str
    roles: tuple[str, ...]
    groups: tuple[str, ...] = ()
    scope: str | None = None
    pilot_id: str | None = None

    @property
    def custom_roles(self) -> tuple[str, ...]:
        return tuple(r for r in self.roles if r not in ROLES)


def plan(parent: Principal, body: dict[str, Any]) -> Grant:
    """The token ``body`` asks for, or ``Invalid``/``Forbidden`` when the parent may not
    mint it. A share token's dataset rule is checked by the caller."""
    kind = body["type"]
    _only(body, kind)
    if kind == "share":
        if not parent.has("read:datasets"):
            raise Forbidden("type: your token may not read datasets")
        return Grant(parent.username, ("user",), scope=share_scope(body["dataset_id"]))
    if kind == "system":
        if ALL not in parent.scopes:
            raise Forbidden("type: only an admin may mint system tokens")
        _role_is(body, "system")
        return Grant(body.get("username") or SYSTEM_SUBJECT, ("system",))
    if kind == "pilot":
        return _pilot(parent, body)
    return _self(parent, body)


def default_exp(kind: str, token_exp: int, pilot_token_seconds: int) -> int:
    if kind == "pilot":
        return pilot_token_seconds
    return TEMP_EXP if kind == "temp" else token_exp


def _only(body: dict[str, Any], kind: str) -> None:
    """Each type takes only the fields that mean something for it."""
    allowed = {
        "share": {"dataset_id"},
        "system": {"role", "username"},
        "pilot": {"role", "username", "pilot_id"},
        "temp": {"role", "scope"},
        "user": {"role", "scope"},
    }[kind] | {"type", "exp"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise Invalid(f"{extra[0]}: not allowed for a {kind} token")
    if kind == "share" and "dataset_id" not in body:
        raise Invalid("dataset_id: required for a share token")


def _role_is(body: dict[str, Any], role: str) -> None:
    if body.get("role", role) != role:
        raise Invalid(f"role: a {body['type']} token has role {role!r}")


def _pilot(parent: Principal, body: dict[str, Any]) -> Grant:
    if not (parent.privileged and (ALL in parent.scopes
                                   or ROLE_SCOPES["pilot"] <= parent.scopes)):
        raise Forbidden("type: only admin or system may mint pilot tokens")
    _role_is(body, "pilot")
    pilot_id = body.get("pilot_id")
    username = body.get("username") or f"pilot-{pilot_id or new_id()}"
    return Grant(username, ("pilot",), pilot_id=pilot_id)


def _self(parent: Principal, body: dict[str, Any]) -> Grant:
    roles = parent.roles
    if (role := body.get("role")) is not None:
        if role not in parent.roles:
            raise Forbidden(f"role: your token does not have role {role!r}")
        roles = (role,)
    scope = parent.scope
    if (wanted := body.get("scope")) is not None:
        names = wanted.split()
        for name in names:
            if name not in SCOPES:
                raise Invalid(f"scope: unknown scope {name!r}")
            if not parent.has(name):
                raise Forbidden(f"scope: your token does not have scope {name!r}")
        scope = " ".join(sorted(set(names)))
    return Grant(parent.username, roles, parent.groups, scope, parent.pilot_id)

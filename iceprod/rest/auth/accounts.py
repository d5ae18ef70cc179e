"""Account operations shared by the login routes and the user, group and role handlers:
first login and LDAP group sync, issuing a user's token, revocation, and checking that
named roles and groups exist.

Removing rights (a role, a group, the account) revokes the user's outstanding tokens, since
tokens carry roles and groups until they expire; adding rights takes effect at the next
login or token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from iceprod.common.config import ServerConfig
from iceprod.common.errors import Conflict, Invalid
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.core.roles import ROLES
from iceprod.core.tokens import create_token, token_expiry
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.rest.auth.resolver import TokenResolver

DEFAULT_ROLES = ("user",)
DEFAULT_GROUPS = ("users",)
ASSIGNABLE_BUILTINS = tuple(r for r in ROLES if r != "anonymous")


def new_user(username: str, roles: Sequence[str] = DEFAULT_ROLES,
             groups: Sequence[str] = DEFAULT_GROUPS, **fields: Any) -> Doc:
    return {"user_id": new_id(), "username": username, "roles": list(roles),
            "groups": list(groups), "created": iso(),
            **{k: v for k, v in fields.items() if v is not None}}


async def check_roles(db: Database, roles: Sequence[str], field: str = "roles") -> None:
    """Every role must be built in (not ``anonymous``) or an existing custom role."""
    custom = [r for r in roles if r not in ROLES]
    found = await db.roles.scopes_of(custom)
    for role in roles:
        if role not in ASSIGNABLE_BUILTINS and role not in found:
            raise Invalid(f"{field}: unknown role {role!r}")


async def check_groups(db: Database, groups: Sequence[str], field: str = "groups") -> None:
    if missing := await db.groups.missing(list(groups)):
        raise Invalid(f"{field}: unknown group {missing[0]!r}")


async def revoke(db: Database, resolver: TokenResolver, usernames: Iterable[str]) -> float:
    """Refuse the tokens these subjects hold now; answers the revocation time."""
    at = time.time()
    for username in usernames:
        await db.revocations.revoke(username, at)
        resolver.forget_subject(username)
    return at


def issue(config: ServerConfig, user: Doc, exp: int | None = None) -> Doc:
    """A token for a stored user, carrying its roles and groups, and the login answer."""
    roles = list(user.get("roles", []))
    token = create_token(
        config.secret, user["username"], roles, user.get("groups", []),
        exp or config.token_exp, custom_roles=[r for r in roles if r not in ROLES],
    )
    return {"token": token, "username": user["username"], "roles": roles,
            "groups": list(user.get("groups", [])), "expires": iso(token_expiry(token))}


async def login_user(
    db: Database, username: str, email: str | None, mapped_groups: Sequence[str]
) -> tuple[Doc, list[str]]:
    """Create the user at first login (role user, group users plus its mapped directory
    groups) or bring its directory groups up to date. Answers the user and the groups it
    lost (which the caller revokes)."""
    await db.groups.ensure([*DEFAULT_GROUPS, *mapped_groups])
    user = await db.users.by_username(username)
    if user is None:
        doc = new_user(username, groups=[*DEFAULT_GROUPS, *mapped_groups], email=email,
                       source="ldap", ldap_groups=list(mapped_groups), last_login=iso())
        try:
            return await db.users.create(doc), []
        except Conflict:  # created concurrently by another login
            user = await db.users.by_username(username)
            assert user is not None
    return await _sync(db, user, email, mapped_groups)


async def _sync(
    db: Database, user: Doc, email: str | None, mapped_groups: Sequence[str]
) -> tuple[Doc, list[str]]:
    """Directory groups are the directory's to grant and to take away; groups given
    through the API stay."""
    before = list(user.get("groups", []))
    previous = set(user.get("ldap_groups", []))
    groups = [g for g in before if g not in previous or g in mapped_groups]
    groups += [g for g in mapped_groups if g not in groups]
    fields: dict[str, Any] = {"groups": groups, "ldap_groups": list(mapped_groups),
                              "last_login": iso()}
    if email and not user.get("email"):
        fields["email"] = email
    updated = await db.users.set_fields(user["user_id"], fields)
    return updated, sorted(set(before) - set(groups))

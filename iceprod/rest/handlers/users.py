"""Users: accounts with roles and groups (their tokens carry both), the external identities
(email, ORCID iD) the token exchange matches, and token revocation. A user may read its
own record and groups; everything else is for account readers and admins."""

from __future__ import annotations

from typing import Any

from iceprod.common.errors import Conflict, Forbidden
from iceprod.common.timeutil import iso
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.auth.accounts import (
    DEFAULT_GROUPS,
    DEFAULT_ROLES,
    check_groups,
    check_roles,
    new_user,
    revoke,
)
from iceprod.rest.auth.external import normalize_identity
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import PAGE, TEXT, query
from iceprod.rest.responses import responds

CREATE_BODY = body("users_create")
PATCH_BODY = body("users_patch")
ADD_GROUP_BODY = body("users_add_group")
GROUPS_BODY = body("users_groups")
ROLES_BODY = body("users_roles")


def identities(body: Doc) -> dict[str, Any]:
    """The body's email/ORCID iD, normalized; None clears one."""
    out: dict[str, Any] = {}
    for field in ("email", "orcid"):
        if field in body:
            value = body[field]
            out[field] = normalize_identity(field, value) if value else None
    return out


class UserBase(APIHandler):
    """Finding the user of a route, and the identities no two users may share."""

    async def own_or_reader(self, user_id: str) -> Doc:
        """The user, if the caller reads accounts or it is the caller's own record."""
        user = await self.db.users.get(user_id)
        p = self.principal
        if p.has("read:accounts") or (p.has("account") and user["username"] == p.username):
            return user
        raise Forbidden("not your user record")

    async def check_unique(self, fields: dict[str, Any], user_id: str | None) -> None:
        for field, value in fields.items():
            if value is None:
                continue
            others = [u for u in await self.db.users.by_identity(field, value)
                      if u["user_id"] != user_id]
            if others:
                raise Conflict(f"{field}: already used by another user")


class UsersHandler(UserBase):
    @responds("UserPage")
    @query(**PAGE, username=TEXT, group=TEXT)
    @requires("read:accounts")
    async def get(self) -> None:
        """Users as `{user_id: user}` (`username=`, `group=`, `keys=`, paged)."""
        username = self.get_argument("username", "") or None
        group = self.get_argument("group", "") or None
        await self.list_page(self.db.users, lambda paging: self.db.users.page(
            paging, username=username, group=group))

    @responds("Created")
    @requires("write:accounts", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Add a user (roles default to user, groups to users; 409 when the username is
        taken)."""
        b = self.body
        roles = b.get("roles", list(DEFAULT_ROLES))
        groups = b.get("groups", list(DEFAULT_GROUPS))
        await check_roles(self.db, roles)
        if "groups" in b:
            await check_groups(self.db, groups)
        else:
            await self.db.groups.ensure(groups)
        ids = identities(b)
        await self.check_unique(ids, None)
        doc = new_user(b["username"], roles, groups, source="api", **ids)
        await self.db.users.create(doc)
        await audit(self, "user.create", detail={"user_id": doc["user_id"],
                                                 "username": doc["username"],
                                                 "roles": roles, "groups": groups})
        self.write_json({"result": doc["user_id"]}, 201)


class UserHandler(UserBase):
    @responds("User")
    @requires("read:accounts", "account")
    async def get(self, user_id: str) -> None:
        """One user (a user may read its own record)."""
        self.write_json(await self.own_or_reader(user_id))

    @responds("User")
    @requires("write:accounts", body=PATCH_BODY)
    async def patch(self, user_id: str) -> None:
        """Set or clear (null) a user's email or ORCID iD."""
        ids = identities(self.body)
        await self.check_unique(ids, user_id)
        doc = await self.db.users.set_fields(user_id, ids)
        await audit(self, "user.identities", detail={"user_id": user_id, **ids})
        self.write_json(doc)

    @responds("Empty")
    @requires("write:accounts")
    async def delete(self, user_id: str) -> None:
        """Delete a user and revoke its tokens (an LDAP user is created anew at its next
        login)."""
        doc = await self.db.users.delete(user_id)
        await revoke(self.db, self.ctx.resolver, [doc["username"]])
        await audit(self, "user.delete", detail={"user_id": user_id,
                                                 "username": doc["username"]})
        self.write_json({})


class UserGroupsHandler(UserBase):
    @responds("UserGroups")
    @requires("read:accounts", "account")
    async def get(self, user_id: str) -> None:
        """A user's groups: `{"groups": [name, ...]}`."""
        user = await self.own_or_reader(user_id)
        self.write_json({"groups": user.get("groups", [])})

    @responds("UserGroups")
    @requires("write:accounts", body=ADD_GROUP_BODY)
    async def post(self, user_id: str) -> None:
        """Add a user to a group."""
        await check_groups(self.db, [self.body["group"]], "group")
        user = await self.db.users.add_group(user_id, self.body["group"])
        await audit(self, "user.add_group", detail={"user_id": user_id,
                                                    "username": user.get("username"),
                                                    "group": self.body["group"]})
        self.write_json({"groups": user.get("groups", [])})

    @responds("UserGroups")
    @requires("write:accounts", body=GROUPS_BODY)
    async def put(self, user_id: str) -> None:
        """Set a user's groups; leaving a group revokes the user's tokens."""
        groups = self.body["groups"]
        await check_groups(self.db, groups)
        user = await self.db.users.get(user_id)
        await self.db.users.set_fields(user_id, {"groups": groups})
        if set(user.get("groups", [])) - set(groups):
            await revoke(self.db, self.ctx.resolver, [user["username"]])
        await audit(self, "user.groups", detail={"user_id": user_id,
                                                 "username": user.get("username"),
                                                 "groups": groups,
                                                 "previous": user.get("groups", [])})
        self.write_json({"groups": groups})


class UserRolesHandler(UserBase):
    @responds("UserRoles")
    @requires("write:accounts", body=ROLES_BODY)
    async def put(self, user_id: str) -> None:
        """Set a user's roles (built-in or custom); losing a role revokes its tokens."""
        roles = self.body["roles"]
        await check_roles(self.db, roles)
        user = await self.db.users.get(user_id)
        await self.db.users.set_fields(user_id, {"roles": roles})
        if set(user.get("roles", [])) - set(roles):
            await revoke(self.db, self.ctx.resolver, [user["username"]])
        await audit(self, "user.roles", detail={"user_id": user_id,
                                                "username": user.get("username"),
                                                "roles": roles,
                                                "previous": user.get("roles", [])})
        self.write_json({"roles": roles})


class UserRevokeTokensHandler(APIHandler):
    @responds("TokensRevoked")
    @requires("write:accounts")
    async def post(self, user_id: str) -> None:
        """Revoke every token the user holds now (it may log in again)."""
        user = await self.db.users.get(user_id)
        at = await revoke(self.db, self.ctx.resolver, [user["username"]])
        await audit(self, "user.revoke_tokens", detail={"user_id": user_id,
                                                        "username": user["username"]})
        self.write_json({"not_before": iso(at)})


U = r"(?P<user_id>[0-9a-f]{32})"
routes = [
    (r"/users", UsersHandler),
    (rf"/users/{U}", UserHandler),
    (rf"/users/{U}/groups", UserGroupsHandler),
    (rf"/users/{U}/roles", UserRolesHandler),
    (rf"/users/{U}/actions/revoke_tokens", UserRevokeTokensHandler),
]

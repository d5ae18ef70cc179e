"""Roles: the fixed built-in roles and the custom roles an admin defines, each a set of
scopes from the scope table. A token names its roles; a custom role's scopes are looked up
when the token is used, so changing or deleting a role changes what its tokens may do."""

from __future__ import annotations

from iceprod.common.errors import Conflict, NotFound
from iceprod.core.roles import ROLE_SCOPES
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds

PUT_BODY = body("roles_put")


def builtin(name: str) -> Doc:
    return {"name": name, "scopes": sorted(ROLE_SCOPES[name]), "builtin": True,
            "description": "built-in role"}


def custom(doc: Doc) -> Doc:
    return {"name": doc["name"], "scopes": list(doc.get("scopes", [])), "builtin": False,
            "description": doc.get("description", "")}


def refuse_builtin(name: str) -> None:
    if name in ROLE_SCOPES:
        raise Conflict(f"role {name!r} is built in and cannot be changed")


class RolesHandler(APIHandler):
    @responds("Roles")
    @requires("read:accounts", "account")
    async def get(self) -> None:
        """Every role with its scopes: `{name: {name, scopes, builtin, description}}`."""
        out = {name: builtin(name) for name in ROLE_SCOPES}
        out.update({d["name"]: custom(d) for d in await self.db.roles.all()})
        self.write_json(out)


class RoleHandler(APIHandler):
    @responds("Role")
    @requires("read:accounts", "account")
    async def get(self, role_name: str) -> None:
        """One role."""
        if role_name in ROLE_SCOPES:
            self.write_json(builtin(role_name))
            return
        doc = await self.db.roles.find(role_name)
        if doc is None:
            raise NotFound("role not found")
        self.write_json(custom(doc))

    @responds("Role")
    @requires("write:accounts", body=PUT_BODY)
    async def put(self, role_name: str) -> None:
        """Create or replace a custom role (built-in roles are fixed: 409)."""
        refuse_builtin(role_name)
        doc, _ = await self.db.roles.put(
            role_name, self.body["scopes"], self.body.get("description", "")
        )
        self.ctx.resolver.forget_role(role_name)
        await audit(self, "role.put", detail={"role": role_name,
                                              "scopes": self.body["scopes"]})
        self.write_json(custom(doc))

    @responds("Empty")
    @requires("write:accounts")
    async def delete(self, role_name: str) -> None:
        """Delete a custom role; users lose it, and tokens naming it no longer get its
        scopes."""
        refuse_builtin(role_name)
        await self.db.roles.delete(role_name)
        await self.db.users.pull_everywhere("roles", role_name)
        self.ctx.resolver.forget_role(role_name)
        await audit(self, "role.delete", detail={"role": role_name})
        self.write_json({})


ROLE_NAME = r"(?P<role_name>[a-z][a-z0-9_-]{0,63})"
routes = [
    (r"/roles", RolesHandler),
    (rf"/roles/{ROLE_NAME}", RoleHandler),
]

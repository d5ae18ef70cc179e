"""Groups: named sets of users. Datasets, dataset rules and tokens name groups; members are
managed through ``/users/{user_id}/groups``."""

from __future__ import annotations

from iceprod.rest.audit import audit
from iceprod.rest.auth.accounts import revoke
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import KEYS, PAGE, TEXT, query
from iceprod.rest.responses import responds

CREATE_BODY = body("groups_create")


class GroupsHandler(APIHandler):
    @responds("GroupPage")
    @query(**PAGE, name=TEXT)
    @requires("read:accounts")
    async def get(self) -> None:
        """Groups as `{group_id: group}` (`name=`, `keys=`, paged)."""
        name = self.get_argument("name", "") or None
        await self.list_page(self.db.groups, lambda paging: self.db.groups.page(
            paging, name=name))

    @responds("Created")
    @requires("write:accounts", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Add a group (409 when the name is taken)."""
        doc = await self.db.groups.create(self.body["name"], self.body.get("description", ""))
        await audit(self, "group.create", detail={"group_id": doc["group_id"],
                                                  "name": doc["name"]})
        self.write_json({"result": doc["group_id"]}, 201)


class GroupHandler(APIHandler):
    @responds("Group")
    @query(keys=KEYS)
    @requires("read:accounts")
    async def get(self, group_id: str) -> None:
        """One group."""
        self.write_json(await self.db.groups.get(group_id, self.keys_arg()))

    @responds("Empty")
    @requires("write:accounts")
    async def delete(self, group_id: str) -> None:
        """Delete a group: its members leave it and their tokens are revoked."""
        doc = await self.db.groups.delete(group_id)
        members = await self.db.users.with_value("groups", doc["name"])
        await self.db.users.pull_everywhere("groups", doc["name"])
        await revoke(self.db, self.ctx.resolver, members)
        await audit(self, "group.delete", counts={"members": len(members)},
                    detail={"group_id": group_id, "name": doc["name"]})
        self.write_json({})


routes = [
    (r"/groups", GroupsHandler),
    (r"/groups/(?P<group_id>[0-9a-f]{32})", GroupHandler),
]

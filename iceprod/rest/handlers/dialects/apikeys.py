"""Users' API keys (``iceprod.rest.auth.apikeys``): a user creates, lists and deletes its own;
an admin those of anyone. ``{user_id}`` is a user's id or username."""

from __future__ import annotations

import time

from iceprod.common.errors import Forbidden, NotFound
from iceprod.common.timeutil import iso
from iceprod.db.store import Doc
from iceprod.rest.auth.apikeys import PREFIX, new_key
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds

CREATE_BODY = body("apikeys_create")
_ID = 32


def key_model(doc: Doc) -> Doc:
    """A key as listed: never its secret or hash."""
    return {"name": doc["name"], "key_id": doc["key_id"], "username": doc["username"],
            "prefix": f"{PREFIX}{doc['key_id'][:8]}", "created": doc["created"],
            "expires": doc.get("expires"), "roles": doc.get("roles", []),
            "groups": doc.get("groups", [])}


class KeysBase(APIHandler):
    async def owner(self, user_id: str, need_record: bool = False) -> tuple[str, Doc | None]:
        """The username ``user_id`` names and its user record (None when it has none: a
        user known only from its tokens still manages its own keys). Anyone else's keys
        are an admin's business only."""
        doc = await self.db.users.find(user_id) if len(user_id) == _ID else None
        if doc is None:
            doc = await self.db.users.by_username(user_id)
        p = self.principal
        username = doc["username"] if doc else user_id
        if (username != p.username or p.scope) and not p.has("write:accounts"):
            raise Forbidden("user_id: only the user itself (with an unscoped token) or an "
                            "admin manages its API keys")
        if doc is None and username != p.username and need_record:
            raise NotFound("user not found")
        return username, doc


class KeysHandler(KeysBase):
    @responds("ApiKeys")
    @requires("token", "write:accounts")
    async def get(self, user_id: str) -> None:
        """The user's API keys (names, ids, rights, dates; never the keys)."""
        username, _ = await self.owner(user_id)
        self.write_json([key_model(d) for d in await self.db.apikeys.of_user(username)])

    @responds("ApiKeyCreated")
    @requires("token", "write:accounts", body=CREATE_BODY, created=True)
    async def post(self, user_id: str) -> None:
        """Create a named API key holding the user's rights (its own roles and groups when
        it creates it; its user record's when an admin does). The key is in the answer
        only: keep it."""
        username, doc = await self.owner(user_id, need_record=True)
        p = self.principal
        if username == p.username:
            roles, groups = list(p.roles), list(p.groups)
        else:
            assert doc is not None
            roles, groups = list(doc.get("roles") or ["user"]), list(doc.get("groups") or [])
        key_id, key, digest = new_key()
        now = time.time()
        days = self.body.get("expires_days")
        record = {"key_id": key_id, "username": username, "name": self.body["name"],
                  "hash": digest, "roles": roles, "groups": groups, "created": iso(now),
                  "expires": iso(now + days * 86400) if days else None}
        await self.db.apikeys.create(record)
        self.write_json({**key_model(record), "key": key}, 201)


class KeyHandler(KeysBase):
    @responds("Deleted")
    @requires("token", "write:accounts")
    async def delete(self, user_id: str, name: str) -> None:
        """Delete (revoke) a key: it is refused from the next request on."""
        username, _ = await self.owner(user_id)
        await self.db.apikeys.delete_named(username, name)
        self.write_json({"deleted": 1})


U = r"(?P<user_id>[A-Za-z0-9_.@+-]{1,128})"
routes = [
    (rf"/users/{U}/apikeys", KeysHandler),
    (rf"/users/{U}/apikeys/(?P<name>[A-Za-z0-9_.-]{{1,64}})", KeyHandler),
]

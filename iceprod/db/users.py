"""Users: accounts with their roles and groups (by name), the external identities (email,
ORCID iD) the token exchange matches, and the groups their last LDAP login granted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iceprod.common.errors import Conflict, DuplicateKey, NotFound
from iceprod.db.base import ALL, Page, Paging, Repository, where
from iceprod.db.store import CollectionSpec, Doc, Index

IDENTITY_FIELDS = ("email", "orcid")


class UsersRepo(Repository):
    spec = CollectionSpec(
        name="users",
        id_field="user_id",
        columns={"username": "TEXT", "email": "TEXT", "orcid": "TEXT"},
        indexes=(
            Index((("username", 1),), unique=True),
            # not unique: Mongo would refuse a second user without an email
            Index((("email", 1),)),
            Index((("orcid", 1),)),
        ),
        array_fields=frozenset({"roles", "groups", "ldap_groups"}),
    )
    kind = "user"

    async def create(self, doc: Doc) -> Doc:
        """Insert a new user; a taken username is a ``Conflict``."""
        try:
            await self.coll.insert_one(doc)
        except DuplicateKey:
            raise Conflict(f"username: {doc['username']!r} already exists") from None
        return doc

    async def by_username(self, username: str) -> Doc | None:
        return await self.coll.find_one({"username": username})

    async def by_identity(self, field: str, value: str) -> list[Doc]:
        """Users whose ``email`` or ``orcid`` equals ``value`` (at most two, to spot
        ambiguity)."""
        if field not in IDENTITY_FIELDS:
            raise ValueError(f"not an identity field: {field}")
        return await self.coll.find({field: value}, limit=2)

    async def page(self, paging: Paging = ALL, *, username: str | None = None,
                   group: str | None = None) -> Page:
        """One page of the users (named ``username``, in ``group``: each when given)."""
        return await self._page(where(username=username, groups=group), paging)

    async def set_fields(self, user_id: str, fields: dict[str, Any]) -> Doc:
        """``$set`` the non-None fields and ``$unset`` the None ones."""
        update: dict[str, dict[str, Any]] = {}
        sets = {k: v for k, v in fields.items() if v is not None}
        unsets = {k: "" for k, v in fields.items() if v is None}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = unsets
        if not update:
            return await self.get(user_id)
        doc = await self.coll.update_one({"user_id": user_id}, update)
        if doc is None:
            raise NotFound("user not found")
        return doc

    async def add_group(self, user_id: str, group: str) -> Doc:
        doc = await self.coll.update_one({"user_id": user_id}, {"$addToSet": {"groups": group}})
        if doc is None:
            raise NotFound("user not found")
        return doc

    async def delete(self, user_id: str) -> Doc:
        """Remove a user and return the document it had."""
        doc = await self.get(user_id)
        await self.coll.delete_many({"user_id": user_id})
        return doc

    async def with_value(self, field: str, value: str) -> list[str]:
        """Usernames of the users whose ``roles`` or ``groups`` contain ``value``."""
        docs = await self.coll.find({field: value}, keys=["username"])
        return [d["username"] for d in docs]

    async def pull_everywhere(self, field: str, value: str) -> int:
        """Remove a deleted role or group from every user holding it."""
        return await self.coll.update_many({field: value}, {"$pull": {field: value}})

    async def find_many(self, user_ids: Sequence[str]) -> list[Doc]:
        return await self.coll.find({"user_id": {"$in": list(user_ids)}})

"""Custom roles: a name mapped to a list of scopes. The built-in roles live in code
(``iceprod/core/roles.py``) and are never stored."""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.common.errors import NotFound
from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc


class RolesRepo(Repository):
    spec = CollectionSpec(name="roles", id_field="name", array_fields=frozenset({"scopes"}))
    kind = "role"

    async def put(self, name: str, scopes: Sequence[str], description: str = "") -> tuple[Doc, bool]:
        """Create or replace a role; answers the role and whether it was created."""
        fields = {"scopes": sorted(set(scopes)), "description": description, "updated": iso()}
        doc = await self.coll.update_one({"name": name}, {"$set": fields})
        if doc is not None:
            return doc, False
        inserted = await self.coll.insert_many([{"name": name, **fields}], skip_duplicates=True)
        if inserted:
            return {"name": name, **fields}, True
        # created concurrently: ours is the later write
        doc = await self.coll.update_one({"name": name}, {"$set": fields})
        assert doc is not None
        return doc, False

    async def all(self) -> list[Doc]:
        return await self.coll.find({}, sort=[("name", 1)])

    async def scopes_of(self, names: Sequence[str]) -> dict[str, frozenset[str]]:
        """Scopes of the named roles that exist, in one query."""
        if not names:
            return {}
        docs = await self.coll.find({"name": {"$in": list(names)}}, keys=["scopes"])
        return {d["name"]: frozenset(d.get("scopes", [])) for d in docs}

    async def delete(self, name: str) -> None:
        if not await self.coll.delete_many({"name": name}):
            raise NotFound("role not found")

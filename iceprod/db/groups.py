"""Groups: named sets of users. Tokens, dataset rules and datasets refer to groups by name;
the id names the REST resource."""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.common.errors import Conflict, DuplicateKey
from iceprod.common.ids import new_id
from iceprod.common.timeutil import iso
from iceprod.db.base import ALL, Page, Paging, Repository, where
from iceprod.db.store import CollectionSpec, Doc, Index


class GroupsRepo(Repository):
    spec = CollectionSpec(
        name="groups",
        id_field="group_id",
        columns={"name": "TEXT"},
        indexes=(Index((("name", 1),), unique=True),),
    )
    kind = "group"

    @staticmethod
    def new_doc(name: str, description: str = "") -> Doc:
        return {"group_id": new_id(), "name": name, "description": description,
                "created": iso()}

    async def create(self, name: str, description: str = "") -> Doc:
        """Insert a new group; a taken name is a ``Conflict``."""
        doc = self.new_doc(name, description)
        try:
            await self.coll.insert_one(doc)
        except DuplicateKey:
            raise Conflict(f"name: group {name!r} already exists") from None
        return doc

    async def page(self, paging: Paging = ALL, *, name: str | None = None) -> Page:
        """One page of the groups (the one named ``name`` when given)."""
        return await self._page(where(name=name), paging)

    async def ensure(self, names: Sequence[str]) -> None:
        """Create the groups that do not exist yet (idempotent, safe under races)."""
        if names:
            await self.coll.insert_many([self.new_doc(n) for n in names], skip_duplicates=True)

    async def missing(self, names: Sequence[str]) -> list[str]:
        """The names among ``names`` that are not groups, in the order given."""
        if not names:
            return []
        docs = await self.coll.find({"name": {"$in": list(names)}}, keys=["name"])
        found = {d["name"] for d in docs}
        return [n for n in names if n not in found]

    async def delete(self, group_id: str) -> Doc:
        """Remove a group and return the document it had."""
        doc = await self.get(group_id)
        await self.coll.delete_many({"group_id": group_id})
        return doc

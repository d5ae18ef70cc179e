"""Per-dataset read/write rules: which users and groups may read or write a dataset."""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc

RULE_FIELDS = ("read_users", "read_groups", "write_users", "write_groups")


class AuthsRepo(Repository):
    spec = CollectionSpec(
        name="auths",
        id_field="dataset_id",
        indexes=(),
        array_fields=frozenset(RULE_FIELDS),
    )
    kind = "dataset"

    async def set_rules(self, dataset_id: str, rules: Doc) -> Doc:
        doc = {"dataset_id": dataset_id, **{k: list(rules.get(k, [])) for k in RULE_FIELDS}}
        updated = await self.coll.update_one(
            {"dataset_id": dataset_id}, {"$set": {k: doc[k] for k in RULE_FIELDS}}
        )
        if updated is None:
            await self.coll.insert_one(doc)
            return doc
        return updated

    async def remove(self, dataset_id: str) -> int:
        """Delete a dataset's rules (undoing a dataset creation that failed half-way)."""
        return await self.coll.delete_many({"dataset_id": dataset_id})

    async def readable(self, username: str, groups: Sequence[str]) -> list[str]:
        """Ids of the datasets a user may read, in one query."""
        docs = await self.coll.find(
            {
                "$or": [
                    {"read_users": username},
                    {"write_users": username},
                    {"read_groups": {"$in": list(groups)}},
                    {"write_groups": {"$in": list(groups)}},
                ]
            },
            keys=["dataset_id"],
        )
        return [d["dataset_id"] for d in docs]


def allows(rules: Doc, action: str, username: str, groups: Sequence[str]) -> bool:
    """Whether rules let a user ``read`` or ``write``; write access implies read access."""
    actions = ("write",) if action == "write" else ("read", "write")
    for a in actions:
        if username in rules.get(f"{a}_users", []):
            return True
        if set(groups) & set(rules.get(f"{a}_groups", [])):
            return True
    return False

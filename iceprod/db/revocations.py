"""Token revocations: per subject (token ``sub``, a username) the time before which its
tokens are refused. Kept apart from ``users`` so that deleting a user, or revoking a subject
with no user record, still refuses the tokens issued before."""

from __future__ import annotations

from iceprod.common.timeutil import iso
from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Update


class RevocationsRepo(Repository):
    spec = CollectionSpec(name="revocations", id_field="username")
    kind = "revocation"

    async def revoke(self, username: str, at: float) -> float:
        """Refuse the subject's tokens issued before ``at``; never moves the time back.
        Answers the subject's not-before time."""
        update: Update = {"$max": {"not_before": at}, "$set": {"updated": iso(at)}}
        doc = await self.coll.update_one({"username": username}, update)
        if doc is None:
            await self.coll.insert_many(
                [{"username": username, "not_before": at, "updated": iso(at)}],
                skip_duplicates=True,
            )
            doc = await self.coll.update_one({"username": username}, update)
        assert doc is not None
        return float(doc["not_before"])

    async def not_before(self, username: str) -> float | None:
        doc = await self.coll.find_one({"username": username}, keys=["not_before"])
        return float(doc["not_before"]) if doc else None

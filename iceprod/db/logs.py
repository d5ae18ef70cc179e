"""Logs: stdout, stderr, stdlog and other named texts attached to a task."""

from __future__ import annotations

from iceprod.db.base import Repository
from iceprod.db.store import CollectionSpec, Doc, Index


class LogsRepo(Repository):
    spec = CollectionSpec(
        name="logs",
        id_field="log_id",
        columns={"dataset_id": "TEXT", "task_id": "TEXT", "name": "TEXT", "timestamp": "TEXT"},
        indexes=(
            Index((("task_id", 1), ("timestamp", -1))),
            Index((("dataset_id", 1),)),
        ),
    )
    kind = "log"

    async def create(self, doc: Doc) -> Doc:
        await self.coll.insert_one(doc)
        return doc

    async def for_task(
        self, dataset_id: str, task_id: str, num: int | None, group: bool, desc: bool,
        keys: list[str] | None = None,
    ) -> list[Doc]:
        """A task's logs by time; ``group`` keeps the newest of each name."""
        docs = await self.coll.find(
            {"dataset_id": dataset_id, "task_id": task_id},
            keys=keys,
            sort=[("timestamp", -1 if (desc or group) else 1), ("log_id", 1)],
            limit=None if group else num,
        )
        if group:
            seen: set[str] = set()
            newest = []
            for d in docs:
                name = d.get("name", "")
                if name not in seen:
                    seen.add(name)
                    newest.append(d)
            if not desc:
                newest.reverse()
            docs = newest[:num] if num else newest
        return docs

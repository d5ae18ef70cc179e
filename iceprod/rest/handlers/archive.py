"""Archiving finished datasets (admins): compact their tasks to a summary, keep their stats,
move their logs to compressed archive files or drop them, empty their file store
(``iceprod.core.archive``)."""

from __future__ import annotations

from iceprod.core.archive import Selection, run
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds
from iceprod.rest.storeops import remover

ARCHIVE_BODY = body("archive")


class ArchiveHandler(APIHandler):
    @responds("ArchiveResult")
    @requires("facility", body=ARCHIVE_BODY)
    async def post(self) -> None:
        """Archive the finished datasets older than `older_than_days` (carrying `tag` when
        given); with `dry_run` only answer what would go:
        `{"dry_run", "matched", "changed", "datasets": [...]}`."""
        b = self.body
        sel = Selection(older_than_days=float(b["older_than_days"]), tag=b.get("tag"),
                        logs=b.get("logs", "compress"), dry_run=bool(b.get("dry_run")),
                        limit=int(b["limit"]) if "limit" in b else None)
        done = await run(self.db, sel, self.ctx.config.data_dir, remover(self.ctx.files))
        if not sel.dry_run:
            await audit(self, "archive", counts={"matched": done["matched"],
                                                 "changed": done["changed"]},
                        detail={k: v for k, v in b.items() if k != "dry_run"})
        self.write_json(done)


routes = [
    (r"/archive", ArchiveHandler),
]

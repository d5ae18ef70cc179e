"""Per-dataset read/write rules (users and groups), and the checks "may the caller read or
write this dataset?". These rules decide every dataset route; admin and system bypass them.
A new dataset gives its submitter read and write, its group read only; write for a group is
granted explicitly (``PUT /auths/{dataset_id}``)."""

from __future__ import annotations

from iceprod.db.auths import RULE_FIELDS
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.dryrun import DryRunHandler
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds

PUT_BODY = body("auths_put")


class AuthsHandler(DryRunHandler):
    @responds("DatasetRules")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """A dataset's rules: `{dataset_id, read_users, read_groups, write_users,
        write_groups}`."""
        rules = await self.db.auths.find(dataset_id) or {}
        self.write_json({"dataset_id": dataset_id, **{f: rules.get(f, []) for f in RULE_FIELDS}})

    @responds("DatasetRulesSet", "DryRun")
    @requires("write:datasets", dataset="write", body=PUT_BODY)
    async def put(self, dataset_id: str) -> None:
        """Set some of a dataset's rule lists (each list given replaces the stored one; lists
        not given are kept). Write access implies read access. Answers the rules and
        `changed` (0 or 1). `"dry_run": true` answers
        the rules before and after, changing nothing."""
        current = await self.db.auths.find(dataset_id) or {}
        before = {f: current.get(f, []) for f in RULE_FIELDS}
        merged = {f: self.body.get(f, before[f]) for f in RULE_FIELDS}
        changed = int(merged != before)
        if self.dry_run:
            self.write_preview({"matched": 1, "changed": changed, "by_status": {},
                                "sample": [dataset_id] if changed else [],
                                "before": before, "after": merged})
            return
        doc = await self.db.auths.set_rules(dataset_id, merged)
        await audit(self, "dataset.rules", dataset_id, None, {"changed": changed},
                    {"rules": merged, "previous": before})
        self.write_json({"dataset_id": dataset_id, **{f: doc.get(f, []) for f in RULE_FIELDS},
                         "changed": changed})


class AuthReadHandler(APIHandler):
    @responds("Empty")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id: str) -> None:
        """200 when the caller's token may read the dataset, else 403."""
        self.write_json({})


class AuthWriteHandler(APIHandler):
    @responds("Empty")
    @requires("write:datasets", dataset="write")
    async def get(self, dataset_id: str) -> None:
        """200 when the caller's token may write the dataset, else 403."""
        self.write_json({})


D = r"(?P<dataset_id>[0-9a-f]{32})"
routes = [
    (rf"/auths/{D}", AuthsHandler),
    (rf"/auths/{D}/actions/read", AuthReadHandler),
    (rf"/auths/{D}/actions/write", AuthWriteHandler),
]

"""``"dry_run": true`` on operators' bulk and cascading actions.

A handler deriving from ``DryRunHandler`` accepts a boolean ``dry_run`` in its JSON body
(taken out before the body is checked against its schema, so each schema stays what the
real action takes) and answers a preview with ``write_preview``:
``{"dry_run": true, "matched": n, "changed": n, "by_status": {status: n}, "sample": [ids]}``
(see ``iceprod.core.preview``). A dry run changes nothing and leaves no audit record; the
real run's ``changed`` is the preview's.
"""

from __future__ import annotations

from typing import Any

from iceprod.common import strict_json
from iceprod.common.errors import Invalid
from iceprod.common.schema import validate
from iceprod.db.store import Doc
from iceprod.rest.base import APIHandler


def split_dry_run(data: Any) -> tuple[Any, bool]:
    """The body without its ``dry_run`` flag, and the flag (a boolean, else 400)."""
    if not isinstance(data, dict) or "dry_run" not in data:
        return data, False
    flag = data["dry_run"]
    if not isinstance(flag, bool):
        raise Invalid("dry_run: must be a boolean", field="dry_run")
    return {k: v for k, v in data.items() if k != "dry_run"}, flag


class DryRunHandler(APIHandler):
    """A handler whose body may carry ``"dry_run": true``."""

    dry_run: bool = False

    def raw_body(self) -> Any:
        """The body parsed strictly, without its ``dry_run`` flag (which is kept)."""
        raw = self.request.body
        data, self.dry_run = split_dry_run(strict_json.loads(raw) if raw else {})
        return data

    def parse_body(self, schema: Doc) -> Doc:
        data = self.raw_body()
        validate(data, schema)
        return data  # type: ignore[no-any-return]

    def write_preview(self, preview: Doc) -> None:
        self.reply({"dry_run": True, **preview}, "DryRun")

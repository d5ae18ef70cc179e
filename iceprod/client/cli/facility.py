"""`iceprod why TASK|DATASET`: why is it not running? (`iceprod admin maintenance` is in
``admin``.)"""

from __future__ import annotations

from iceprod.client.api import Doc, NotFound
from iceprod.client.cli.context import EXIT_OK, Context
from iceprod.client.cli.parsing import Sub, command
from iceprod.client.errors import UsageError

_HEX = frozenset("0123456789abcdef")


def _blocker_lines(blockers: list[Doc], indent: str = "  ") -> list[str]:
    return [f"{indent}- {b.get('kind')}: {b.get('message')}" for b in blockers]


def cmd_why(ctx: Context) -> int:
    """Explain a task (by id) or a dataset (by id or number)."""
    ref = ctx.args.ref.strip()
    api = ctx.client()
    if ref.isdigit():
        doc, kind = api.datasets.explain(ref), "dataset"
    elif len(ref) == 32 and set(ref) <= _HEX:
        try:
            doc, kind = api.tasks.explain(ref), "task"
        except NotFound:
            doc, kind = api.datasets.explain(ref), "dataset"
    else:
        raise UsageError(f"TASK|DATASET must be a task id, a dataset id or a dataset number, "
                         f"not {ref!r}")
    if ctx.args.json:
        ctx.out.json(doc)
        return EXIT_OK
    if kind == "task":
        ctx.out.line(f"task {doc['task_id']} ({doc.get('name')}, job {doc.get('job_index')}): "
                     f"{doc['summary']}")
        for line in _blocker_lines(doc.get("blockers") or []):
            ctx.out.line(line)
        return EXIT_OK
    ctx.out.line(f"dataset {doc['dataset_id']}: {doc['summary']}")
    for group in doc.get("tasks") or []:
        ctx.out.line(f"{group['name']} {group['status']} ({group['count']} task(s), e.g. "
                     f"{group['example_task_id']}):")
        for line in _blocker_lines(group.get("blockers") or [], "    "):
            ctx.out.line(line)
    return EXIT_OK


def add_why_command(sub: Sub) -> None:
    p = command(sub, "why", cmd_why, "why isn't my task (or dataset) running?")
    p.add_argument("ref", metavar="TASK|DATASET",
                   help="a task id, or a dataset id or number")

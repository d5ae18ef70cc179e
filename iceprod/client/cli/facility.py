"""`iceprod why TASK|DATASET` (why is it not running?) and `iceprod admin maintenance ...`
(server-wide maintenance and per-node drain)."""

from __future__ import annotations

from typing import Any

from iceprod.client.api import Doc, NotFound
from iceprod.client.cli.context import EXIT_OK, Context, short
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


# -- admin maintenance -------------------------------------------------------------------------


def _show_state(ctx: Context, state: Doc) -> int:
    if ctx.args.json:
        ctx.out.json(state)
        return EXIT_OK
    g = state.get("general") or {}
    if g.get("status") == "on":
        ctx.out.line(f"maintenance: on since {g.get('since')} by {g.get('by')}: "
                     f"{g.get('message')} (retry after {g.get('retry_after')}s)")
    else:
        ctx.out.line("maintenance: off")
    nodes: dict[str, Any] = state.get("nodes") or {}
    if nodes:
        ctx.out.table(["drained", "since", "by", "message"],
                      [[n, e.get("since"), e.get("by"), short(e.get("message"), 60)]
                       for n, e in sorted(nodes.items())])
    else:
        ctx.out.line("drained: none")
    return EXIT_OK


def maintenance_status(ctx: Context) -> int:
    return _show_state(ctx, ctx.client().maintenance.status())


def maintenance_set(ctx: Context) -> int:
    a = ctx.args
    node = a.node or "all"
    state = ctx.client().maintenance.set(node, a.admin_action == "on", message=a.message,
                                         retry_after=a.retry_after)
    return _show_state(ctx, state)


def add_maintenance_parsers(b: Any) -> None:
    """`iceprod admin maintenance [status] | on [NODE] | off [NODE]` (b: admin's parsers)."""
    kind = b.kind("maintenance", "server-wide maintenance and per-node drain (default: "
                  "status)", maintenance_status)
    b.action(kind, "status", maintenance_status, "show maintenance and drained nodes")
    start = ("start maintenance (no NODE), or drain NODE (a site, pilot host or grid): no new "
             "work there, running tasks finish")
    for action, text in (("on", start), ("off", "end maintenance (no NODE), or bring NODE back")):
        p = b.action(kind, action, maintenance_set, text)
        p.add_argument("node", metavar="NODE", nargs="?",
                       help="a site, pilot host or grid name (default: all, the server)")
        if action == "on":
            p.add_argument("--message", help="shown to users (503 answers) and in explain")
            p.add_argument("--retry-after", type=int, metavar="SECONDS",
                           help="sent as Retry-After with 503 answers (default 600)")
        else:
            p.set_defaults(message=None, retry_after=None)

"""`iceprod tasks | suspend | resume | reset | requirements`: a dataset's tasks, and the
operators' bulk actions, which send the server a selection (never a list of every id) and
leave any cascade to the dataset's status to the server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from iceprod.client.api import Doc, Resources
from iceprod.client.cli.context import EXIT_OK, Context, short
from iceprod.client.cli.parsing import Sub, command, dataset_arg
from iceprod.client.errors import UsageError
from iceprod.common.states import allowed_from

TASK_KEYS = ["task_id", "job_index", "task_index", "name", "status", "failures", "walltime",
             "site", "reason"]
REQUIREMENT_TYPES: dict[str, Callable[[str], Any]] = {
    "cpu": int, "gpu": int, "memory": float, "disk": float, "time": float,
    "os": lambda v: [s for s in v.split(",") if s], "site": str,
}


def duration(hours: float | None) -> str:
    """A walltime kept in hours, with its unit: `0.004 s`, `3m04s`, `2.50 h`."""
    if hours is None:
        return ""
    seconds = float(hours) * 3600
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{hours:.2f} h"


def cmd_tasks(ctx: Context) -> int:
    """List a dataset's tasks."""
    dataset = ctx.dataset(ctx.args.dataset)
    docs = ctx.client().tasks.list(dataset["dataset_id"], status=ctx.args.status,
                                   name=ctx.args.name, keys=None if ctx.args.json else TASK_KEYS)
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    rows = sorted(docs.values(), key=lambda t: (t.get("job_index", 0), t.get("task_index", 0)))
    ctx.out.table(
        ["task_id", "job", "#", "name", "status", "failures", "walltime", "site", "reason"],
        [[t["task_id"], t.get("job_index"), t.get("task_index"), t.get("name"), t.get("status"),
          t.get("failures"), duration(t.get("walltime")), t.get("site"),
          short(t.get("reason"), 50)]
         for t in rows],
    )
    return EXIT_OK


# -- operators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkAction:
    """An operator's bulk change: the target task status and, without --task-name or
    --status, the dataset status that carries it (the server cascades to the tasks)."""

    verb: str
    task_status: str
    dataset_status: str | None


BULK_ACTIONS = {
    "suspend": BulkAction("suspend", "suspended", "suspended"),
    "resume": BulkAction("resume", "waiting", "processing"),
    "reset": BulkAction("reset", "waiting", None),
}


def bulk_sources(action: BulkAction, status_arg: str | None) -> list[str]:
    """The task statuses a bulk action changes: those the state machine allows, narrowed by
    --status (reset defaults to failed tasks; resume to suspended ones)."""
    allowed = allowed_from("task", action.task_status)
    if action.verb == "reset" and not status_arg:
        status_arg = "failed"
    if action.verb == "resume":
        allowed = ["suspended"]
    if not status_arg:
        return allowed
    wanted = [s for s in status_arg.replace("|", ",").split(",") if s]
    bad = [s for s in wanted if s not in allowed]
    if bad:
        raise UsageError(f"--status: cannot {action.verb} tasks that are {', '.join(bad)} "
                         f"(only {', '.join(allowed)})")
    return wanted


def describe_preview(preview: Doc) -> str:
    """A dry run's answer in one line: how many would change, by current status, and the
    first ids."""
    by_status = ", ".join(f"{n} {status}" for status, n in preview.get("by_status", {}).items())
    text = f"would change {preview['changed']} of {preview['matched']} selected"
    if by_status:
        text += f" ({by_status})"
    sample = preview.get("sample") or []
    if sample:
        more = " ..." if preview["changed"] > len(sample) else ""
        text += f"; first: {' '.join(sample[:5])}{' ...' if len(sample) > 5 else more}"
    return text


def show_preview(ctx: Context, preview: Doc, what: str, extra: Doc | None = None) -> bool:
    """With --dry-run: print the preview (as JSON with --json) and answer True (done).
    Otherwise tell it on stderr, before asking, and answer False."""
    if ctx.args.dry_run:
        if ctx.args.json:
            ctx.out.json({**(extra or {}), **preview})
        else:
            ctx.out.line(f"{what}: {describe_preview(preview)}")
        return True
    ctx.out.info(f"{what}: {describe_preview(preview)}")
    return False


def cmd_bulk(ctx: Context) -> int:
    """suspend | resume | reset the matching tasks of a dataset: the server's dry run says
    what would change; then ask for confirmation (unless --yes) and change it."""
    a = ctx.args
    action = BULK_ACTIONS[a.command]
    dataset = ctx.dataset(a.dataset)
    ds = dataset["dataset_id"]
    client = ctx.client()
    sources = bulk_sources(action, a.status)
    names = [a.task_name] if a.task_name else None
    label = f"{'|'.join(sources)} task(s)" + (f" named {a.task_name}" if a.task_name else "")
    whole = bool(action.dataset_status) and not a.task_name and not a.status
    change_dataset = whole and dataset.get("status") != action.dataset_status
    if change_dataset:
        # the dataset's status carries the change to its tasks, server-side
        label = "task(s) and the dataset"
        preview = client.datasets.preview_status(ds, str(action.dataset_status))
    else:
        preview = client.tasks.preview_bulk_status(ds, action.task_status, statuses=sources,
                                                   names=names)
    what = f"{action.verb} {label} of dataset {dataset.get('dataset')}"
    extra = {"dataset_id": ds, "action": action.verb, "status": action.task_status}
    if show_preview(ctx, preview, what, extra):
        return EXIT_OK
    matched = int(preview["matched"])
    if not preview["changed"] and not change_dataset:
        return _bulk_result(ctx, dataset, action, matched, 0, f"no {label} to {action.verb}")
    if not ctx.confirm(f"{action.verb} {preview['changed']} {label} of dataset "
                       f"{dataset.get('dataset')}?"):
        ctx.out.info("nothing changed")
        return EXIT_OK
    if change_dataset:
        reply = client.datasets.set_status(ds, str(action.dataset_status))
        changed = int(reply.get("changed") or reply.get("tasks_changed") or 0)
    else:
        changed = client.tasks.bulk_status(ds, action.task_status, statuses=sources,
                                           names=names)
    return _bulk_result(ctx, dataset, action, matched, changed,
                        f"{action.verb}: changed {changed} of {matched} {label}")


def _bulk_result(ctx: Context, dataset: Doc, action: BulkAction, matched: int, changed: int,
                 message: str) -> int:
    if ctx.args.json:
        ctx.out.json({"dataset_id": dataset["dataset_id"], "action": action.verb,
                      "status": action.task_status, "matched": matched, "changed": changed})
    else:
        ctx.out.line(message)
    return EXIT_OK


def parse_requirements(items: Sequence[str]) -> Resources:
    """`memory=4 cpu=2 os=el8,el9` -> a requirements dict, type-checked."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in REQUIREMENT_TYPES:
            raise UsageError(f"requirement must be one of {', '.join(REQUIREMENT_TYPES)}"
                             f" as name=value, not {item!r}")
        try:
            out[key] = REQUIREMENT_TYPES[key](raw)
        except ValueError:
            raise UsageError(f"{key}: {raw!r} is not a number") from None
    if not out:
        raise UsageError("give at least one requirement, e.g. memory=4")
    return Resources(**out)  # type: ignore[typeddict-item]


def cmd_requirements(ctx: Context) -> int:
    """Set requirements on every unfinished task with a name: the server's dry run says how
    many would change; then ask (unless --yes) and change them."""
    reqs = parse_requirements(ctx.args.requirements)
    dataset = ctx.dataset(ctx.args.dataset)
    ds, name = dataset["dataset_id"], ctx.args.task_name
    client = ctx.client()
    preview = client.tasks.preview_bulk_requirements(ds, name, reqs)
    what = f"requirements of {name} task(s) of dataset {dataset.get('dataset')}"
    if show_preview(ctx, preview, what, {"dataset_id": ds, "requirements": dict(reqs)}):
        return EXIT_OK
    if not ctx.confirm(f"set {' '.join(f'{k}={v}' for k, v in reqs.items())} on "
                       f"{preview['changed']} {name} task(s)?"):
        ctx.out.info("nothing changed")
        return EXIT_OK
    changed = client.tasks.bulk_requirements(ds, name, reqs)
    if ctx.args.json:
        ctx.out.json({"changed": changed, "requirements": reqs})
    else:
        ctx.out.line(f"requirements of {changed} {name} task(s) set: "
                     + " ".join(f"{k}={v}" for k, v in reqs.items()))
    return EXIT_OK


def add_tasks_command(sub: Sub) -> None:
    p = command(sub, "tasks", cmd_tasks, "list a dataset's tasks")
    dataset_arg(p)
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--name", help="only tasks with this name")


def add_operator_commands(sub: Sub) -> None:
    helps = {
        "suspend": "suspend a dataset's unfinished tasks (and the dataset)",
        "resume": "send suspended tasks back to waiting (and resume the dataset)",
        "reset": "send failed (or --status) tasks back to waiting",
    }
    for verb, text in helps.items():
        p = command(sub, verb, cmd_bulk, text, description=(
            f"{text[0].upper()}{text[1:]}. Shows what would change (the server's dry run: "
            "counts by current status and the first task ids) and asks for confirmation "
            "unless --yes; prints how many changed. --dry-run only shows. With --task-name or "
            "--status only those tasks change (the dataset's own status is left alone)."))
        dataset_arg(p)
        p.add_argument("--task-name", help="only tasks with this name")
        p.add_argument("--status", help="only tasks in these statuses (a,b)"
                       + (" (default failed)" if verb == "reset" else ""))
        confirm_options(p)
    p = command(sub, "requirements", cmd_requirements,
                "set requirements on a dataset's tasks with a name",
                description="Set requirements on every unfinished task named TASK_NAME: "
                            "cpu=N gpu=N memory=GB disk=GB time=HOURS os=el8,el9 site=NAME. "
                            "Shows how many would change and asks unless --yes.")
    dataset_arg(p)
    p.add_argument("task_name", metavar="TASK_NAME", help="task name")
    p.add_argument("requirements", metavar="NAME=VALUE", nargs="+", help="requirements")
    confirm_options(p)


def confirm_options(p: Any) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="only show what would change (nothing is changed)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

"""Running a facility from the command line: `iceprod projects`, `iceprod usage`,
`iceprod bill`, and the admin side (`iceprod admin projects ...`, `iceprod admin rates`,
`iceprod admin archive`). Like the rest of the CLI, these only parse, call and print."""

from __future__ import annotations

import argparse
import re
from typing import Any

from iceprod.client._sync import bill_path
from iceprod.client.api import Doc
from iceprod.client.cli.parsing import Sub, command
from iceprod.client.errors import UsageError

QUOTA_FIELDS = ("cores", "cpu_hours", "period_days", "stored_bytes")
RATE_FIELDS = ("cpu_hours", "core_hours", "walltime_hours", "gpu_hours", "memory_gb_hours")
USAGE_COLUMNS = ("cpu_hours", "core_hours", "walltime_hours", "gpu_hours", "memory_gb_hours",
                 "tasks_complete", "tasks_reset", "tasks_failed")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{1,2})")


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v for v in value.split(",") if v]


def _done(ctx: Any, message: str, data: Any) -> int:
    if getattr(ctx.args, "json", False):
        ctx.out.json(data)
    else:
        ctx.out.line(message)
    return 0


def _quota_text(quota: Doc) -> str:
    return ", ".join(f"{k}={quota[k]}" for k in QUOTA_FIELDS if k in quota) or "none"


# -- users' commands ---------------------------------------------------------------------------


def cmd_projects(ctx: Any) -> int:
    """`iceprod projects [NAME]`: the caller's projects, or one with what it holds now."""
    client = ctx.client()
    if ctx.args.name:
        doc = client.projects.get(ctx.args.name)
        load = client.projects.usage(ctx.args.name)
        if ctx.args.json:
            ctx.out.json({**doc, "usage": load})
            return 0
        ctx.out.fields([
            ("project", doc["name"]), ("description", doc.get("description")),
            ("users", ", ".join(doc.get("users") or [])),
            ("groups", ", ".join(doc.get("groups") or [])),
            ("quota", _quota_text(doc.get("quota") or {})),
            ("cores in use", load["cores_in_use"]),
            (f"core-hours ({load['period_days']} days)", round(load["core_hours"], 3)),
            ("stored bytes", load["stored_bytes"]),
        ])
        for b in load["blockers"]:
            ctx.out.line(f"held back: {b['message']}")
        return 0
    docs = client.projects.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return 0
    ctx.out.table(["project", "users", "groups", "quota"],
                  [[d["name"], ",".join(d.get("users") or []), ",".join(d.get("groups") or []),
                    _quota_text(d.get("quota") or {})] for _, d in sorted(docs.items())])
    return 0


def cmd_usage(ctx: Any) -> int:
    """`iceprod usage`: summed usage with filters, a day range and grouping."""
    a = ctx.args
    params = {"user": a.user, "group": a.group, "project": a.project, "site": a.site,
              "dataset_id": a.dataset, "start": a.start, "end": a.end,
              "group_by": _split(a.by)}
    client = ctx.client()
    if a.csv:
        ctx.out.line(client.usage.csv("/usage", params).rstrip("\n"))
        return 0
    answer = client.usage.query(**params)
    if a.json:
        ctx.out.json(answer)
        return 0
    by = answer["group_by"]
    ctx.out.table([*by, *USAGE_COLUMNS],
                  [[r.get(k) for k in by] + [_round(r[m]) for m in USAGE_COLUMNS]
                   for r in answer["usage"]])
    return 0


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _month(text: str) -> tuple[int, int]:
    m = _MONTH.fullmatch(text)
    if not m:
        raise UsageError(f"MONTH must be YYYY-MM, not {text!r}")
    return int(m[1]), int(m[2])


def cmd_bill(ctx: Any) -> int:
    """`iceprod bill KIND NAME YYYY-MM`: a month's usage, per project, priced."""
    a = ctx.args
    year, month = _month(a.month)
    client = ctx.client()
    if a.csv:
        ctx.out.line(client.usage.csv(bill_path(a.kind, a.name, year, month)).rstrip("\n"))
        return 0
    doc = client.usage.bill(a.kind, a.name, year, month)
    if a.json:
        ctx.out.json(doc)
        return 0
    currency = doc["total"].get("currency") or ""
    rows = [[r["project"], _round(r["core_hours"]), _round(r["gpu_hours"]),
             _round(r["cost"])] for r in doc["projects"]]
    rows.append(["total", _round(doc["total"]["core_hours"]), _round(doc["total"]["gpu_hours"]),
                 _round(doc["total"]["cost"])])
    ctx.out.table(["project", "core_hours", "gpu_hours", f"cost ({currency})"], rows,
                  title=f"{a.kind} {a.name}, {year:04d}-{month:02d}")
    return 0


def add_facility_commands(sub: Sub) -> None:
    p = command(sub, "projects", cmd_projects, "your projects, or one with its quota and use")
    p.add_argument("name", metavar="NAME", nargs="?", help="a project to show")
    p = command(sub, "usage", cmd_usage, "resource usage (CPU/core/GPU/memory hours, tasks)")
    p.add_argument("--user")
    p.add_argument("--group")
    p.add_argument("--project")
    p.add_argument("--site")
    p.add_argument("--dataset", help="dataset id")
    p.add_argument("--start", metavar="YYYY-MM-DD", help="first day (UTC)")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="last day (UTC)")
    p.add_argument("--by", metavar="A,B", help="group by day,user,group,project,site,dataset_id")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p = command(sub, "bill", cmd_bill, "a month's usage of a user, group or project, priced")
    p.add_argument("kind", choices=["user", "group", "project"])
    p.add_argument("name", metavar="NAME")
    p.add_argument("month", metavar="YYYY-MM")
    p.add_argument("--csv", action="store_true", help="print CSV")


# -- admin commands (`iceprod admin projects|rates|archive`) -----------------------------------


def _quota_from(args: argparse.Namespace) -> Doc:
    quota: Doc = {}
    for field in QUOTA_FIELDS:
        value = getattr(args, field, None)
        if value is None:
            continue
        if value == "none":
            quota[field] = None
        else:
            try:
                number = float(value)
            except ValueError:
                raise UsageError(f"--{field.replace('_', '-')}: a number or 'none', not "
                                 f"{value!r}") from None
            quota[field] = int(number) if number.is_integer() else number
    return quota


def projects_list(ctx: Any) -> int:
    ctx.args.name = None
    return cmd_projects(ctx)


def projects_show(ctx: Any) -> int:
    return cmd_projects(ctx)


def projects_add(ctx: Any) -> int:
    a = ctx.args
    name = ctx.client().projects.create(a.name, description=a.description,
                                        users=_split(a.users), groups=_split(a.groups),
                                        quota=_quota_from(a) or None)
    return _done(ctx, f"project {name} created", {"name": name})


def projects_set(ctx: Any) -> int:
    a = ctx.args
    if a.description is None and a.users is None and a.groups is None:
        raise UsageError("nothing to change: give --description, --users or --groups")
    doc = ctx.client().projects.update(a.name, description=a.description,
                                       users=_split(a.users), groups=_split(a.groups))
    return _done(ctx, f"project {a.name} changed", doc)


def projects_quota(ctx: Any) -> int:
    quota = _quota_from(ctx.args)
    client = ctx.client()
    doc = client.projects.set_quota(ctx.args.name, quota) if quota \
        else client.projects.quota(ctx.args.name)
    return _done(ctx, f"project {ctx.args.name} quota: {_quota_text(doc)}", doc)


def projects_delete(ctx: Any) -> int:
    ctx.client().projects.delete(ctx.args.name)
    return _done(ctx, f"project {ctx.args.name} deleted", {"ok": True})


def rates_cmd(ctx: Any) -> int:
    a = ctx.args
    new: Doc = {f: getattr(a, f) for f in RATE_FIELDS if getattr(a, f) is not None}
    if a.currency:
        new["currency"] = a.currency
    client = ctx.client()
    doc = client.usage.set_rates(new) if new else client.usage.rates()
    text = ", ".join(f"{k}={doc[k]}" for k in RATE_FIELDS) + f" ({doc.get('currency')})"
    return _done(ctx, f"rates: {text}", doc)


def archive_cmd(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client().archive.run(a.older_than, tag=a.tag, dry_run=a.dry_run,
                                   logs="drop" if a.drop_logs else None, limit=a.limit)
    if a.json:
        ctx.out.json(doc)
        return 0
    verb = "would archive" if doc["dry_run"] else "archived"
    for d in doc["datasets"]:
        ctx.out.line(f"{verb} dataset {d['dataset']} ({d['dataset_id']}): {d['tasks']} "
                     f"task(s), {d['logs']} log(s)")
    ctx.out.line(f"{doc['matched']} matched, {doc['changed']} archived")
    return 0


def _quota_options(p: Any) -> None:
    for field in QUOTA_FIELDS:
        p.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="N",
                       help="a number, or 'none' for no limit")


def _leaf(b: Any, name: str, text: str, func: Any) -> Any:
    """An admin KIND that is a command itself (no ACTION)."""
    p = b.kinds.add_parser(name, help=text, description=text, epilog=b.epilog,
                           parents=[b.common(True)],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def add_admin_facility(b: Any) -> None:
    """`iceprod admin projects ...`, `iceprod admin rates`, `iceprod admin archive`
    (``b``: the admin command's parser builder)."""
    projects = b.kind("projects", "list and change projects and quotas (default: list)",
                      projects_list)
    b.action(projects, "list", projects_list, "list projects")
    b.action(projects, "show", projects_show, "show a project, its quota and use"
             ).add_argument("name", metavar="NAME")
    p = b.action(projects, "add", projects_add, "create a project")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    p.add_argument("--users", metavar="A,B", help="member users")
    p.add_argument("--groups", metavar="A,B", help="member groups")
    _quota_options(p)
    p = b.action(projects, "set", projects_set, "change a project's members or description")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    p.add_argument("--users", metavar="A,B", help="replace the member users ('' for none)")
    p.add_argument("--groups", metavar="A,B", help="replace the member groups ('' for none)")
    p = b.action(projects, "quota", projects_quota, "show or set a project's quota")
    p.add_argument("name", metavar="NAME")
    _quota_options(p)
    b.action(projects, "delete", projects_delete, "delete a project").add_argument(
        "name", metavar="NAME")
    p = _leaf(b, "rates", "show or set the billing rates", rates_cmd)
    for field in RATE_FIELDS:
        p.add_argument(f"--{field.replace('_', '-')}", dest=field, type=float, metavar="PRICE")
    p.add_argument("--currency")
    p = _leaf(b, "archive", "archive finished datasets (see docs: Archive)", archive_cmd)
    p.add_argument("--older-than", dest="older_than", type=float, required=True,
                   metavar="DAYS", help="finished more than DAYS days ago")
    p.add_argument("--tag", help="only datasets carrying this tag")
    p.add_argument("--drop-logs", action="store_true",
                   help="drop logs instead of keeping them in a compressed archive file")
    p.add_argument("--dry-run", action="store_true", help="only show what would go")
    p.add_argument("--limit", type=int, metavar="N", help="at most N datasets")

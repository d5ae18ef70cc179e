"""`iceprod submit | datasets | status | stats`: submitting a dataset and following it."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from iceprod.client.api import APIError, Client, Doc
from iceprod.client.cli.context import (
    EXIT_OK,
    EXIT_UNFINISHED,
    EXIT_USAGE,
    Context,
    Reported,
    describe_token,
    short,
)
from iceprod.client.cli.parsing import Sub, command, dataset_arg, positive
from iceprod.client.errors import UsageError
from iceprod.client.follow import Changes
from iceprod.client.output import Output
from iceprod.common.configcheck import ConfigError, Problem, check_config, parse_text

FINAL_TASK_STATUSES = ("complete", "failed")


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value`; the value is JSON when it parses (numbers, true, lists), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--param must be name=value, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def load_config(path: Path, params: Sequence[str]) -> dict[str, Any]:
    """Read a config, set its --param values and validate it locally; raises `ConfigError`
    with each problem's line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    config = parse_text(text)
    if params:
        if not isinstance(config, dict):
            raise ConfigError([Problem("", "a dataset config must be a JSON object", 1, 1)])
        steering = config.setdefault("steering", {}).setdefault("parameters", {})
        steering.update(parse_param(p) for p in params)
    check_config(config, text)
    return dict(config)


def print_config_problems(ctx: Context, path: Path, problems: Iterable[Problem]) -> None:
    """Each problem with the line of the file it is on, and a caret under the field."""
    lines = _read_lines(path)
    ctx.out.error(f"{path}: invalid dataset config")
    for p in problems:
        where = f"line {p.line}: " if p.line else ""
        ctx.out.info(f"  {where}{p.field + ': ' if p.field else ''}{p.message}")
        if p.line and p.line <= len(lines):
            ctx.out.info(f"    {p.line:>4} | {lines[p.line - 1]}")
            ctx.out.info(f"         | {' ' * ((p.column or 1) - 1)}^")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def default_group(ctx: Context) -> str:
    groups = describe_token(ctx.resolved.token or "")["groups"] if ctx.resolved.token else []
    if not groups:
        raise UsageError("--group is required (your token names no groups)")
    return str(groups[0])


def cmd_submit(ctx: Context) -> int:
    """Validate a config locally, create the dataset, and put the config."""
    a = ctx.args
    path = Path(a.config)
    try:
        config = load_config(path, a.param)
    except ConfigError as exc:
        print_config_problems(ctx, path, exc.problems)
        return EXIT_USAGE
    if a.dry_run:
        ctx.out.info(f"{path}: valid ({len(config['tasks'])} task(s) per job); nothing submitted")
        return EXIT_OK
    client = ctx.client()
    options = config.get("options", {})
    dataset_id = client.datasets.create(
        a.description or config.get("description") or path.stem,
        jobs_submitted=a.jobs, tasks_per_job=len(config["tasks"]),
        group=a.group or default_group(ctx), priority=a.priority,
        debug=options.get("debug"), max_failures=options.get("max_failures"),
        read_groups=a.read_group, write_groups=a.write_group,
    )
    number = client.datasets.get(dataset_id, keys=["dataset"]).get("dataset")
    try:
        client.config.put(dataset_id, config)
    except APIError as exc:
        ctx.out.error(f"the server refused the config of dataset {number} ({dataset_id}), "
                      f"which was created without one: {exc}")
        raise Reported(exc) from None
    result = {"dataset_id": dataset_id, "dataset": number, "jobs": a.jobs,
              "tasks_per_job": len(config["tasks"])}
    if a.json:
        ctx.out.json(result)
    else:
        ctx.out.line(f"submitted dataset {number} ({dataset_id}): {a.jobs} job(s) x "
                     f"{len(config['tasks'])} task(s)")
    return EXIT_OK



def cmd_datasets(ctx: Context) -> int:
    """List the datasets you can read."""
    docs = ctx.client().datasets.list(status=ctx.args.status, username=ctx.args.user)
    rows = sorted(docs.values(), key=lambda d: d.get("dataset") or 0)
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    ctx.out.table(
        ["#", "dataset_id", "status", "user", "group", "jobs", "tasks/job", "priority",
         "description"],
        [[d.get("dataset"), d["dataset_id"], d.get("status"), d.get("username"), d.get("group"),
          d.get("jobs_submitted"), d.get("tasks_per_job"), d.get("priority"),
          short(d.get("description"))] for d in rows],
    )
    return EXIT_OK


def dataset_status(client: Client, dataset: Doc) -> dict[str, Any]:
    ds = dataset["dataset_id"]
    return {
        "dataset": dataset,
        "jobs": client.jobs.counts(ds),
        "tasks": client.tasks.counts(ds),
        "tasks_by_name": client.tasks.counts_by_name(ds),
    }


def cmd_status(ctx: Context) -> int:
    """Job and task counts by status; `--watch` follows the dataset until it finishes."""
    dataset = ctx.dataset(ctx.args.dataset)
    if ctx.args.watch:
        return watch(ctx, dataset)
    report = dataset_status(ctx.client(), dataset)
    if ctx.args.json:
        ctx.out.json(report)
    else:
        print_status(ctx.out, report)
    return EXIT_OK


def print_status(out: Output, report: dict[str, Any]) -> None:
    d = report["dataset"]
    out.fields([
        ("dataset", f"{d.get('dataset')} ({d['dataset_id']})"), ("status", d.get("status")),
        ("description", d.get("description")), ("user", d.get("username")),
        ("group", d.get("group")),
        ("jobs", d.get("jobs_submitted")), ("tasks", d.get("tasks_submitted")),
    ])
    out.line()
    if not report["jobs"] and not report["tasks"]:
        out.line("no jobs yet: the scheduler creates them within a few seconds"
                 if d.get("status") == "processing" else "no jobs")
        return
    out.table(["status", "jobs"], sorted(report["jobs"].items()), title="jobs by status")
    by_name = report["tasks_by_name"]
    statuses = sorted({s for counts in by_name.values() for s in counts}) or ["waiting"]
    rows = [[name, *(counts.get(s, 0) for s in statuses), sum(counts.values())]
            for name, counts in by_name.items()]
    totals = report["tasks"]
    rows.append(["(all)", *(totals.get(s, 0) for s in statuses), sum(totals.values())])
    out.table(["task", *statuses, "total"], rows, title="tasks by name and status")


def watch_done(dataset: Doc, counts: dict[str, int]) -> bool:
    """Finished: the dataset left processing, or every task exists and is final."""
    if dataset.get("status") in ("complete", "errors", "suspended", "archived"):
        return True
    total = int(dataset.get("tasks_submitted") or 0)
    final = sum(counts.get(s, 0) for s in FINAL_TASK_STATUSES)
    return total > 0 and final >= total and sum(counts.values()) == final


def _watch_line(dataset: Doc, counts: dict[str, int]) -> str:
    total = int(dataset.get("tasks_submitted") or 0)
    parts = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()) if n)
    return (f"dataset {dataset.get('dataset')} {dataset.get('status')}: "
            f"{counts.get('complete', 0)}/{total} tasks complete ({parts or 'no tasks yet'})")


def watch(ctx: Context, dataset: Doc) -> int:
    """Poll until `watch_done`; a rich progress bar on a terminal, a line per change when
    piped. Exit 0 when the dataset completed, 5 otherwise."""
    client = ctx.client()
    ds = dataset["dataset_id"]

    def poll() -> tuple[Doc, dict[str, int]]:
        return client.datasets.get(ds), client.tasks.counts(ds)

    # woken by the server's events for this dataset (polling a server without them)
    changes = Changes(ctx.new_client, ds)
    pause = functools.partial(changes.wait, ctx.args.interval)
    try:
        if ctx.out.tty and not ctx.args.json:
            dataset, counts = _watch_progress(ctx, poll, pause)
        else:
            dataset, counts = _watch_lines(ctx, poll, pause)
    finally:
        changes.close()
    if ctx.args.json:
        ctx.out.json({"dataset": dataset, "tasks": counts})
    complete = dataset.get("status") == "complete" or (
        counts.get("complete", 0) >= int(dataset.get("tasks_submitted") or 0) > 0)
    return EXIT_OK if complete else EXIT_UNFINISHED


Poll = Callable[[], tuple[Doc, dict[str, int]]]


def _watch_lines(ctx: Context, poll: Poll, pause: Callable[[], None]
                 ) -> tuple[Doc, dict[str, int]]:
    last = ""
    while True:
        dataset, counts = poll()
        line = _watch_line(dataset, counts)
        if line != last and not ctx.args.json:
            ctx.out.line(line)
            last = line
        if watch_done(dataset, counts):
            return dataset, counts
        pause()


def _watch_progress(ctx: Context, poll: Poll, pause: Callable[[], None]
                    ) -> tuple[Doc, dict[str, int]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=ctx.out.console) as progress:
        bar = progress.add_task("tasks", total=None, detail="")
        while True:
            dataset, counts = poll()
            others = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())
                               if n and s != "complete")
            progress.update(bar, completed=counts.get("complete", 0),
                            total=int(dataset.get("tasks_submitted") or 0) or None,
                            description=f"dataset {dataset.get('dataset')} "
                                        f"({dataset.get('status')})", detail=others)
            if watch_done(dataset, counts):
                return dataset, counts
            pause()


def cmd_stats(ctx: Context) -> int:
    """Per task name with completed tasks: count, hours, errors, efficiency."""
    dataset = ctx.dataset(ctx.args.dataset)
    stats = ctx.client().tasks.stats(dataset["dataset_id"])
    if ctx.args.json:
        ctx.out.json(stats)
        return EXIT_OK
    keys = ["count", "total_hrs", "avg_hrs", "stddev_hrs", "min_hrs", "max_hrs", "total_err_hrs",
            "efficiency"]
    ctx.out.table(["task", *keys], [[name, *(s.get(k) for k in keys)]
                                    for name, s in stats.items()])
    return EXIT_OK


def add_submit_command(sub: Sub) -> None:
    p = command(sub, "submit", cmd_submit, "validate a dataset config and submit it",
                description="Check CONFIG.json locally against the dataset config schema "
                            "(problems are shown with their line), then create the dataset "
                            "(tasks_per_job = the config's number of tasks) and put its config.")
    p.add_argument("config", metavar="CONFIG.json", help="the dataset config")
    p.add_argument("--jobs", type=int, default=1, help="number of jobs (default 1)")
    p.add_argument("--group", help="submitting group (default: your token's first group)")
    p.add_argument("--description", help="default: the config's description, or the file name")
    p.add_argument("--priority", type=float, help="0..1 (default 0.5)")
    p.add_argument("--write-group", action="append", default=[], metavar="GROUP",
                   help="a group (one of yours) that may also change the dataset; repeatable "
                        "(the submitting group only reads it)")
    p.add_argument("--read-group", action="append", default=[], metavar="GROUP",
                   help="another group (one of yours) that may read the dataset; repeatable")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set steering.parameters.NAME (VALUE as JSON when it parses); repeatable")
    p.add_argument("--dry-run", action="store_true", help="only validate; submit nothing")


def add_dataset_commands(sub: Sub) -> None:
    p = command(sub, "datasets", cmd_datasets, "list the datasets you can read")
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--user", help="only datasets submitted by this user")
    p = command(sub, "status", cmd_status, "job and task counts of a dataset",
                description="Job and task counts of a dataset by status (and tasks by name). "
                            "--watch shows a live progress bar of complete/total tasks until "
                            "the dataset is complete, errors or suspended, or all its tasks are "
                            f"final; it then exits {EXIT_OK} if the dataset completed, else "
                            f"{EXIT_UNFINISHED}.")
    dataset_arg(p)
    p.add_argument("--watch", action="store_true", help="follow until the dataset finishes")
    p.add_argument("--interval", type=positive, default=5.0, help="seconds between polls (5)")


def add_stats_command(sub: Sub) -> None:
    dataset_arg(command(sub, "stats", cmd_stats, "per-task-name statistics of a dataset"))

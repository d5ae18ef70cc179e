"""`iceprod logs`: a task's logs, oldest first, optionally followed until the task ends."""

from __future__ import annotations

import json

from iceprod.client.api import Doc
from iceprod.client.cli.context import EXIT_OK, Context
from iceprod.client.cli.parsing import Sub, command, positive
from iceprod.client.follow import Changes

FINISHED_TASK = ("complete", "failed", "suspended")


def task_dataset(ctx: Context, task_id: str) -> str:
    """The dataset of a task, asked of the server in one request."""
    return str(ctx.client().tasks.get_by_id(task_id, keys=["dataset_id"])["dataset_id"])


def cmd_logs(ctx: Context) -> int:
    """Print a task's logs (oldest first); `--follow` keeps printing new ones until the task
    finishes."""
    a = ctx.args
    ds = ctx.dataset(a.dataset)["dataset_id"] if a.dataset else task_dataset(ctx, a.task)
    client = ctx.client()
    logs = newest_first(client.logs.for_task(ds, a.task, num=a.num, order="desc"))
    seen = {log["log_id"] for log in logs}
    _print_logs(ctx, [log for log in reversed(logs) if _wanted(a.name, log)])
    if not a.follow:
        return EXIT_OK
    # woken by the task's events (a pilot sends its logs as it reports the task), polling
    # a server without them
    changes = Changes(ctx.new_client, ds, task_id=a.task)
    try:
        follow(ctx, ds, seen, changes)
    finally:
        changes.close()
    return EXIT_OK


def follow(ctx: Context, ds: str, seen: set[str], changes: Changes) -> None:
    a = ctx.args
    client = ctx.client()
    while True:
        status = client.tasks.get(ds, a.task, keys=["status", "dataset_id"]).get("status")
        if status not in FINISHED_TASK:
            changes.wait(a.interval)
        # poll without the (possibly large) texts, then fetch only the new ones
        index = newest_first(client.logs.for_task(ds, a.task, num=a.num, order="desc",
                                                  keys=["log_id", "name"]))
        fresh = [d["log_id"] for d in reversed(index)
                 if d["log_id"] not in seen and _wanted(a.name, d)]
        seen.update(d["log_id"] for d in index)
        _print_logs(ctx, [client.logs.get(ds, log_id) for log_id in fresh])
        if status in FINISHED_TASK:
            return


def newest_first(logs: dict[str, Doc]) -> list[Doc]:
    return [{**doc, "log_id": log_id} for log_id, doc in logs.items()]


def _wanted(name: str | None, log: Doc) -> bool:
    return not name or log.get("name") == name


def _print_logs(ctx: Context, logs: list[Doc]) -> None:
    if ctx.args.json:
        if ctx.args.follow:
            for log in logs:
                ctx.out.line(json.dumps(log, sort_keys=True))
        else:
            ctx.out.json({log["log_id"]: log for log in logs})
        return
    for log in logs:
        ctx.out.line(f"==> {log.get('name')} ({log.get('timestamp')}) <==")
        data = str(log.get("data", ""))
        ctx.out.stdout.write(data if data.endswith("\n") or not data else data + "\n")
        ctx.out.stdout.flush()


def add_logs_command(sub: Sub) -> None:
    p = command(sub, "logs", cmd_logs, "print a task's logs",
                description="Print a task's logs, oldest first. --follow keeps printing new "
                            "ones until the task is complete, failed or suspended (woken by "
                            "the server's events; polling a server without them); with --json "
                            "it prints one JSON object per line.")
    p.add_argument("task", metavar="TASK", help="task id")
    p.add_argument("--dataset", help="the task's dataset (id or number; found when omitted)")
    p.add_argument("--name", help="only logs with this name (stdout, stderr, ...)")
    p.add_argument("--num", type=int, help="at most this many logs")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new logs")
    p.add_argument("--interval", type=positive, default=2.0, help="seconds between polls (2)")

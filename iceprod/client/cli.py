"""The `iceprod` command: parses arguments, calls `iceprod.client.api.Client`, prints.

Each subcommand is one small `cmd_*` function taking a `Context` (arguments, printer, a
lazily made client) and answering an exit code; `main` maps errors to the documented exit
codes (see `EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iceprod.client import settings
from iceprod.client.api import (
    APIError,
    Client,
    Doc,
    Forbidden,
    Invalid,
    NotFound,
    Resources,
    RetryPolicy,
    Unauthorized,
)
from iceprod.client.configcheck import ConfigError, Problem, check_config, parse_text
from iceprod.client.errors import AuthError, UsageError
from iceprod.client.output import Output
from iceprod.common.states import allowed_from

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_UNFINISHED = 0, 1, 2, 3, 4, 5
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_API}  server or API error (including an unreachable server)
  {EXIT_USAGE}  usage or validation error (bad arguments, invalid config, 400 from the server)
  {EXIT_AUTH}  authentication or permission error (no/expired/invalid token, 401, 403)
  {EXIT_NOT_FOUND}  not found (404: no such dataset, task, ...)
  {EXIT_UNFINISHED}  `status --watch` ended without the dataset completing
  130  interrupted
"""
ENVIRONMENT = """\
environment:
  ICEPROD_URL    server URL (else the one `iceprod login` stored, else http://127.0.0.1:8080)
  ICEPROD_TOKEN  bearer token (else the one `iceprod login` stored in
                 $XDG_CONFIG_HOME/iceprod/token, mode 0600)
  --url and --token override both.
"""
EXAMPLES = """\
examples:
  iceprod login --token "$TOKEN"
  iceprod submit examples/chain.json --jobs 10 --group physics
  iceprod status 1 --watch
  iceprod reset 1 --status failed --yes
"""
CLI_RETRY = RetryPolicy(attempts=3, max_retry_after=10)
"""People are waiting: give up on an unreachable server after ~1.5 s of backoff, and when
the server asks for more than 10 s (e.g. a login rate limit), say so instead of waiting."""
FINAL_TASK_STATUSES = ("complete", "failed")
MAX_BULK = 100_000
REQUIREMENT_TYPES: dict[str, Callable[[str], Any]] = {
    "cpu": int, "gpu": int, "memory": float, "disk": float, "time": float,
    "os": lambda v: [s for s in v.split(",") if s], "site": str,
}


@dataclass
class Context:
    """What a command works with."""

    args: argparse.Namespace
    out: Output
    resolved: settings.Resolved
    _client: Client | None = field(default=None, repr=False)

    def client(self, auth: bool = True) -> Client:
        """The API client; `auth` requires a token."""
        if auth and not self.resolved.token:
            raise AuthError("not logged in: run `iceprod login` or set ICEPROD_TOKEN")
        if self._client is None:
            self._client = Client(self.resolved.url, self.resolved.token,
                                  timeout=self.args.timeout, retry=CLI_RETRY)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def dataset(self, ref: str) -> Doc:
        """A dataset by id or by its human number."""
        ref = ref.strip()
        if len(ref) == 32 and all(c in "0123456789abcdef" for c in ref):
            return self.client().datasets.get(ref)
        if ref.isdigit():
            return self.client().datasets.by_number(int(ref))
        raise UsageError(f"DATASET must be a dataset id or number, not {ref!r}")

    def confirm(self, question: str) -> bool:
        """Ask yes/no on the terminal; `--yes` answers yes, a non-interactive stdin refuses."""
        if getattr(self.args, "yes", False):
            return True
        if not sys.stdin.isatty():
            raise UsageError(f"{question} -- refusing without a terminal; pass --yes")
        answer = input(f"{question} [y/N] ").strip().lower()
        return answer in ("y", "yes")


# -- login, logout, whoami -------------------------------------------------------------------


def cmd_login(ctx: Context) -> int:
    """Store a token: the one given with --token, or one from an LDAP username/password."""
    token = ctx.args.token
    if not token:
        client = ctx.client(auth=False)
        username, password = _credentials(ctx, client)
        token = client.auth.login(username, password)["token"]
    info = _describe(token)
    if info["expired"]:
        raise AuthError(f"token expired at {info['expires']}")
    explicit_url = ctx.resolved.url_source in ("--url", "ICEPROD_URL")
    path = settings.save_login(token, ctx.resolved.url if explicit_url else None)
    ctx.out.info(f"logged in to {ctx.resolved.url} as {info['user']} "
                 f"(roles: {', '.join(info['roles']) or '-'}; "
                 f"groups: {', '.join(info['groups']) or '-'}); "
                 f"token expires {info['expires']}, stored in {path}")
    return EXIT_OK


def _credentials(ctx: Context, client: Client) -> tuple[str, str]:
    """The username (flag or prompt) and password (stdin with --password-stdin, else a
    prompt). Without a terminal to prompt on, or when the server has no password login,
    a usage error says so before anything is asked."""
    username = ctx.args.username
    if ctx.args.password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        return username, sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password on: pass --username with "
                         "--password-stdin, or --token")
    if not client.auth.password_login_enabled():
        raise UsageError(f"{ctx.resolved.url} has no password login (LDAP is not configured "
                         "there): log in with --token")
    return username or input("Username: ").strip(), getpass.getpass("Password: ")


def cmd_logout(ctx: Context) -> int:
    """Forget the stored token."""
    if settings.clear_login():
        ctx.out.info(f"logged out: removed {settings.token_path()}")
    else:
        ctx.out.info("not logged in")
    return EXIT_OK


def _describe(token: str) -> dict[str, Any]:
    try:
        return settings.describe_token(settings.token_claims(token))
    except settings.TokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None


def cmd_whoami(ctx: Context) -> int:
    """Show who the token says you are (decoded locally, not verified)."""
    if not ctx.resolved.token:
        raise AuthError("not logged in: run `iceprod login` or set ICEPROD_TOKEN")
    info = {**_describe(ctx.resolved.token), "url": ctx.resolved.url,
            "token_source": ctx.resolved.token_source}
    if ctx.args.json:
        ctx.out.json(info)
    else:
        expires = info["expires"] or "never"
        if info["expired"]:
            expires += " (EXPIRED)"
        elif info["expires_in"] is not None:
            expires += f" (in {_duration(info['expires_in'])})"
        ctx.out.fields([
            ("user", info["user"]), ("roles", info["roles"]), ("groups", info["groups"]),
            *([("scope", info["scope"])] if info["scope"] else []),
            ("expires", expires), ("server", info["url"]), ("token from", info["token_source"]),
        ])
    return EXIT_AUTH if info["expired"] else EXIT_OK


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"


# -- submit ----------------------------------------------------------------------------------


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
    groups = _describe(ctx.resolved.token or "")["groups"] if ctx.resolved.token else []
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
        raise _Reported(exc) from None
    result = {"dataset_id": dataset_id, "dataset": number, "jobs": a.jobs,
              "tasks_per_job": len(config["tasks"])}
    if a.json:
        ctx.out.json(result)
    else:
        ctx.out.line(f"submitted dataset {number} ({dataset_id}): {a.jobs} job(s) x "
                     f"{len(config['tasks'])} task(s)")
    return EXIT_OK


class _Reported(Exception):
    """An API error whose message was already printed; exits with its code."""

    def __init__(self, error: APIError) -> None:
        super().__init__(str(error))
        self.error = error


# -- reading ---------------------------------------------------------------------------------


def _short(text: Any, width: int = 40) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


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
          _short(d.get("description"))] for d in rows],
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
    if dataset.get("status") in ("complete", "errors", "suspended"):
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

    if ctx.out.tty and not ctx.args.json:
        dataset, counts = _watch_progress(ctx, poll)
    else:
        dataset, counts = _watch_lines(ctx, poll)
    if ctx.args.json:
        ctx.out.json({"dataset": dataset, "tasks": counts})
    complete = dataset.get("status") == "complete" or (
        counts.get("complete", 0) >= int(dataset.get("tasks_submitted") or 0) > 0)
    return EXIT_OK if complete else EXIT_UNFINISHED


Poll = Callable[[], tuple[Doc, dict[str, int]]]


def _watch_lines(ctx: Context, poll: Poll) -> tuple[Doc, dict[str, int]]:
    last = ""
    while True:
        dataset, counts = poll()
        line = _watch_line(dataset, counts)
        if line != last and not ctx.args.json:
            ctx.out.line(line)
            last = line
        if watch_done(dataset, counts):
            return dataset, counts
        time.sleep(ctx.args.interval)


def _watch_progress(ctx: Context, poll: Poll) -> tuple[Doc, dict[str, int]]:
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
            time.sleep(ctx.args.interval)


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


TASK_KEYS = ["task_id", "job_index", "task_index", "name", "status", "failures", "walltime",
             "site", "reason"]


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
          _short(t.get("reason"), 50)]
         for t in rows],
    )
    return EXIT_OK


def find_task_dataset(ctx: Context, task_id: str) -> str:
    """The dataset of a task: asked directly where allowed, else searched among the datasets
    the caller can read."""
    client = ctx.client()
    try:
        return str(client.tasks.get_by_id(task_id, keys=["dataset_id"])["dataset_id"])
    except Forbidden:
        pass
    for doc in client.datasets.iter(keys=["dataset_id"], page_size=1000):
        try:
            # with dataset_id in the projection, so a task of another dataset is told apart
            task = client.tasks.get(doc["dataset_id"], task_id, keys=["dataset_id"])
        except NotFound:
            continue
        if task.get("dataset_id") == doc["dataset_id"]:
            return str(doc["dataset_id"])
    raise NotFound(404, f"no task {task_id} in the datasets you can read")


def cmd_logs(ctx: Context) -> int:
    """Print a task's logs (oldest first); `--follow` keeps printing new ones until the task
    finishes."""
    a = ctx.args
    ds = ctx.dataset(a.dataset)["dataset_id"] if a.dataset else find_task_dataset(ctx, a.task)
    client = ctx.client()
    logs = newest_first(client.logs.for_task(ds, a.task, num=a.num, order="desc"))
    seen = {log["log_id"] for log in logs}
    _print_logs(ctx, [log for log in reversed(logs) if _wanted(a.name, log)])
    while a.follow:
        status = client.tasks.get(ds, a.task, keys=["status", "dataset_id"]).get("status")
        time.sleep(0 if status in FINISHED_TASK else a.interval)
        # poll without the (possibly large) texts, then fetch only the new ones
        index = newest_first(client.logs.for_task(ds, a.task, num=a.num, order="desc",
                                                  keys=["log_id", "name"]))
        fresh = [d["log_id"] for d in reversed(index)
                 if d["log_id"] not in seen and _wanted(a.name, d)]
        seen.update(d["log_id"] for d in index)
        _print_logs(ctx, [client.logs.get(ds, log_id) for log_id in fresh])
        if status in FINISHED_TASK:
            break
    return EXIT_OK


FINISHED_TASK = ("complete", "failed", "suspended")


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


def cmd_stats(ctx: Context) -> int:
    """Per task name: completed count, hours, errors, efficiency."""
    dataset = ctx.dataset(ctx.args.dataset)
    stats = ctx.client().tasks.stats(dataset["dataset_id"])
    if ctx.args.json:
        ctx.out.json(stats)
        return EXIT_OK
    keys = ["count", "total_hrs", "mean_hrs", "min_hrs", "max_hrs", "error_count", "error_hrs",
            "efficiency"]
    ctx.out.table(["task", *keys], [[name, *(s.get(k) for k in keys)]
                                    for name, s in stats.items()])
    return EXIT_OK


def cmd_grids(ctx: Context) -> int:
    """List grids."""
    docs = ctx.client().grids.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    ctx.out.table(["grid_id", "host", "queues", "version", "last_update"],
                  [[g["grid_id"], g.get("host"), g.get("queues"), g.get("version"),
                    g.get("last_update")] for g in docs.values()])
    return EXIT_OK


def cmd_pilots(ctx: Context) -> int:
    """List pilots."""
    docs = ctx.client().pilots.list(status=ctx.args.status, grid_id=ctx.args.grid)
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    ctx.out.table(["pilot_id", "status", "host", "site", "resources", "tasks", "last_update"],
                  [[p["pilot_id"], p.get("status"), p.get("host"), p.get("site"),
                    p.get("resources"), len(p.get("tasks") or []), p.get("last_update")]
                   for p in docs.values()])
    return EXIT_OK


# -- operators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkAction:
    """An operator's bulk change: the target task status and, without --task-name, the
    dataset status to set."""

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


def cmd_bulk(ctx: Context) -> int:
    """suspend | resume | reset the matching tasks of a dataset, after counting them and
    asking for confirmation."""
    a = ctx.args
    action = BULK_ACTIONS[a.command]
    dataset = ctx.dataset(a.dataset)
    ds = dataset["dataset_id"]
    client = ctx.client()
    sources = bulk_sources(action, a.status)
    ids = sorted(client.tasks.list(ds, status=sources, name=a.task_name, keys=["task_id"]))
    label = f"{'|'.join(sources)} task(s)" + (f" named {a.task_name}" if a.task_name else "")
    whole = action.dataset_status and not a.task_name and not a.status
    change_dataset = whole and dataset.get("status") != action.dataset_status
    if not ids and not change_dataset:
        return _bulk_result(ctx, dataset, action, 0, 0, f"no {label} to {action.verb}")
    what = f"{len(ids)} {label}" + (" and the dataset" if change_dataset else "")
    if not ctx.confirm(f"{action.verb} {what} of dataset {dataset.get('dataset')}?"):
        ctx.out.info("nothing changed")
        return EXIT_OK
    changed = _apply_bulk(client, dataset, action, ids, bool(change_dataset))
    return _bulk_result(ctx, dataset, action, len(ids), changed,
                        f"{action.verb}: changed {changed} of {len(ids)} {label}")


def _apply_bulk(client: Client, dataset: Doc, action: BulkAction, ids: list[str],
                change_dataset: bool) -> int:
    ds = dataset["dataset_id"]
    changed = 0
    if change_dataset and action.dataset_status == "suspended":
        changed += int(client.datasets.set_status(ds, "suspended").get("tasks_changed", 0))
    for start in range(0, len(ids), MAX_BULK):
        changed += client.tasks.bulk_status(ds, action.task_status,
                                            tasks=ids[start:start + MAX_BULK])
    if change_dataset and action.dataset_status == "processing":
        client.datasets.set_status(ds, "processing")
    elif action.verb == "reset" and changed and dataset.get("status") == "errors":
        client.datasets.set_status(ds, "processing")  # retried work makes it live again
    return changed


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
    """Set requirements on every unfinished task with a name."""
    reqs = parse_requirements(ctx.args.requirements)
    dataset = ctx.dataset(ctx.args.dataset)
    changed = ctx.client().tasks.bulk_requirements(dataset["dataset_id"], ctx.args.task_name,
                                                   reqs)
    if ctx.args.json:
        ctx.out.json({"changed": changed, "requirements": reqs})
    else:
        ctx.out.line(f"requirements of {changed} {ctx.args.task_name} task(s) set: "
                     + " ".join(f"{k}={v}" for k, v in reqs.items()))
    return EXIT_OK


def cmd_token_create(ctx: Context) -> int:
    """Mint a sub-token (never outliving yours); prints just the token."""
    a = ctx.args
    dataset_id = ctx.dataset(a.dataset)["dataset_id"] if a.dataset else None
    kind = a.type or ("share" if dataset_id else "user")
    if dataset_id and kind != "share":
        raise UsageError("--dataset makes a share token; drop --type or use --type share")
    result = ctx.client().auth.create_token(
        kind, role=a.role, exp=a.exp, scope=" ".join(a.scope) if a.scope else None,
        dataset_id=dataset_id, username=a.username, pilot_id=a.pilot_id)
    if a.json:
        ctx.out.json(result)
    else:
        ctx.out.line(result["token"])
    return EXIT_OK


# -- argument parsing ------------------------------------------------------------------------


def positive(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _common(json_flag: bool) -> argparse.ArgumentParser:
    """Options every subcommand accepts (also after the subcommand)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--url", default=argparse.SUPPRESS, help="server URL (env ICEPROD_URL)")
    g.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (env ICEPROD_TOKEN)")
    g.add_argument("--timeout", type=positive, default=argparse.SUPPRESS,
                   help="seconds to wait for each answer (default 30)")
    if json_flag:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print JSON instead of a table")
    return p


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iceprod", formatter_class=_Formatter,
        description="Submit and follow iceprod datasets; operate and administer the server.",
        epilog=f"{EXIT_CODES}\n{ENVIRONMENT}\n{EXAMPLES}",
        parents=[_common(json_flag=False)],
    )
    from iceprod import __version__

    parser.add_argument("--version", action="version", version=f"iceprod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_auth_commands(sub)
    add_submit_command(sub)
    add_read_commands(sub)
    add_operator_commands(sub)
    from iceprod.client.admin import add_admin_commands

    add_admin_commands(sub, _common, EXIT_CODES)
    return parser


Sub = Any  # argparse's private _SubParsersAction


def command(sub: Sub, name: str, func: Callable[[Context], int], help: str,
            json_flag: bool = True, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=kw.pop("description", help), formatter_class=_Formatter,
        parents=[_common(json_flag)], epilog=kw.pop("epilog", EXIT_CODES), **kw)
    p.set_defaults(func=func)
    return p


def add_auth_commands(sub: Sub) -> None:
    p = command(sub, "login", cmd_login, "store a token: from --token, or by LDAP login",
                json_flag=False,
                description="Log in: with --token TOKEN store that token; otherwise ask for "
                            "a username and password and exchange them for a token (POST "
                            "/ldap). The token is kept in $XDG_CONFIG_HOME/iceprod/token "
                            "(mode 0600), and --url/ICEPROD_URL is remembered with it.")
    p.add_argument("--username", help="LDAP username (asked when missing)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from stdin instead of prompting")
    command(sub, "logout", cmd_logout, "forget the stored token", json_flag=False)
    command(sub, "whoami", cmd_whoami, "show the token's user, roles, groups and expiry",
            description="Show who the current token says you are: user, roles, groups, scope "
                        "and expiry (decoded locally, without verifying the signature). Exits "
                        f"{EXIT_AUTH} when there is no token or it has expired.")


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


def add_read_commands(sub: Sub) -> None:
    p = command(sub, "datasets", cmd_datasets, "list the datasets you can read")
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--user", help="only datasets submitted by this user")
    p = command(sub, "status", cmd_status, "job and task counts of a dataset",
                description="Job and task counts of a dataset by status (and tasks by name). "
                            "--watch shows a live progress bar of complete/total tasks until "
                            "the dataset is complete, errors or suspended, or all its tasks are "
                            f"final; it then exits {EXIT_OK} if the dataset completed, else "
                            f"{EXIT_UNFINISHED}.")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    p.add_argument("--watch", action="store_true", help="follow until the dataset finishes")
    p.add_argument("--interval", type=positive, default=5.0, help="seconds between polls (5)")
    p = command(sub, "tasks", cmd_tasks, "list a dataset's tasks")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--name", help="only tasks with this name")
    p = command(sub, "logs", cmd_logs, "print a task's logs",
                description="Print a task's logs, oldest first. --follow keeps polling for new "
                            "ones until the task is complete, failed or suspended; with --json "
                            "it prints one JSON object per line.")
    p.add_argument("task", metavar="TASK", help="task id")
    p.add_argument("--dataset", help="the task's dataset (id or number; found when omitted)")
    p.add_argument("--name", help="only logs with this name (stdout, stderr, ...)")
    p.add_argument("--num", type=int, help="at most this many logs")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new logs")
    p.add_argument("--interval", type=positive, default=2.0, help="seconds between polls (2)")
    p = command(sub, "stats", cmd_stats, "per-task-name statistics of a dataset")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    command(sub, "grids", cmd_grids, "list grids")
    p = command(sub, "pilots", cmd_pilots, "list pilots")
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--grid", help="only pilots of this grid id")


def add_operator_commands(sub: Sub) -> None:
    helps = {
        "suspend": "suspend a dataset's unfinished tasks (and the dataset)",
        "resume": "send suspended tasks back to waiting (and resume the dataset)",
        "reset": "send failed (or --status) tasks back to waiting",
    }
    for verb, text in helps.items():
        p = command(sub, verb, cmd_bulk, text, description=(
            f"{text[0].upper()}{text[1:]}. Counts the tasks that would change and asks for "
            "confirmation unless --yes; prints how many changed. With --task-name or --status "
            "only those tasks change (the dataset's own status is left alone)."))
        p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
        p.add_argument("--task-name", help="only tasks with this name")
        p.add_argument("--status", help="only tasks in these statuses (a,b)"
                       + (" (default failed)" if verb == "reset" else ""))
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = command(sub, "requirements", cmd_requirements,
                "set requirements on a dataset's tasks with a name",
                description="Set requirements on every unfinished task named TASK_NAME: "
                            "cpu=N gpu=N memory=GB disk=GB time=HOURS os=el8,el9 site=NAME.")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    p.add_argument("task_name", metavar="TASK_NAME", help="task name")
    p.add_argument("requirements", metavar="NAME=VALUE", nargs="+", help="requirements")
    token = sub.add_parser("token", help="tokens", description="Mint tokens.",
                           formatter_class=_Formatter, epilog=EXIT_CODES,
                           parents=[_common(False)])
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    p = command(token_sub, "create", cmd_token_create,
                "mint a sub-token (never outliving yours); prints the token",
                description="Mint a token from yours (POST /create_token): its expiry never "
                            "exceeds your token's. With --dataset, a read-only token for that "
                            "one dataset, to share.")
    p.add_argument("--role", help="one of your roles (default: all of them)")
    p.add_argument("--exp", type=int, help="lifetime in seconds (capped at your token's)")
    p.add_argument("--type", choices=["temp", "user", "share", "pilot", "system"],
                   help="user (default): you; temp: you, for an hour by default; share: read "
                        "--dataset; pilot, system: admin/system only")
    p.add_argument("--scope", action="append", help="restrict to this scope (repeatable)")
    p.add_argument("--dataset", help="a read-only share token for this dataset (id or number)")
    p.add_argument("--username", help="subject of a pilot or system token")
    p.add_argument("--pilot-id", help="bind a pilot token to one pilot")


# -- entry point -----------------------------------------------------------------------------


def exit_code(error: Exception) -> int:
    """The documented exit code for an error."""
    if isinstance(error, _Reported):
        error = error.error
    if isinstance(error, (Unauthorized, Forbidden, AuthError)):
        return EXIT_AUTH
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, (Invalid, UsageError)):
        return EXIT_USAGE
    return EXIT_API


def describe_error(error: Exception) -> str:
    """The server's message, with when to retry if it said."""
    text = str(error)
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        text += f" (retry in {_duration(retry_after)})"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("url", None), ("token", None), ("timeout", 30.0), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    ctx = Context(args, Output(as_json=args.json), settings.resolve(args.url, args.token))
    try:
        return int(args.func(ctx))
    except _Reported as exc:
        return exit_code(exc)
    except (APIError, UsageError, AuthError) as exc:
        ctx.out.error(describe_error(exc))
        return exit_code(exc)
    except KeyboardInterrupt:
        ctx.out.info("interrupted")
        return 130
    except BrokenPipeError:
        # the reader (`| head`) went away: stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())

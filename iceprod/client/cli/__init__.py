"""The `iceprod` command: parses arguments, calls `iceprod.client.api.Client`, prints.

One module per command group (`auth`, `datasets`, `tasks`, `logs`, `grids`, `facility`,
`admin`), each
holding small `cmd_*` functions that take a `Context` (arguments, printer, a lazily made
client) and answer an exit code, and an `add_*` function adding their parsers. Work on
many tasks is the server's (bulk routes take a selection); this package only asks and
prints. `main` maps errors to the documented exit codes (see `EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from iceprod.client import settings
from iceprod.client.api import APIError, Forbidden, Invalid, NotFound, Unauthorized
from iceprod.client.cli import (
    admin,
    audit,
    auth,
    datasets,
    facility,
    grids,
    logs,
    projects,
    scripts,
    tasks,
)
from iceprod.client.cli.context import (
    EXIT_API,
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNFINISHED,
    EXIT_USAGE,
    Context,
    Reported,
    span,
)
from iceprod.client.cli.datasets import cmd_status
from iceprod.client.cli.parsing import Formatter, common_options
from iceprod.client.cli.tasks import duration
from iceprod.client.errors import AuthError, UsageError
from iceprod.client.output import Output

__all__ = ["EXIT_API", "EXIT_AUTH", "EXIT_CODES", "EXIT_NOT_FOUND", "EXIT_OK",
           "EXIT_UNFINISHED", "EXIT_USAGE", "Context", "build_parser", "cmd_status",
           "duration", "main"]

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
  iceprod reset 1 --status failed --dry-run
  iceprod reset 1 --status failed --yes
  iceprod audit 1
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole `iceprod` parser; the order of the groups is the order of `--help`."""
    parser = argparse.ArgumentParser(
        prog="iceprod", formatter_class=Formatter,
        description="Submit and follow iceprod datasets; operate and administer the server.",
        epilog=f"{EXIT_CODES}\n{ENVIRONMENT}\n{EXAMPLES}",
        parents=[common_options(json_flag=False)],
    )
    from iceprod import __version__

    parser.add_argument("--version", action="version", version=f"iceprod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    auth.add_login_commands(sub)
    datasets.add_submit_command(sub)
    datasets.add_dataset_commands(sub)
    tasks.add_tasks_command(sub)
    logs.add_logs_command(sub)
    datasets.add_stats_command(sub)
    facility.add_why_command(sub)
    grids.add_grid_commands(sub)
    tasks.add_operator_commands(sub)
    auth.add_token_commands(sub)
    scripts.add_script_commands(admin.add_admin_commands(sub, projects.add_admin_facility))
    scripts.add_apikey_commands(sub)
    audit.add_audit_command(sub)
    projects.add_facility_commands(sub)
    return parser


def exit_code(error: Exception) -> int:
    """The documented exit code for an error."""
    if isinstance(error, Reported):
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
        text += f" (retry in {span(retry_after)})"
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
    except Reported as exc:
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

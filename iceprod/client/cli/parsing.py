"""How the `iceprod` parsers are built: the options every subcommand accepts and one helper
adding a subcommand bound to its function."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from iceprod.client.cli.context import EXIT_CODES, Context

Sub = Any  # argparse's private _SubParsersAction
Command = Callable[[Context], int]


def positive(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def common_options(json_flag: bool) -> argparse.ArgumentParser:
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


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def command(sub: Sub, name: str, func: Command, help: str, json_flag: bool = True,
            **kw: Any) -> argparse.ArgumentParser:
    """Add subcommand `name` running `func`, with the common options and exit codes."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=kw.pop("description", help), formatter_class=Formatter,
        parents=[common_options(json_flag)], epilog=kw.pop("epilog", EXIT_CODES), **kw)
    p.set_defaults(func=func)
    return p


def dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")

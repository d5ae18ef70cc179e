"""Renders argparse parsers as the CLI reference: every command, subcommand and flag of
``iceprod``, ``iceprod-server`` and ``iceprod-pilot``, read from the parsers themselves."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

from docgen_schema import code, md_text


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def capture_parser(parse: Callable[[list[str]], Any]) -> argparse.ArgumentParser:
    """The parser a function builds and immediately uses (``iceprod-server``'s ``parse``
    does both); taken from its ``parse_args`` call so the command's module need not change."""
    original = argparse.ArgumentParser.parse_args

    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
    try:
        parse([])
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{parse!r} built no parser")


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str,
                                                                    argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _flags(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(code(s) for s in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            names += f" {code(str(metavar))}"
        return names
    return code(str(action.metavar or action.dest))


def _details(action: argparse.Action) -> str:
    parts = [md_text(action.help or "")]
    if action.required and action.option_strings:
        parts.append("**required**")
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        parts.append("one of " + ", ".join(code(str(c)) for c in action.choices))
    if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
        parts.append("repeatable")
    if action.nargs in ("+", "*"):
        parts.append("one or more" if action.nargs == "+" else "any number")
    return "; ".join(p for p in parts if p)


def _arguments(parser: argparse.ArgumentParser, common: set[str]) -> tuple[list[str], list[str]]:
    """Table rows of the parser's own arguments, and the common ones it also takes."""
    rows, shared = [], []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        key = action.option_strings[0] if action.option_strings else ""
        if key in common:
            shared.append(code(key))
            continue
        rows.append(f"| {_flags(action)} | {_details(action)} |")
    return rows, shared


def render(parser: argparse.ArgumentParser, level: int = 2, common: set[str] | None = None,
           skip_epilog: str = "", child_common: set[str] | None = None,
           help_text: str = "") -> list[str]:
    """Markdown for a parser and, below it, each of its subcommands (``common``: options
    summarized in one line instead of a row each)."""
    common = common or set()
    out = [f"{'#' * level} `{parser.prog}`", ""]
    if parser.description or help_text:
        out += [md_text(parser.description or help_text), ""]
    # argparse indents continuation lines under "usage: "; a code block needs no such indent
    usage = "\n    ".join(line.strip() for line in
                           parser.format_usage().removeprefix("usage: ").strip().splitlines())
    out += ["```text", usage, "```", ""]
    rows, shared = _arguments(parser, common)
    if rows:
        out += ["| argument | meaning |", "|---|---|", *rows, ""]
    if shared:
        out += [f"Also takes the common options {', '.join(shared)}.", ""]
    if parser.epilog and parser.epilog != skip_epilog:
        out += ["```text", parser.epilog.strip(), "```", ""]
    for _, sub_help, sub in subcommands(parser):
        out += render(sub, min(level + 1, 6), child_common or common, skip_epilog,
                      help_text=sub_help)
    return out


def common_options(parser: argparse.ArgumentParser) -> set[str]:
    """Options of the top-level parser that every subcommand repeats (``--url`` ...)."""
    return {a.option_strings[0] for a in parser._actions
            if a.option_strings and not isinstance(a, (argparse._HelpAction,
                                                       argparse._VersionAction))}


def overview(parser: argparse.ArgumentParser) -> list[str]:
    """A table of the subcommands, linking to their sections."""
    out = ["| command | what it does |", "|---|---|"]
    for name, help_text, sub in subcommands(parser):
        inner = list(subcommands(sub))
        names = [f"{name} {n}" for n, _, _ in inner] or [name]
        helps = [h for _, h, _ in inner] or [help_text]
        out += [f"| `{parser.prog} {n}` | {md_text(h)} |" for n, h in zip(names, helps,
                                                                           strict=True)]
    return out


def shared_epilog(parser: argparse.ArgumentParser) -> str:
    """The epilog most subcommands repeat (the exit codes), shown once."""
    epilogs = [sub.epilog or "" for _, _, sub in subcommands(parser)]
    return max(set(epilogs), key=epilogs.count) if epilogs else ""


def cli_reference(iceprod: argparse.ArgumentParser, server: argparse.ArgumentParser,
                  pilot: argparse.ArgumentParser) -> str:
    common = common_options(iceprod)
    exit_codes = shared_epilog(iceprod)
    out = [
        "# CLI reference",
        "",
        "_Generated at build time from the commands' argparse parsers; do not edit by hand._",
        "",
        ("Three commands are installed: `iceprod` (users and operators), `iceprod-server` "
        "(the server, and a bootstrap token) and `iceprod-pilot` (runs on a grid node)."),
        "",
        "## Commands of `iceprod`",
        "",
        *overview(iceprod),
        "",
        "Every subcommand also takes the connection options "
        + ", ".join(code(c) for c in sorted(common))
        + "; read commands take `--json`. The exit codes are the same for every command:",
        "",
        "```text", exit_codes.strip(), "```",
        "",
    ]
    out += render(iceprod, 2, set(), exit_codes, child_common=common)
    out += render(server, 2)
    out += render(pilot, 2)
    return "\n".join(out)

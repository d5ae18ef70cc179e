"""Checks the examples of the hand-written pages, so that the docs cannot show a config or a
command that does not work:

- every ```json block parses; one preceded by ``<!-- check: SCHEMA -->`` (``dataset_config``,
  ``grid_config``) must also be valid for that schema (a dataset config also for the checks
  the server adds: unique names, known dependencies, no cycle);
- every ``iceprod``, ``iceprod-server`` or ``iceprod-pilot`` invocation in a ```sh block
  parses with that command's own argument parser.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Validator = Callable[[Any], None]
"""Raises ``ValueError`` saying what is wrong with a value."""
ArgParse = Callable[[list[str]], Any]

_JSON_BLOCK = re.compile(r"(?:<!-- check: (?P<schema>[a-z_]+) -->\s*\n)?```json\n(?P<body>.*?)```",
                         re.DOTALL)
_SH_BLOCK = re.compile(r"```(?:sh|bash|console)\n(.*?)```", re.DOTALL)
_COMMAND = re.compile(
    r"(?:^|(?<=[\s(;|&]))(?:[\w./-]*/)?(?P<cmd>iceprod(?:-server|-pilot)?)(?=\s|$)"
    r"(?P<args>[^)|;&<>\n]*)")


def json_problems(markdown: str, validators: Mapping[str, Validator]) -> Iterator[str]:
    for m in _JSON_BLOCK.finditer(markdown):
        body, schema = m.group("body"), m.group("schema")
        try:
            value = json.loads(body)
        except ValueError as e:
            yield f"a json block does not parse ({e}): {body[:60]!r}"
            continue
        if schema is None:
            continue
        if schema not in validators:
            yield f"unknown check {schema!r} (known: {', '.join(sorted(validators))})"
            continue
        try:
            validators[schema](value)
        except ValueError as e:
            yield f"a {schema} example is invalid: {e}"


def shell_lines(block: str) -> Iterator[str]:
    """Logical lines of a shell block: continuations joined, comments dropped."""
    for line in block.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield stripped


def command_problems(markdown: str, parsers: Mapping[str, ArgParse]) -> Iterator[str]:
    for block in _SH_BLOCK.findall(markdown):
        for line in shell_lines(block):
            for m in _COMMAND.finditer(line):
                cmd, raw = m.group("cmd"), m.group("args")
                try:
                    argv = shlex.split(raw, comments=True)
                except ValueError as e:
                    yield f"cannot split {line!r}: {e}"
                    continue
                error = parse_error(parsers[cmd], argv)
                if error:
                    yield f"{cmd} {' '.join(argv)}: {error}"


def parse_error(parse: ArgParse, argv: list[str]) -> str | None:
    """argparse's complaint about ``argv``, or None when it parses (``--help`` counts)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(io.StringIO()):
            parse(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return out.getvalue().strip().splitlines()[-1] if out.getvalue() else "exit 2"
    return None


def problems(markdown: str, validators: Mapping[str, Validator],
             parsers: Mapping[str, ArgParse]) -> list[str]:
    return [*json_problems(markdown, validators), *command_problems(markdown, parsers)]

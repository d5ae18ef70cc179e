"""How the `iceprod` command prints: `rich` tables on a terminal, aligned plain text when
piped, JSON with `--json`. Results go to stdout, messages and errors to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

Row = Sequence[Any]


def cell(value: Any) -> str:
    """A table cell: lists joined with commas, None as empty, floats rounded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def plain_table(columns: Sequence[str], rows: Iterable[Row]) -> str:
    """Columns separated by two spaces and padded to the widest cell, header first: easy to
    read, `grep` and `awk`."""
    table = [list(columns)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    return "\n".join(lines)


class Output:
    """The printer a command gets: knows whether stdout is a terminal and whether `--json`
    was asked for."""

    def __init__(self, as_json: bool = False, stdout: IO[str] | None = None,
                 stderr: IO[str] | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.tty = self.stdout.isatty()
        self.console = Console(file=self.stdout, highlight=False)
        self.err_console = Console(file=self.stderr, highlight=False)

    def json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2) + "\n")

    def table(self, columns: Sequence[str], rows: Iterable[Row], title: str | None = None) -> None:
        rows = list(rows)
        if not self.tty:
            if title:
                self.stdout.write(f"# {title}\n")
            self.stdout.write(plain_table(columns, rows) + "\n")
            return
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell(v)) for v in row))
        self.console.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """`key: value` lines."""
        pairs = list(pairs)
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.line(f"{(key + ':').ljust(width + 1)} {cell(value)}")

    def line(self, text: str = "") -> None:
        """A line of result text (markup-free)."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def info(self, text: str) -> None:
        """A message for people (stderr, so stdout stays parseable)."""
        if self.stderr.isatty():
            self.err_console.print(escape(text), soft_wrap=True)
        else:
            self.stderr.write(text + "\n")

    def error(self, text: str) -> None:
        if self.stderr.isatty():
            self.err_console.print(f"[bold red]error:[/] {escape(text)}")
        else:
            self.stderr.write(f"error: {text}\n")

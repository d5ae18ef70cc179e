"""Local checking of a dataset config before anything is sent: JSON syntax, then the same
schema and cross-checks the server applies (`iceprod.common.schema`), reported with the line
of each offending field in the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from iceprod.common.errors import Invalid

_PATH_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_PROBLEM_START = re.compile(r'^[A-Za-z_][\w-]*(?:\[\d+\]|\["(?:[^"\\]|\\.)*"\]|\.[A-Za-z_][\w-]*)*: ')
_WS = " \t\r\n"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the field path (may be empty), the message, and the
    1-based line and column of the field in the file when found."""

    field: str
    message: str
    line: int | None = None
    column: int | None = None


class ConfigError(Exception):
    """The config cannot be submitted; `problems` says why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def parse_path(field: str) -> list[str | int]:
    """"tasks[1].requirements.memory" -> ["tasks", 1, "requirements", "memory"]."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(field):
        m = _PATH_TOKEN.match(field, pos)
        if not m or m.end() == pos:
            break
        name, index, quoted = m.groups()
        parts.append(int(index) if index is not None else json.loads(quoted) if quoted else name)
        pos = m.end()
    return parts


class _Locator:
    """Walks JSON text recording where each value (and each object key) starts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.positions: dict[tuple[str | int, ...], int] = {}
        self.decoder = json.JSONDecoder()

    def skip(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in _WS:
            pos += 1
        return pos

    def value(self, pos: int, path: tuple[str | int, ...]) -> int:
        pos = self.skip(pos)
        self.positions.setdefault(path, pos)
        char = self.text[pos:pos + 1]
        if char == "{":
            return self.container(pos + 1, path, "}", self.member)
        if char == "[":
            return self.container(pos + 1, path, "]", self.element)
        _, end = self.decoder.raw_decode(self.text, pos)
        return end

    def container(self, pos: int, path: tuple[str | int, ...], close: str, item: Any) -> int:
        pos = self.skip(pos)
        index = 0
        while self.text[pos] != close:
            pos = self.skip(item(pos, path, index))
            index += 1
            if self.text[pos] == ",":
                pos = self.skip(pos + 1)
        return pos + 1

    def member(self, pos: int, path: tuple[str | int, ...], _index: int) -> int:
        key, end = self.decoder.raw_decode(self.text, pos)
        self.positions[(*path, key)] = pos  # a field's line is its key's line
        end = self.skip(end)  # the colon
        return self.value(end + 1, (*path, key))

    def element(self, pos: int, path: tuple[str | int, ...], index: int) -> int:
        return self.value(pos, (*path, index))


def locate(text: str, field: str) -> tuple[int, int] | None:
    """(line, column), 1-based, of `field` in the JSON `text`, or of its deepest existing
    parent; None when the text cannot be walked."""
    locator = _Locator(text)
    try:
        locator.value(0, ())
    except (ValueError, IndexError):
        return None
    parts = tuple(parse_path(field))
    while parts and parts not in locator.positions:
        parts = parts[:-1]
    pos = locator.positions.get(parts)
    if pos is None:
        return None
    return line_col(text, pos)


def line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def split_problems(message: str, first_field: str | None) -> list[tuple[str, str]]:
    """Split an `Invalid` message ("a: x; b[0].c: y") back into (field, message) pairs."""
    out: list[tuple[str, str]] = []
    for part in message.split("; "):
        m = _PROBLEM_START.match(part)
        if m:
            out.append((m.group(0)[:-2], part[m.end():]))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + "; " + part)
        else:
            out.append((first_field or "", part))
    return out


def parse_text(text: str) -> Any:
    """Parse JSON, raising `ConfigError` at the line of a syntax error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [Problem("", f"not valid JSON: {exc.msg}", exc.lineno, exc.colno)]) from None


def check_text(text: str) -> dict[str, Any]:
    """Parse and validate a config; answers it, or raises `ConfigError` with located
    problems."""
    config = parse_text(text)
    check_config(config, text)
    return dict(config)


def check_config(config: Any, text: str | None = None) -> None:
    """Validate a parsed config like the server does; locate problems in `text` if given."""
    from iceprod.common.schema import validate_dataset_config  # jsonschema: only when needed

    try:
        validate_dataset_config(config)
    except Invalid as exc:
        problems = []
        for field, message in split_problems(exc.message, exc.field):
            where = locate(text, field) if text is not None and field else None
            problems.append(Problem(field, message, *(where or (None, None))))
        raise ConfigError(problems) from None

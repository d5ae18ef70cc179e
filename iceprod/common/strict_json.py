"""Strict JSON: the one parser for request bodies (and anything else read from a client).

Python's ``json`` accepts what a hostile client can use against us: ``NaN`` and ``Infinity``
(which no store round-trips and which poison arithmetic), integers of any size (which
overflow SQLite's and BSON's 64 bits), strings holding lone UTF-16 surrogates (which cannot
be encoded to UTF-8, so they fail wherever text is written) and nesting deep enough to exhaust
the interpreter's recursion limit. ``loads`` refuses all of them with ``Invalid`` naming the
field, before any schema sees the document, and never raises ``RecursionError``: the depth is
measured by a linear scan before ``json`` recurses.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from itertools import accumulate, count
from operator import sub
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.common.fieldpath import join_path

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a body may use."""

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""Signed 64-bit: what both stores (SQLite INTEGER, BSON int64) can hold."""

# a complete JSON string (escapes included), written so the regex engine never backtracks
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER_LITERAL = 40  # digits beyond this cannot be a 64-bit integer


class _Refused:
    """A value ``json`` parsed that we refuse; the walk reports it with its field path."""

    def __init__(self, why: str) -> None:
        self.why = why


def _parse_int(text: str) -> int | _Refused:
    # checked before int() so a 100,000-digit literal costs nothing and cannot hit
    # Python's int-string conversion limit
    digits = len(text.lstrip("-"))
    if digits > _NUMBER_LITERAL:
        return _Refused("integer out of range (must fit in 64 bits)")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        return _Refused("integer out of range (must fit in 64 bits)")
    return value


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        return _Refused(f"number {text[:40]} out of range")
    return value


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not allowed (JSON has no NaN or Infinity)")


def nesting_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deeply arrays and objects nest in ``raw``, counted without recursion (strings
    removed first, so brackets inside them do not count). Stops early past ``limit``."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    opens = len(brackets) - brackets.count(b"]") - brackets.count(b"}")
    if opens <= limit:
        return opens  # cannot nest deeper than the number of openings
    # each opening adds 2 and closing 0, so the running sum minus the position is the depth;
    # map/accumulate/count/sub all run in C
    steps = brackets.translate(_DEPTH_STEP)
    return max(map(sub, accumulate(steps), count(1)), default=0)


def loads(raw: bytes | str, what: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` strictly; raise ``Invalid`` naming the field for anything refused."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(f"{what}: not valid UTF-8", field=what) from None
    if nesting_depth(raw, max_depth) > max_depth:
        raise Invalid(f"{what}: nested deeper than {max_depth} levels", field=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{what}: not valid UTF-8", field=what) from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except RecursionError:  # cannot happen after the depth check; never a 500 if it does
        raise Invalid(f"{what}: nested deeper than {max_depth} levels", field=what) from None
    except ValueError:
        raise Invalid(f"{what}: not valid JSON", field=what) from None
    check(data, what)
    return data


def check(data: Any, what: str = "body") -> None:
    """Raise ``Invalid`` for the first refused value in an already parsed document: a
    refused number, a lone surrogate in a string or key, an integer beyond 64 bits."""
    for path, value in _walk(data, what):
        problem = _problem(value)
        if problem:
            raise Invalid(f"{path or what}: {problem}", field=path or what)


def _problem(value: Any) -> str | None:
    if isinstance(value, _Refused):
        return value.why
    if isinstance(value, str) and _SURROGATE.search(value):
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        return "integer out of range (must fit in 64 bits)"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN and Infinity are not allowed"
    return None


def _walk(data: Any, root: str) -> Iterator[tuple[str, Any]]:
    """Every value (and every object key, as a string at its own path), depth first, with
    an explicit stack so no depth can exhaust the interpreter's."""
    stack: list[tuple[str, Any]] = [("" if root == "body" else root, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _SURROGATE.search(key):
                    yield join_path(path, key), key
                stack.append((join_path(path, key), item))
        elif isinstance(value, list):
            stack.extend((join_path(path, i), item) for i, item in reversed(list(
                enumerate(value))))
        else:
            yield path, value

"""Generates the synchronous client (`_sync.py`) from the asynchronous one (`_async.py`).

Both clients share one definition of every route and one request path: `_async.py` is the
source, and this module rewrites it token by token (dropping `async`/`await`, mapping
`AsyncX` names to `X` and `asyncio.sleep` to `time.sleep`), the way httpcore keeps its
sync and async halves together. Run `python -m iceprod.client._unasync` after changing
`_async.py`; `--check` exits 1 when `_sync.py` is stale (a test runs it).
"""

from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "_async.py"
TARGET = HERE / "_sync.py"

SKIP = (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)

HEADER = (
    "# Generated from _async.py by `python -m iceprod.client._unasync`: do not edit by hand.\n"
    "# ruff: noqa: I001, UP028\n"  # `import time` keeps asyncio's place; loops stay loops
)

SYNC_DOCSTRING = '''"""The synchronous iceprod client: `Client` and its route groups.

Generated from `_async.py` (the source of truth for both clients) by
`python -m iceprod.client._unasync`; edit `_async.py` and regenerate.
"""'''

RULES: list[tuple[str, str]] = [
    (r"\bimport asyncio\b", "import time"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_(bytes|raw|text|lines)\b", r"iter_\1"),
    (r"  # noqa: ASYNC\d+$", ""),  # blocking calls are what the sync client is for
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\basynchronous\b", "synchronous"),
    (r"_async\.py", "_sync.py"),
]


def transform(line: str) -> str:
    """One line (or the start of one) with the rules applied."""
    for pattern, replacement in RULES:
        line = re.sub(pattern, replacement, line)
    return line


def generate(source: str) -> str:
    """The synchronous module for the asynchronous `source`."""
    old = source.splitlines(keepends=True)
    new = realign(old, [transform(line) for line in old])
    text = "".join(new)
    text = re.sub(r'\A""".*?"""', lambda _: SYNC_DOCSTRING, text, count=1, flags=re.DOTALL)
    return HEADER + text


def realign(old: list[str], new: list[str]) -> list[str]:
    """Keep continuation lines aligned with their opening bracket after `async `/`await ` or
    a name before it got shorter."""
    shift = [0] * len(old)
    stack: list[tuple[int, int]] = []  # open brackets: (0-based line, column)
    last_row = 0
    tokens = tokenize.generate_tokens(io.StringIO("".join(old)).readline)
    for tok in tokens:
        row = tok.start[0] - 1
        if row != last_row and stack and tok.type not in SKIP:
            last_row = row
            b_row, b_col = stack[-1]
            indent = len(old[row]) - len(old[row].lstrip(" "))
            if indent == b_col + 1 and row != b_row:
                target = len(transform(old[b_row][:b_col])) + shift[b_row] + 1
                shift[row] = target - indent
                new[row] = " " * target + new[row].lstrip(" ")
        last_row = row
        if tok.type == tokenize.OP and tok.string in "([{":
            stack.append((row, tok.start[1]))
        elif tok.type == tokenize.OP and tok.string in ")]}" and stack:
            stack.pop()
    return new


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    wanted = generate(SOURCE.read_text())
    if "--check" in args:
        if not TARGET.exists() or TARGET.read_text() != wanted:
            print(f"{TARGET} is stale: run python -m iceprod.client._unasync", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

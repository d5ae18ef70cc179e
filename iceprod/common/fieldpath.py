"""Field paths in error messages: ``tasks[1].requirements.memory``.

Every layer that names the offending field of a document (schema validation, parameter
substitution, the strict JSON parser) spells paths the same way through these two functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def join_path(field: str, key: str | int) -> str:
    """Extend a field path: ("tasks", 1) -> "tasks[1]", ("tasks[1]", "name") -> "tasks[1].name"."""
    if isinstance(key, int):
        return f"{field}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f"{field}[{json.dumps(key)}]"
    return f"{field}.{key}" if field else key


def format_path(parts: Iterable[str | int], root: str = "") -> str:
    """Readable path of an instance location, e.g. ["tasks", 0, "name"] -> "tasks[0].name"."""
    field = root
    for part in parts:
        field = join_path(field, part)
    return field

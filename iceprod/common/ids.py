"""Identifiers: 32-hex-char UUIDs for every document."""

from __future__ import annotations

import re
import uuid

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))

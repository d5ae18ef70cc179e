"""Identifiers: 32-hex-char UUIDs for every document."""

from __future__ import annotations

import os
import re

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """A random (version 4) UUID's 32 hex chars, built without ``uuid.UUID`` (ids are made on
    every claim and event; the object cost more than the randomness)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


def is_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))

"""Times are ISO-8601 UTC strings with a ``Z`` and fixed width, so they sort as text."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso(ts: float | None = None) -> str:
    """Format a Unix time (default: now) as fixed-width ISO-8601 UTC."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime(_FMT)


def parse(value: str) -> float:
    """Parse an ISO-8601 UTC string back to a Unix time."""
    return datetime.strptime(value, _FMT).replace(tzinfo=UTC).timestamp()

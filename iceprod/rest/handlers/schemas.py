"""JSON Schemas of REST bodies shared by several handler modules."""

from __future__ import annotations

from typing import Any

# Bounds of numeric body fields: far beyond any real use and far below 64 bits, so no
# arithmetic on a stored value (requirements grown x1.5, +1 core) can overflow a store.
MAX_CPU = 100_000
MAX_GPU = 10_000
MAX_GB = 1e9
MAX_HOURS = 1e6
MAX_SECONDS = 1e10
MAX_PRIORITY = 1e15
MAX_INDEX = 100_000_000
MAX_FAILURES = 1_000
MAX_LOGS = 100_000
"""Most logs one request lists (``num=``)."""

ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "a 32-hex-char id"}
STATUS_BODY = {
    "type": "object",
    "properties": {"status": {"type": "string", "description": "the new status"}},
    "required": ["status"],
    "additionalProperties": False,
}

REQUIREMENTS: dict[str, Any] = {
    "type": "object",
    "description": "resources a task needs (or a pilot offers)",
    "properties": {
        "cpu": {"type": "integer", "minimum": 0, "maximum": MAX_CPU, "description": "cores"},
        "gpu": {"type": "integer", "minimum": 0, "maximum": MAX_GPU, "description": "GPUs"},
        "memory": {"type": "number", "minimum": 0, "maximum": MAX_GB, "description": "GB"},
        "disk": {"type": "number", "minimum": 0, "maximum": MAX_GB, "description": "GB"},
        "time": {"type": "number", "minimum": 0, "maximum": MAX_HOURS, "description": "hours"},
        "os": {"description": "os names (a task) or one os (a pilot)",
               "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "site": {"type": "string", "description": "site name"},
    },
    "additionalProperties": False,
}


def obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    """A closed object schema: unknown keys are refused."""
    return {
        "type": "object",
        "properties": props,
        "required": required or [],
        "additionalProperties": False,
    }

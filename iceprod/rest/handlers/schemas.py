"""JSON Schemas of REST bodies shared by several handler modules."""

from __future__ import annotations

from typing import Any

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
        "cpu": {"type": "integer", "minimum": 0, "description": "cores"},
        "gpu": {"type": "integer", "minimum": 0, "description": "GPUs"},
        "memory": {"type": "number", "minimum": 0, "description": "GB"},
        "disk": {"type": "number", "minimum": 0, "description": "GB"},
        "time": {"type": "number", "minimum": 0, "description": "hours"},
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

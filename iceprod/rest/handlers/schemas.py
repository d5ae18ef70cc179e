"""Handlers' view of ``resources/schemas/api.schema.json``, where every REST body schema and
the definitions they share live: ``body(name)`` names one body, and the bounds that handlers
also apply to query arguments are read from the same file."""

from __future__ import annotations

from typing import Any

from iceprod.common.schema import load_schema, schema_ref

API = "api"


def definition(name: str) -> dict[str, Any]:
    """One ``$defs`` entry of the API schema (read-only: it is the cached file)."""
    defs: dict[str, Any] = load_schema(API)["$defs"]
    return defs[name]


def body(name: str) -> dict[str, str]:
    """The body schema ``name`` of the API schema, by reference (a handler's ``body=``)."""
    return schema_ref(API, name)


MAX_INDEX: int = definition("index")["maximum"]
MAX_LOGS: int = definition("logs_page")["maximum"]
"""Most logs one request lists (``num=``)."""

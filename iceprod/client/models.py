"""Types and small helpers shared by both clients (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx

import iceprod

Doc = dict[str, Any]
"""A JSON document as the server answers it (dataset, job, task, pilot, ...)."""

Names = list[str]
"""A list of names or ids (`keys`, task ids, groups, roles); an alias because the route
groups have methods called `list`."""

Params = Mapping[str, Any] | None
"""Query parameters: None values are dropped, lists joined with `|`, bools as true/false."""

USER_AGENT = f"iceprod-client/{iceprod.__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class Resources(TypedDict, total=False):
    """Resources a task requires or a pilot offers (memory and disk in GB, time in hours)."""

    cpu: int
    gpu: int
    memory: float
    disk: float
    time: float
    os: str | list[str]
    site: str
    containers: list[str]  # an offer: the container runtimes the pilot runs images with


@dataclass
class Page:
    """One page of a list route: `items` is `{id: doc}` in server order, `next_after` the
    cursor of the next page (None on the last)."""

    items: dict[str, Doc] = field(default_factory=dict)
    next_after: str | None = None


def drop_none(body: Mapping[str, Any]) -> Doc:
    """A body without the fields left unset."""
    return {k: v for k, v in body.items() if v is not None}


def query_params(params: Params) -> dict[str, str] | None:
    """Encode query parameters the way the server reads them."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple, set, frozenset)):
            if value:
                out[key] = "|".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


def created_id(result: Any) -> str:
    """The new id from a create answer: `{"result": id}` (datasets: `{"result":
    "/datasets/<id>", "dataset_id": id}`)."""
    if not isinstance(result, dict):
        raise TypeError(f"unexpected create answer {result!r}")
    if isinstance(result.get("dataset_id"), str):
        return str(result["dataset_id"])
    value = str(result.get("result", ""))
    return value.rstrip("/").rsplit("/", 1)[-1]

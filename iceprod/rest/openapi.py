"""OpenAPI 3.1 generated from the route table, the handlers' docstrings and body schemas."""

from __future__ import annotations

import inspect
from typing import Any

import iceprod
from iceprod.rest.auth.roles import SCOPES

VERBS = ("get", "post", "put", "patch", "delete")


def template(pattern: str) -> str:
    """Turn a route regex into an OpenAPI path: ``(?P<dataset_id>[0-9a-f]{32})`` ->
    ``{dataset_id}``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("(?P<", i):
            end = pattern.index(">", i)
            name = pattern[i + 4 : end]
            depth, j = 1, end + 1
            while depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            out.append("{" + name + "}")
            i = j
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out).lstrip("^").rstrip("$")


def handler_methods(handler: type) -> dict[str, Any]:
    """The verb methods a handler implements, each carrying an ``auth_spec``."""
    out = {}
    for verb in VERBS:
        fn = getattr(handler, verb, None)
        if fn is None or getattr(fn, "__qualname__", "").startswith("RequestHandler."):
            continue
        out[verb] = fn
    return out


def build(routes: list[tuple[str, type]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for pattern, handler in routes:
        path = template(pattern)
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _path_names(path)
        ]
        ops: dict[str, Any] = {}
        for verb, fn in handler_methods(handler).items():
            ops[verb] = _operation(verb, fn, params, handler)
        paths[path] = ops
    return {
        "openapi": "3.1.0",
        "info": {"title": "iceprod", "version": iceprod.__version__,
                 "description": "Dataset/job/task workflow management with pilots."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "scopes: " + "; ".join(
                               f"{k}: {v}" for k, v in SCOPES.items())},
            },
            "schemas": {"Error": {
                "type": "object",
                "properties": {"code": {"type": "integer"}, "error": {"type": "string"}},
                "required": ["code", "error"],
            }},
        },
    }


def _path_names(path: str) -> list[str]:
    names, rest = [], path
    while "{" in rest:
        start = rest.index("{")
        end = rest.index("}", start)
        names.append(rest[start + 1 : end])
        rest = rest[end + 1 :]
    return names


def _operation(verb: str, fn: Any, params: list[dict], handler: type) -> dict[str, Any]:
    spec = fn.auth_spec
    doc = inspect.getdoc(fn) or ""
    summary, _, description = doc.partition("\n\n")
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op: dict[str, Any] = {
        "operationId": f"{handler.__name__}.{verb}",
        "summary": summary.replace("\n", " "),
        "parameters": params,
        "responses": {
            "201" if spec.created else "200": {"description": "created" if spec.created
                                               else "success"},
            "400": {"description": "bad input; the error names the field", **error},
            "401": {"description": "no or invalid token", **error},
            "403": {"description": "not allowed", **error},
            "404": {"description": "not found", **error},
            "409": {"description": "conflict or bad transition", **error},
        },
    }
    if description:
        op["description"] = description
    if spec.public:
        op["security"] = []
    else:
        op["security"] = [{"bearer": list(spec.scopes)}]
        op["x-scopes"] = list(spec.scopes)
        if spec.dataset:
            op["x-dataset-rule"] = spec.dataset
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": spec.body}},
        }
    return op

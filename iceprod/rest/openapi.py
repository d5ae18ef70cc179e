"""OpenAPI 3.1 generated from the route table, the handlers' docstrings, body schemas and
declared query parameters.

The document is self-contained: every ``$ref`` is a JSON pointer into the document itself
(``#/components/schemas/...``), so fuzzers and code generators need nothing else. A body
schema that is a whole schema document (the dataset config, with its ``$id`` and ``$defs``)
becomes a component of its own and its ``$defs`` become components beside it.

It states the input rules the server applies: path parameters carry the pattern their route
matches (anything else answers 404), query parameters are declared on the handler methods
with ``@query`` and integers never exceed what a 64-bit store holds.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urljoin

import iceprod
from iceprod.common.schema import load_schema, schema_names
from iceprod.core.roles import SCOPES
from iceprod.rest.base import DATASET_REF, MAX_INT_ARG, MAX_LIMIT_ARG
from iceprod.rest.handlers.schemas import MAX_INDEX, MAX_LOGS
from iceprod.rest.responses import RESPONSES, model_ref

VERBS = ("get", "post", "put", "patch", "delete")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
COMPONENTS = "#/components/schemas/"

Schema = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

ERROR: Schema = load_schema(RESPONSES)["$defs"]["Error"]
"""Every error answer (the ``Error`` response model)."""

# -- query parameters --------------------------------------------------------------------------

NO_NUL = r"^[^\u0000]*$"
"""Query text holds no NUL (``APIHandler.check_request`` refuses one)."""
KEYS: Schema = {"type": "string", "pattern": NO_NUL,
                "description": "fields to return, `a|b|c` (the id always)"}
STATUS: Schema = {"type": "string", "pattern": NO_NUL,
                  "description": "only these statuses, `a|b`"}
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT_ARG,
                 "description": "at most this many (the server caps a page at 10,000)"}
AFTER: Schema = {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+={0,2}$",
                 "description": "opaque cursor from the previous page's `X-Next-After`"}
TEXT: Schema = {"type": "string", "pattern": NO_NUL}
INDEX: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_INDEX}
NUM: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LOGS,
               "description": "at most this many"}
FLAG: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time",
                "description": "an ISO-8601 / RFC 3339 time, e.g. 2026-11-29T18:00:00Z"}
ORDER: Schema = {"type": "string", "enum": ["asc", "desc"], "description": "by time"}
DATASET: Schema = {"type": "string", "pattern": f"^{DATASET_REF}$",
                   "description": "a dataset's 32-hex id or its number"}
WAIT: Schema = {"type": "integer", "minimum": 0, "maximum": 20,
                "description": "seconds to wait for tasks to be queued (long poll)"}
SEQ: Schema = {"type": "integer", "minimum": 0,
               "description": "an event sequence number (a previous answer's `seq`)"}
HEARTBEAT: Schema = {"type": "integer", "minimum": 1, "maximum": 60,
                     "description": "seconds between heartbeat comments (15)"}
OFFSET: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_INT_ARG,
                  "description": "skip this many rows"}
FILE_NAME: Schema = {"type": "string",
                     "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
                     "description": "a file's path below a folder (no `..`, no leading dot)"}
PAGE: dict[str, Schema] = {"keys": KEYS, "limit": LIMIT, "after": AFTER}
"""What ``APIHandler.list_page`` reads."""


def query(**params: Schema) -> Callable[[F], F]:
    """Declare the query parameters a handler method reads (all optional), for the document.

    A test compares these with the ``get_argument``/``int_arg``/``keys_arg``/``status_arg``/
    ``list_page`` calls in the handler's source, so the two cannot drift apart."""

    def deco(fn: F) -> F:
        fn.query_params = dict(params)  # type: ignore[attr-defined]
        return fn

    return deco


def path(**params: Schema) -> Callable[[F], F]:
    """Declare the rule a handler method applies to a path parameter beyond its route's
    pattern (e.g. an enum), for the document."""

    def deco(fn: F) -> F:
        fn.path_params = dict(params)  # type: ignore[attr-defined]
        return fn

    return deco


# -- paths -------------------------------------------------------------------------------------


def _groups(pattern: str) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, name, regex) of each named group ``(?P<name>regex)`` in a route."""
    i = 0
    while (i := pattern.find("(?P<", i)) >= 0:
        end = pattern.index(">", i)
        depth, j = 1, end + 1
        while depth:
            if pattern[j] == "\\":
                j += 2
                continue
            depth += {"(": 1, ")": -1}.get(pattern[j], 0)
            j += 1
        yield i, j, pattern[i + 4 : end], pattern[end + 1 : j - 1]
        i = j


def template(pattern: str) -> str:
    """Turn a route regex into an OpenAPI path: ``(?P<dataset_id>[0-9a-f]{32})`` ->
    ``{dataset_id}``."""
    out, last = [], 0
    for start, end, name, _ in _groups(pattern):
        out += [pattern[last:start], "{" + name + "}"]
        last = end
    out.append(pattern[last:])
    return "".join(out).lstrip("^").rstrip("$")


def path_parameters(pattern: str) -> list[Schema]:
    """The route's path parameters, each with the pattern its group matches: tornado answers
    404 for anything else, so that is the rule the server applies."""
    params = []
    for _, _, name, regex in _groups(pattern):
        # tornado matches the raw (percent-encoded) path, where \w is ASCII only
        regex = regex.replace(r"\w", "[A-Za-z0-9_]")
        params.append({"name": name, "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": f"^{regex}$"}})
    return params


def handler_methods(handler: type) -> dict[str, Any]:
    """The verb methods a handler implements, each carrying an ``auth_spec``."""
    out = {}
    for verb in VERBS:
        fn = getattr(handler, verb, None)
        if fn is None or getattr(fn, "__qualname__", "").startswith("RequestHandler."):
            continue
        out[verb] = fn
    return out


# -- schemas -----------------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def component_name(schema: Mapping[str, Any] | str) -> str:
    """``.../dataset_config.schema.json`` (a schema's ``$id``, or a pointer to its
    component) -> ``dataset_config``."""
    ref = schema if isinstance(schema, str) else str(schema["$id"])
    return ref.rstrip("/").rsplit("/", 1)[-1].removesuffix(".schema.json")


def hoist(schema: Mapping[str, Any], components: dict[str, Schema]) -> Schema:
    """Put a schema document (one with an ``$id``) under ``components`` as ``NAME``, its
    ``$defs`` as ``NAME.DEF``, and point every ``$ref`` there; a ``$ref`` into another schema
    file hoists that file too. Answers a ``$ref`` to it."""
    name = component_name(schema)
    if name in components:
        return {"$ref": COMPONENTS + name}
    doc = copy.deepcopy(dict(schema))
    base = str(doc.pop("$id"))
    doc.pop("$schema", None)
    defs = doc.pop("$defs", {})
    components[name] = doc  # first, so that a file referring back finds it
    for key, sub in defs.items():
        components[f"{name}.{key}"] = sub
    for node in _walk([doc, defs]):
        if "$id" in node:
            raise ValueError(f"{name}: nested $id {node['$id']!r} is not supported")
        if "$ref" in node:
            node["$ref"] = _local_ref(name, base, node["$ref"], components)
    return {"$ref": COMPONENTS + name}


def schema_file_ref(ref: str, components: dict[str, Schema]) -> Schema:
    """A ``$ref`` to (a part of) a schema file in ``resources/schemas``, by its absolute URI,
    as a pointer into ``#/components/schemas`` (the file hoisted there)."""
    uri, _, pointer = ref.partition("#")
    names = {str(load_schema(n).get("$id")): n for n in schema_names()}
    if uri not in names:
        raise ValueError(f"$ref {ref!r} names no schema file")
    name = component_name(hoist(load_schema(names[uri]), components)["$ref"])
    return {"$ref": _pointer(name, pointer)}


def _local_ref(name: str, base: str, ref: str, components: dict[str, Schema]) -> str:
    """A ``$ref`` of schema ``name`` (whose ``$id`` is ``base``) as a pointer into
    ``#/components/schemas``."""
    target = urljoin(base, ref)
    if not target.startswith(base + "#") and target != base:
        return str(schema_file_ref(target, components)["$ref"])
    return _pointer(name, target.removeprefix(base).removeprefix("#"))


def _pointer(name: str, pointer: str) -> str:
    if pointer in ("", "/"):
        return COMPONENTS + name
    if pointer.startswith("/$defs/"):
        return COMPONENTS + f"{name}." + pointer.removeprefix("/$defs/")
    return COMPONENTS + name + pointer


JSON_VALUE: Schema = {
    "description": "any JSON value whose integers fit in 64 bits (the body parser refuses "
                   "larger ones anywhere in a body)",
    "anyOf": [
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "number", "not": {"multipleOf": 1}},
        {"type": ["string", "boolean", "null"]},
        {"type": "array", "items": {"$ref": COMPONENTS + "JsonValue"}},
        # the store holds no key with a NUL or a leading '$' (db/storable.py)
        {"type": "object", "propertyNames": {"pattern": "^(?:[^$\\u0000][^\\u0000]*)?$"},
         "additionalProperties": {"$ref": COMPONENTS + "JsonValue"}},
    ],
}


def with_int64_bounds(schema: Any, free_form: bool = True) -> Any:
    """A copy of ``schema`` where every integer has bounds a 64-bit store holds: input past
    them is refused (issue 10), so no integer field accepts more than this. Free-form
    objects and arrays hold ``JsonValue``s, which say the same of nested integers (unless
    ``free_form`` is false: answers, whose free-form parts stay plain ``object``s)."""
    out = copy.deepcopy(schema)
    for node in _walk(out):
        types = node.get("type")
        if types == "integer" or (isinstance(types, list) and "integer" in types):
            node["maximum"] = min(node.get("maximum", INT64_MAX), INT64_MAX)
            node["minimum"] = max(node.get("minimum", INT64_MIN), INT64_MIN)
        elif not free_form:
            continue
        elif types == "object" and not ({"properties", "additionalProperties",
                                         "patternProperties"} & node.keys()):
            node["additionalProperties"] = {"$ref": COMPONENTS + "JsonValue"}
        elif types == "array" and "items" not in node and "prefixItems" not in node:
            node["items"] = {"$ref": COMPONENTS + "JsonValue"}
    return out


# -- the document ------------------------------------------------------------------------------


def build(routes: list[tuple[str, type]]) -> dict[str, Any]:
    components: dict[str, Schema] = {"Error": copy.deepcopy(ERROR)}
    paths: dict[str, Any] = {}
    for pattern, handler in routes:
        params = path_parameters(pattern)
        paths[template(pattern)] = {
            verb: _operation(verb, fn, params, handler, components)
            for verb, fn in handler_methods(handler).items()
        }
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
            "schemas": {**{name: with_int64_bounds(schema, not name.startswith("responses."))
                           for name, schema in components.items()},
                        "JsonValue": JSON_VALUE},
        },
    }


def _body(schema: Mapping[str, Any], components: dict[str, Schema]) -> Schema:
    if "$id" in schema:
        return hoist(schema, components)
    if set(schema) == {"$ref"}:
        return schema_file_ref(str(schema["$ref"]), components)
    if any("$ref" in node for node in _walk(schema)):
        raise ValueError("an inline body schema may not use $ref; give it an $id")
    return with_int64_bounds(dict(schema))


def _operation(verb: str, fn: Any, params: list[Schema], handler: type,
               components: dict[str, Schema]) -> dict[str, Any]:
    spec = fn.auth_spec
    doc = inspect.getdoc(fn) or ""
    summary, _, description = doc.partition("\n\n")
    declared = getattr(fn, "path_params", {})
    params = [{**p, "schema": {**p["schema"], **declared[p["name"]]}} if p["name"] in declared
              else p for p in params]
    queries = [
        {"name": name, "in": "query", "required": False, "schema": with_int64_bounds(schema)}
        for name, schema in getattr(fn, "query_params", {}).items()
    ]
    op: dict[str, Any] = {
        "operationId": f"{handler.__name__}.{verb}",
        "summary": summary.replace("\n", " "),
        "parameters": params + queries,
        "responses": _responses(verb, fn, handler, bool(params), bool(queries), components),
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
    if (form := getattr(fn, "form_body", None)) is not None:
        op["requestBody"] = {"required": True, "content": {
            "multipart/form-data": {"schema": form},
            "application/x-www-form-urlencoded": {"schema": form}}}
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body(spec.body, components)}},
        }
    return op


ERROR_CODES = {
    "400": "bad input; the error names the field",
    "401": "no or invalid token",
    "403": "not allowed",
    "404": "not found",
    "409": "conflict or bad transition",
    "413": "too large",
    "429": "too many failed attempts; retry after `Retry-After` seconds",
    "503": "a service the operation needs is unavailable",
}
_RAISED = {"NotFound": "404", "Conflict": "409", "BadTransition": "409", "TooLarge": "413",
           "Unavailable": "503", "Forbidden": "403", "Invalid": "400"}


def _success(fn: Any, components: dict[str, Schema]) -> dict[str, Any]:
    """The success body: the response models the method declares (``@responds``), as
    ``$ref``s into the hoisted ``responses`` schema file, or its non-JSON media type."""
    refs = [schema_file_ref(model_ref(m)["$ref"], components)
            for m in getattr(fn, "response_models", ())]
    content: dict[str, Any] = {}
    if refs:
        content["application/json"] = {"schema": refs[0] if len(refs) == 1 else
                                       {"anyOf": refs}}
    for media in getattr(fn, "response_media", ()):
        content[media] = {"schema": {} if media == "application/json" else {"type": "string"}}
    return {"content": content} if content else {}


def _responses(verb: str, fn: Any, handler: type, has_path: bool,
               has_query: bool, components: dict[str, Schema]) -> dict[str, Any]:
    """The success code and every error code the operation can answer, each error with the
    ``Error`` body."""
    spec = fn.auth_spec
    codes = {"401"}  # a malformed Authorization header is refused on every route
    if spec.body is not None or has_query:
        codes.add("400")
    if not spec.public:
        codes.add("403")
    if has_path or spec.dataset or spec.body is not None:
        codes.add("404")  # a missing id in the path, or one the body names
    if verb != "get":
        codes.add("409")
    codes.update(_raised_codes(handler))
    if handler.__name__ == "LdapHandler":
        codes.add("429")
    error = {"content": {"application/json": {"schema": {"$ref": COMPONENTS + "Error"}}}}
    out: dict[str, Any] = {
        "201" if spec.created else "200": {"description": "created" if spec.created
                                           else "success", **_success(fn, components)},
    }
    for code in sorted(codes):
        out[code] = {"description": ERROR_CODES[code], **error}
    return out


def _raised_codes(handler: type) -> set[str]:
    """Codes of the errors the handler's own classes raise (``raise NotFound(...)``)."""
    codes: set[str] = set()
    for cls in handler.__mro__:
        if not cls.__module__.startswith("iceprod.rest.handlers."):
            continue
        source = inspect.getsource(cls)
        codes.update(_RAISED[n] for n in re.findall(r"raise (\w+)\(", source) if n in _RAISED)
    return codes

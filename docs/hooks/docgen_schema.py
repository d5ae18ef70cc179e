"""Renders JSON Schemas as Markdown field tables: the dataset config reference and the REST
reference's request bodies. Every property gets its type, bounds, default and description,
read from the schema at build time."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Schema = Mapping[str, Any]

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def md_text(text: str) -> str:
    """Free text for a Markdown table cell: HTML-escaped outside code spans (schema
    descriptions say ``'<dataset_id>:<task name>'``), pipes and newlines made safe."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape(text[pos:m.start()]))
        # the tables extension leaves pipes inside code spans alone
        out.append(m.group(0))
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out).replace("\n", " ").strip()


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("*", "\\*").replace("_", "\\_"))


def code(value: Any) -> str:
    """A value as an inline code span (JSON for non-strings); safe in a table cell, whose
    pipes the tables extension leaves alone inside code spans."""
    text = value if isinstance(value, str) else json.dumps(value)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class Resolver:
    """Follows ``$ref``s against the documents a schema may point into: the schema's own root
    (``#/$defs/...``) first, then the enclosing document (``#/components/...``)."""

    def __init__(self, *roots: Schema) -> None:
        self.roots = roots

    def resolve(self, schema: Schema) -> Schema:
        seen: set[str] = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen or not ref.startswith("#/"):
                return {k: v for k, v in schema.items() if k != "$ref"}
            seen.add(ref)
            target = self._lookup(ref)
            # siblings of $ref (a field's own description) win over the target's
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _lookup(self, ref: str) -> Schema:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
        for root in self.roots:
            node: Any = root
            for part in parts:
                if not isinstance(node, Mapping) or part not in node:
                    break
                node = node[part]
            else:
                if isinstance(node, Mapping):
                    return node
        return {}


def type_of(schema: Schema, resolver: Resolver, seen: frozenset[str] = frozenset()) -> str:
    """A readable type: ``integer``, ``array of string``, ``integer or string``. A schema
    that refers to itself (``JsonValue``) is named, not expanded again."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return "any JSON"
        seen = seen | {ref}
    schema = resolver.resolve(schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            kinds = dict.fromkeys(type_of(s, resolver, seen) for s in schema[key])
            return " or ".join(kinds)
    if "enum" in schema:
        kinds = dict.fromkeys(_json_type(v) for v in schema["enum"])
        return " or ".join(kinds)
    if "const" in schema:
        return _json_type(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_with_items(k, schema, resolver, seen) for k in kind)
    if kind is None:
        if "properties" in schema:
            return "object"
        return "any"
    return _with_items(kind, schema, resolver, seen)


def _with_items(kind: str, schema: Schema, resolver: Resolver, seen: frozenset[str]) -> str:
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {type_of(schema['items'], resolver, seen)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"object of {type_of(schema['additionalProperties'], resolver, seen)}"
    return kind


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), "any")


_BOUNDS = (
    ("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"), ("minLength", "length ≥ {}"), ("maxLength", "length ≤ {}"),
    ("minItems", "≥ {} items"), ("maxItems", "≤ {} items"),
    ("minProperties", "≥ {} keys"), ("maxProperties", "≤ {} keys"),
)


def _int64_limit(key: str, value: Any) -> bool:
    """A bound that only says "a 64-bit integer" (every integer field has it): not shown."""
    return (key, value) in (("minimum", -(2**63)), ("maximum", 2**63 - 1))


def bounds_of(schema: Schema, resolver: Resolver,
              seen: frozenset[str] = frozenset()) -> list[str]:
    """The constraints a value must meet, each as a short Markdown phrase (a schema that
    refers to itself is not followed again)."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return []
        seen = seen | {ref}
    schema = resolver.resolve(schema)
    out: list[str] = []
    for key in ("anyOf", "oneOf"):
        for alt in schema.get(key, ()):
            inner = bounds_of(alt, resolver, seen)
            if inner:
                out.append(f"as {type_of(alt, resolver)}: {', '.join(inner)}")
    out += [fmt.format(code(schema[key])) for key, fmt in _BOUNDS
            if key in schema and not _int64_limit(key, schema[key])]
    if "enum" in schema:
        out.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    if "const" in schema:
        out.append(f"exactly {code(schema['const'])}")
    if "pattern" in schema:
        out.append(f"matches {code(schema['pattern'])}")
    if schema.get("uniqueItems"):
        out.append("unique items")
    names = schema.get("propertyNames")
    if isinstance(names, Mapping) and "pattern" in names:
        out.append(f"keys match {code(names['pattern'])}")
    if schema.get("additionalProperties") is False and "properties" in schema:
        out.append("no other keys")
    items = schema.get("items")
    if isinstance(items, Mapping) and "properties" not in resolver.resolve(items):
        inner = bounds_of(items, resolver, seen)
        if inner:
            out.append("each item: " + ", ".join(inner))
    return out


@dataclass(frozen=True)
class Field:
    """One property of a schema, at a dotted path (``tasks[].requirements.cpu``)."""

    path: str
    parent: str
    schema: Schema
    required: bool


def fields(schema: Schema, resolver: Resolver, path: str = "",
           max_depth: int = 8) -> Iterator[Field]:
    """Every property below ``schema`` (depth first), with arrays as ``name[]`` and free-form
    keys as ``NAME``."""
    schema = resolver.resolve(schema)
    if max_depth <= 0:
        return
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        child = f"{path}.{name}" if path else name
        yield Field(child, path, resolver.resolve(sub), name in required)
        yield from _below(sub, resolver, child, max_depth - 1)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and path:
        child = f"{path}.NAME"
        names = schema.get("propertyNames", {})
        described = {"description": names.get("description", "")} if names else {}
        yield Field(child, path, {**described, **resolver.resolve(extra)}, False)


def _below(schema: Schema, resolver: Resolver, path: str, max_depth: int) -> Iterator[Field]:
    schema = resolver.resolve(schema)
    items = schema.get("items")
    if isinstance(items, Mapping) and "properties" in resolver.resolve(items):
        yield from fields(items, resolver, f"{path}[]", max_depth)
    elif "properties" in schema or isinstance(schema.get("additionalProperties"), Mapping):
        yield from fields(schema, resolver, path, max_depth)


def field_row(f: Field, resolver: Resolver) -> str:
    """``| path | type | default | constraints | description |``"""
    constraints = (["**required**"] if f.required else []) + bounds_of(f.schema, resolver)
    default = code(f.schema["default"]) if "default" in f.schema else ""
    description = f.schema.get("description") or f.schema.get("title") or ""
    return (f"| {code(f.path)} | {md_text(type_of(f.schema, resolver))} | {default} | "
            f"{'; '.join(constraints)} | {md_text(description)} |")


TABLE_HEAD = ("| field | type | default | constraints | description |\n"
              "|---|---|---|---|---|")


def field_table(rows: Sequence[Field], resolver: Resolver) -> str:
    return "\n".join([TABLE_HEAD, *(field_row(f, resolver) for f in rows)])


def config_reference(schema: Schema, example_name: str, example: str) -> str:
    """The dataset config reference page: one table per object, then the example."""
    resolver = Resolver(schema)
    rows = list(fields(schema, resolver))
    groups: dict[str, list[Field]] = {}
    for f in rows:
        groups.setdefault(f.parent, []).append(f)
    out = [
        "# Dataset config reference",
        "",
        ("_Generated at build time from `resources/schemas/dataset_config.schema.json`; "
        "do not edit by hand._"),
        "",
        md_text(schema.get("description", "")),
        "",
        ("`iceprod submit` checks a config against this schema before it creates anything "
        "(`iceprod submit CONFIG.json --dry-run` checks only), and `PUT /config/{dataset_id}` "
        "checks it again, answering 400 with the field's path. Beyond the schema, task names "
        "must be unique, `depends` must name existing tasks without a cycle, and every "
        "`$(steering.NAME)` must name a parameter."),
        "",
    ]
    for parent, group in groups.items():
        title = parent or "top level"
        out += [f"## {code(title) if parent else title}", ""]
        if parent:
            node = next(f for f in rows if f.path == parent.removesuffix("[]"))
            if node.schema.get("description"):
                out += [md_text(node.schema["description"]), ""]
        out += [field_table(group, resolver), ""]
    out += ["## Example", "", f"`{example_name}`, as shipped in the repository:", "",
            "```json", example.rstrip(), "```", ""]
    return "\n".join(out)

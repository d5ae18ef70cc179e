"""The compiled schema predicate answers exactly as jsonschema's ``is_valid``: keyword by
keyword on the edge cases where JSON Schema differs from Python (booleans are not numbers,
``1.0`` is an integer, ``True`` is not ``1`` in ``enum``), and over every named schema we
ship, on instances generated from each schema (valid ones and near misses)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from iceprod.common import schema as schema_module
from iceprod.common.schema_compile import NotCompilable, compile_schema

POOL: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, -0.5, 10**12, "", "a", "abc",
                   "x" * 70, "a b", "1", [], [1], [1, 1], [1, True], [[1], [1]], ["a", "a"],
                   {}, {"a": 1}, {"a": True}]

EDGE_SCHEMAS: list[dict[str, Any]] = [
    {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": ["string", "null"]}, {"type": "array"}, {"type": "object"},
    {"minimum": 0}, {"maximum": 1}, {"exclusiveMinimum": 0}, {"exclusiveMaximum": 1},
    {"minLength": 1, "maxLength": 3}, {"pattern": "^a"}, {"pattern": "b"},
    {"enum": [1, "a", None]}, {"enum": [True]}, {"enum": [[1], {"a": 1}]}, {"const": 1},
    {"const": False}, {"const": [1, True]},
    {"items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, {"uniqueItems": True},
    {"uniqueItems": False},
    {"required": ["a"]}, {"minProperties": 1, "maxProperties": 1},
    {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"additionalProperties": {"type": "string"}},
    {"patternProperties": {"^a": {"const": 1}}, "additionalProperties": False},
    {"additionalProperties": False, "properties": {"a": True}},
    {"propertyNames": {"maxLength": 0}},
    {"anyOf": [{"type": "string"}, {"minimum": 1}]},
    {"oneOf": [{"type": "integer"}, {"minimum": 0}]},
    {"allOf": [{"type": "integer"}, {"minimum": 0}]}, {"not": {"type": "array"}},
    {"if": {"type": "integer"}, "then": {"minimum": 1}, "else": {"type": "string"}},
    {"if": {"required": ["a"]}, "then": {"required": ["b"]}},
    {"then": {"type": "integer"}}, {"title": "t", "description": "d", "format": "date"},
]


@pytest.mark.parametrize("schema", EDGE_SCHEMAS, ids=lambda s: ",".join(s))
def test_each_keyword_answers_as_jsonschema_on_the_edge_cases(schema: dict[str, Any]) -> None:
    check = compile_schema(schema)
    reference = Draft202012Validator(schema).is_valid
    for value in POOL:
        assert check(value) == reference(value), value


def test_unknown_keywords_are_not_compiled() -> None:
    for schema in ({"multipleOf": 2}, {"prefixItems": [True], "items": True},
                   {"dependentRequired": {}}, {"items": {"contains": {}}}):
        with pytest.raises(NotCompilable):
            compile_schema(schema)


def generate(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """An instance shaped by ``schema``: mostly what it asks for, sometimes anything."""
    if not isinstance(schema, dict) or rng.random() < 0.08 or depth > 6:
        return rng.choice(POOL)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema and rng.random() < 0.7:
            return generate(rng.choice(schema[combinator]), rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    if kind == "object" or "properties" in schema:
        out: dict[str, Any] = {}
        required = set(schema.get("required") or [])
        for name, sub in (schema.get("properties") or {}).items():
            if rng.random() < (0.95 if name in required else 0.5):
                out[name] = generate(sub, rng, depth + 1)
        if rng.random() < 0.1:
            out["zz_extra"] = rng.choice(POOL)
        return out
    if kind == "array":
        return [generate(schema.get("items", True), rng, depth + 1)
                for _ in range(rng.choice((0, 1, 2, 3)))]
    if kind == "string":
        return rng.choice([*(schema.get("examples") or []), "", "a", "abc", "main",
                           "x" * 40, "0123456789abcdef0123456789abcdef", "/bin/true",
                           "2026-01-01T00:00:00.000000Z", "a b", "é"])
    if kind == "integer":
        return rng.choice([0, 1, 2, -1, 1.0, 3600, 10**9, 2**63])
    if kind == "number":
        return rng.choice([0, 0.5, 1, -2.5, 1e6, 2.0])
    if kind == "boolean":
        return rng.choice([True, False])
    if kind == "null":
        return None
    return rng.choice(POOL)


def named_schemas() -> list[str]:
    names = []
    for name in ("api", "dataset_config", "grid_config", "responses"):
        root = schema_module.load_schema(name)
        names += [f"{name}#/$defs/{d}" for d in root.get("$defs", {})]
        names.append(name)
    return names


def test_every_named_schema_compiles_and_agrees_with_jsonschema() -> None:
    rng = random.Random(13)
    valid = invalid = compiled = 0
    for name in named_schemas():
        ref = schema_module._ref_of(name)
        assert ref is not None
        try:
            inlined = schema_module._inline({"$ref": ref}, schema_module.registry().resolver(),
                                            frozenset())
        except schema_module._NotInlinable:
            continue  # recursive: jsonschema checks it, as before
        check = compile_schema(inlined)
        compiled += 1
        reference = Draft202012Validator(inlined).is_valid
        for _ in range(60):
            instance = generate(inlined, rng)
            expected = reference(instance)
            assert check(instance) == expected, (name, instance)
            valid += expected
            invalid += not expected
    assert compiled > 100  # the request bodies, configs and response models
    assert valid > 1000 and invalid > 1000  # both answers were exercised

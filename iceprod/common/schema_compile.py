"""A JSON Schema (draft 2020-12, ``$ref``s already inlined) compiled to one Python predicate.

jsonschema walks a schema keyword by keyword for every instance, building a validator
object per level; for a request body that walk is a sixth of a claim's server time. A valid
body (nearly every request) only needs a yes, so ``compile_schema`` turns a schema into
nested closures that answer ``valid(instance) -> bool`` with the same meaning as
``Draft202012Validator(schema).is_valid``. A no still goes through jsonschema, for its
messages (``iceprod.common.schema``), so the compiled form decides nothing alone: a body it
refuses and jsonschema accepts is accepted.

Only the keywords our schemas use are compiled; a schema with any other keyword (or a
keyword in a form not handled here) raises ``NotCompilable`` and is checked by jsonschema
as before. Meanings follow jsonschema's: ``integer`` includes floats with an integral
value, booleans are never numbers, ``enum``/``const``/``uniqueItems`` never take ``True``
for ``1``, ``pattern`` is ``re.search``, ``format`` is an annotation (no format checker).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sized
from typing import Any

Check = Callable[[Any], bool]

ANNOTATIONS = frozenset({"title", "description", "$comment", "default", "examples",
                         "deprecated", "readOnly", "writeOnly", "format"})


class NotCompilable(Exception):
    """The schema uses something this compiler does not handle: use jsonschema."""


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


TYPES: dict[str, Check] = {
    "null": lambda x: x is None,
    "boolean": lambda x: isinstance(x, bool),
    "integer": _is_integer,
    "number": _is_number,
    "string": lambda x: isinstance(x, str),
    "array": lambda x: isinstance(x, list),
    "object": lambda x: isinstance(x, dict),
}


def same(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return bool(a == b)


def _unique(items: list[Any]) -> bool:
    keys: set[Any] = set()
    for x in items:
        if isinstance(x, list | dict):  # unhashable: compare every pair
            return all(not same(items[i], items[j])
                       for i in range(len(items)) for j in range(i + 1, len(items)))
        key = ("b", x) if isinstance(x, bool) else ("s", x) if isinstance(x, str) else ("v", x)
        if key in keys:
            return False
        keys.add(key)
    return True


def compile_schema(schema: Any) -> Check:
    """``valid(instance)`` for ``schema`` (a dict or a boolean schema); raises
    ``NotCompilable`` for what is not handled."""
    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, Mapping):
        raise NotCompilable(f"schema {schema!r}")
    checks: list[Check] = []
    if any(k in schema for k in _OBJECT_KEYS):  # these three act together: one check
        checks.append(_object_keywords(schema))
    for key, value in schema.items():
        if key in ANNOTATIONS or key in _OBJECT_KEYS or key in ("then", "else"):
            continue  # ("then"/"else" are read by "if"; alone they mean nothing)
        make = _KEYWORDS.get(key)
        if make is None:
            raise NotCompilable(key)
        checks.append(make(value, schema))
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    return lambda x: all(check(x) for check in checks)


def _type(value: Any, _schema: Mapping[str, Any]) -> Check:
    names = [value] if isinstance(value, str) else list(value)
    tests = [TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda x: any(t(x) for t in tests)


_OBJECT_KEYS = frozenset({"properties", "patternProperties", "additionalProperties"})


def _object_keywords(schema: Mapping[str, Any]) -> Check:
    """``properties``, ``patternProperties`` and ``additionalProperties`` together (the
    last applies to what the other two do not name)."""
    props = {k: compile_schema(v) for k, v in (schema.get("properties") or {}).items()}
    patterns = [(re.compile(p), compile_schema(v))
                for p, v in (schema.get("patternProperties") or {}).items()]
    extra = schema.get("additionalProperties", True)
    extra_check = None if extra is True or extra is False else compile_schema(extra)

    def check(x: Any) -> bool:
        if not isinstance(x, dict):
            return True
        for k, v in x.items():
            known = False
            sub = props.get(k)
            if sub is not None:
                known = True
                if not sub(v):
                    return False
            for pattern, pcheck in patterns:
                if pattern.search(k):
                    known = True
                    if not pcheck(v):
                        return False
            if not known:
                if extra is False:
                    return False
                if extra_check is not None and not extra_check(v):
                    return False
        return True

    return check


def _required(value: Any, _schema: Mapping[str, Any]) -> Check:
    names = list(value)
    return lambda x: not isinstance(x, dict) or all(n in x for n in names)


def _count(kind: type[Sized], low: bool) -> Callable[[Any, Mapping[str, Any]], Check]:
    def make(value: Any, _schema: Mapping[str, Any]) -> Check:
        n = int(value)
        if low:
            return lambda x: not isinstance(x, kind) or len(x) >= n
        return lambda x: not isinstance(x, kind) or len(x) <= n
    return make


def _bound(op: Callable[[Any, Any], bool]) -> Callable[[Any, Mapping[str, Any]], Check]:
    def make(value: Any, _schema: Mapping[str, Any]) -> Check:
        if not _is_number(value):
            raise NotCompilable("a bound that is not a number")
        return lambda x: not _is_number(x) or op(x, value)
    return make


def _pattern(value: Any, _schema: Mapping[str, Any]) -> Check:
    regex = re.compile(value)
    return lambda x: not isinstance(x, str) or regex.search(x) is not None


def _enum(value: Any, _schema: Mapping[str, Any]) -> Check:
    options = list(value)
    return lambda x: any(same(x, o) for o in options)


def _const(value: Any, _schema: Mapping[str, Any]) -> Check:
    return lambda x: same(x, value)


def _items(value: Any, schema: Mapping[str, Any]) -> Check:
    if "prefixItems" in schema:
        raise NotCompilable("prefixItems")
    each = compile_schema(value)
    return lambda x: not isinstance(x, list) or all(each(item) for item in x)


def _unique_items(value: Any, _schema: Mapping[str, Any]) -> Check:
    if not value:
        return lambda x: True
    return lambda x: not isinstance(x, list) or _unique(x)


def _property_names(value: Any, _schema: Mapping[str, Any]) -> Check:
    each = compile_schema(value)
    return lambda x: not isinstance(x, dict) or all(each(k) for k in x)


def _any_of(value: Any, _schema: Mapping[str, Any]) -> Check:
    subs = [compile_schema(v) for v in value]
    return lambda x: any(s(x) for s in subs)


def _one_of(value: Any, _schema: Mapping[str, Any]) -> Check:
    subs = [compile_schema(v) for v in value]
    return lambda x: sum(1 for s in subs if s(x)) == 1


def _all_of(value: Any, _schema: Mapping[str, Any]) -> Check:
    subs = [compile_schema(v) for v in value]
    return lambda x: all(s(x) for s in subs)


def _not(value: Any, _schema: Mapping[str, Any]) -> Check:
    sub = compile_schema(value)
    return lambda x: not sub(x)


def _if(value: Any, schema: Mapping[str, Any]) -> Check:
    cond = compile_schema(value)
    then = compile_schema(schema.get("then", True))
    other = compile_schema(schema.get("else", True))
    return lambda x: then(x) if cond(x) else other(x)


_KEYWORDS: dict[str, Callable[[Any, Mapping[str, Any]], Check]] = {
    "type": _type,
    "required": _required,
    "minProperties": _count(dict, True),
    "maxProperties": _count(dict, False),
    "minItems": _count(list, True),
    "maxItems": _count(list, False),
    "minLength": _count(str, True),
    "maxLength": _count(str, False),
    "minimum": _bound(lambda x, b: x >= b),
    "maximum": _bound(lambda x, b: x <= b),
    "exclusiveMinimum": _bound(lambda x, b: x > b),
    "exclusiveMaximum": _bound(lambda x, b: x < b),
    "pattern": _pattern,
    "enum": _enum,
    "const": _const,
    "items": _items,
    "uniqueItems": _unique_items,
    "propertyNames": _property_names,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "allOf": _all_of,
    "not": _not,
    "if": _if,
}

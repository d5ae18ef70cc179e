"""Parameter substitution in dataset configs, applied when a job's tasks are created.

A string may contain expressions `$(NAME)`:

- `$(job_index)`, `$(dataset_id)`, `$(dataset)` (the dataset's number), `$(task_index)`
- `$(task.name)`: the current task's name
- `$(steering.NAME)`: a value from the config's `steering.parameters`

A string that is exactly one expression becomes the value itself, keeping its type
(`"$(steering.MEM)"` -> 2.5); expressions inside longer strings are replaced by their text.
`$$(` stands for a literal `$(` (e.g. shell command substitution). Values are inserted as-is:
a steering value is not itself substituted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.common.fieldpath import join_path

# one of: the escape `$$(`, a complete expression, or a `$(` that opens none (an error)
_TOKEN = re.compile(r"\$\$\(|\$\(([^()$]*)\)|\$\(")
_EXPRESSION = re.compile(r"\$\(([^()$]*)\)")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_.-]+)?$")


def task_context(
    *,
    dataset_id: str,
    dataset: int,
    job_index: int,
    task_index: int,
    task_name: str,
    steering: Mapping[str, Any],
) -> dict[str, Any]:
    """The values a task's expressions may name."""
    return {
        "dataset_id": dataset_id,
        "dataset": dataset,
        "job_index": job_index,
        "task_index": task_index,
        "task": {"name": task_name},
        "steering": dict(steering),
    }


def substitute(value: Any, context: Mapping[str, Any], field: str = "") -> Any:
    """Return `value` with every expression in its strings replaced, recursing into lists and
    dict values (not keys). `field` names `value` in errors, e.g. "tasks[0].requirements"."""
    if isinstance(value, str):
        return _substitute_text(value, context, field)
    if isinstance(value, list):
        return [substitute(item, context, join_path(field, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute(v, context, join_path(field, k)) for k, v in value.items()}
    return value


def _substitute_text(text: str, context: Mapping[str, Any], field: str) -> Any:
    whole = _EXPRESSION.fullmatch(text)
    if whole:
        return copy.deepcopy(lookup(whole.group(1), context, field))

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$(":
            return "$("
        if match.group(1) is None:
            raise _invalid(
                field, f"malformed parameter expression in {text!r} (write $$( for a literal $()"
            )
        return _as_text(lookup(match.group(1), context, field))

    return _TOKEN.sub(replace, text)


def lookup(name: str, context: Mapping[str, Any], field: str = "") -> Any:
    """The value of parameter `name` ("job_index", "steering.MEM", ...) in `context`."""
    name = name.strip()
    head, dot, rest = name.partition(".")
    scope = context.get(head)
    if dot and isinstance(scope, Mapping) and rest in scope:
        return scope[rest]
    if not dot and head in context and not isinstance(scope, Mapping):
        return scope
    shown = name if _PARAMETER_NAME.match(name) else repr(name)
    if head in context:
        raise _invalid(field, f"unknown parameter {shown}")
    # most likely shell command substitution that was meant literally
    raise _invalid(field, f"unknown parameter {shown} (write $$( for a literal $()")

def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    # booleans, null and lists as JSON (true, null, ["a", "b"]): what a command line expects
    return json.dumps(value)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}" if field else message, field=field or None)


Renderer = Callable[[Mapping[str, Any]], Any]


def compile_template(value: Any, field: str = "") -> Renderer:
    """``substitute`` split in two: parse ``value`` once, then render it for many contexts
    (one per job) at the cost of a few lookups. Same semantics and errors as ``substitute``."""
    if isinstance(value, str):
        return _compile_text(value, field)
    if isinstance(value, list):
        parts = [compile_template(v, join_path(field, i)) for i, v in enumerate(value)]
        if all(getattr(p, "constant", False) for p in parts):
            return _constant([p({}) for p in parts])  # rendered: `$$(` becomes `$(`
        return lambda ctx: [p(ctx) for p in parts]
    if isinstance(value, dict):
        items = [(k, compile_template(v, join_path(field, k))) for k, v in value.items()]
        if all(getattr(p, "constant", False) for _, p in items):
            return _constant({k: p({}) for k, p in items})
        return lambda ctx: {k: p(ctx) for k, p in items}
    return _constant(value)


def _constant(value: Any) -> Renderer:
    def render(ctx: Mapping[str, Any]) -> Any:
        return value

    render.constant = True  # type: ignore[attr-defined]
    return render


def _compile_text(text: str, field: str) -> Renderer:
    whole = _EXPRESSION.fullmatch(text)
    if whole:
        name = whole.group(1)
        return lambda ctx: copy.deepcopy(lookup(name, ctx, field))
    parts: list[str | tuple[str]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        parts.append(text[pos:match.start()])
        pos = match.end()
        if match.group(0) == "$$(":
            parts.append("$(")
        elif match.group(1) is None:
            raise _invalid(
                field, f"malformed parameter expression in {text!r} (write $$( for a literal $()"
            )
        else:
            parts.append((match.group(1),))
    parts.append(text[pos:])
    if not any(isinstance(p, tuple) for p in parts):
        return _constant("".join(p for p in parts if isinstance(p, str)))
    return lambda ctx: "".join(
        p if isinstance(p, str) else _as_text(lookup(p[0], ctx, field)) for p in parts
    )

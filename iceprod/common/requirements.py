"""Task requirements as a task document holds them: parameters substituted, cpu/gpu as
integers and memory/disk/time as floats, all within the bounds of the dataset config schema's
``materialized_requirements``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.common.fieldpath import join_path
from iceprod.common.params import substitute
from iceprod.common.schema import validate

INTEGER_REQUIREMENTS = ("cpu", "gpu")
FLOAT_REQUIREMENTS = ("memory", "disk", "time")


def materialize_requirements(
    reqs: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    field: str = "requirements",
) -> dict[str, Any]:
    """Requirements ready for a task document: parameters substituted (when `context` is
    given), cpu/gpu as integers and memory/disk/time as floats, all within their bounds."""
    resolved = substitute(dict(reqs), context, field) if context is not None else dict(reqs)
    for key in INTEGER_REQUIREMENTS + FLOAT_REQUIREMENTS:
        if key in resolved:
            number = _to_number(resolved[key], join_path(field, key))
            resolved[key] = _integral(number) if key in INTEGER_REQUIREMENTS else float(number)
    validate(resolved, "dataset_config#/$defs/materialized_requirements", what=field)
    return resolved


def _to_number(value: Any, field: str) -> int | float:
    number: int | float
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _not_a_number(field, f"{value!r} is not a number")
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                raise _not_a_number(field, f"{value!r} is not a number") from None
    else:
        number = value
    if not math.isfinite(number):
        raise _not_a_number(field, f"{value!r} is not a finite number")
    return number


def _integral(number: float) -> float:
    """An integral float becomes an int; any other stays, for the schema to reject."""
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _not_a_number(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", field=field)

"""The script catalog's rules (issue 15), shared by the DRMAAtic and batch dialects: checking
an entry, typing and checking parameter values, and turning an entry plus values into an
ordinary dataset config.

Parameter values reach the command only as whole arguments: an entry's ``args`` may use
``$(param.NAME)`` only as an entire argument (checked when the entry is stored), so a value
is one argv entry and never part of a shell string. Values are escaped (``$(`` -> ``$$(``)
so the materializer's own substitution leaves them as given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.db.store import Doc

PARAM_TYPES = ("int", "float", "string", "bool", "enum", "file")
PARAM_EXPR = re.compile(r"\$\(\s*param\.([A-Za-z0-9_.-]+)\s*\)")
ANY_PARAM = re.compile(r"\$\(\s*param\.")
CLOCK = re.compile(r"^([0-9]{1,4}):([0-5][0-9]):([0-5][0-9])$")
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
MAX_VALUE_CHARS = 100_000
OUTPUT_PREFIX = "output"
INPUT_PREFIX = "input"
DEFAULT_HOURS = 1.0


def clock_hours(text: str, field: str = "max_clock_time") -> float:
    """``HH:MM:SS`` as hours (> 0)."""
    m = CLOCK.fullmatch(text)
    if not m:
        raise Invalid(f"{field}: expected HH:MM:SS", field=field)
    seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    if seconds <= 0:
        raise Invalid(f"{field}: must be longer than 00:00:00", field=field)
    return seconds / 3600


def check_script(doc: Doc) -> None:
    """What the body schema cannot say about an entry: unique parameter names, choices for
    enums, bounds in order, patterns that compile, defaults of the parameter's type, and
    ``$(param.NAME)`` only as a whole argument naming a declared parameter."""
    names: set[str] = set()
    for i, p in enumerate(doc.get("param", [])):
        field = f"param[{i}]"
        if p["name"] in names:
            raise Invalid(f"{field}.name: {p['name']!r} is declared twice", field=f"{field}.name")
        names.add(p["name"])
        if p["type"] == "enum" and not p.get("choices"):
            raise Invalid(f"{field}.choices: an enum needs choices", field=f"{field}.choices")
        if p.get("min") is not None and p.get("max") is not None and p["min"] > p["max"]:
            raise Invalid(f"{field}.min: greater than max", field=f"{field}.min")
        if p.get("pattern") is not None:
            try:
                re.compile(p["pattern"])
            except re.error as e:
                raise Invalid(f"{field}.pattern: not a regular expression ({e})",
                              field=f"{field}.pattern") from None
        if p.get("default") is not None:
            if p["type"] == "file":
                raise Invalid(f"{field}.default: a file parameter has no default",
                              field=f"{field}.default")
            try:
                coerce(p, p["default"])
            except Invalid as e:
                raise Invalid(f"{field}.default: {e.message.split(': ', 1)[1]}",
                              field=f"{field}.default") from None
    if ANY_PARAM.search(doc["command"]):
        raise Invalid("command: parameters may only appear in args, as whole arguments",
                      field="command")
    for i, arg in enumerate(doc.get("args", [])):
        whole = PARAM_EXPR.fullmatch(arg)
        if whole is None and ANY_PARAM.search(arg):
            raise Invalid(f"args[{i}]: $(param.NAME) must be a whole argument (values are "
                          "passed as separate arguments, never inside a string)",
                          field=f"args[{i}]")
        if whole is not None and whole.group(1) not in names:
            raise Invalid(f"args[{i}]: no parameter named {whole.group(1)!r}",
                          field=f"args[{i}]")
    if "max_clock_time" in doc:
        clock_hours(doc["max_clock_time"])


def coerce(param: Mapping[str, Any], raw: Any) -> Any:
    """A value of the parameter's type from a form field (text) or JSON; ``Invalid`` naming
    the parameter when it does not fit the type, bounds, pattern or choices."""
    name, kind = param["name"], param["type"]

    def bad(why: str) -> Invalid:
        return Invalid(f"{name}: {why}", field=name)

    value: Any
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise bad("must be an integer")
        try:
            value = int(raw.strip()) if isinstance(raw, str) else raw
        except ValueError:
            raise bad("must be an integer") from None
        if abs(value) >= 2 ** 63:
            raise bad("out of range")
    elif kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise bad("must be a number")
        try:
            value = float(raw)
        except ValueError:
            raise bad("must be a number") from None
        if not math.isfinite(value):
            raise bad("must be a finite number")
    elif kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in TRUE + FALSE:
            value = raw.strip().lower() in TRUE
        else:
            raise bad("must be true or false")
    else:  # string, enum, file: text
        if not isinstance(raw, str):
            raise bad("must be text")
        if len(raw) > MAX_VALUE_CHARS or "\x00" in raw:
            raise bad(f"must be at most {MAX_VALUE_CHARS} characters, without NUL")
        value = raw
    if kind in ("int", "float"):
        if param.get("min") is not None and value < param["min"]:
            raise bad(f"must be >= {param['min']}")
        if param.get("max") is not None and value > param["max"]:
            raise bad(f"must be <= {param['max']}")
    if kind == "enum" and value not in param.get("choices", []):
        raise bad(f"must be one of {', '.join(map(str, param['choices']))}")
    if kind in ("string", "enum") and param.get("pattern") is not None \
            and not re.fullmatch(param["pattern"], value):
        raise bad(f"must match {param['pattern']}")
    return value


def check_values(script: Doc, given: Mapping[str, Any], files: Mapping[str, str]) -> Doc:
    """Every parameter's typed value (defaults filled in; file parameters name their
    uploaded file). Unknown names, missing required values and bad values are ``Invalid``
    naming the parameter, checked before anything is created."""
    params = {p["name"]: p for p in script.get("param", [])}
    for name in [*given, *files]:
        if name not in params:
            raise Invalid(f"{name}: script {script['name']!r} has no such parameter",
                          field=name)
    out: Doc = {}
    for name, p in params.items():
        if p["type"] == "file":
            if name in given:
                raise Invalid(f"{name}: a file parameter takes an uploaded file", field=name)
            if name in files:
                out[name] = files[name]
            elif p.get("required"):
                raise Invalid(f"{name}: required (upload a file)", field=name)
            continue
        if name in files:
            raise Invalid(f"{name}: not a file parameter", field=name)
        if name in given:
            out[name] = coerce(p, given[name])
        elif p.get("default") is not None:
            out[name] = coerce(p, p["default"])
        elif p.get("required"):
            raise Invalid(f"{name}: required", field=name)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_args(script: Doc, values: Mapping[str, Any]) -> list[str]:
    """The entry's ``args`` with each ``$(param.NAME)`` argument replaced by its value (one
    argument; left out when an optional parameter has no value), escaped for the
    materializer's substitution."""
    out = []
    for arg in script.get("args", []):
        whole = PARAM_EXPR.fullmatch(arg)
        if whole is None:
            out.append(arg)
        elif (value := values.get(whole.group(1))) is not None:
            out.append(_text(value).replace("$(", "$$("))
    return out


def requirements(script: Doc, hardware: Mapping[str, Any] | None = None) -> Doc:
    """A task's requirements: the entry's, its clock time as hours, then a batch's
    ``hardware`` (cpu cores, memory in MiB)."""
    req: Doc = dict(script.get("requirements") or {})
    req["time"] = clock_hours(script["max_clock_time"]) if script.get("max_clock_time") \
        else req.get("time", DEFAULT_HOURS)
    if hardware:
        if hardware.get("cpu") is not None:
            req["cpu"] = hardware["cpu"]
        if hardware.get("memory") is not None:
            req["memory"] = round(hardware["memory"] / 1024, 6)
    return req


def task_config(script: Doc, name: str, values: Mapping[str, Any],
                hardware: Mapping[str, Any] | None = None,
                depends: Sequence[str] = ()) -> Doc:
    """One task of a dataset config running the entry with ``values``: uploaded files
    staged in from the dataset's store (``input/<param>/<file>``), and, when the entry's
    outputs are visible, the task directory kept in the store under ``output/<name>/``."""
    data = [{"remote": f"iceprod:{INPUT_PREFIX}/{p}/{values[p]}", "local": values[p],
             "movement": "input"}
            for p in (q["name"] for q in script.get("param", []) if q["type"] == "file")
            if p in values]
    if script.get("is_output_visible", True):
        data.append({"remote": f"iceprod:{OUTPUT_PREFIX}/{name}", "local": ".",
                     "movement": "output"})
    req = requirements(script, hardware)
    step = {"name": script["name"], "command": script["command"],
            "args": render_args(script, values), "timeout": req["time"] * 3600}
    task: Doc = {"name": name, "requirements": req, "data": data, "steps": [step]}
    if depends:
        task["depends"] = list(depends)
    return task

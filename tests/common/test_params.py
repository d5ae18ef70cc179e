"""Parameter substitution and requirement materialization, as applied when tasks are created."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from iceprod.common.errors import Invalid
from iceprod.common.params import lookup, substitute, task_context
from iceprod.common.requirements import materialize_requirements

DATASET_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def context() -> dict[str, Any]:
    return task_context(
        dataset_id=DATASET_ID, dataset=42, job_index=7, task_index=1, task_name="process",
        steering={"MEM": 2.5, "CPU": 2, "OUTDIR": "/tmp/out", "FILES": ["a.i3", "b.i3"],
                  "FLAG": True, "NOTHING": None, "CHAINED": "$(job_index)", "dotted.name": "d"},
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(job_index)", 7),
        ("$(dataset_id)", DATASET_ID),
        ("$(dataset)", 42),
        ("$(task_index)", 1),
        ("$(task.name)", "process"),
        ("$(steering.MEM)", 2.5),
        ("$(steering.CPU)", 2),
        ("$(steering.FILES)", ["a.i3", "b.i3"]),
        ("$(steering.FLAG)", True),
        ("$(steering.NOTHING)", None),
        ("$(steering.dotted.name)", "d"),
        ("$( job_index )", 7),
    ],
)
def test_a_lone_expression_keeps_the_value_type(
    text: str, expected: Any, context: dict[str, Any]
) -> None:
    result = substitute(text, context)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(steering.OUTDIR)/$(dataset_id)/$(job_index)/gen.txt",
         f"/tmp/out/{DATASET_ID}/7/gen.txt"),
        ("job $(job_index)", "job 7"),
        ("mem=$(steering.MEM)GB", "mem=2.5GB"),
        ("$(job_index)$(task_index)", "71"),
        (" $(job_index)", " 7"),
        ("--files=$(steering.FILES)", '--files=["a.i3", "b.i3"]'),
        ("flag=$(steering.FLAG) none=$(steering.NOTHING)", "flag=true none=null"),
        ("no parameters here", "no parameters here"),
        ("cost: $5 (approx)", "cost: $5 (approx)"),
    ],
)
def test_embedded_expressions_become_text(
    text: str, expected: str, context: dict[str, Any]
) -> None:
    assert substitute(text, context) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$$(date)", "$(date)"),
        ("echo $$(wc -l < $(task.name).txt)", "echo $(wc -l < process.txt)"),
        ("$$(job_index)", "$(job_index)"),
    ],
)
def test_double_dollar_escapes_a_literal_expression(
    text: str, expected: str, context: dict[str, Any]
) -> None:
    assert substitute(text, context) == expected


def test_steering_values_are_inserted_without_further_substitution(
    context: dict[str, Any],
) -> None:
    assert substitute("$(steering.CHAINED)", context) == "$(job_index)"


def test_substitution_recurses_into_lists_and_dict_values(context: dict[str, Any]) -> None:
    value = {"$(job_index)": ["$(dataset)", {"n": "$(task_index)", "k": 3, "b": False}], "x": None}
    original = copy.deepcopy(value)
    assert substitute(value, context) == {"$(job_index)": [42, {"n": 1, "k": 3, "b": False}],
                                          "x": None}
    assert value == original


def test_substituted_lists_are_copies(context: dict[str, Any]) -> None:
    files = substitute("$(steering.FILES)", context)
    files.append("c.i3")
    assert context["steering"]["FILES"] == ["a.i3", "b.i3"]


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("$(steering.X)", "", "unknown parameter steering.X"),
        ({"memory": "$(steering.X)"}, "requirements",
         "requirements.memory: unknown parameter steering.X"),
        (["ok", "a $(task.index) b"], "args", "args[1]: unknown parameter task.index"),
        ("$(steering)", "f", "f: unknown parameter steering"),
        ("$(job)", "f", "f: unknown parameter job (write $$( for a literal $()"),
        ("echo $(ls -l)", "f", "f: unknown parameter 'ls -l' (write $$( for a literal $()"),
        ("$()", "f", "f: unknown parameter '' (write $$( for a literal $()"),
        ("echo $(oops", "f", ("f: malformed parameter expression in 'echo $(oops'"
                              " (write $$( for a literal $()")),
        ("$(a $(b))", "f", ("f: malformed parameter expression in '$(a $(b))'"
                            " (write $$( for a literal $()")),
    ],
)
def test_unknown_or_malformed_parameters_name_the_field(
    value: Any, field: str, message: str, context: dict[str, Any]
) -> None:
    with pytest.raises(Invalid) as info:
        substitute(value, context, field=field)
    assert info.value.message == message
    assert info.value.code == 400
    expected_field = message.split(":")[0] if field else None
    assert info.value.field == expected_field


def test_lookup(context: dict[str, Any]) -> None:
    assert lookup("steering.OUTDIR", context) == "/tmp/out"
    with pytest.raises(Invalid, match=r"^x: unknown parameter steering\.NOPE$"):
        lookup("steering.NOPE", context, field="x")


# -- requirements --------------------------------------------------------------------------


def test_materialize_requirements_substitutes_and_coerces(context: dict[str, Any]) -> None:
    reqs = {"cpu": "$(steering.CPU)", "gpu": "0", "memory": "$(steering.MEM)", "disk": 1,
            "time": "0.5", "os": ["RHEL_9"], "site": "WIPAC"}
    result = materialize_requirements(reqs, context)
    assert result == {"cpu": 2, "gpu": 0, "memory": 2.5, "disk": 1.0, "time": 0.5,
                      "os": ["RHEL_9"], "site": "WIPAC"}
    assert type(result["cpu"]) is int and type(result["gpu"]) is int
    assert type(result["disk"]) is float
    assert reqs["cpu"] == "$(steering.CPU)"


def test_materialize_requirements_without_context() -> None:
    assert materialize_requirements({"cpu": 2.0, "memory": "1e-1"}) == {"cpu": 2, "memory": 0.1}
    assert materialize_requirements({}) == {}


def test_requirements_from_embedded_expressions_are_parsed(context: dict[str, Any]) -> None:
    assert materialize_requirements({"memory": "$(steering.CPU).5"}, context) == {"memory": 2.5}


@pytest.mark.parametrize(
    ("reqs", "field", "message"),
    [
        ({"memory": "lots"}, "requirements.memory", "requirements.memory: 'lots' is not a number"),
        ({"memory": "$(steering.OUTDIR)"}, "requirements.memory",
         "requirements.memory: '/tmp/out' is not a number"),
        ({"memory": "-1"}, "requirements.memory",
         "requirements.memory: -1.0 is less than or equal to the minimum of 0"),
        ({"memory": 0}, "requirements.memory",
         "requirements.memory: 0.0 is less than or equal to the minimum of 0"),
        ({"cpu": "0"}, "requirements.cpu", "requirements.cpu: 0 is less than the minimum of 1"),
        ({"cpu": "1.5"}, "requirements.cpu", "requirements.cpu: 1.5 is not of type 'integer'"),
        ({"gpu": "$(steering.FLAG)"}, "requirements.gpu",
         "requirements.gpu: True is not a number"),
        ({"time": "inf"}, "requirements.time", "requirements.time: 'inf' is not a finite number"),
        ({"disk": "$(steering.NOPE)"}, "requirements.disk",
         "requirements.disk: unknown parameter steering.NOPE"),
        ({"ram": 2}, "requirements.ram", "requirements.ram: unknown field"),
    ],
)
def test_materialize_requirements_rejects_bad_values(
    reqs: dict[str, Any], field: str, message: str, context: dict[str, Any]
) -> None:
    with pytest.raises(Invalid) as info:
        materialize_requirements(reqs, context)
    assert info.value.message == message
    assert info.value.field == field


def test_materialize_requirements_names_the_task(context: dict[str, Any]) -> None:
    with pytest.raises(Invalid, match=r"^tasks\[2\]\.requirements\.memory: 'x' is not a number$"):
        materialize_requirements({"memory": "x"}, context, field="tasks[2].requirements")

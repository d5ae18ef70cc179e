"""Dataset config schema and validation: what a scientist sees when a config is rejected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from iceprod.common.errors import Invalid
from iceprod.common.schema import load_schema, validate, validate_dataset_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OTHER_DATASET = "0123456789abcdef0123456789abcdef"


def task(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"command": "/bin/true"}], **fields}


def config(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"tasks": list(tasks), **fields}


def rejection(cfg: Any) -> Invalid:
    with pytest.raises(Invalid) as info:
        validate_dataset_config(cfg)
    assert info.value.code == 400
    return info.value


# -- the schema itself ---------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema("dataset_config")
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert load_schema("dataset_config") is schema  # cached


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}", sub
        for key, value in node.items():
            yield from _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{where}[{i}]")


def test_every_property_is_described() -> None:
    undescribed = [
        where for where, sub in _properties(load_schema("dataset_config"))
        if not sub.get("description")
    ]
    assert undescribed == []


def test_unknown_schema_name() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_thing"):
        load_schema("no_such_thing")


# -- configs that are accepted -------------------------------------------------------------


def test_chain_example_validates() -> None:
    cfg = json.loads((EXAMPLES / "chain.json").read_text())
    validate_dataset_config(cfg)
    assert [t["name"] for t in cfg["tasks"]] == ["generate", "process", "finish"]


def test_minimal_config_validates() -> None:
    validate_dataset_config(config(task("only")))


def test_full_config_validates() -> None:
    cfg = config(
        task("a", requirements={"cpu": 2, "gpu": 0, "memory": 1.5, "disk": 0, "time": 2,
                                "os": ["RHEL_9"], "site": "WIPAC"}),
        task("b", depends=["a", 0, f"{OTHER_DATASET}:gen"], priority=-1.5, env={"X_1": "y"},
             requirements={"memory": "$(steering.MEM)", "cpu": "$(steering.CPU)"},
             data=[{"remote": "http://x/in", "movement": "input", "transfer": "maybe"},
                   {"local": "out.txt", "movement": "output", "type": "job_temp",
                    "transfer": False}],
             steps=[{"name": "s", "command": "run", "args": ["$(job_index)"], "env": {},
                     "timeout": 0.5}]),
        version=3, description="d", options={"max_failures": 1, "debug": True},
        steering={"parameters": {"MEM": 2.5, "CPU": 2, "list": [1, "a", None], "flag": True}},
    )
    validate_dataset_config(cfg)


# -- schema errors name the field ----------------------------------------------------------

Mutation = Callable[[dict[str, Any]], Any]
BASE = config(task("generate"), task("process", depends=["generate"]))


def req(**values: Any) -> Mutation:
    return lambda c: c["tasks"][1].setdefault("requirements", {}).update(values)


SCHEMA_ERRORS: list[tuple[str, Mutation, str, str]] = [
    ("negative memory", req(memory=-1), "tasks[1].requirements.memory",
     "tasks[1].requirements.memory: -1 is less than or equal to the minimum of 0"),
    ("zero cpu", req(cpu=0), "tasks[1].requirements.cpu",
     "tasks[1].requirements.cpu: 0 is less than the minimum of 1"),
    ("negative disk", req(disk=-0.5), "tasks[1].requirements.disk",
     "tasks[1].requirements.disk: -0.5 is less than the minimum of 0"),
    ("memory not a number", req(memory="lots"), "tasks[1].requirements.memory",
     ("tasks[1].requirements.memory: 'lots' is not a number > 0 or a parameter expression"
      " such as $(steering.MEMORY)")),
    ("fractional gpu", req(gpu=0.5), "tasks[1].requirements.gpu",
     ("tasks[1].requirements.gpu: 0.5 is not an integer >= 0 or a parameter expression"
      " such as $(steering.GPU)")),
    ("os not a list", req(os="linux"), "tasks[1].requirements.os",
     "tasks[1].requirements.os: 'linux' is not of type 'array'"),
    ("missing steps", lambda c: c["tasks"][0].pop("steps"), "tasks[0]",
     "tasks[0]: 'steps' is a required property"),
    ("no steps", lambda c: c["tasks"][0].update(steps=[]), "tasks[0].steps",
     "tasks[0].steps: [] should be non-empty"),
    ("step without command", lambda c: c["tasks"][0].update(steps=[{"args": []}]),
     "tasks[0].steps[0]", "tasks[0].steps[0]: 'command' is a required property"),
    ("zero timeout", lambda c: c["tasks"][0]["steps"][0].update(timeout=0),
     "tasks[0].steps[0].timeout",
     "tasks[0].steps[0].timeout: 0 is less than or equal to the minimum of 0"),
    ("unknown task field", lambda c: c["tasks"][0].update(foo=1), "tasks[0].foo",
     "tasks[0].foo: unknown field"),
    ("job_array is not part of the format", lambda c: c["tasks"][0].update(job_array=[1]),
     "tasks[0].job_array", "tasks[0].job_array: unknown field"),
    ("unknown top-level field", lambda c: c.update(jobs=5), "jobs", "jobs: unknown field"),
    ("unknown requirement", req(ram=4), "tasks[1].requirements.ram",
     "tasks[1].requirements.ram: unknown field"),
    ("unknown step field", lambda c: c["tasks"][0]["steps"][0].update(shell=True),
     "tasks[0].steps[0].shell", "tasks[0].steps[0].shell: unknown field"),
    ("unknown option", lambda c: c.update(options={"retries": 2}), "options.retries",
     "options.retries: unknown field"),
    ("zero max_failures", lambda c: c.update(options={"max_failures": 0}),
     "options.max_failures", "options.max_failures: 0 is less than the minimum of 1"),
    ("missing tasks", lambda c: c.pop("tasks"), "", "'tasks' is a required property"),
    ("no tasks", lambda c: c.update(tasks=[]), "tasks", "tasks: [] should be non-empty"),
    ("too many tasks", lambda c: c.update(tasks=[task(f"t{i}") for i in range(1001)]),
     "tasks", "tasks: has 1001 items, more than the maximum of 1000"),
    ("bad task name", lambda c: c["tasks"][0].update(name="my task"), "tasks[0].name",
     "tasks[0].name: 'my task' does not match '^[A-Za-z0-9_.-]{1,64}$'"),
    ("bad dependency", lambda c: c["tasks"][1].update(depends=["no spaces allowed"]),
     "tasks[1].depends[0]", ("tasks[1].depends[0]: 'no spaces allowed' is not a task name,"
                             " a task index, or '<dataset_id>:<task name>'")),
    ("negative dependency index", lambda c: c["tasks"][1].update(depends=[-1]),
     "tasks[1].depends[0]", "tasks[1].depends[0]: -1 is less than the minimum of 0"),
    ("bad movement", lambda c: c["tasks"][0].update(data=[{"remote": "x", "movement": "up"}]),
     "tasks[0].data[0].movement",
     "tasks[0].data[0].movement: 'up' is not one of ['input', 'output', 'both']"),
    ("data without movement", lambda c: c["tasks"][0].update(data=[{"remote": "x"}]),
     "tasks[0].data[0]", "tasks[0].data[0]: 'movement' is a required property"),
    ("env value not a string", lambda c: c["tasks"][0].update(env={"N": 1}), "tasks[0].env.N",
     "tasks[0].env.N: 1 is not of type 'string'"),
    ("bad env name", lambda c: c["tasks"][0].update(env={"A-B": "x"}), "tasks[0].env",
     "tasks[0].env: invalid name 'A-B' (must match ^[A-Za-z_][A-Za-z0-9_]*$)"),
    ("nested steering value", lambda c: c.update(steering={"parameters": {"P": {"a": 1}}}),
     "steering.parameters.P",
     ("steering.parameters.P: {'a': 1} is not of type 'string', 'number', 'boolean', 'null',"
      " 'array'")),
    ("tasks not a list", lambda c: c.update(tasks="generate"), "tasks",
     "tasks: 'generate' is not of type 'array'"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [case[1:] for case in SCHEMA_ERRORS],
    ids=[case[0] for case in SCHEMA_ERRORS],
)
def test_schema_error_names_the_field(mutate: Mutation, field: str, message: str) -> None:
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    error = rejection(cfg)
    assert error.message == message
    assert str(error) == message
    assert error.field == field


def test_steering_parameters_accept_any_name_pattern_key() -> None:
    validate_dataset_config(config(task("a"), steering={"parameters": {"any.name-1": "x"}}))


def test_several_errors_best_first_then_in_document_order() -> None:
    cfg = config(task("a", requirements={"cpu": 0, "memory": -1, "ram": 1}), task("b", foo=1))
    error = rejection(cfg)
    # like jsonschema's best_match, the shallowest problem is the most relevant
    assert error.field == "tasks[1].foo"
    assert error.message == (
        "tasks[1].foo: unknown field; "
        "tasks[0].requirements.ram: unknown field; "
        "tasks[0].requirements.cpu: 0 is less than the minimum of 1; "
        "tasks[0].requirements.memory: -1 is less than or equal to the minimum of 0"
    )


def test_at_most_five_errors_are_listed() -> None:
    error = rejection(config(*[task(f"t{i}", extra=i) for i in range(8)]))
    assert error.message.count("unknown field") == 5
    assert error.message.startswith("tasks[0].extra: unknown field; tasks[1].extra:")


def test_validate_with_an_inline_schema_and_a_name_for_the_instance() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
              "additionalProperties": False}
    validate({"n": 1}, schema)
    with pytest.raises(Invalid, match=r"^body\.n: 0 is less than the minimum of 1$") as info:
        validate({"n": 0}, schema, what="body")
    assert info.value.field == "body.n"
    with pytest.raises(Invalid, match=r"^body: \[\] is not of type 'object'$"):
        validate([], schema, what="body")


def test_validate_against_part_of_a_named_schema() -> None:
    part = "dataset_config#/$defs/materialized_requirements"
    validate({"cpu": 1, "memory": 0.5}, part)
    with pytest.raises(Invalid, match=r"^requirements\.memory: '1' is not of type 'number'$"):
        validate({"memory": "1"}, part, what="requirements")


# -- semantic checks -----------------------------------------------------------------------


def test_duplicate_task_name() -> None:
    error = rejection(config(task("x"), task("y"), task("x")))
    assert error.message == "tasks[2].name: duplicate task name 'x'"
    assert error.field == "tasks[2].name"


def test_dependency_on_unknown_task_name() -> None:
    error = rejection(config(task("generate"), task("process", depends=["foo"])))
    assert error.message == "tasks[1].depends[0]: unknown task 'foo'"
    assert error.field == "tasks[1].depends[0]"


def test_dependency_index_out_of_range() -> None:
    error = rejection(config(task("a"), task("b", depends=[0, 2])))
    assert error.message == "tasks[1].depends[1]: unknown task index 2 (the dataset has 2 tasks)"


@pytest.mark.parametrize("dep", ["b", 1])
def test_dependency_on_itself(dep: str | int) -> None:
    error = rejection(config(task("a"), task("b", depends=[dep])))
    assert error.message == "tasks[1].depends[0]: task 'b' cannot depend on itself"


def test_schema_and_dependency_problems_are_reported_together() -> None:
    """One round of fixes, not two: the unknown dependency is named beside the bad field."""
    bad = task("process", depends=["foo"])
    bad["requirements"] = {"cpu": 0}
    error = rejection(config(task("generate"), bad))
    assert "tasks[1].requirements.cpu" in error.message
    assert "tasks[1].depends[0]: unknown task 'foo'" in error.message


def test_cross_dataset_dependency_is_accepted() -> None:
    validate_dataset_config(config(task("a", depends=[f"{OTHER_DATASET}:generate"])))


def test_two_task_cycle() -> None:
    error = rejection(config(task("generate", depends=["process"]),
                             task("process", depends=["generate"])))
    assert error.message == "tasks: dependency cycle generate -> process -> generate"
    assert error.field == "tasks"


def test_cycle_is_named_in_run_order_from_its_first_task() -> None:
    # c waits for b, b waits for a, a waits for c (by index): a runs before b before c
    cfg = config(task("start"), task("a", depends=[3]), task("b", depends=["a"]),
                 task("c", depends=["b", "start"]))
    error = rejection(cfg)
    assert error.message == "tasks: dependency cycle a -> b -> c -> a"


def test_diamond_is_not_a_cycle() -> None:
    validate_dataset_config(config(task("a"), task("b", depends=["a"]), task("c", depends=["a"]),
                                   task("d", depends=["b", "c", 0])))


def test_data_needs_remote_or_local() -> None:
    error = rejection(config(task("a", data=[{"remote": "x", "movement": "input"},
                                             {"movement": "output"}])))
    assert error.message == "tasks[0].data[1]: needs remote or local"


def test_unknown_steering_parameter_is_rejected_when_the_config_is_put() -> None:
    cfg = config(task("a", requirements={"memory": "$(steering.MEM)"}),
                 steering={"parameters": {"MEMORY": 2}})
    error = rejection(cfg)
    assert error.message == "tasks[0].requirements.memory: unknown parameter steering.MEM"
    assert error.field == "tasks[0].requirements.memory"


def test_unescaped_shell_substitution_is_rejected_with_a_hint() -> None:
    cfg = config(task("a", steps=[{"command": "/bin/sh", "args": ["-c", "echo $(date)"]}]))
    error = rejection(cfg)
    assert error.message == (
        "tasks[0].steps[0].args[1]: unknown parameter date (write $$( for a literal $()"
    )
    cfg["tasks"][0]["steps"][0]["args"][1] = "echo $$(date) $(task.name) $(task_index)"
    validate_dataset_config(cfg)


def test_config_that_is_not_an_object() -> None:
    error = rejection([])
    assert error.message == "[] is not of type 'object'"
    assert error.field == ""

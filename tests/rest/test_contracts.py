"""One source per contract: every REST body schema is a file in ``resources/schemas`` (or a
``$defs`` entry of one), handler modules hold no schema of their own, shared definitions
(requirements, ids, status bodies) exist once, and enums copied from the code's tables into
the files still match those tables."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from iceprod.common.schema import SCHEMA_BASE, load_schema, schema_names, validate
from iceprod.common.states import statuses
from iceprod.core.roles import SCOPES
from iceprod.rest.app import HANDLER_MODULES, all_routes
from iceprod.rest.auth.subtokens import TYPES
from iceprod.rest.openapi import handler_methods
from tests.conftest import Server
from tests.helpers import walk

API = load_schema("api")["$defs"]
REQUIREMENT_FIELDS = {"cpu", "gpu", "memory", "disk", "time"}


def body_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for pattern, handler in all_routes():
        for verb, fn in handler_methods(handler).items():
            if fn.auth_spec.body is not None:
                yield f"{verb.upper()} {pattern}", fn.auth_spec.body


def test_every_body_schema_is_a_schema_file_or_one_of_its_defs() -> None:
    files = {f"{SCHEMA_BASE}{name}.schema.json": name for name in schema_names()}
    seen = 0
    for where, body in body_specs():
        seen += 1
        if "$id" in body:  # a whole schema file, e.g. the dataset config
            assert body["$id"] in files, where
            assert body == load_schema(files[body["$id"]]), where
            continue
        assert set(body) == {"$ref"}, f"{where}: inline schema {body}"
        uri, _, pointer = body["$ref"].partition("#")
        assert uri in files, where
        match = re.fullmatch(r"/\$defs/(\w+)", pointer)
        assert match and match[1] in load_schema(files[uri])["$defs"], where
    assert seen >= 30  # the routes with bodies were found at all


def test_handler_modules_hold_no_schema_dicts() -> None:
    """A dict literal with a JSON Schema keyword as a key is a schema written in Python."""
    keywords = {"type", "properties", "additionalProperties", "enum", "pattern", "$ref"}
    offenders = []
    for module in HANDLER_MODULES:
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if keys & keywords:
                    offenders.append(f"{module.__name__}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "obj":
                offenders.append(f"{module.__name__}:{node.lineno} obj(...)")
    assert offenders == []


def test_task_requirements_are_defined_once() -> None:
    """Every object schema naming the numeric requirement fields, across every schema file:
    the task's requirements once (the dataset config's materialized ones), the same fields
    before parameter substitution, what a pilot has, offers or measured, and a grid's standard
    pilot size, each once."""
    found = []
    for name in schema_names():
        for where, node in walk(load_schema(name), name):
            props = node.get("properties")
            if isinstance(props, dict) and REQUIREMENT_FIELDS <= set(props):
                found.append(where)
    assert sorted(found) == sorted([
        "api/$defs/measured", "api/$defs/offer", "api/$defs/pilot_resources",
        "dataset_config/$defs/materialized_requirements", "dataset_config/$defs/requirements",
        # the operator's size of a standard pilot: a grid setting, not a request body
        "grid_config/$defs/grid/properties/pilot_resources",
    ])
    # every task-requirements field of a body refers to the one definition
    uses = [(where, node) for where, node in walk(API, "api")
            if where.endswith("/properties/requirements") or where == "api/tasks_bulk_req"]
    assert len(uses) >= 3
    for where, node in uses:
        assert node.get("$ref") in ("#/$defs/requirements", "#/$defs/offer"), where
    assert API["requirements"]["$ref"].endswith(
        "dataset_config.schema.json#/$defs/materialized_requirements")


def test_one_id_and_one_status_body_per_state_machine() -> None:
    ids = [where for name in schema_names() for where, node in walk(load_schema(name), name)
           if node.get("pattern") == "^[0-9a-f]{32}$"]
    assert ids == ["api/$defs/id"]
    status_bodies = sorted(name for name, d in API.items()
                           if set(d.get("properties", {})) - {"dry_run"} == {"status"})
    assert status_bodies == ["dataset_status", "job_status", "task_status"]


def test_enums_in_the_files_match_the_code() -> None:
    # archived is reached only through POST /archive, which compacts the tasks
    assert API["dataset_status"]["properties"]["status"]["enum"] == [
        s for s in statuses("dataset") if s != "archived"]
    assert API["job_status"]["properties"]["status"]["enum"] == statuses("job")
    assert API["jobs_patch"]["properties"]["status"]["enum"] == statuses("job")
    assert API["jobs_create"]["properties"]["status"]["enum"] == statuses("job")
    assert API["task_status"]["properties"]["status"]["enum"] == [
        s for s in statuses("task") if s != "processing"]
    assert "status" not in API["tasks_patch"]["properties"]  # PUT /tasks/{id}/status
    assert API["pilots_patch"]["properties"]["status"]["enum"] == statuses("pilot")
    assert API["roles_put"]["properties"]["scopes"]["items"]["enum"] == sorted(SCOPES)
    token = API["login_create_token"]
    assert token["properties"]["type"]["enum"] == list(TYPES)
    scope = "(?:" + "|".join(re.escape(s) for s in sorted(SCOPES)) + ")"
    assert token["properties"]["scope"]["pattern"] == f"^{scope}( {scope})*$"


@pytest.mark.parametrize("bad, field", [
    ({"os": []}, "os"), ({"cpu": 0}, "cpu"), ({"memory": 0}, "memory"),
    ({"time": 1e7}, "time"), ({"site": ""}, "site"),
])
def test_requirements_bounds_are_the_dataset_configs(bad: dict[str, Any], field: str) -> None:
    """The one definition keeps the strictest bounds each former copy had."""
    with pytest.raises(Exception, match=field):
        validate(bad, "api#/$defs/requirements")
    validate({"cpu": 1, "memory": 0.5, "os": ["el9"], "site": "x"}, "api#/$defs/requirements")


def test_a_body_from_the_file_is_enforced_over_http(server: Server, admin: httpx.Client,
                                                    system: httpx.Client) -> None:
    from tests.helpers import create_dataset, create_job, create_task
    ds = create_dataset(admin, "physics", jobs=1, tasks_per_job=1)
    task = create_task(system, ds, create_job(system, ds, 0))
    r = system.patch(f"/tasks/{task}", json={"requirements": {"os": []}})
    assert r.status_code == 400
    assert r.json()["error"].startswith("requirements.os:")
    r = system.patch(f"/tasks/{task}", json={"requirements": {"os": ["el9"], "cpu": 2}})
    assert r.status_code == 200, r.text

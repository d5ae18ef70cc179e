"""The OpenAPI document is self-contained and states the input rules the server applies."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from iceprod.rest.app import all_routes
from iceprod.rest.openapi import INT64_MAX, handler_methods, template
from tests.conftest import Server
from tests.helpers import create_dataset, create_job, create_task, walk


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
    r = httpx.get(server.url + "/openapi.json")
    assert r.status_code == 200
    return r.json()




def resolve(doc: dict[str, Any], ref: str) -> Any:
    """A plain JSON-pointer lookup in the document: nothing else a fuzzer could follow."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_every_ref_resolves_within_the_document(spec: dict[str, Any]) -> None:
    refs = [(where, node["$ref"]) for where, node in walk(spec) if "$ref" in node]
    assert len(refs) > 27
    for where, ref in refs:
        assert ref.startswith("#/components/schemas/"), (where, ref)
        assert isinstance(resolve(spec, ref), dict), (where, ref)
    assert not [where for where, node in walk(spec) if "$id" in node or "$defs" in node]
    body = spec["paths"]["/config/{dataset_id}"]["put"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/dataset_config"}
    assert "dataset_config.task" in spec["components"]["schemas"]


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            yield path, verb, op


def test_errors_are_documented_with_the_error_body(spec: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/Error"}
    assert spec["components"]["schemas"]["Error"]["required"] == ["code", "error"]
    for path, verb, op in operations(spec):
        codes = [c for c in op["responses"] if c.startswith("4")]
        assert "401" in codes, (verb, path)
        for code in codes:
            assert op["responses"][code]["content"]["application/json"]["schema"] == error
        if op["security"]:
            assert "403" in codes, (verb, path)
        if "{" in path or "requestBody" in op:
            assert "404" in codes and "400" in codes or "requestBody" not in op, (verb, path)
    post_log = spec["paths"]["/datasets/{dataset_id}/logs"]["post"]["responses"]
    assert "413" in post_log
    assert {"429", "503"} <= set(spec["paths"]["/ldap"]["post"]["responses"])


def test_integers_have_64_bit_bounds(spec: dict[str, Any]) -> None:
    integers = [(w, n) for w, n in walk(spec) if n.get("type") == "integer"
                and not w.endswith("/Error/properties/code")]
    assert len(integers) > 30
    for where, node in integers:
        assert -(2**63) <= node["minimum"] and node["maximum"] <= INT64_MAX, where


def test_path_parameters_carry_the_route_pattern(spec: dict[str, Any]) -> None:
    params = spec["paths"]["/datasets/{dataset_id}/jobs/{job_id}"]["get"]["parameters"]
    patterns = {p["name"]: p["schema"]["pattern"] for p in params if p["in"] == "path"}
    # a dataset is named by its id or its number (issue 12 §9)
    assert patterns == {"dataset_id": "^(?:[0-9a-f]{32}|[0-9]{1,18})$",
                        "job_id": "^[0-9a-f]{32}$"}


READS = re.compile(r"self\.(?:get_argument|int_arg)\(\s*\"(\w+)\"")


def read_arguments(handler: type) -> set[str]:
    """The query arguments a handler's source reads."""
    source = inspect.getsource(handler)
    names = set(READS.findall(source))
    for var in re.findall(r"self\.get_argument\((\w+)", source):  # for arg in ("a", "b"): ...
        loop = re.search(rf"for {var} in \(([^)]*)\)", source)
        assert loop, f"{handler.__name__} reads a query argument the test cannot name"
        names.update(re.findall(r"\"(\w+)\"", loop.group(1)))
    if "self.keys_arg()" in source:
        names.add("keys")
    if "self.status_arg()" in source:
        names.add("status")
    if "self.list_page(" in source:
        names |= {"keys", "limit", "after"}
    return names


def test_query_parameters_are_the_ones_handlers_read(spec: dict[str, Any]) -> None:
    for pattern, handler in all_routes():
        documented = {
            p["name"] for verb in handler_methods(handler)
            for p in spec["paths"][template(pattern)][verb]["parameters"] if p["in"] == "query"
        }
        assert documented == read_arguments(handler), handler.__name__


def schema_of(spec: dict[str, Any], path: str, verb: str, name: str) -> dict[str, Any]:
    params = spec["paths"][path][verb]["parameters"]
    return next(p["schema"] for p in params if p["name"] == name)


def body_of(spec: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
    schema = spec["paths"][path][verb]["requestBody"]["content"]["application/json"]["schema"]
    return resolve(spec, schema["$ref"]) if "$ref" in schema else schema


def refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field), r.text


def test_operations_that_were_looser_document_what_is_enforced(
    spec: dict[str, Any], admin: httpx.Client, system: httpx.Client
) -> None:
    ds = create_dataset(admin, "physics", jobs=1, tasks_per_job=1)
    job = create_job(system, ds, 0)
    task = create_task(system, ds, job)

    # a task's status: a pilot's claim alone sets processing
    status = body_of(spec, "/datasets/{dataset_id}/tasks/{task_id}/status", "put")
    assert "processing" not in status["properties"]["status"]["enum"]
    refused(admin.put(f"/datasets/{ds}/tasks/{task}/status", json={"status": "processing"}),
            "status")
    # nor may the internal PATCH: a task processing with no pilot, fencing token or lease
    # would never be requeued
    patch = body_of(spec, "/tasks/{task_id}", "patch")
    assert "status" not in patch["properties"]
    refused(system.patch(f"/tasks/{task}", json={"status": "processing"}), "status")
    by_id = body_of(spec, "/tasks/{task_id}/status", "put")
    assert "processing" not in by_id["properties"]["status"]["enum"]
    refused(system.put(f"/tasks/{task}/status", json={"status": "processing"}), "status")
    assert system.get(f"/tasks/{task}").json()["status"] == "waiting"  # as created

    # bulk status: the path names a settable status
    bulk = "/datasets/{dataset_id}/task_actions/bulk_status/{status}"
    assert "processing" not in schema_of(spec, bulk, "post", "status")["enum"]
    assert "suspended" in schema_of(spec, bulk, "post", "status")["enum"]
    refused(admin.post(f"/datasets/{ds}/task_actions/bulk_status/processing",
                       json={"filter": {"status": ["waiting"]}}), "status")

    # a task's logs: order, num and group are declared with their rules
    logs = "/datasets/{dataset_id}/tasks/{task_id}/logs"
    assert schema_of(spec, logs, "get", "order")["enum"] == ["asc", "desc"]
    assert schema_of(spec, logs, "get", "num")["minimum"] == 1
    assert schema_of(spec, logs, "get", "group")["type"] == "boolean"
    refused(admin.get(f"/datasets/{ds}/tasks/{task}/logs", params={"order": "up"}), "order")
    refused(admin.get(f"/datasets/{ds}/tasks/{task}/logs", params={"num": 0}), "num")

    # list pages and a dataset's jobs: limit and job_index bounds
    assert schema_of(spec, "/datasets", "get", "limit")["minimum"] == 1
    refused(admin.get("/datasets", params={"limit": 0}), "limit")
    assert schema_of(spec, "/datasets/{dataset_id}/jobs", "get", "job_index")["minimum"] == 0
    refused(admin.get(f"/datasets/{ds}/jobs", params={"job_index": -1}), "job_index")

    # growing jobs_submitted has the same bound as creating
    grow = body_of(spec, "/datasets/{dataset_id}/jobs_submitted", "put")
    assert grow["properties"]["jobs_submitted"]["maximum"] == 100_000_000
    refused(admin.put(f"/datasets/{ds}/jobs_submitted", json={"jobs_submitted": 10**8 + 1}),
            "jobs_submitted")

    # a sub-token takes only the fields of its type
    token = body_of(spec, "/create_token", "post")
    share = next(b["then"] for b in token["allOf"] if b["if"]["properties"]["type"]["enum"]
                 == ["share"])
    assert share["required"] == ["dataset_id"] and "pilot_id" not in share["properties"]
    refused(admin.post("/create_token", json={"type": "share", "dataset_id": ds,
                                              "pilot_id": "0" * 32}), "pilot_id")
    refused(admin.post("/create_token", json={"type": "temp", "scope": "read:datasets nope"}),
            "scope")

    # a config's data entry needs remote or local
    data = resolve(spec, "#/components/schemas/dataset_config.data")
    assert data["anyOf"] == [{"required": ["remote"]}, {"required": ["local"]}]
    config = {"tasks": [{"name": "a", "steps": [{"command": "/bin/true"}],
                         "data": [{"movement": "input"}]}]}
    r = admin.put(f"/config/{ds}", json=config)
    assert r.status_code == 400 and r.json()["error"] == "tasks[0].data[0]: needs remote or local"

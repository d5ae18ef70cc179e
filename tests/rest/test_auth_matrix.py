"""The auth matrix: (method, route, role) -> status, for every route and every role.

Each cell runs against a fresh world (a dataset owned by alice with a config, a job, a task
claimed by the pilot, a queued task, a grid, a log, a stats record, a file and a stored
file; and, for the account routes, a fresh user, group and custom role), so cells never
depend on each other.
The matrix server's LDAP server is unreachable (``POST /ldap`` answers 503 to everyone) and
its token exchange trusts a provider key no test token is signed with."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, free_port, start_server
from tests.helpers import (
    claim,
    create_dataset,
    create_job,
    create_task,
    minimal_config,
    register_pilot,
)
from tests.oidc_provider import AUDIENCE, ISSUER, Provider

ROLES = ("anon", "owner", "other", "pilot", "system", "admin")
# expected status per role, in ROLES order
READ = (401, 200, 403, 403, 200, 200)
WRITE = READ
CREATED_BY_WRITER = (401, 201, 403, 403, 201, 201)
INTERNAL = (401, 403, 403, 403, 200, 200)
INTERNAL_CREATE = (401, 403, 403, 403, 201, 201)
PILOT_ACT = (401, 403, 403, 200, 200, 200)
PILOT_CREATE = (401, 403, 403, 201, 201, 201)
HOLDER = (401, 200, 403, 200, 200, 200)  # readers and writers, and the pilot holding a task
HOLDER_CREATE = (401, 201, 403, 201, 201, 201)
ANY_USER = (401, 200, 200, 403, 200, 200)
EVERYONE = (200,) * 6
ADMIN_ONLY = (401, 403, 403, 403, 403, 200)
ADMIN_CREATE = (401, 403, 403, 403, 403, 201)
LDAP_DOWN = (503,) * 6
EXTERNAL_TOKEN_ONLY = (401, 403, 403, 403, 403, 403)

MATRIX: list[tuple[str, str, Any, tuple[int, ...]]] = [
    ("GET", "/healthz", None, EVERYONE),
    ("GET", "/openapi.json", None, EVERYONE),
    ("GET", "/metrics", None, EVERYONE),
    ("GET", "/datasets", None, ANY_USER),
    ("POST", "/datasets", {"description": "d", "jobs_submitted": 1, "tasks_submitted": 1,
                           "tasks_per_job": 1, "group": "physics"}, CREATED_BY_WRITER),
    ("GET", "/datasets/{dataset_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/status", {"status": "suspended"}, WRITE),
    ("PUT", "/datasets/{dataset_id}/description", {"description": "new"}, WRITE),
    ("PUT", "/datasets/{dataset_id}/jobs_submitted", {"jobs_submitted": 3}, WRITE),
    ("GET", "/dataset_summaries/status", None, ANY_USER),
    ("GET", "/config/{dataset_id}", None, READ),
    ("PUT", "/config/{dataset_id}", minimal_config(["a", "b"]), WRITE),
    ("GET", "/datasets/{dataset_id}/jobs", None, READ),
    ("GET", "/datasets/{dataset_id}/jobs/{job_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/jobs/{job_id}/status", {"status": "suspended"}, WRITE),
    ("GET", "/datasets/{dataset_id}/job_summaries/status", None, READ),
    ("GET", "/datasets/{dataset_id}/job_counts/status", None, READ),
    ("POST", "/jobs", {"dataset_id": "{dataset_id}", "job_index": 7}, INTERNAL_CREATE),
    ("GET", "/jobs/{job_id}", None, INTERNAL),
    ("PATCH", "/jobs/{job_id}", {"priority": 2}, INTERNAL),
    ("GET", "/datasets/{dataset_id}/tasks", None, READ),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/tasks/{task_id}/status", {"status": "suspended"}, WRITE),
    ("GET", "/datasets/{dataset_id}/task_summaries/status", None, READ),
    ("GET", "/datasets/{dataset_id}/task_counts/status", None, READ),
    ("GET", "/datasets/{dataset_id}/task_counts/name_status", None, READ),
    ("POST", "/datasets/{dataset_id}/task_actions/bulk_status/suspended", {}, WRITE),
    ("PATCH", "/datasets/{dataset_id}/task_actions/bulk_requirements/a", {"memory": 2},
     WRITE),
    ("GET", "/datasets/{dataset_id}/task_stats", None, READ),
    ("GET", "/datasets/{dataset_id}/files", None, READ),
    ("POST", "/datasets/{dataset_id}/files", {"remote": "file:///tmp/x"}, CREATED_BY_WRITER),
    ("GET", "/datasets/{dataset_id}/files/{task_id}", None, READ),
    ("POST", "/datasets/{dataset_id}/files/{task_id}", {"remote": "file:///tmp/y"},
     CREATED_BY_WRITER),
    ("DELETE", "/datasets/{dataset_id}/files/{task_id}", None, WRITE),
    ("GET", "/datasets/{dataset_id}/store", None, HOLDER),
    ("GET", "/datasets/{dataset_id}/store/world.txt", None, HOLDER),
    ("PUT", "/datasets/{dataset_id}/store/new.txt", {"raw": "bytes"}, HOLDER_CREATE),
    ("DELETE", "/datasets/{dataset_id}/store/world.txt", None, WRITE),
    ("POST", "/tasks", {"dataset_id": "{dataset_id}", "job_id": "{job_id}", "task_index": 5,
                        "name": "extra"}, INTERNAL_CREATE),
    ("GET", "/tasks/{task_id}", None, PILOT_ACT),
    ("PATCH", "/tasks/{task_id}", {"priority": 3}, INTERNAL),
    ("POST", "/tasks/{task_id}/task_actions/complete", {"instance_id": "{instance_id}"},
     PILOT_ACT),
    ("POST", "/tasks/{task_id}/task_actions/reset", {"instance_id": "{instance_id}"},
     PILOT_ACT),
    ("POST", "/tasks/{task_id}/task_actions/failed", {"instance_id": "{instance_id}"},
     PILOT_ACT),
    ("POST", "/task_actions/queue", {"num_tasks": 10}, INTERNAL),
    ("POST", "/task_actions/process", {"requirements": {"cpu": 4, "memory": 8},
                                       "pilot_id": "{pilot_id}"}, PILOT_ACT),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}/task_stats", None, READ),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}/task_stats/{task_stat_id}", None, READ),
    ("POST", "/tasks/{task_id}/task_stats", {"dataset_id": "{dataset_id}", "stats": {"a": 1}},
     PILOT_CREATE),
    ("POST", "/datasets/{dataset_id}/logs", {"name": "stdout", "data": "hi"},
     CREATED_BY_WRITER),
    ("GET", "/datasets/{dataset_id}/logs/{log_id}", None, READ),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}/logs", None, READ),
    ("POST", "/logs", {"task_id": "{task_id}", "name": "stdlog", "data": "x"}, PILOT_CREATE),
    ("GET", "/logs/{log_id}", None, INTERNAL),
    ("GET", "/grids", None, ANY_USER),
    ("POST", "/grids", {"host": "submit.example.org"}, INTERNAL_CREATE),
    ("GET", "/grids/{grid_id}", None, ANY_USER),
    ("GET", "/pilots", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/pilots", {"queue_host": "h", "resources": {"cpu": 1}}, PILOT_CREATE),
    ("GET", "/pilots/{pilot_id}", None, (401, 200, 200, 200, 200, 200)),
    ("PATCH", "/pilots/{pilot_id}", {"resources_available": {"cpu": 1}}, PILOT_ACT),
    ("DELETE", "/pilots/{pilot_id}", None, PILOT_ACT),
    ("GET", "/roles", None, ANY_USER),
    ("GET", "/roles/{role_name}", None, ANY_USER),
    ("PUT", "/roles/{role_name}", {"scopes": ["read:datasets"]}, ADMIN_ONLY),
    ("DELETE", "/roles/{role_name}", None, ADMIN_ONLY),
    ("GET", "/groups", None, INTERNAL),
    ("POST", "/groups", {"name": "{new_name}"}, ADMIN_CREATE),
    ("GET", "/groups/{group_id}", None, INTERNAL),
    ("DELETE", "/groups/{group_id}", None, ADMIN_ONLY),
    ("GET", "/users", None, INTERNAL),
    ("POST", "/users", {"username": "{new_name}"}, ADMIN_CREATE),
    ("GET", "/users/{user_id}", None, INTERNAL),
    ("PATCH", "/users/{user_id}", {"orcid": "0000-0001-{new_name}"}, ADMIN_ONLY),
    ("DELETE", "/users/{user_id}", None, ADMIN_ONLY),
    ("GET", "/users/{user_id}/groups", None, INTERNAL),
    ("POST", "/users/{user_id}/groups", {"group": "{group_name}"}, ADMIN_ONLY),
    ("PUT", "/users/{user_id}/groups", {"groups": ["{group_name}"]}, ADMIN_ONLY),
    ("PUT", "/users/{user_id}/roles", {"roles": ["user", "{role_name}"]}, ADMIN_ONLY),
    ("POST", "/users/{user_id}/actions/revoke_tokens", None, ADMIN_ONLY),
    ("POST", "/ldap", {"username": "alice", "password": "secret"}, LDAP_DOWN),
    ("POST", "/create_token", {"type": "temp", "exp": 60}, ANY_USER),
    ("GET", "/token/alice", None, EXTERNAL_TOKEN_ONLY),
    ("GET", "/auths/{dataset_id}", None, READ),
    ("PUT", "/auths/{dataset_id}", {"read_groups": ["astro"]}, WRITE),
    ("GET", "/auths/{dataset_id}/actions/read", None, READ),
    ("GET", "/auths/{dataset_id}/actions/write", None, WRITE),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The matrix leaves many queued tasks behind, so it gets a server of its own."""
    data = tmp_path_factory.mktemp("matrix")
    provider = Provider(data)
    env = {
        "ICEPROD_LDAP_URI": f"ldap://127.0.0.1:{free_port()}",
        "ICEPROD_OIDC_ISSUER": ISSUER, "ICEPROD_OIDC_AUDIENCE": AUDIENCE,
        "ICEPROD_OIDC_PUBLIC_KEY_FILE": str(provider.key_file),
    }
    srv = start_server(data, env=env, args=["--only", "rest"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(server: Server) -> Iterator[dict[str, httpx.Client]]:
    tokens = {
        "owner": server.token("alice", ["user"], ["physics"]),
        "other": server.token("bob", ["user"], ["astro"]),
        "pilot": server.token("pilot-agent", ["pilot"]),
        "system": server.token("iceprod-system", ["system"]),
        "admin": server.token("root", ["admin"]),
    }
    cs = {"anon": server.client()}
    cs.update({role: server.client(tok) for role, tok in tokens.items()})
    yield cs
    for c in cs.values():
        c.close()


def build_world(c: dict[str, httpx.Client]) -> dict[str, str]:
    owner, system, pilot = c["owner"], c["system"], c["pilot"]
    ds = create_dataset(owner, "physics", jobs=2, tasks_per_job=2)
    assert owner.put(f"/config/{ds}", json=minimal_config(["a", "b"])).status_code == 200
    job = create_job(system, ds, 0)
    # cells leave queued tasks behind; only this world's task needs a GPU at this site
    site = f"world-{ds}"
    held = create_task(system, ds, job, 0, "a", status="queued",
                       requirements={"cpu": 1, "memory": 1, "gpu": 1, "site": site})
    create_task(system, ds, job, 1, "b", status="queued", priority=1,
                requirements={"cpu": 1, "memory": 1})
    pilot_id = register_pilot(pilot, cpu=4, memory=8)
    r = claim(pilot, pilot_id, cpu=4, memory=8, gpu=1, site=site)
    assert r.status_code == 200, r.text
    assert r.json()["task_id"] == held
    ids = {"dataset_id": ds, "job_id": job, "task_id": held, "pilot_id": pilot_id,
           "instance_id": r.json()["instance_id"]}
    r = system.post("/grids", json={"host": "grid.example.org"})
    ids["grid_id"] = r.json()["result"]
    r = system.post("/logs", json={"task_id": held, "name": "stdout", "data": "out"})
    ids["log_id"] = r.json()["result"]
    r = pilot.post(f"/tasks/{held}/task_stats", json={"dataset_id": ds, "stats": {"t": 1}})
    assert r.status_code == 201, r.text
    ids["task_stat_id"] = r.json()["result"]
    r = owner.put(f"/datasets/{ds}/store/world.txt", content=b"world")
    assert r.status_code == 201, r.text
    return ids


def build_accounts(admin: httpx.Client, path: str, body: Any) -> dict[str, str]:
    """A fresh user, group and custom role, for the cells whose route or body names them."""
    needs = path + json.dumps(body)
    suffix = uuid.uuid4().hex[:12]
    ids = {"new_name": f"n{suffix}", "role_name": f"r{suffix}", "group_name": f"g{suffix}"}
    if "{role_name}" in needs:
        r = admin.put(f"/roles/{ids['role_name']}", json={"scopes": ["read:grids"]})
        assert r.status_code == 200, r.text
    if "{group_" in needs:
        r = admin.post("/groups", json={"name": ids["group_name"]})
        assert r.status_code == 201, r.text
        ids["group_id"] = r.json()["result"]
    if "{user_id}" in needs:
        r = admin.post("/users", json={"username": f"u{suffix}"})
        assert r.status_code == 201, r.text
        ids["user_id"] = r.json()["result"]
    return ids


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


CELLS = [
    pytest.param(method, path, body, role, expected[i], id=f"{method} {path} {role}")
    for method, path, body, expected in MATRIX
    for i, role in enumerate(ROLES)
]


@pytest.mark.parametrize(("method", "path", "body", "role", "expected"), CELLS)
def test_cell(clients: dict[str, httpx.Client], method: str, path: str, body: Any,
              role: str, expected: int) -> None:
    ids = build_world(clients)
    ids.update(build_accounts(clients["admin"], path, body))
    r = clients[role].request(method, fill(path, ids),
                              json=fill(body, ids) if body is not None else None)
    assert r.status_code == expected, f"{method} {path} as {role}: {r.status_code} {r.text}"
    if expected >= 400:
        err = r.json()
        assert err["code"] == expected and err["error"]


def test_matrix_covers_every_route(clients: dict[str, httpx.Client]) -> None:
    spec = clients["anon"].get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = set()
    for method, path, _, _ in MATRIX:
        for template in spec["paths"]:
            if _matches(template, path):
                covered.add((method, template))
    assert documented - covered == set()


def _matches(template: str, path: str) -> bool:
    t, p = template.split("/"), path.split("/")
    return len(t) == len(p) and all(
        a == b or a.startswith("{") for a, b in zip(t, p, strict=True)
    )

"""The auth matrix: (method, route, caller) -> status, for every route of the route table
and every kind of caller. The expected statuses are written out here, not derived from the
code under test.

Callers (columns, in ``ROLES`` order):

- ``anon``: no token.
- ``owner``: alice (group physics), who submitted the dataset.
- ``member``: mark, in the dataset's group (physics) but not its owner: reads, never writes.
- ``reader``: rita (group readers), given a read rule only (``read_users``).
- ``other``: bob (group astro), with no rule on the dataset.
- ``share``: alice's read-only share token for the dataset.
- ``pilot``: a pilot holding the world's task (its token bound to it).
- ``otherpilot``: a live pilot that does not hold the task.
- ``lostpilot`` / ``deadpilot``: the tokens of a pilot marked lost / a deleted pilot.
- ``registrar``: a pilot token naming no pilot (it may only register one).
- ``grid``: a grid manager's token (role ``grid``): its grids, demand, and the pilots of grids.
- ``system``, ``admin``.

Each cell a caller is expected to pass runs against a fresh world (a dataset owned by alice
with a config and a read rule for rita, a job, a task claimed by the pilot, a queued task, a
grid, a log, a stats record and a stored file; and, for the account routes, a fresh user,
group and custom role), so cells never depend on each other. The cells of one row expected to
be refused share one fresh world: a refusal changes nothing (which is part of what they
check), and building a world per refusal would triple the matrix's run time. The matrix server's LDAP server is unreachable
(``POST /ldap`` answers 503 to everyone) and its token exchange trusts a provider key no
test token is signed with. A token that resolves to nobody (a dead pilot's) is refused with
401 on every route, public ones included, like any invalid token.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from iceprod.rest.app import all_routes
from iceprod.rest.openapi import handler_methods
from tests.conftest import BY_HAND, Server, free_port, start_server
from tests.helpers import create_dataset, create_job, create_task, minimal_config
from tests.oidc_provider import AUDIENCE, ISSUER, Provider

ROLES = ("anon", "owner", "member", "reader", "other", "share", "pilot", "otherpilot",
         "lostpilot", "deadpilot", "registrar", "grid", "system", "admin")
# expected status per caller, in ROLES order:
#                      anon own  memb read oth  shr  plt  opl  lost dead reg  grid sys  admin
READ = (               401, 200, 200, 200, 403, 200, 403, 403, 401, 401, 403, 403, 200, 200)
WRITE = (              401, 200, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 200, 200)
WRITE_NEW = (          401, 201, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 201, 201)
SUBMIT = (             401, 201, 201, 403, 403, 403, 403, 403, 401, 401, 403, 403, 201, 201)
LIST_READABLE = (      401, 200, 200, 200, 200, 200, 403, 403, 401, 401, 403, 403, 200, 200)
USERS = (              401, 200, 200, 200, 200, 403, 403, 403, 401, 401, 403, 403, 200, 200)
INTERNAL = (           401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 200, 200)
INTERNAL_NEW = (       401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 201, 201)
PILOT_ACT = (          401, 403, 403, 403, 403, 403, 200, 403, 401, 401, 403, 403, 200, 200)
PILOT_NEW = (          401, 403, 403, 403, 403, 403, 201, 403, 401, 401, 403, 403, 201, 201)
HOLDER = (             401, 200, 200, 200, 403, 200, 200, 403, 401, 401, 403, 403, 200, 200)
HOLDER_NEW = (         401, 201, 403, 403, 403, 403, 201, 403, 401, 401, 403, 403, 201, 201)
REGISTER = (           401, 403, 403, 403, 403, 403, 409, 409, 401, 401, 201, 201, 201, 201)
PILOT_LIST = (         401, 200, 200, 200, 200, 403, 200, 200, 401, 401, 403, 200, 200, 200)
PILOT_DOC = (          401, 200, 200, 200, 200, 403, 200, 403, 401, 401, 403, 200, 200, 200)
EVERYONE = (           200, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200, 200)
ADMIN_ONLY = (         401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 403, 200)
ADMIN_NEW = (          401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 403, 201)
LDAP_DOWN = (          503, 503, 503, 503, 503, 503, 503, 503, 401, 401, 503, 503, 503, 503)
GRIDS_READ = (         401, 200, 200, 200, 200, 403, 403, 403, 401, 401, 403, 200, 200, 200)
GRIDS_WRITE = (        401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 200, 200, 200)
GRIDS_NEW = (          401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 201, 201, 201)
GRID_MANAGER = (       401, 403, 403, 403, 403, 403, 403, 403, 401, 401, 403, 200, 200, 200)
# a pilot registered by a grid manager: a bound pilot token may not register another (409),
# a registration token may not set the grid's fields (403)
GRID_REGISTER = (      401, 403, 403, 403, 403, 403, 409, 409, 401, 401, 403, 201, 201, 201)
# a project naming alice and rita, and group physics (so mark), as members
PROJECT_READ = (       401, 200, 200, 200, 403, 403, 403, 403, 401, 401, 403, 403, 200, 200)
SELF_BILL = (          401, 200, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 200, 200)
GROUP_BILL = (         401, 200, 200, 403, 403, 403, 403, 403, 401, 401, 403, 403, 200, 200)
# `/` for an API client (a browser is redirected to the dashboard): the 404 it always was
ROOT_API = (           404, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404, 404, 404, 404)
# deleting one's own batches: anyone who may change datasets (a share token may not)
DELETE_OWN = (         401, 200, 200, 200, 200, 403, 403, 403, 401, 401, 403, 403, 200, 200)
OWN_KEYS = (           401, 200, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 403, 200)
OWN_KEYS_NEW = (       401, 201, 403, 403, 403, 403, 403, 403, 401, 401, 403, 403, 403, 201)
EXTERNAL_TOKEN_ONLY = (401, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403)

FORM = "form"
"""A body ``{FORM: fields}`` is sent as an urlencoded form (DRMAAtic's ``POST /task``)."""

MATRIX: list[tuple[str, str, Any, tuple[int, ...]]] = [
    ("GET", "/healthz", None, EVERYONE),
    ("GET", "/openapi.json", None, EVERYONE),
    ("GET", "/metrics", None, EVERYONE),
    ("GET", "/datasets", None, LIST_READABLE),
    ("POST", "/datasets", {"description": "d", "jobs_submitted": 1, "tasks_submitted": 1,
                           "tasks_per_job": 1, "group": "physics"}, SUBMIT),
    ("GET", "/datasets/{dataset_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/status", {"status": "suspended"}, WRITE),
    ("PUT", "/datasets/{dataset_id}/priority", {"priority": 0.7}, WRITE),
    ("PUT", "/datasets/{dataset_id}/description", {"description": "new"}, WRITE),
    ("PUT", "/datasets/{dataset_id}/jobs_submitted", {"jobs_submitted": 3}, WRITE),
    ("GET", "/dataset_summaries/status", None, LIST_READABLE),
    ("GET", "/config/{dataset_id}", None, READ),
    ("PUT", "/config/{dataset_id}", minimal_config(["a", "b"]), WRITE),
    ("GET", "/datasets/{dataset_id}/jobs", None, READ),
    ("GET", "/datasets/{dataset_id}/jobs/{job_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/jobs/{job_id}/status", {"status": "suspended"}, WRITE),
    ("POST", "/datasets/{dataset_id}/job_actions/bulk_status/suspended",
     {"jobs": ["{job_id}"]}, WRITE),
    ("GET", "/datasets/{dataset_id}/job_summaries/status", None, READ),
    ("GET", "/datasets/{dataset_id}/job_counts/status", None, READ),
    ("POST", "/jobs", {"dataset_id": "{dataset_id}", "job_index": 7}, INTERNAL_NEW),
    ("GET", "/jobs/{job_id}", None, INTERNAL),
    ("PATCH", "/jobs/{job_id}", {"priority": 2}, INTERNAL),
    ("GET", "/datasets/{dataset_id}/tasks", None, READ),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}", None, READ),
    ("PUT", "/datasets/{dataset_id}/tasks/{task_id}/status", {"status": "suspended"}, WRITE),
    ("GET", "/datasets/{dataset_id}/task_summaries/status", None, READ),
    ("GET", "/datasets/{dataset_id}/task_counts/status", None, READ),
    ("GET", "/datasets/{dataset_id}/task_counts/name_status", None, READ),
    ("POST", "/datasets/{dataset_id}/task_actions/bulk_status/suspended",
     {"filter": {"status": ["waiting", "queued"]}}, WRITE),
    ("PATCH", "/datasets/{dataset_id}/task_actions/bulk_requirements/a", {"memory": 2},
     WRITE),
    ("GET", "/datasets/{dataset_id}/task_stats", None, READ),
    ("GET", "/datasets/{dataset_id}/bulk/task_stats", None, READ),
    ("GET", "/datasets/{dataset_id}/files", None, READ),
    ("POST", "/datasets/{dataset_id}/files", {"filename": "file:///tmp/x"}, WRITE_NEW),
    ("GET", "/datasets/{dataset_id}/files/{task_id}", None, READ),
    ("POST", "/datasets/{dataset_id}/files/{task_id}", {"remote": "file:///tmp/y"},
     WRITE_NEW),
    ("DELETE", "/datasets/{dataset_id}/files/{task_id}", None, WRITE),
    ("GET", "/datasets/{dataset_id}/store", None, HOLDER),
    ("GET", "/datasets/{dataset_id}/store/world.txt", None, HOLDER),
    ("PUT", "/datasets/{dataset_id}/store/new.txt", {"raw": "bytes"}, HOLDER_NEW),
    ("DELETE", "/datasets/{dataset_id}/store/world.txt", None, WRITE),
    ("POST", "/tasks", {"dataset_id": "{dataset_id}", "job_id": "{job_id}", "task_index": 5,
                        "name": "extra"}, INTERNAL_NEW),
    ("GET", "/tasks", None, INTERNAL),
    ("GET", "/tasks/{task_id}", None, HOLDER),
    ("PUT", "/tasks/{task_id}/status", {"status": "suspended"}, INTERNAL),
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
     PILOT_NEW),
    ("POST", "/datasets/{dataset_id}/logs", {"name": "stdout", "data": "hi"}, WRITE_NEW),
    ("GET", "/datasets/{dataset_id}/logs/{log_id}", None, READ),
    ("GET", "/datasets/{dataset_id}/tasks/{task_id}/logs", None, READ),
    ("POST", "/logs", {"task_id": "{task_id}", "name": "stdlog", "data": "x"}, PILOT_NEW),
    ("GET", "/logs/{log_id}", None, INTERNAL),
    ("GET", "/grids", None, GRIDS_READ),
    ("POST", "/grids", {"host": "submit.example.org"}, GRIDS_NEW),
    ("GET", "/grids/{grid_id}", None, GRIDS_READ),
    ("PUT", "/grids/{grid_id}", {"host": "h2", "isolation": "batch"}, GRIDS_WRITE),
    ("PATCH", "/grids/{grid_id}", {"version": "2"}, GRIDS_WRITE),
    ("GET", "/task_demand", None, GRID_MANAGER),
    # every reader may poll (or stream) it: it carries only what they may read
    ("GET", "/events", None, LIST_READABLE),
    ("GET", "/pilots", None, PILOT_LIST),
    ("POST", "/pilots", {"queue_host": "h", "resources": {"cpu": 1}}, REGISTER),
    ("GET", "/pilots/{pilot_id}", None, PILOT_DOC),
    ("PATCH", "/pilots/{pilot_id}", {"resources_available": {"cpu": 1}}, PILOT_ACT),
    ("DELETE", "/pilots/{pilot_id}", None, PILOT_ACT),
    ("POST", "/pilots", {"status": "submitted", "grid_id": "{grid_id}", "grid_name": "g",
                         "resources": {"cpu": 1}, "token_seconds": 600}, GRID_REGISTER),
    ("PATCH", "/pilots/{grid_pilot_id}", {"status": "lost", "reason": "gone"}, GRID_MANAGER),
    ("DELETE", "/pilots/{grid_pilot_id}", None, GRID_MANAGER),
    ("GET", "/roles", None, USERS),
    ("GET", "/roles/{role_name}", None, USERS),
    ("PUT", "/roles/{role_name}", {"scopes": ["read:datasets"]}, ADMIN_ONLY),
    ("DELETE", "/roles/{role_name}", None, ADMIN_ONLY),
    ("GET", "/groups", None, INTERNAL),
    ("POST", "/groups", {"name": "{new_name}"}, ADMIN_NEW),
    ("GET", "/groups/{group_id}", None, INTERNAL),
    ("DELETE", "/groups/{group_id}", None, ADMIN_ONLY),
    ("GET", "/users", None, INTERNAL),
    ("POST", "/users", {"username": "{new_name}"}, ADMIN_NEW),
    ("GET", "/users/{user_id}", None, INTERNAL),
    ("PATCH", "/users/{user_id}", {"orcid": "0000-0001-{new_name}"}, ADMIN_ONLY),
    ("DELETE", "/users/{user_id}", None, ADMIN_ONLY),
    ("GET", "/users/{user_id}/groups", None, INTERNAL),
    ("POST", "/users/{user_id}/groups", {"group": "{group_name}"}, ADMIN_ONLY),
    ("PUT", "/users/{user_id}/groups", {"groups": ["{group_name}"]}, ADMIN_ONLY),
    ("PUT", "/users/{user_id}/roles", {"roles": ["user", "{role_name}"]}, ADMIN_ONLY),
    ("POST", "/users/{user_id}/actions/revoke_tokens", None, ADMIN_ONLY),
    ("POST", "/ldap", {"username": "alice", "password": "secret"}, LDAP_DOWN),
    ("POST", "/create_token", {"type": "temp", "exp": 60}, USERS),
    ("GET", "/token/alice", None, EXTERNAL_TOKEN_ONLY),
    ("GET", "/auths/{dataset_id}", None, READ),
    ("PUT", "/auths/{dataset_id}", {"read_groups": ["astro"]}, WRITE),
    ("GET", "/auths/{dataset_id}/actions/read", None, READ),
    ("GET", "/auths/{dataset_id}/actions/write", None, WRITE),
    ("GET", "/audit", None, ADMIN_ONLY),
    ("GET", "/datasets/{dataset_id}/audit", None, READ),
    ("GET", "/admin/maintenance", None, ADMIN_ONLY),
    # a node no pilot of the matrix runs at, switched off: no other cell is disturbed
    ("POST", "/admin/maintenance/matrix-nowhere/off", {"message": "m"}, ADMIN_ONLY),
    ("GET", "/tasks/{task_id}/explain", None, READ),
    ("GET", "/datasets/{dataset_id}/explain", None, READ),
    ("GET", "/projects", None, USERS),
    ("POST", "/projects", {"name": "{new_name}", "users": ["alice"]}, ADMIN_NEW),
    ("GET", "/projects/{project}", None, PROJECT_READ),
    ("PUT", "/projects/{project}", {"description": "d"}, ADMIN_ONLY),
    ("DELETE", "/projects/{project}", None, ADMIN_ONLY),
    ("GET", "/projects/{project}/quota", None, PROJECT_READ),
    ("PUT", "/projects/{project}/quota", {"cores": 8}, ADMIN_ONLY),
    ("GET", "/projects/{project}/usage", None, PROJECT_READ),
    ("GET", "/projects/{project}/billing/2026/11", None, PROJECT_READ),
    ("GET", "/usage", None, USERS),
    ("GET", "/users/alice/billing/2026/11", None, SELF_BILL),
    ("GET", "/groups/physics/billing/2026/11", None, GROUP_BILL),
    ("GET", "/billing/rates", None, USERS),
    ("PUT", "/billing/rates", {"currency": "EUR"}, ADMIN_ONLY),
    ("POST", "/archive", {"older_than_days": 0, "dry_run": True}, ADMIN_ONLY),
    ("GET", "/", None, ROOT_API),
    ("GET", "/ui/", None, EVERYONE),
    ("GET", "/ui/static/app.js", None, EVERYONE),
    ("GET", "/dataset_overview", None, LIST_READABLE),
    ("GET", "/datasets/{dataset_id}/task_plots", None, READ),
    ("POST", "/config_check", {"text": "[]"}, USERS),
    # the dialects (docs/dialects/): a world's script is for group physics; its DRMAAtic
    # task is alice's, readable by rita and by a share token for it
    ("GET", "/script", None, LIST_READABLE),
    ("GET", "/script/{script}", None, LIST_READABLE),
    ("PUT", "/script/{script}", {"command": "/bin/true"}, INTERNAL),
    ("DELETE", "/script/{script}", None, INTERNAL),
    ("POST", "/task", {FORM: {"task_name": "{script}", "n": "2"}}, SUBMIT),
    ("POST", "/task/", {FORM: {"task_name": "{script}"}}, SUBMIT),
    ("GET", "/task/{uuid}", None, READ),
    ("DELETE", "/task/{uuid}", None, WRITE),
    ("GET", "/task/{uuid}/file", None, READ),
    ("GET", "/task/{uuid}/download", None, READ),
    ("GET", "/batches", None, LIST_READABLE),
    ("POST", "/batches", {"tool_id": "{script}", "n_jobs": 2}, SUBMIT),
    ("DELETE", "/batches", None, DELETE_OWN),
    ("GET", "/batches/{batch_id}", None, READ),
    ("DELETE", "/batches/{batch_id}", None, WRITE),
    ("GET", "/batches/{batch_id}/jobs", None, READ),
    ("GET", "/batches/{batch_id}/jobs/{batch_job_id}", None, READ),
    # API keys: a user manages its own (with an unscoped token), an admin anyone's
    ("GET", "/users/alice/apikeys", None, OWN_KEYS),
    ("POST", "/users/alice/apikeys", {"name": "{new_name}"}, OWN_KEYS_NEW),
    ("DELETE", "/users/alice/apikeys/{key_name}", None, OWN_KEYS),
    ("GET", "/users/{user_id}/apikeys", None, ADMIN_ONLY),
    ("POST", "/users/{user_id}/apikeys", {"name": "{new_name}"}, ADMIN_NEW),
    ("DELETE", "/users/{user_id}/apikeys/{key_name}", None, ADMIN_ONLY),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The matrix leaves many queued tasks behind, so it gets a server of its own."""
    data = tmp_path_factory.mktemp("matrix")
    provider = Provider(data)
    env = {
        "ICEPROD_LDAP_URI": f"ldap://127.0.0.1:{free_port()}",
        "ICEPROD_OIDC_ISSUER": ISSUER, "ICEPROD_OIDC_AUDIENCE": AUDIENCE,
        "ICEPROD_OIDC_PUBLIC_KEY_FILE": str(provider.key_file), **BY_HAND,
    }
    srv = start_server(data, env=env, args=["--only", "rest"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """One connection; each request carries its caller's token."""
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def setup(server: Server, tokens: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    """The clients that build worlds."""
    with server.client(tokens["owner"]) as alice, server.client(tokens["system"]) as system, \
            server.client(tokens["admin"]) as admin:
        yield {"alice": alice, "system": system, "admin": admin}


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def register(http: httpx.Client, registrar: str) -> tuple[str, str]:
    """A new pilot registered with a registration token: its id and bound token."""
    r = http.post("/pilots", json={"queue_host": "h", "resources": {"cpu": 4, "memory": 8}},
                  headers=bearer(registrar))
    assert r.status_code == 201, r.text
    return r.json()["result"], r.json()["token"]


@pytest.fixture(scope="module")
def tokens(server: Server, http: httpx.Client) -> dict[str, str]:
    """The callers that are the same in every world. The other, lost and dead pilots stay
    what they are whatever a cell does (no cell names them)."""
    out = {
        "owner": server.token("alice", ["user"], ["physics"]),
        "member": server.token("mark", ["user"], ["physics"]),
        "reader": server.token("rita", ["user"], ["readers"]),
        "other": server.token("bob", ["user"], ["astro"]),
        "registrar": server.token("pilot-registrar", ["pilot"]),
        "grid": server.token("grid-manager", ["grid"]),
        "system": server.token("iceprod-system", ["system"]),
        "admin": server.token("root", ["admin"]),
    }
    admin = bearer(out["admin"])
    _, out["otherpilot"] = register(http, out["registrar"])
    lost_id, out["lostpilot"] = register(http, out["registrar"])
    r = http.patch(f"/pilots/{lost_id}", json={"status": "lost"}, headers=admin)
    assert r.status_code == 200, r.text
    dead_id, out["deadpilot"] = register(http, out["registrar"])
    assert http.delete(f"/pilots/{dead_id}", headers=admin).status_code == 200
    return out


def build_world(server: Server, http: httpx.Client, setup: dict[str, httpx.Client],
                tokens: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A fresh world: its ids, and the tokens of its own callers (share, pilot)."""
    alice, sys_c = setup["alice"], setup["system"]
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=2)
    assert alice.put(f"/config/{ds}", json=minimal_config(["a", "b"])).status_code == 200
    r = alice.put(f"/auths/{ds}", json={"read_users": ["alice", "rita"]})
    assert r.status_code == 200, r.text
    job = create_job(sys_c, ds, 0)
    # cells leave queued tasks behind; only this world's task needs a GPU at this site
    site = f"world-{ds}"
    held = create_task(sys_c, ds, job, 0, "a", status="queued",
                       requirements={"cpu": 1, "memory": 1, "gpu": 1, "site": site})
    create_task(sys_c, ds, job, 1, "b", status="queued", priority=1,
                requirements={"cpu": 1, "memory": 1})
    pilot_id, pilot = register(http, tokens["registrar"])
    r = http.post("/task_actions/process", headers=bearer(pilot), json={
        "requirements": {"cpu": 4, "memory": 8, "gpu": 1, "site": site}, "pilot_id": pilot_id})
    assert r.status_code == 200, r.text
    assert r.json()["task_id"] == held
    ids = {"dataset_id": ds, "job_id": job, "task_id": held, "pilot_id": pilot_id,
           "instance_id": r.json()["instance_id"]}
    r = sys_c.post("/grids", json={"host": "grid.example.org"})
    ids["grid_id"] = r.json()["result"]
    r = sys_c.post("/pilots", json={"status": "submitted", "grid_id": ids["grid_id"],
                                    "resources": {"cpu": 1}})
    assert r.status_code == 201, r.text
    ids["grid_pilot_id"] = r.json()["result"]
    r = sys_c.post("/logs", json={"task_id": held, "name": "stdout", "data": "out"})
    ids["log_id"] = r.json()["result"]
    r = http.post(f"/tasks/{held}/task_stats", json={"dataset_id": ds, "stats": {"t": 1}},
                  headers=bearer(pilot))
    assert r.status_code == 201, r.text
    ids["task_stat_id"] = r.json()["result"]
    r = alice.put(f"/datasets/{ds}/store/world.txt", content=b"world")
    assert r.status_code == 201, r.text
    share = server.token("alice", ["user"], ["physics"], scope=f"dataset:{ds}:read")
    return ids, {"pilot": pilot, "share": share}


def build_accounts(admin: httpx.Client, path: str, body: Any) -> dict[str, str]:
    """A fresh user, group and custom role, for the cells whose route or body names them."""
    needs = path + json.dumps(body)
    suffix = uuid.uuid4().hex[:12]
    ids = {"new_name": f"n{suffix}", "role_name": f"r{suffix}", "group_name": f"g{suffix}",
           "project": f"p{suffix}"}
    if "{project}" in needs:
        r = admin.post("/projects", json={"name": ids["project"], "users": ["alice", "rita"],
                                          "groups": ["physics"]})
        assert r.status_code == 201, r.text
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


def build_dialects(server: Server, alice: httpx.Client, admin: httpx.Client, path: str,
                   body: Any, accounts: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A fresh catalog entry (for group physics) and, when the cell names one, a DRMAAtic
    task or a batch of alice's that rita may read, with a share token for it; or an API key
    of the user the cell names (alice, or the fresh account)."""
    needs = path + json.dumps(body)
    ids: dict[str, str] = {}
    own: dict[str, str] = {}
    if path.startswith("/users/alice/"):  # alice's record, for an admin acting on it
        r = admin.post("/users", json={"username": "alice"})
        assert r.status_code in (201, 409), r.text
    if "{key_name}" in needs:
        ids["key_name"] = f"k{uuid.uuid4().hex[:12]}"
        user = accounts.get("user_id", "alice") if "{user_id}" in path else "alice"
        client = admin if "{user_id}" in path else alice
        r = client.post(f"/users/{user}/apikeys", json={"name": ids["key_name"]})
        assert r.status_code == 201, r.text
    if "{script}" not in needs and "{uuid}" not in needs and "{batch_" not in needs:
        return ids, own
    ids["script"] = f"s{uuid.uuid4().hex[:12]}"
    r = admin.put(f"/script/{ids['script']}", json={
        "command": "/bin/echo", "args": ["$(param.n)"], "groups": ["physics"],
        "param": [{"name": "n", "type": "int", "default": 1}]})
    assert r.status_code == 200, r.text
    if "{uuid}" in needs:
        r = alice.post("/task", data={"task_name": ids["script"]})
        assert r.status_code == 201, r.text
        ids["uuid"] = r.json()["uuid"]
        r = alice.put(f"/auths/{ids['uuid']}", json={"read_users": ["alice", "rita"]})
        assert r.status_code == 200, r.text
        own["share"] = server.token("alice", ["user"], ["physics"],
                                    scope=f"dataset:{ids['uuid']}:read")
    if "{batch_" in needs:
        r = alice.post("/batches", json={"tool_id": ids["script"], "n_jobs": 2})
        assert r.status_code == 201, r.text
        ids["batch_id"] = r.json()["batch_id"]
        ids["batch_job_id"] = alice.get(f"/batches/{ids['batch_id']}/jobs").json()[1]["job_id"]
        r = alice.put(f"/auths/{ids['batch_id']}", json={"read_users": ["alice", "rita"]})
        assert r.status_code == 200, r.text
        own["share"] = server.token("alice", ["user"], ["physics"],
                                    scope=f"dataset:{ids['batch_id']}:read")
    return ids, own


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


CELLS = [
    pytest.param(row, method, path, body, role, expected[i], id=f"{method} {path} {role}")
    for row, (method, path, body, expected) in enumerate(MATRIX)
    for i, role in enumerate(ROLES)
]
World = tuple[dict[str, str], dict[str, str]]


@pytest.fixture(scope="module")
def refusal_worlds() -> dict[int, World]:
    """Per row, the world its refused cells share."""
    return {}


@pytest.mark.parametrize(("row", "method", "path", "body", "role", "expected"), CELLS)
def test_cell(server: Server, http: httpx.Client, setup: dict[str, httpx.Client],
              tokens: dict[str, str], refusal_worlds: dict[int, World], row: int, method: str,
              path: str, body: Any, role: str, expected: int) -> None:
    def fresh() -> World:
        ids, own = build_world(server, http, setup, tokens)
        ids.update(build_accounts(setup["admin"], path, body))
        more_ids, more_own = build_dialects(server, setup["alice"], setup["admin"], path, body,
                                            ids)
        return {**ids, **more_ids}, {**own, **more_own}

    if expected < 300:
        ids, own = fresh()
    else:
        if row not in refusal_worlds:
            refusal_worlds[row] = fresh()
        ids, own = refusal_worlds[row]
    callers = {**tokens, **own}
    if isinstance(body, dict) and FORM in body:
        r = http.request(method, fill(path, ids), data=fill(body[FORM], ids),
                         headers=bearer(callers.get(role)))
    else:
        r = http.request(method, fill(path, ids),
                         json=fill(body, ids) if body is not None else None,
                         headers=bearer(callers.get(role)))
    assert r.status_code == expected, f"{method} {path} as {role}: {r.status_code} {r.text}"
    if expected >= 400:
        err = r.json()
        assert err["code"] == expected and err["error"]


def test_every_row_has_a_status_per_caller() -> None:
    assert all(len(expected) == len(ROLES) for _, _, _, expected in MATRIX)


SAMPLE = {"dataset_id": "d" * 32, "job_id": "b" * 32, "task_id": "c" * 32,
          "pilot_id": "e" * 32, "grid_pilot_id": "5" * 32, "instance_id": "f" * 32, "grid_id": "a" * 32,
          "log_id": "1" * 32, "task_stat_id": "2" * 32, "user_id": "3" * 32,
          "group_id": "4" * 32, "role_name": "role", "group_name": "group", "new_name": "n",
          "project": "p", "year": "2026", "month": "11",
          "script": "s", "uuid": "6" * 32, "batch_id": "7" * 32, "batch_job_id": "8" * 32,
          "key_name": "k"}


def test_matrix_covers_every_route_of_the_route_table() -> None:
    """Every (verb, route) the server serves has a row, and every row names a served one."""
    served = {(verb.upper(), pattern) for pattern, handler in all_routes()
              for verb in handler_methods(handler)}
    covered = set()
    for method, path, _, _ in MATRIX:
        concrete = fill(path, SAMPLE)
        hits = {(method, p) for m, p in served
                if m == method and re.fullmatch(p, concrete)}
        assert hits, f"{method} {path}: no such route"
        covered |= hits
    assert served - covered == set(), "routes without a row in the auth matrix"

"""Fuzz every operation of ``/openapi.json`` with schemathesis against a real server.

A dedicated server (its own data dir, so the junk the fuzzer creates touches no other test)
is seeded with real ids: a dataset with a config, jobs, tasks, a pilot, a grid, a user, a
group, a role, a log, a stats record and a stored file. Half of each operation's cases use
those ids as path parameters so requests get past the lookups into the handlers; the other
half use generated ids. Most requests carry an admin token, every fourth a plain user's.

The run is seeded (hypothesis ``derandomize``; note that hypothesis also draws constants
from the modules already imported, so a run inside the whole suite generates other, equally
fixed, cases than a run of this file alone) and bounded: ``EXAMPLES`` cases for each mode
of each operation, about 1,000 requests in all. Every response must be a documented status
with a documented content type and, for errors, the documented error body; none may be 5xx.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import GenerationConfig, ProjectConfig, ProjectsConfig
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Server, start_server
from tests.helpers import create_job, create_task, minimal_config, register_pilot, submit

EXAMPLES = 6
"""Cases per operation and generation mode."""
USER_SHARE = 4
"""Every USER_SHARE-th request goes as the plain user instead of admin."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, positive_data_acceptance]
RELATIONAL = (
    # 400s for input the document allows but that contradicts stored state or another field:
    # rules a JSON Schema cannot state. positive_data_acceptance may fail only with these.
    "after: not a valid cursor",
    "tasks_submitted: must equal jobs_submitted * tasks_per_job",
    "dataset_id: the task belongs to another dataset",
    "task_id: the task belongs to another dataset",
    "job_id: the job belongs to another dataset",
    "group: unknown group", "groups: unknown group", "roles: unknown role",
    "tasks: the dataset has tasks_per_job=",
    "jobs_submitted: may only grow",
    "malformed parameter expression", "unknown parameter", "unknown task", "dependency cycle",
    "duplicate task name", "cannot depend on itself",
    "grid_id: no such grid", "a grid registers its pilots with status submitted and its grid_id",
)


@dataclass
class Seeded:
    """The server under test, the ids the fuzzer substitutes, and the tokens it uses."""

    server: Server
    ids: dict[str, str]
    admin: str
    user: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    srv = start_server(tmp_path_factory.mktemp("fuzz"), args=["--only", "rest"])
    try:
        yield seed(srv, Path(srv.data_dir))
    finally:
        srv.stop()


def seed(srv: Server, data_dir: Path) -> Seeded:
    admin_token = srv.token("root", ["admin"])
    user_token = srv.token("fuzzuser", ["user"], ["fuzzers"])
    admin = srv.client(admin_token)
    system = srv.client(srv.token("iceprod-system", ["system"]))
    ok = _ok
    ok(admin.post("/groups", json={"name": "fuzzers"}))
    ok(admin.post("/users", json={"username": "fuzzuser", "groups": ["fuzzers"]}))
    # the records the user and group routes change, revoke and delete: not the fuzzing user's
    group_id = ok(admin.post("/groups", json={"name": "victims"}))["result"]
    user_id = ok(admin.post("/users", json={"username": "victim", "groups": ["victims"]}))[
        "result"]
    ok(admin.put("/roles/fuzzrole", json={"scopes": ["read:datasets"]}))
    dataset_id = submit(admin, minimal_config(["gen", "proc"]), jobs=2, group="fuzzers")
    job_id = create_job(system, dataset_id, 0)
    task_id = create_task(system, dataset_id, job_id, 0, "gen")
    create_task(system, dataset_id, job_id, 1, "proc")
    pilot_id = register_pilot(admin, cpu=4, memory=8.0)
    grid_id = ok(admin.post("/grids", json={"host": "fuzz.example"}))["result"]
    log_id = ok(admin.post(f"/datasets/{dataset_id}/logs",
                           json={"task_id": task_id, "name": "stdout", "data": "hi"}))["result"]
    stat_id = ok(system.post(f"/tasks/{task_id}/task_stats",
                             json={"dataset_id": dataset_id, "stats": {"walltime": 1}}))["result"]
    ok(admin.put(f"/datasets/{dataset_id}/store/input.txt", content=b"data"))
    ids = {
        "dataset_id": dataset_id, "job_id": job_id, "task_id": task_id, "pilot_id": pilot_id,
        "grid_id": grid_id, "user_id": user_id, "group_id": group_id, "log_id": log_id,
        "task_stat_id": stat_id, "role_name": "fuzzrole", "name": "input.txt",
        "status": "suspended", "username": "victim",
    }
    return Seeded(srv, ids, admin_token, user_token)


def relational(response: requests.Response) -> bool:
    """A 400 for a rule between fields or against stored state (see RELATIONAL)."""
    if response.status_code != 400:
        return False
    error = response.json().get("error", "")
    return any(rule in error for rule in RELATIONAL)


def _ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), r.text
    return r.json()


def _order(label: str) -> tuple[int, str]:
    """Deletions last, so the seeded records exist for every other operation."""
    return (label.startswith("DELETE"), label)


# its time grows with the number of operations (103 with issue 16's routes: ~90 s on an idle
# 2-core machine), so it gets more than the suite's 120 s default
@pytest.mark.timeout(240)
def test_openapi_fuzz_finds_no_server_errors(seeded: Seeded) -> None:
    # the fuzzer's own bearer token goes on every request: no generated (or dropped)
    # Authorization header, so invalid bodies and parameters reach the handlers' checks
    generation = GenerationConfig(with_security_parameters=False)
    config = schemathesis.Config(projects=ProjectsConfig(default=ProjectConfig(
        generation=generation)))
    schema = schemathesis.openapi.from_url(seeded.server.url + "/openapi.json", config=config)
    operations = sorted((r.ok() for r in schema.get_all_operations()),
                        key=lambda op: _order(op.label))
    assert len(operations) > 60
    session = requests.Session()
    started = time.monotonic()
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(seeded, operation, mode, session)
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {seeded.requests} requests over {len(operations)} operations in "
          f"{elapsed:.1f}s; statuses {dict(sorted(seeded.statuses.items()))}")
    assert not seeded.failures, "\n".join(seeded.failures[:20])
    assert seeded.requests >= 4 * len(operations)


def fuzz(seeded: Seeded, operation: Any, mode: Any, session: requests.Session) -> None:
    names = [p.name for p in operation.path_parameters]
    real = {n: seeded.ids[n] for n in names if n in seeded.ids}
    strategy = st.one_of(operation.as_strategy(generation_mode=mode, path_parameters=real),
                         operation.as_strategy(generation_mode=mode))

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        seeded.requests += 1
        as_user = seeded.requests % USER_SHARE == 0
        token = seeded.user if as_user else seeded.admin
        headers = {"Authorization": f"Bearer {token}"}
        response = case.call(base_url=seeded.server.url, session=session, headers=headers,
                             timeout=30)
        seeded.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as e:  # keep going: report them all
            found = list(e.exceptions) if isinstance(e, BaseExceptionGroup) else [e]
            real = [f for f in found
                    if not (isinstance(f, RejectedPositiveData) and relational(response))]
            if real:
                seeded.failures.append(
                    f"{operation.label} as {'user' if as_user else 'admin'}: "
                    f"{response.status_code} {response.text[:200]!r}: "
                    + "; ".join(type(f).__name__ for f in real))

    try:
        run()
    except Unsatisfiable:
        # nothing in the operation can be made invalid (no parameters, no body)
        assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label

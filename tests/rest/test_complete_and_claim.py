"""A completion that claims the next work in the same request (`claim` in the body): one
request per task in steady state. The claim is the ordinary one (same fit, same refusals);
a refusal never undoes the completion; bad input changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import minimal_config, register_pilot, submit

OFFER = {"cpu": 1, "memory": 1, "disk": 10, "time": 10}


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", args=["--only", "rest"])
    yield srv
    srv.stop()


def claim_one(pilot: httpx.Client, pilot_id: str) -> dict[str, Any]:
    r = pilot.post("/task_actions/process",
                   json={"requirements": OFFER, "pilot_id": pilot_id, "max_tasks": 1})
    assert r.status_code == 200, r.text
    (task,) = r.json()["tasks"]
    return dict(task)


def test_a_completion_claims_the_next_tasks_and_a_refusal_keeps_the_completion(
        rest: Server) -> None:
    alice = rest.client(rest.token("alice", ["user"], ["physics"]))
    ds = submit(alice, minimal_config(), jobs=4)
    pilot = rest.client(rest.token("pilot-a", ["pilot"]))
    pilot_id = register_pilot(pilot, cpu=2, memory=2)
    first = claim_one(pilot, pilot_id)

    # complete and claim up to two tasks that fit in one core: one fits, one comes
    r = pilot.post(f"/tasks/{first['task_id']}/task_actions/complete", json={
        "instance_id": first["instance_id"], "log": {"stdlog": "done\n"},
        "claim": {"requirements": OFFER, "max_tasks": 2}})
    assert r.status_code == 200, r.text
    got = r.json()["tasks"]
    assert len(got) == 1 and got[0]["task_id"] != first["task_id"]
    second = got[0]
    assert second["pilot_id"] == pilot_id and second["instance_id"]
    tasks = alice.get(f"/datasets/{ds}/tasks", params={"keys": "status|pilot_id"}).json()
    assert tasks[first["task_id"]]["status"] == "complete"
    assert tasks[second["task_id"]] == {"task_id": second["task_id"], "status": "processing",
                                        "pilot_id": pilot_id}

    # bad input: refused before anything is written (the task stays processing)
    r = pilot.post(f"/tasks/{second['task_id']}/task_actions/complete", json={
        "instance_id": second["instance_id"], "claim": {"requirements": {"cpu": -1}}})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("claim.requirements.cpu:")
    r = pilot.post(f"/tasks/{second['task_id']}/task_actions/complete", json={
        "instance_id": second["instance_id"], "claim": {"max_tasks": 1}})
    assert r.status_code == 400 and "requirements" in r.json()["error"]
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == \
        {"complete": 1, "processing": 1, "queued": 2}

    # in maintenance, the completion stands and the claim answers no task
    admin = rest.client(rest.token("root", ["admin"]))
    assert admin.post("/admin/maintenance/all/on", json={"message": "m"}).status_code == 200
    r = pilot.post(f"/tasks/{second['task_id']}/task_actions/complete", json={
        "instance_id": second["instance_id"], "claim": {"requirements": OFFER}})
    assert r.status_code == 200, r.text
    assert r.json() == {"tasks": []}
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == \
        {"complete": 2, "queued": 2}

    # a retry of that completion (its answer lost) is refused before it could claim: the
    # task is no longer held
    assert admin.post("/admin/maintenance/all/off", json={}).status_code == 200
    r = pilot.post(f"/tasks/{second['task_id']}/task_actions/complete", json={
        "instance_id": second["instance_id"], "claim": {"requirements": OFFER}})
    assert r.status_code == 403, r.text
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == \
        {"complete": 2, "queued": 2}

    # without `claim` the answer is empty, as before
    third = claim_one(pilot, pilot_id)
    r = pilot.post(f"/tasks/{third['task_id']}/task_actions/complete",
                   json={"instance_id": third["instance_id"]})
    assert r.status_code == 200 and r.json() == {}


def test_another_pilot_cannot_complete_and_claim(rest: Server) -> None:
    alice = rest.client(rest.token("alice", ["user"], ["physics"]))
    submit(alice, minimal_config(), jobs=2)
    pilot = rest.client(rest.token("pilot-a", ["pilot"]))
    pilot_id = register_pilot(pilot, cpu=2, memory=2)
    task = claim_one(pilot, pilot_id)
    other = rest.client(rest.token("pilot-b", ["pilot"]))
    register_pilot(other, cpu=2, memory=2)
    r = other.post(f"/tasks/{task['task_id']}/task_actions/complete", json={
        "instance_id": task["instance_id"], "claim": {"requirements": OFFER}})
    assert r.status_code == 403, r.text
    assert alice.get(f"/datasets/{task['dataset_id']}/task_counts/status").json() == \
        {"processing": 1, "queued": 1}

"""Datasets and configs over HTTP: creation, validation, visibility, state machine."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.helpers import create_dataset, minimal_config

ROOT = Path(__file__).resolve().parents[2]


def test_create_assigns_numbers_and_location(alice: httpx.Client) -> None:
    body = {"description": "d", "jobs_submitted": 2, "tasks_submitted": 6,
            "tasks_per_job": 3, "group": "physics"}
    r1 = alice.post("/datasets", json=body)
    r2 = alice.post("/datasets", json=body)
    assert r1.status_code == 201
    ds = r1.json()["dataset_id"]
    assert r1.json()["result"] == f"/datasets/{ds}"
    assert r1.headers["Location"] == f"/datasets/{ds}"
    d1 = alice.get(f"/datasets/{ds}").json()
    d2 = alice.get(f"/datasets/{r2.json()['dataset_id']}").json()
    assert d2["dataset"] == d1["dataset"] + 1
    assert d1["username"] == "alice" and d1["group"] == "physics"
    assert d1["status"] == "processing" and d1["priority"] == 0.5
    assert d1["start_date"].endswith("Z")


def test_create_rejects_bad_bodies_naming_the_field(alice: httpx.Client) -> None:
    good = {"description": "d", "jobs_submitted": 2, "tasks_submitted": 2,
            "tasks_per_job": 1, "group": "physics"}
    cases = {
        "jobs_submitted": {**good, "jobs_submitted": 0},
        "tasks_submitted": {**good, "tasks_submitted": 3},
        "group": {k: v for k, v in good.items() if k != "group"},
        "colour": {**good, "colour": "blue"},
        "priority": {**good, "priority": 2},
    }
    before = alice.get("/datasets").json()
    for field, body in cases.items():
        r = alice.post("/datasets", json=body)
        assert r.status_code == 400, (field, r.text)
        assert field in r.json()["error"], (field, r.text)
    r = alice.post("/datasets", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert alice.get("/datasets").json() == before


def test_cannot_submit_for_a_foreign_group(alice: httpx.Client) -> None:
    r = alice.post("/datasets", json={"description": "d", "jobs_submitted": 1,
                                      "tasks_submitted": 1, "tasks_per_job": 1,
                                      "group": "astro"})
    assert r.status_code == 403 and "group" in r.json()["error"]


def test_users_see_only_their_datasets(alice: httpx.Client, bob: httpx.Client,
                                       admin: httpx.Client) -> None:
    mine = create_dataset(alice, "physics")
    theirs = create_dataset(bob, "astro")
    listed = alice.get("/datasets").json()
    assert mine in listed and theirs not in listed
    assert bob.get(f"/datasets/{mine}").status_code == 403
    assert bob.put(f"/datasets/{mine}/description", json={"description": "x"}).status_code == 403
    every = admin.get("/datasets").json()
    assert mine in every and theirs in every
    summary = alice.get("/dataset_summaries/status").json()
    assert mine in summary["processing"] and theirs not in summary["processing"]


def test_status_transitions_follow_the_state_machine(alice: httpx.Client) -> None:
    ds = create_dataset(alice, "physics")
    assert alice.put(f"/datasets/{ds}/status", json={"status": "suspended"}).status_code == 200
    assert alice.get(f"/datasets/{ds}").json()["status"] == "suspended"
    r = alice.put(f"/datasets/{ds}/status", json={"status": "complete"})
    assert r.status_code == 409
    assert r.json()["error"] == "bad transition: suspended -> complete"
    assert alice.put(f"/datasets/{ds}/status", json={"status": "processing"}).status_code == 200
    assert alice.put(f"/datasets/{ds}/status", json={"status": "complete"}).status_code == 200
    r = alice.put(f"/datasets/{ds}/status", json={"status": "processing"})
    assert r.status_code == 409 and "complete -> processing" in r.json()["error"]
    r = alice.put(f"/datasets/{ds}/status", json={"status": "bogus"})
    assert r.status_code == 400 and "status" in r.json()["error"]


def test_description_and_jobs_submitted(alice: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=3)
    assert alice.put(f"/datasets/{ds}/description", json={"description": "new"}).status_code == 200
    assert alice.put(f"/datasets/{ds}/jobs_submitted", json={"jobs_submitted": 5}).status_code == 200
    d = alice.get(f"/datasets/{ds}").json()
    assert (d["description"], d["jobs_submitted"], d["tasks_submitted"]) == ("new", 5, 15)
    r = alice.put(f"/datasets/{ds}/jobs_submitted", json={"jobs_submitted": 4})
    assert r.status_code == 400 and "jobs_submitted" in r.json()["error"]
    frozen = create_dataset(alice, "physics", jobs_immutable=True)
    r = alice.put(f"/datasets/{frozen}/jobs_submitted", json={"jobs_submitted": 9})
    assert r.status_code == 409 and "jobs_immutable" in r.json()["error"]


def test_keys_projection_and_pagination(alice: httpx.Client) -> None:
    for _ in range(5):
        create_dataset(alice, "physics")
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "2", "keys": "status"}
        if after:
            params["after"] = after
        r = alice.get("/datasets", params=params)
        page = r.json()
        assert len(page) <= 2
        for ds_id, doc in page.items():
            assert set(doc) == {"dataset_id", "status"} and doc["dataset_id"] == ds_id
        seen += list(page)
        after = r.headers.get("X-Next-After")
        if not after:
            break
    assert len(seen) == len(set(seen)) == len(alice.get("/datasets").json())
    assert alice.get("/datasets", params={"after": "!!"}).status_code == 400


def test_config_roundtrip_and_validation(alice: httpx.Client) -> None:
    chain = json.loads((ROOT / "examples" / "chain.json").read_text())
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=len(chain["tasks"]))
    assert alice.get(f"/config/{ds}").status_code == 404
    assert alice.put(f"/config/{ds}", json=chain).status_code == 200
    assert alice.get(f"/config/{ds}").json() == chain
    d = alice.get(f"/datasets/{ds}").json()
    assert (d["max_failures"], d["debug"]) == (chain["options"]["max_failures"], False)
    bad = json.loads(json.dumps(chain))
    bad["tasks"][1]["requirements"]["memory"] = -1
    r = alice.put(f"/config/{ds}", json=bad)
    assert r.status_code == 400
    assert r.json()["error"].startswith("tasks[1].requirements.memory")
    cyc = minimal_config(["a", "b", "c"])
    cyc["tasks"][0]["depends"] = ["c"]
    r = alice.put(f"/config/{ds}", json=cyc)
    assert r.status_code == 400 and "cycle" in r.json()["error"]
    r = alice.put(f"/config/{ds}", json=minimal_config(["a"]))
    assert r.status_code == 400 and "tasks_per_job" in r.json()["error"]
    assert alice.get(f"/config/{ds}").json() == chain


def test_dataset_routes_never_leak_another_datasets_documents(
        alice: httpx.Client, bob: httpx.Client, system: httpx.Client) -> None:
    """A document id from dataset B asked for under dataset A is not found, whatever the
    projection (a reader of A must learn nothing about B)."""
    mine = create_dataset(alice, "physics")
    theirs = create_dataset(bob, "astro")
    job = system.post("/jobs", json={"dataset_id": theirs, "job_index": 0}).json()["result"]
    task = system.post("/tasks", json={"dataset_id": theirs, "job_id": job, "task_index": 0,
                                       "name": "secret"}).json()["result"]
    log = system.post("/logs", json={"task_id": task, "name": "stdout", "data": "x"}
                      ).json()["result"]
    for path in (f"/datasets/{mine}/tasks/{task}", f"/datasets/{mine}/jobs/{job}",
                 f"/datasets/{mine}/logs/{log}"):
        for params in ({}, {"keys": "name|status"}, {"keys": "status"}):
            r = alice.get(path, params=params)
            assert r.status_code == 404, (path, params, r.text)

"""IceProd v2.7's routes and shapes, as its users and pilots rely on them (issue 11 §4):
tasks across datasets, a task's status by id, failures on PATCH, grids patched, the bulk
stats export, IceProd's flat stats body and its per-name summary, files by `filename` and
by job index + task name."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import claim_this, create_dataset, create_job, create_task


def test_tasks_across_datasets_status_by_id_and_patch(alice: httpx.Client, bob: httpx.Client,
                                                      system: httpx.Client,
                                                      admin: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=1)
    ids = [create_task(system, ds, create_job(system, ds, j), 0, "gen") for j in range(2)]
    # GET /tasks: admin and system, filtered, paged
    r = admin.get("/tasks", params={"dataset_id": ds, "status": "waiting", "limit": 1})
    assert r.status_code == 200, r.text
    first = r.json()
    assert len(first) == 1 and r.headers["X-Next-After"]
    rest = system.get("/tasks", params={"dataset_id": ds, "after": r.headers["X-Next-After"],
                                        "keys": "status|name"}).json()
    assert set(first) | set(rest) == set(ids)
    assert all(t == {"task_id": tid, "status": "waiting", "name": "gen"}
               for tid, t in rest.items())
    assert alice.get("/tasks").status_code == 403
    # PUT /tasks/{id}/status: the state machine, never processing
    r = system.put(f"/tasks/{ids[0]}/status", json={"status": "suspended"})
    assert r.status_code == 200 and r.json() == {"changed": 1}, r.text
    r = system.put(f"/tasks/{ids[0]}/status", json={"status": "complete"})
    assert r.status_code == 409 and r.json()["error"] == "bad transition: suspended -> complete"
    r = admin.put(f"/tasks/{ids[0]}/status", json={"status": "processing"})
    assert r.status_code == 400 and r.json()["error"].startswith("status")
    assert alice.put(f"/tasks/{ids[0]}/status", json={"status": "waiting"}).status_code == 403
    assert system.put(f"/tasks/{'0' * 32}/status", json={"status": "waiting"}).status_code \
        == 404
    # PATCH /tasks/{id}: failures yes, any status no
    r = system.patch(f"/tasks/{ids[1]}", json={"failures": 3, "priority": 2})
    assert r.status_code == 200 and r.json()["failures"] == 3, r.text
    for status in ("processing", "waiting", "suspended"):
        r = system.patch(f"/tasks/{ids[1]}", json={"status": status})
        assert r.status_code == 400 and r.json()["error"].startswith("status: PATCH does not")
    assert system.patch(f"/tasks/{ids[1]}", json={"failures": -1}).status_code == 400
    got = alice.get(f"/tasks/{ids[1]}", params={"keys": "status|failures"}).json()
    assert got == {"task_id": ids[1], "status": "waiting", "failures": 3}
    assert bob.get(f"/tasks/{ids[1]}").status_code == 403


def test_grids_patch(system: httpx.Client, alice: httpx.Client) -> None:
    grid = system.post("/grids", json={"host": "submit.example", "version": "1"}).json()
    gid = grid["result"]
    r = system.patch(f"/grids/{gid}", json={"version": "2", "debug": True})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["version"] == "2" and doc["debug"] is True and doc["host"] == "submit.example"
    assert system.get(f"/grids/{gid}").json()["version"] == "2"
    assert system.patch(f"/grids/{gid}", json={}).status_code == 400
    assert system.patch(f"/grids/{gid}", json={"colour": "red"}).status_code == 400
    assert system.patch(f"/grids/{'0' * 32}", json={"version": "3"}).status_code == 404
    assert alice.patch(f"/grids/{gid}", json={"version": "3"}).status_code == 403


def finish(system: httpx.Client, server: Server, ds: str, task_id: str,
           hours: float | None, stats: dict | None = None) -> None:
    """Run a task through a pilot: claim it, post ``stats`` flat, complete it after
    ``hours`` (or fail the run once when None)."""
    pilot = server.client(server.token("pilot-27", ["pilot"]))
    r = pilot.post("/pilots", json={"queue_host": "h", "resources": {"cpu": 1}})
    assert r.status_code == 201, r.text
    pilot.headers["Authorization"] = f"Bearer {r.json()['token']}"
    pilot_id = r.json()["result"]
    assert system.put(f"/tasks/{task_id}/status", json={"status": "queued"}).status_code == 200
    r = claim_this(pilot, pilot_id, task_id, cpu=1, site=f"s-{task_id}")
    assert r.status_code == 200 and r.json()["task_id"] == task_id, r.text
    instance = r.json()["instance_id"]
    if stats is not None:
        r = pilot.post(f"/tasks/{task_id}/task_stats", json=stats)  # IceProd's flat body
        assert r.status_code == 201, r.text
    if hours is None:
        r = pilot.post(f"/tasks/{task_id}/task_actions/reset",
                       json={"instance_id": instance, "time_used": 3600})
    else:
        r = pilot.post(f"/tasks/{task_id}/task_actions/complete",
                       json={"instance_id": instance, "time_used": hours * 3600})
    assert r.status_code == 200, r.text


def test_task_stats_flat_body_summary_and_bulk_export(
        alice: httpx.Client, bob: httpx.Client, system: httpx.Client, server: Server) -> None:
    ds = create_dataset(alice, "physics", jobs=3, tasks_per_job=2)
    tasks = []
    for j in range(3):
        job = create_job(system, ds, j)
        tasks.append([create_task(system, ds, job, i, name)
                      for i, name in enumerate(("gen", "sim"))])
    for row in tasks:
        for tid in row:
            # each task fits only its own pilot's site: a shared queue cannot mix them up
            r = system.patch(f"/tasks/{tid}", json={"requirements": {"site": f"s-{tid}"}})
            assert r.status_code == 200, r.text
    finish(system, server, ds, tasks[0][0], None)  # a failed run of gen 0: 1 error hour
    finish(system, server, ds, tasks[0][0], 1.0, {"hostname": "n1", "time_used": 3600})
    finish(system, server, ds, tasks[1][0], 3.0, {"hostname": "n2", "dataset_id": ds})
    # sim: nothing completed
    summary = alice.get(f"/datasets/{ds}/task_stats").json()
    assert list(summary) == ["gen"]
    assert summary["gen"] == {
        "count": 2, "total_hrs": 4.0, "total_err_hrs": 1.0, "avg_hrs": 2.0,
        "stddev_hrs": pytest.approx(1.0), "min_hrs": 1.0, "max_hrs": 3.0,
        "efficiency": pytest.approx(0.8)}
    # the flat body was stored as the stats themselves; ours still works
    records = alice.get(f"/datasets/{ds}/tasks/{tasks[0][0]}/task_stats").json()
    assert [r["stats"] for r in records.values()] == [{"hostname": "n1", "time_used": 3600}]
    r = system.post(f"/tasks/{tasks[2][1]}/task_stats",
                    json={"dataset_id": ds, "stats": {"hostname": "n3"}})
    assert r.status_code == 201, r.text
    r = system.post(f"/tasks/{tasks[2][1]}/task_stats", json={"dataset_id": "0" * 32, "x": 1})
    assert r.status_code == 400 and r.json()["error"].startswith("dataset_id")
    assert system.post(f"/tasks/{tasks[2][1]}/task_stats", json={}).status_code == 400
    # the bulk export: every record, one JSON document per line
    r = alice.get(f"/datasets/{ds}/bulk/task_stats")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert sorted(d["stats"]["hostname"] for d in lines) == ["n1", "n2", "n3"]
    assert all(d["dataset_id"] == ds for d in lines)
    assert bob.get(f"/datasets/{ds}/bulk/task_stats").status_code == 403


def test_files_by_filename_and_by_job_and_task_name(alice: httpx.Client,
                                                    system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics", jobs=2, tasks_per_job=1)
    t0 = create_task(system, ds, create_job(system, ds, 0), 0, "sim")
    r = alice.post(f"/datasets/{ds}/files", json={
        "filename": "gsiftp://x/in.i3", "job_index": 0, "task_name": "sim"})
    assert r.status_code == 201, r.text
    # a task that does not exist yet: its files show under it once it does
    r = alice.post(f"/datasets/{ds}/files", json={
        "filename": "gsiftp://x/later.i3", "job_index": 1, "task_name": "sim",
        "movement": "output"})
    assert r.status_code == 201, r.text
    assert alice.post(f"/datasets/{ds}/files", json={"remote": "/data/all"}).status_code == 201
    files = alice.get(f"/datasets/{ds}/files").json()
    assert set(files) == {"files"} and len(files["files"]) == 3
    (mine,) = alice.get(f"/datasets/{ds}/files/{t0}").json()["files"]
    assert mine["task_id"] == t0 and mine["filename"] == "gsiftp://x/in.i3"
    assert mine["local"] == "in.i3" and mine["movement"] == "input"
    t1 = create_task(system, ds, create_job(system, ds, 1), 0, "sim")
    (later,) = alice.get(f"/datasets/{ds}/files/{t1}").json()["files"]
    assert later["filename"] == "gsiftp://x/later.i3" and later["movement"] == "output"
    # refused: both names disagreeing, half a task reference, no name at all
    for body, field in (({"filename": "a", "remote": "b"}, ""),
                        ({"filename": "a", "job_index": 0}, "task_name"),
                        ({"local": "x"}, "")):
        r = alice.post(f"/datasets/{ds}/files", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith(field), r.text
    r = alice.delete(f"/datasets/{ds}/files/{t1}")
    assert r.json() == {"deleted": 1}
    assert alice.get(f"/datasets/{ds}/files/{t1}").json() == {"files": []}
    assert len(alice.get(f"/datasets/{ds}/files").json()["files"]) == 2

"""The batch API (seed 002) driven as its documentation shows, with `requests`, end to end on
a local grid of real pilots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.dialects.conftest import Session
from tests.helpers import wait_for

STATUSES = ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"]


def test_a_batch_of_20_jobs_reports_seed_statuses_and_succeeds(
        users: dict[str, Session], catalog: Path) -> None:
    alice = users["alice"]
    words = [f"word{i}" for i in range(20)]
    r = alice.post("/batches", json={"tool_id": "echo", "n_jobs": 20,
                                     "args": [{"word": w} for w in words],
                                     "hardware": {"cpu": 1, "memory": 100,
                                                  "filesystems": ["scratch"]}})
    assert r.status_code == 201, r.text
    batch = r.json()
    batch_id = batch["batch_id"]
    assert batch == {"batch_id": batch_id, "tool_id": "echo", "n_jobs": 20,
                     "hardware": {"cpu": 1, "memory": 100, "filesystems": ["scratch"]}}
    assert batch in alice.get("/batches").json()

    seen: list[dict[str, Any]] = []

    def done() -> bool:
        doc = alice.get(f"/batches/{batch_id}").json()
        assert list(doc["submitted_jobs"]) == STATUSES
        assert sum(doc["submitted_jobs"].values()) == 20
        seen.append(doc)
        return bool(doc["submitted_jobs"]["SUCCEEDED"] == 20)

    wait_for(done, timeout=120, interval=0.1, what="the batch to succeed")
    final = seen[-1]
    assert final["n_submitted"] == 20 and final["submitted_jobs"]["FAILED"] == 0
    # it was seen on its way: some jobs not yet succeeded at the first look
    assert seen[0]["submitted_jobs"]["SUCCEEDED"] < 20
    assert any(s["submitted_jobs"][k] for s in seen
               for k in ("SUBMITTED", "PENDING", "RUNNABLE", "RUNNING"))

    jobs = alice.get(f"/batches/{batch_id}/jobs").json()
    assert [j["args"] for j in jobs] == [{"word": w} for w in words]
    job = alice.get(f"/batches/{batch_id}/jobs/{jobs[7]['job_id']}").json()
    assert job["status"] == "SUCCEEDED" and job["reason"] is None
    assert job["create_time"] <= job["start_time"] <= job["stop_time"]
    assert job["hardware"]["cpu"] == 1
    # log_id resolves to the task's logs: the job printed its own word
    logs = alice.get(f"/datasets/{batch_id}/tasks/{job['log_id']}/logs").json()
    assert any(entry["name"] == "stdout" and "word7" in entry["data"]
               for entry in (logs.values() if isinstance(logs, dict) else logs))
    # a batch is an ordinary dataset: one job whose 20 tasks are the batch's jobs
    ds = alice.get(f"/datasets/{batch_id}").json()
    assert ds["status"] == "complete" and ds["tasks_per_job"] == 20
    task = alice.get(f"/datasets/{batch_id}/tasks/{job['job_id']}").json()
    assert task["requirements"]["memory"] == round(100 / 1024, 6)


def test_batch_refusals_and_deletion(users: dict[str, Session], catalog: Path) -> None:
    alice, bob, admin = users["alice"], users["bob"], users["admin"]
    before = len(admin.get("/datasets").json())
    for body, field in [
        ({"tool_id": "echo", "n_jobs": 2, "args": [{"word": "UPPER"}, {}]}, "args[0].word"),
        ({"tool_id": "echo", "n_jobs": 3, "args": [{}, {}]}, "args"),
        ({"tool_id": "echo", "n_jobs": 1, "args": [{"nope": "x"}]}, "args[0].nope"),
        ({"tool_id": "echo", "n_jobs": 0}, "n_jobs"),
        ({"tool_id": "repeat", "n_jobs": 1, "args": [{"n": 2}]}, "args[0].input"),
    ]:
        r = alice.post("/batches", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"].startswith(field), r.text
    r = bob.post("/batches", json={"tool_id": "sleeper", "n_jobs": 1,
                                   "args": [{"pidfile": "/tmp/x"}]})
    assert r.status_code == 403, r.text
    assert alice.post("/batches", json={"tool_id": "nothing", "n_jobs": 1}).status_code == 404
    assert len(admin.get("/datasets").json()) == before

    # bob's own batches: a dry run previews, then deleting stops and hides them
    ids = []
    for _ in range(2):
        r = bob.post("/batches", json={"tool_id": "echo", "n_jobs": 3})
        assert r.status_code == 201, r.text
        ids.append(r.json()["batch_id"])
    r = bob.delete("/batches", params={"dry_run": "perhaps"})
    assert r.status_code == 400 and r.json()["error"].startswith("dry_run"), r.text
    preview = bob.delete("/batches", params={"dry_run": "true"}).json()
    assert preview["dry_run"] is True and preview["matched"] == 2
    assert sorted(preview["sample"]) == sorted(ids)
    assert sum(preview["by_status"].values()) == 6
    assert len(bob.get("/batches").json()) == 2
    assert alice.delete(f"/batches/{ids[0]}").status_code == 403
    r = bob.delete("/batches")
    assert r.status_code == 200 and r.json()["matched"] == 2, r.text
    stopped = r.json()["changed"]
    assert bob.get("/batches").json() == []
    doc = bob.get(f"/batches/{ids[0]}").json()
    assert doc["deleted"] is True
    # each deleted batch leaves one audit record with its actor; their counts add up to the
    # answer's
    audited = []
    for batch_id in ids:
        records = bob.get(f"/datasets/{batch_id}/audit").json()["records"]
        deleted = [r for r in records if r["action"] == "batch.delete"]
        assert [r["username"] for r in deleted] == ["bob"]
        audited.append(deleted[0]["counts"]["changed"])
    assert sum(audited) == stopped
    # bob's jobs never ran (the local grid runs only alice's): all stopped
    assert doc["submitted_jobs"]["FAILED"] == 3
    job = bob.get(f"/batches/{ids[0]}/jobs").json()[0]["job_id"]
    assert bob.get(f"/batches/{ids[0]}/jobs/{job}").json()["reason"] == "deleted"
    assert users["anon"].get("/batches").status_code == 401

"""Operators' actions (issue 11): every bulk and cascading action takes `"dry_run": true`
and then changes nothing while predicting exactly what the real run changes; every real
change leaves one audit record with its actor and counts, visible to the dataset's readers
(`GET /datasets/{id}/audit`) and to admins (`GET /audit`), and to no one else."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Server
from tests.helpers import create_dataset, create_job, create_task

PREVIEW_KEYS = {"dry_run", "matched", "changed", "by_status", "sample"}


def world(alice: httpx.Client, system: httpx.Client, jobs: int = 3
          ) -> tuple[str, list[str], list[list[str]]]:
    """A dataset of ``jobs`` jobs, each with tasks gen (waiting) and sim (suspended in job 0)."""
    ds = create_dataset(alice, "physics", jobs=jobs, tasks_per_job=2)
    job_ids, tasks = [], []
    for j in range(jobs):
        job = create_job(system, ds, j)
        job_ids.append(job)
        tasks.append([create_task(system, ds, job, 0, "gen"),
                      create_task(system, ds, job, 1, "sim",
                                  status="suspended" if j == 0 else "waiting")])
    return ds, job_ids, tasks


def snapshot(client: httpx.Client, ds: str) -> dict[str, Any]:
    """Everything an action could change: tasks (status, requirements), jobs, dataset."""
    tasks = client.get(f"/datasets/{ds}/tasks",
                       params={"keys": "status|requirements|failures"}).json()
    jobs = client.get(f"/datasets/{ds}/jobs", params={"keys": "status"}).json()
    dataset = client.get(f"/datasets/{ds}").json()
    rules = client.get(f"/auths/{ds}").json()
    return {"tasks": tasks, "jobs": jobs, "rules": rules,
            "dataset": {k: dataset[k] for k in ("status", "priority")}}


def dry_then_real(client: httpx.Client, reader: httpx.Client, method: str, url: str,
                  body: dict[str, Any], ds: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``body`` as a dry run (which must change nothing), then for real; answers both."""
    before = snapshot(reader, ds)
    r = client.request(method, url, json={**body, "dry_run": True})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert set(preview) >= PREVIEW_KEYS and preview["dry_run"] is True, preview
    if "before" not in preview:  # rules and priority have no statuses to count
        assert sum(preview["by_status"].values()) == preview["changed"]
    assert len(preview["sample"]) == min(preview["changed"], 20)
    assert snapshot(reader, ds) == before, f"the dry run of {url} changed something"
    r = client.request(method, url, json=body)
    assert r.status_code == 200, r.text
    real = r.json()
    assert real["changed"] == preview["changed"], (url, preview, real)
    return preview, real


def records(client: httpx.Client, url: str, **params: str) -> list[dict[str, Any]]:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


def test_dry_runs_predict_exactly_and_every_change_is_audited(
        alice: httpx.Client, bob: httpx.Client, system: httpx.Client, admin: httpx.Client,
        server: Server) -> None:
    ds, jobs, tasks = world(alice, system)
    base = f"/datasets/{ds}"
    # bulk status by filter: the sims of jobs 1.. (gen and the suspended sim are left alone)
    preview, _ = dry_then_real(alice, alice, "POST", f"{base}/task_actions/bulk_status/suspended",
                               {"filter": {"name": ["sim"], "job_index": {"min": 1}}}, ds)
    assert preview["matched"] == 2 and preview["changed"] == 2
    assert preview["by_status"] == {"waiting": 2}
    assert preview["sample"] == sorted([tasks[1][1], tasks[2][1]])
    # bulk status by ids: one suspended, one waiting (waiting -> waiting is no change)
    preview, _ = dry_then_real(alice, alice, "POST", f"{base}/task_actions/bulk_status/waiting",
                               {"tasks": [tasks[0][1], tasks[0][0]]}, ds)
    assert (preview["matched"], preview["changed"], preview["by_status"]) == \
        (2, 1, {"suspended": 1})
    # requirements of a name
    preview, _ = dry_then_real(alice, alice, "PATCH",
                               f"{base}/task_actions/bulk_requirements/gen", {"memory": 3}, ds)
    assert preview["matched"] == 3 and preview["changed"] == 3
    # one task's status; a job's status with its cascade
    preview, _ = dry_then_real(alice, alice, "PUT", f"{base}/tasks/{tasks[2][0]}/status",
                               {"status": "suspended"}, ds)
    assert preview["changed"] == 1 and preview["sample"] == [tasks[2][0]]
    preview, _ = dry_then_real(alice, alice, "PUT", f"{base}/jobs/{jobs[0]}/status",
                               {"status": "suspended"}, ds)
    assert preview["matched"] == 2 and preview["by_status"] == {"waiting": 2}
    # jobs in bulk (IceProd v2.7): job 0 is suspended already, jobs 1 and 2 move
    preview, real = dry_then_real(alice, alice, "POST",
                                  f"{base}/job_actions/bulk_status/suspended",
                                  {"jobs": jobs}, ds)
    assert preview["matched"] == 3 and preview["changed"] == 2
    assert preview["sample"] == sorted(jobs[1:])
    assert real["tasks_changed"] == preview["tasks_changed"] == 1  # job 1's gen
    # the dataset: suspend (the rest of its active tasks), then resume (every suspended one)
    preview, real = dry_then_real(alice, alice, "PUT", f"{base}/status",
                                  {"status": "suspended"}, ds)
    assert preview["matched"] == 6 and real["tasks_changed"] == preview["changed"]
    preview, _ = dry_then_real(alice, alice, "PUT", f"{base}/status",
                               {"status": "processing"}, ds)
    assert preview["changed"] == 6 and preview["by_status"] == {"suspended": 6}
    # rules and priority: before and after
    preview, _ = dry_then_real(alice, alice, "PUT", f"/auths/{ds}",
                               {"read_users": ["alice", "rita"]}, ds)
    assert preview["after"]["read_users"] == ["alice", "rita"]
    assert preview["before"]["read_users"] == ["alice"]
    preview, _ = dry_then_real(alice, alice, "PUT", f"{base}/priority", {"priority": 0.9}, ds)
    assert preview["before"] == {"priority": 0.5} and preview["after"] == {"priority": 0.9}
    assert alice.get(base).json()["priority"] == 0.9
    # a dry run of an illegal transition is refused as the real run would be
    r = alice.put(f"{base}/tasks/{tasks[1][0]}/status",
                  json={"status": "complete", "dry_run": True})
    assert r.status_code == 409 and r.json()["error"] == "bad transition: waiting -> complete"
    r = alice.post(f"{base}/task_actions/bulk_status/suspended", json={"dry_run": True})
    assert r.status_code == 400 and r.json()["error"].startswith("selection: give tasks")
    r = alice.post(f"{base}/task_actions/bulk_status/suspended",
                   json={"dry_run": "yes", "tasks": [tasks[0][0]]})
    assert r.status_code == 400 and r.json()["error"] == "dry_run: must be a boolean"
    r = alice.post(f"{base}/job_actions/bulk_status/suspended", json={"jobs": []})
    assert r.status_code == 400 and r.json()["error"].startswith("jobs"), r.text
    r = alice.post(f"{base}/job_actions/bulk_status/suspended", json={})
    assert r.status_code == 400 and r.json()["error"].startswith("jobs"), r.text

    # one record per real change (dry runs and refusals leave none), oldest first
    trail = records(alice, f"{base}/audit")
    assert [r["action"] for r in trail] == [
        "dataset.create", "tasks.bulk_status", "tasks.bulk_status", "tasks.bulk_requirements",
        "task.status", "job.status", "jobs.bulk_status", "dataset.status", "dataset.status",
        "dataset.rules", "dataset.priority"]
    first = trail[1]
    assert first["username"] == "alice" and first["roles"] == ["user"]
    assert first["token_kind"] == "user" and first["client"] == "127.0.0.1"
    assert first["route"] == "/datasets/{dataset_id}/task_actions/bulk_status/{status}"
    assert first["method"] == "POST" and first["dataset_id"] == ds
    assert first["selection"] == {"filter": {"name": ["sim"], "job_index": {"min": 1}}}
    assert first["counts"] == {"changed": 2} and first["detail"] == {"status": "suspended"}
    assert trail[2]["selection"] == {"tasks": [tasks[0][1], tasks[0][0]], "tasks_count": 2}
    assert trail[6]["counts"] == {"changed": 2, "tasks_changed": 1}
    assert first["time"].endswith("Z") and len(first["audit_id"]) == 32
    # filters and pages
    assert [r["action"] for r in records(alice, f"{base}/audit", action="dataset.status")] \
        == ["dataset.status"] * 2
    assert records(alice, f"{base}/audit", username="bob") == []
    since = trail[7]["time"]
    assert [r["audit_id"] for r in records(alice, f"{base}/audit", since=since)] == \
        [r["audit_id"] for r in trail[7:]]
    r = alice.get(f"{base}/audit", params={"limit": 4})
    assert len(r.json()["records"]) == 4 and r.headers["X-Next-After"] == r.json()["next_after"]
    rest = records(alice, f"{base}/audit", after=r.json()["next_after"])
    assert [x["audit_id"] for x in r.json()["records"] + rest] == [x["audit_id"] for x in trail]
    assert alice.get(f"{base}/audit", params={"since": "yesterday"}).status_code == 400
    # readers see it (rita was given read above), others do not; /audit is the admin's
    rita = server.client(server.token("rita", ["user"], ["readers"]))
    assert len(records(rita, f"{base}/audit")) == len(trail)
    assert bob.get(f"{base}/audit").status_code == 403
    assert alice.get("/audit").status_code == 403
    assert system.get("/audit").status_code == 403
    mine = records(admin, "/audit", dataset_id=ds)
    assert [r["audit_id"] for r in mine] == [r["audit_id"] for r in trail]
    # an admin's own change is recorded with its actor, and the trail has no write route
    r = admin.put(f"{base}/status", json={"status": "suspended"})
    assert r.status_code == 200, r.text
    last = records(admin, "/audit", dataset_id=ds, action="dataset.status")[-1]
    assert last["username"] == "root" and last["token_kind"] == "admin"
    assert last["counts"] == {"changed": r.json()["changed"]}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert admin.request(method, "/audit").status_code == 405
        assert admin.request(method, f"{base}/audit").status_code == 405


def test_account_changes_are_audited(admin: httpx.Client, alice: httpx.Client) -> None:
    r = admin.post("/users", json={"username": "audited-user"})
    assert r.status_code == 201, r.text
    user_id = r.json()["result"]
    assert admin.put(f"/users/{user_id}/roles", json={"roles": ["user"]}).status_code == 200
    r = admin.post(f"/users/{user_id}/actions/revoke_tokens")
    assert r.status_code == 200, r.text
    trail = records(admin, "/audit", username="root")
    mine = [r for r in trail if (r.get("detail") or {}).get("user_id") == user_id]
    assert [r["action"] for r in mine] == ["user.create", "user.roles", "user.revoke_tokens"]
    assert all(r["dataset_id"] is None and r["token_kind"] == "admin" for r in mine)
    # account records belong to no dataset: a user reading its datasets' trails never sees them
    for ds in alice.get("/datasets", params={"keys": "dataset_id"}).json():
        assert all(r["action"].split(".")[0] != "user"
                   for r in records(alice, f"/datasets/{ds}/audit"))

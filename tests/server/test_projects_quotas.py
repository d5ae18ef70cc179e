"""Running a facility (issue 16) end to end, over HTTP, on a real server whose local grid
runs real pilots: a project at its core quota holds new tasks back with the reason its quota
gives and runs them as quota frees; usage after a dataset completes is the sum of its task
stats, and bills price it; archiving removes task documents and logs per policy and keeps the
summary; an upload over the stored-bytes quota is refused with a 4xx naming the quota."""

from __future__ import annotations

import datetime
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import FAST, create_dataset, create_job, create_task, submit, wait_for
from tests.pilot.support import finished, stats, tasks
from tests.server.test_grids_local import local_grid, pilot_processes

STEP_SECONDS = 1.0


def work(name: str = "work") -> dict[str, Any]:
    """One task per job: a step long enough to be seen running, and an output file."""
    return {"tasks": [{
        "name": name, "requirements": {"cpu": 1, "memory": 0.1, "disk": 0.1, "time": 0.1},
        "data": [{"remote": "iceprod:out/$(job_index).txt", "local": "out.txt",
                  "movement": "output", "type": "permanent"}],
        "steps": [{"name": "run", "command": "/bin/sh", "timeout": 60, "args": [
            "-c", f"echo job $(job_index) > out.txt; echo running; sleep {STEP_SECONDS}"]}],
    }]}


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", env=local_grid(
        tmp_path, max_pilots=2, max_idle=2, max_per_cycle=2, options={"cores": 2}))
    yield srv
    pilots = pilot_processes(srv)
    assert srv.stop() == 0
    for p in pilots:
        p.wait(timeout=10)


def counts(client: httpx.Client, ds: str) -> dict[str, int]:
    r = client.get(f"/datasets/{ds}/task_counts/status")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_quota_usage_billing_archive_on_local_pilots(grid: Server) -> None:
    alice = grid.client(grid.token("alice", ["user"], ["physics"]))
    bob = grid.client(grid.token("bob", ["user"], ["astro"]))
    admin = grid.client(grid.token("root", ["admin"]))
    r = admin.post("/projects", json={"name": "ice", "users": ["alice"], "quota": {
        "cores": 1, "stored_bytes": 5000}})
    assert r.status_code == 201, r.text

    # submission: alice's default project is the one naming her; bob is no member of it
    r = bob.post("/datasets", json={"description": "x", "jobs_submitted": 1,
                                    "tasks_submitted": 1, "tasks_per_job": 1,
                                    "group": "astro", "project": "ice"})
    assert r.status_code == 403 and "project" in r.json()["error"]
    ds = submit(alice, work(), jobs=4)
    assert alice.get(f"/datasets/{ds}").json()["project"] == "ice"
    # another project's work is not held back by ice's quota
    other = submit(alice, work("other"), jobs=1, project="default", tags=["mc"])

    # at most one core of ice is ever queued or running; the rest waits with the reason
    seen_blocked: list[dict[str, Any]] = []
    explained: list[dict[str, Any]] = []

    def watch() -> str | None:
        c = counts(alice, ds)
        assert c.get("queued", 0) + c.get("processing", 0) <= 1, c
        if c.get("processing") and c.get("waiting"):
            usage = alice.get("/projects/ice/usage").json()
            seen_blocked.extend(usage["blockers"])
            explained.extend(alice.get(f"/datasets/{ds}/explain").json()["blockers"])
        return finished(alice, ds)

    assert wait_for(watch, timeout=120, interval=0.1, what="ice's dataset") == "complete"
    assert wait_for(lambda: finished(alice, other), timeout=30) == "complete"
    assert {"kind": "quota", "quota": "cores", "project": "ice", "used": 1.0, "limit": 1,
            "message": "project ice: 1 cores in use of 1"} in seen_blocked
    assert counts(alice, ds) == {"complete": 4}
    # "why isn't it running?" names the quota, with its figures
    quota = [b for b in explained if b["kind"] == "quota"]
    assert quota and quota[0]["message"] == "project ice: 1 cores in use of 1", explained
    assert (quota[0]["quota"], quota[0]["used"], quota[0]["limit"]) == ("cores", 1.0, 1)

    # usage of the dataset is the sum of its task stats
    runs = [s for t in tasks(alice, ds) for s in stats(alice, ds, t)]
    assert len(runs) == 4 and all(s["outcome"] == "complete" for s in runs)
    wall = sum(s["walltime"] for s in runs) / 3600
    cpu = sum(s["cpu_time"] for s in runs) / 3600
    mem = sum(s["max_rss"] / 1024 ** 3 * s["walltime"] / 3600 for s in runs)
    r = alice.get("/usage", params={"dataset_id": ds})
    (row,) = r.json()["usage"]
    assert row["walltime_hours"] == pytest.approx(wall, rel=1e-6)
    assert row["core_hours"] == pytest.approx(wall, rel=1e-6)  # one core each
    assert row["cpu_hours"] == pytest.approx(cpu, rel=1e-6, abs=1e-9)
    assert row["memory_gb_hours"] == pytest.approx(mem, rel=1e-6, abs=1e-12)
    assert row["gpu_hours"] == 0
    assert (row["tasks_complete"], row["tasks_reset"], row["tasks_failed"]) == (4, 0, 0)
    assert wall >= 4 * STEP_SECONDS / 3600
    by_project = alice.get("/usage", params={"group_by": "project|user"}).json()["usage"]
    assert [(u["project"], u["user"], u["tasks_complete"]) for u in by_project] == [
        ("default", "alice", 1), ("ice", "alice", 4)]
    assert bob.get("/usage", params={"project": "ice"}).status_code == 403
    table = alice.get("/usage", params={"dataset_id": ds, "format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    header, line = table.text.strip().splitlines()
    assert header.startswith("cpu_hours,core_hours,walltime_hours")
    assert float(line.split(",")[2]) == pytest.approx(wall, rel=1e-6)

    # a bill prices the month's usage with the admins' rates
    assert admin.put("/billing/rates", json={"core_hours": 2.5, "currency": "EUR"}
                     ).status_code == 200
    today = datetime.datetime.now(datetime.UTC).date()
    bill = alice.get(f"/projects/ice/billing/{today.year}/{today.month}").json()
    assert bill["total"]["currency"] == "EUR"
    assert bill["total"]["cost"] == pytest.approx(2.5 * wall, rel=1e-3, abs=1e-4)
    assert bob.get(f"/users/alice/billing/{today.year}/{today.month}").status_code == 403

    # an upload over the project's stored-bytes quota is refused, naming the quota
    held = sum(f["size"] for f in alice.get(f"/datasets/{ds}/store").json().values())
    assert held > 0  # the tasks' outputs count
    r = alice.put(f"/datasets/{ds}/store/big.bin", content=b"x" * (5000 - held + 1))
    assert r.status_code == 413 and "stored_bytes" in r.json()["error"] \
        and "project ice" in r.json()["error"], r.text
    r = alice.put(f"/datasets/{ds}/store/streamed.bin",
                  content=iter([b"y" * 4000, b"y" * 4000]))  # chunked: no Content-Length
    assert r.status_code == 413 and "stored_bytes" in r.json()["error"], r.text
    assert set(alice.get(f"/datasets/{ds}/store").json()) == {f"out/{j}.txt" for j in range(4)}
    assert alice.put(f"/datasets/{ds}/store/small.bin", content=b"z" * 10).status_code == 201

    # archive: a dry run says what would go and changes nothing
    task_ids = sorted(tasks(alice, ds))
    dry = admin.post("/archive", json={"older_than_days": 0, "dry_run": True}).json()
    assert (dry["dry_run"], dry["matched"], dry["changed"]) == (True, 2, 0)
    assert {d["dataset_id"]: d["tasks"] for d in dry["datasets"]} == {ds: 4, other: 1}
    assert sorted(tasks(alice, ds)) == task_ids
    # by tag, dropping the logs
    done = admin.post("/archive", json={"older_than_days": 0, "tag": "mc", "logs": "drop"})
    assert done.json()["changed"] == 1 and done.json()["datasets"][0]["dataset_id"] == other
    assert alice.get(f"/datasets/{other}").json()["status"] == "archived"
    assert not (grid.data_dir / "archive" / f"{other}.logs.jsonl.gz").exists()
    # the rest, logs kept in a compressed archive file
    done = admin.post("/archive", json={"older_than_days": 0})
    assert (done.json()["matched"], done.json()["changed"]) == (1, 1)
    doc = alice.get(f"/datasets/{ds}").json()
    assert doc["status"] == "archived"
    summary = doc["archive"]
    assert summary["tasks"] == {"work": {"complete": 4}}
    assert summary["jobs"] == {"complete": 4}
    assert summary["task_stats"]["work"]["count"] == 4
    assert summary["usage"]["tasks_complete"] == 4
    assert summary["logs"]["policy"] == "compress" and summary["files_removed"] == 5
    assert alice.get(f"/datasets/{ds}/tasks").json() == {}
    assert alice.get(f"/datasets/{ds}/store").json() == {}
    for t in task_ids:
        assert alice.get(f"/datasets/{ds}/tasks/{t}/logs").json() in ({}, [])
        assert len(stats(alice, ds, t)) == 1  # stats are kept
    with gzip.open(grid.data_dir / "archive" / f"{ds}.logs.jsonl.gz", "rt") as fh:
        archived = [json.loads(line) for line in fh]
    assert len(archived) == summary["logs"]["count"] >= 4
    assert {a["task_id"] for a in archived} == set(task_ids)
    assert any("running" in a["data"] for a in archived if a["name"] == "stdout")
    # still listed, with its summary; its status cannot be changed back
    assert ds in alice.get("/datasets", params={"status": "archived"}).json()
    r = alice.put(f"/datasets/{ds}/status", json={"status": "processing"})
    assert r.status_code == 409
    # archived datasets are not archived again
    again = admin.post("/archive", json={"older_than_days": 0}).json()
    assert (again["matched"], again["changed"]) == (0, 0)

    # every admin change above is in the audit trail (dry runs are not), for admins only
    trail = admin.get("/audit", params={"username": "root"}).json()["records"]
    assert [(r["action"], r["counts"]) for r in trail if r["action"] != "project.create"] == [
        ("billing.rates", {}), ("archive", {"matched": 1, "changed": 1}),
        ("archive", {"matched": 1, "changed": 1}), ("archive", {"matched": 0, "changed": 0})]
    assert trail[0]["action"] == "project.create" and trail[0]["detail"]["name"] == "ice"
    assert trail[0]["token_kind"] == "admin"
    assert alice.get("/audit").status_code == 403


def test_the_archive_policy_archives_old_finished_datasets(tmp_path: Path) -> None:
    """With ICEPROD_ARCHIVE_AFTER_DAYS set the scheduler archives finished datasets once
    they are that old (here about a second), and leaves unfinished ones alone."""
    srv = start_server(tmp_path / "data", env={
        **FAST, "ICEPROD_ARCHIVE_AFTER_DAYS": "0.00001", "ICEPROD_ARCHIVE_INTERVAL": "0.2",
        "ICEPROD_ARCHIVE_LOGS": "drop"})
    try:
        alice = srv.client(srv.token("alice", ["user"], ["physics"]))
        system = srv.client(srv.token("iceprod-system", ["system"]))
        done, running = (create_dataset(alice, "physics") for _ in range(2))
        for ds in (done, running):
            task = create_task(system, ds, create_job(system, ds, 0), status="suspended")
            r = system.post("/logs", json={"task_id": task, "name": "stdout", "data": "x"})
            assert r.status_code == 201, r.text
        assert alice.put(f"/datasets/{done}/status", json={"status": "complete"}
                         ).status_code == 200
        assert wait_for(lambda: alice.get(f"/datasets/{done}").json()["status"] == "archived",
                        timeout=30, what="the policy to archive the finished dataset")
        doc = alice.get(f"/datasets/{done}").json()
        assert doc["archive"]["tasks"] == {"only": {"suspended": 1}}
        assert doc["archive"]["logs"] == {"policy": "drop", "count": 1}
        assert alice.get(f"/datasets/{done}/tasks").json() == {}
        assert not (srv.data_dir / "archive").exists()
        # the unfinished one stays as it was, though the policy has run since
        assert alice.get(f"/datasets/{running}").json()["status"] == "processing"
        assert len(alice.get(f"/datasets/{running}/tasks").json()) == 1
    finally:
        srv.stop()

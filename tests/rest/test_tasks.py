"""Jobs and tasks over HTTP: the claim, fencing, retries, queueing, bulk actions, counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from iceprod.common.config import ServerConfig
from tests.conftest import Server
from tests.helpers import claim, create_dataset, create_job, create_task, register_pilot


@pytest.fixture
def pilot(server: Server):
    """A pilot's registration token; ``register_pilot`` switches it to the pilot's own."""
    with server.client(server.token("pilot-tests", ["pilot"])) as c:
        yield c


@contextmanager
def own_clients(server: Server) -> Iterator[tuple[httpx.Client, ...]]:
    """alice, system and a pilot on a server of the test's own (queue order matters)."""
    with server.client(server.token("alice", ["user"], ["physics"])) as alice, \
            server.client(server.token("iceprod-system", ["system"])) as system, \
            server.client(server.token("pilot-tests", ["pilot"])) as pilot:
        yield alice, system, pilot


def new_dataset(alice: httpx.Client, system: httpx.Client, jobs: int = 1,
                names: tuple[str, ...] = ("only",), **task_kw) -> tuple[str, list[list[str]]]:
    """A dataset with ``jobs`` jobs of one task per name; returns task ids per job."""
    ds = create_dataset(alice, "physics", jobs=jobs, tasks_per_job=len(names))
    out = []
    for j in range(jobs):
        job = create_job(system, ds, j)
        ids: list[str] = []
        for i, name in enumerate(names):
            ids.append(create_task(system, ds, job, i, name, **task_kw))
        out.append(ids)
    return ds, out


def test_claim_matches_requirements(alice, system, pilot) -> None:
    _ds, jobs = new_dataset(alice, system, 1, ("small", "big", "gpu", "el9", "site"),
                           status="queued")
    small, big, gpu, el9, site = jobs[0]
    for tid, req in [(small, {"cpu": 1, "memory": 1}), (big, {"cpu": 8, "memory": 32}),
                     (gpu, {"gpu": 1}), (el9, {"os": ["el9"]}), (site, {"site": "Madison"})]:
        assert system.patch(f"/tasks/{tid}", json={"requirements": req,
                                                   "priority": 5}).status_code == 200
    pid = register_pilot(pilot, cpu=2, memory=4)
    got = set()
    while (r := claim(pilot, pid, cpu=2, memory=4, os="el8")).status_code == 200:
        got.add(r.json()["task_id"])
    assert r.status_code == 404 and r.json()["code"] == 404
    mine = {t for t in got if t in jobs[0]}
    assert mine == {small}
    assert claim(pilot, pid, cpu=2, memory=4, os="el9").json()["task_id"] == el9
    assert claim(pilot, pid, cpu=1, memory=1, site="Madison").json()["task_id"] == site
    assert claim(pilot, pid, cpu=16, memory=64, gpu=1).json()["task_id"] == gpu
    assert claim(pilot, pid, cpu=16, memory=64).json()["task_id"] == big


def test_claim_rejects_injection_and_bad_offers(system, pilot) -> None:
    pid = register_pilot(pilot, cpu=1)
    r = pilot.post("/task_actions/process", json={
        "requirements": {"cpu": {"$gt": 0}}, "pilot_id": pid})
    assert r.status_code == 400 and "requirements.cpu" in r.json()["error"]
    r = pilot.post("/task_actions/process", json={
        "requirements": {"cpu": 1, "status": "complete"}, "pilot_id": pid})
    assert r.status_code == 400 and "status" in r.json()["error"]


def test_concurrent_claimers_each_task_once(server: Server, alice, system) -> None:
    ds = create_dataset(alice, "physics", jobs=500, tasks_per_job=1)
    job_docs = []
    for j in range(500):
        job_docs.append(create_job(system, ds, j))
    for j, job in enumerate(job_docs):
        create_task(system, ds, job, 0, "t", status="queued", priority=float(j % 7))
    token = server.token("pilot-swarm", ["pilot"])

    async def claimer(client: httpx.AsyncClient, pid: str, bound: str) -> list[str]:
        got = []
        while True:
            r = await client.post("/task_actions/process", json={
                "requirements": {"cpu": 1, "memory": 1}, "pilot_id": pid},
                headers={"Authorization": f"Bearer {bound}"})
            if r.status_code == 404:
                return got
            assert r.status_code == 200, r.text
            assert r.json()["dataset_id"] == ds
            got.append(r.json()["task_id"])

    async def run() -> list[list[str]]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as c:
            pilots = []
            for _ in range(20):
                r = await c.post("/pilots", json={"resources": {"cpu": 1}})
                pilots.append((r.json()["result"], r.json()["token"]))
            return await asyncio.gather(*(claimer(c, p, t) for p, t in pilots))

    results = asyncio.run(run())
    claimed = [t for r in results for t in r]
    assert len(claimed) == 500
    assert Counter(claimed).most_common(1)[0][1] == 1
    assert sum(1 for r in results if r) > 1
    counts = alice.get(f"/datasets/{ds}/task_counts/status").json()
    assert counts == {"processing": 500}


def test_fencing_and_retries(fresh_server: Server) -> None:
    with own_clients(fresh_server) as (alice, system, pilot):
        fencing_and_retries(alice, system, pilot)


def fencing_and_retries(alice, system, pilot) -> None:
    ds, jobs = new_dataset(alice, system, 1, ("t",), status="queued", priority=1e6,
                           requirements={"cpu": 1, "memory": 1.0, "time": 1.0})
    (tid,) = jobs[0]
    pid = register_pilot(pilot, cpu=4, memory=16)
    first = claim(pilot, pid, cpu=4, memory=16).json()
    assert first["task_id"] == tid and first["status"] == "processing"
    assert first["lease_expires"].endswith("Z")
    # the reset grows requirements from measured overuse and counts a failure
    r = pilot.post(f"/tasks/{tid}/task_actions/reset", json={
        "instance_id": first["instance_id"], "time_used": 3600, "reason": "killed: memory",
        "resources": {"memory": 2.0, "cpu": 3.0}})
    assert r.status_code == 200 and r.json() == {"status": "waiting", "failures": 1}
    task = system.get(f"/tasks/{tid}").json()
    assert task["requirements"]["memory"] == 3.0 and task["requirements"]["cpu"] == 2
    assert task["walltime_err"] == 1.0 and task["reason"] == "killed: memory"
    assert "instance_id" not in task and "pilot_id" not in task
    # stale instance_id: the old claim cannot complete the re-issued task
    assert system.post("/task_actions/queue", json={"num_tasks": 1000}).json()["queued"] >= 1
    second = claim(pilot, pid, cpu=4, memory=16).json()
    assert second["task_id"] == tid and second["instance_id"] != first["instance_id"]
    r = pilot.post(f"/tasks/{tid}/task_actions/complete",
                   json={"instance_id": first["instance_id"]})
    assert r.status_code == 409 and "instance_id" in r.json()["error"]
    r = system.post(f"/tasks/{tid}/task_actions/complete",
                    json={"instance_id": first["instance_id"]})
    assert r.status_code == 409
    r = pilot.post(f"/tasks/{tid}/task_actions/complete",
                   json={"instance_id": second["instance_id"], "time_used": 7200})
    assert r.status_code == 200
    done = alice.get(f"/datasets/{ds}/tasks/{tid}").json()
    assert done["status"] == "complete" and done["walltime"] == 2.0
    assert "instance_id" not in done
    # complete: the pilot holds it no more, so it may not act on it (whatever instance_id)
    r = pilot.post(f"/tasks/{tid}/task_actions/reset",
                   json={"instance_id": second["instance_id"]})
    assert r.status_code == 403 and "not held by your pilot" in r.json()["error"]
    r = system.post(f"/tasks/{tid}/task_actions/reset",
                    json={"instance_id": second["instance_id"]})
    assert r.status_code == 409 and "complete" in r.json()["error"]
    stats = alice.get(f"/datasets/{ds}/task_stats").json()
    assert stats["t"]["count"] == 1 and stats["t"]["total_err_hrs"] == 1.0
    assert stats["t"]["efficiency"] == pytest.approx(2 / 3)


def test_failures_past_the_limit_fail_the_task(alice, system, pilot) -> None:
    ds = create_dataset(alice, "physics", max_failures=2)
    job = create_job(system, ds, 0)
    tid = create_task(system, ds, job, 0, "t", status="queued", priority=1e9)
    pid = register_pilot(pilot, cpu=1)
    statuses = []
    for _ in range(2):
        got = claim(pilot, pid, cpu=1).json()
        assert got["task_id"] == tid
        r = pilot.post(f"/tasks/{tid}/task_actions/reset",
                       json={"instance_id": got["instance_id"], "reason": "exit 1"})
        statuses.append(r.json()["status"])
        system.put(f"/datasets/{ds}/tasks/{tid}/status", json={"status": "queued"})
    assert statuses == ["waiting", "failed"]
    # the explicit failed action fails at once
    t2 = create_task(system, ds, create_job(system, ds, 1), 0, "t", status="queued",
                     priority=1e9)
    got = claim(pilot, pid, cpu=1).json()
    assert got["task_id"] == t2
    r = pilot.post(f"/tasks/{t2}/task_actions/failed", json={"instance_id": got["instance_id"]})
    assert r.json() == {"status": "failed", "failures": 1}


def test_queue_respects_dependencies(fresh_server: Server) -> None:
    with own_clients(fresh_server) as (alice, system, pilot):
        queue_respects_dependencies(alice, system, pilot)


def queue_respects_dependencies(alice, system, pilot) -> None:
    ds = create_dataset(alice, "physics", tasks_per_job=2)
    job = create_job(system, ds, 0)
    first = create_task(system, ds, job, 0, "first", priority=1e8)
    second = create_task(system, ds, job, 1, "second", depends=[first], priority=1e8)
    system.post("/task_actions/queue", json={"num_tasks": 100000})
    tasks = alice.get(f"/datasets/{ds}/tasks", params={"keys": "status"}).json()
    assert tasks[first]["status"] == "queued" and tasks[second]["status"] == "waiting"
    pid = register_pilot(pilot, cpu=1)
    got = claim(pilot, pid, cpu=1).json()
    assert got["task_id"] == first
    pilot.post(f"/tasks/{first}/task_actions/complete", json={"instance_id": got["instance_id"]})
    system.post("/task_actions/queue", json={"num_tasks": 100000})
    assert alice.get(f"/datasets/{ds}/tasks/{second}").json()["status"] == "queued"


def test_status_changes_counts_and_summaries(alice, system) -> None:
    ds, jobs = new_dataset(alice, system, 3, ("gen", "sim"))
    gen0 = jobs[0][0]
    r = alice.put(f"/datasets/{ds}/tasks/{gen0}/status", json={"status": "complete"})
    assert r.status_code == 409 and r.json()["error"] == "bad transition: waiting -> complete"
    assert alice.put(f"/datasets/{ds}/tasks/{gen0}/status",
                     json={"status": "suspended"}).status_code == 200
    counts = alice.get(f"/datasets/{ds}/task_counts/status").json()
    assert counts == {"waiting": 5, "suspended": 1}
    by_name = alice.get(f"/datasets/{ds}/task_counts/name_status").json()
    assert list(by_name) == ["gen", "sim"]
    assert by_name["gen"] == {"waiting": 2, "suspended": 1} and by_name["sim"] == {"waiting": 3}
    summary = alice.get(f"/datasets/{ds}/task_summaries/status").json()
    assert summary["suspended"] == [gen0] and len(summary["waiting"]) == 5
    # bulk: reset the suspended one, suspend all sims
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/waiting", json={"tasks": [gen0]})
    assert r.json() == {"changed": 1}
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/suspended",
                   json={"filter": {"name": ["sim"]}})
    assert r.json() == {"changed": 3}
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/complete",
                   json={"filter": {"status": ["waiting", "suspended"]}})
    assert r.json() == {"changed": 0}
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/bogus", json={})
    assert r.status_code == 400 and "status" in r.json()["error"]
    r = alice.patch(f"/datasets/{ds}/task_actions/bulk_requirements/sim",
                    json={"memory": 4, "os": ["el9"]})
    assert r.json() == {"changed": 3}
    sims = alice.get(f"/datasets/{ds}/tasks", params={"name": "sim"}).json()
    assert all(t["requirements"] == {"memory": 4, "os": ["el9"]} for t in sims.values())
    r = alice.patch(f"/datasets/{ds}/task_actions/bulk_requirements/sim", json={"memory": "x"})
    assert r.status_code == 400 and "memory" in r.json()["error"]
    # jobs
    job_counts = alice.get(f"/datasets/{ds}/job_counts/status").json()
    assert job_counts == {"processing": 3}
    job_ids = alice.get(f"/datasets/{ds}/job_summaries/status").json()["processing"]
    r = alice.put(f"/datasets/{ds}/jobs/{job_ids[0]}/status", json={"status": "complete"})
    assert r.status_code == 200
    r = alice.put(f"/datasets/{ds}/jobs/{job_ids[0]}/status", json={"status": "suspended"})
    assert r.status_code == 409
    jobs_list = alice.get(f"/datasets/{ds}/jobs", params={"status": "complete"}).json()
    assert list(jobs_list) == [job_ids[0]]
    assert system.post("/jobs", json={"dataset_id": ds, "job_index": 0}).status_code == 409


def test_pilot_heartbeat_and_delete(server: Server, alice, system, pilot) -> None:
    _ds, jobs = new_dataset(alice, system, 1, ("t",), status="queued", priority=2e9)
    pid = register_pilot(pilot, cpu=2)
    got = claim(pilot, pid, cpu=2).json()
    assert got["task_id"] == jobs[0][0]
    r = pilot.patch(f"/pilots/{pid}", json={"resources_available": {"cpu": 1}})
    assert r.status_code == 200 and r.json()["tasks"] == [got["task_id"]]
    renewed = system.get(f"/tasks/{got['task_id']}").json()["lease_expires"]
    assert renewed >= got["lease_expires"]
    with server.client(server.token("someone-else", ["pilot"])) as other:
        other_pid = register_pilot(other, cpu=1)
        assert other.patch(f"/pilots/{pid}", json={}).status_code == 403
        assert other.post(f"/tasks/{got['task_id']}/task_actions/complete",
                          json={"instance_id": got["instance_id"]}).status_code == 403
        assert list(other.get("/pilots").json()) == [other_pid]
    assert pid in alice.get("/pilots").json()
    r = pilot.delete(f"/pilots/{pid}")
    assert r.json() == {"released": 1}
    t = system.get(f"/tasks/{got['task_id']}").json()
    assert t["status"] == "waiting" and t["evictions"] == 1
    assert system.get(f"/pilots/{pid}").status_code == 404
    # the deleted pilot's credentials died with it
    r = pilot.get(f"/pilots/{pid}")
    assert r.status_code == 401 and "no longer valid" in r.json()["error"]


def test_logs_stats_and_files(server: Server, alice, bob, system, pilot) -> None:
    ds, jobs = new_dataset(alice, system, 1, ("t",), status="queued", priority=3e9)
    (tid,) = jobs[0]
    pid = register_pilot(pilot, cpu=1)
    assert claim(pilot, pid, cpu=1).json()["task_id"] == tid
    for name, data in [("stdout", "out 1"), ("stderr", "err 1"), ("stdout", "out 2")]:
        r = pilot.post("/logs", json={"task_id": tid, "name": name, "data": data})
        assert r.status_code == 201
    logs = alice.get(f"/datasets/{ds}/tasks/{tid}/logs").json()
    assert [v["data"] for v in logs.values()] == ["out 1", "err 1", "out 2"]
    newest = alice.get(f"/datasets/{ds}/tasks/{tid}/logs",
                       params={"group": "true", "order": "desc"}).json()
    assert sorted(v["data"] for v in newest.values()) == ["err 1", "out 2"]
    one = alice.get(f"/datasets/{ds}/tasks/{tid}/logs", params={"num": 1, "order": "desc"}).json()
    assert [v["data"] for v in one.values()] == ["out 2"]
    log_id = next(iter(one))
    assert alice.get(f"/datasets/{ds}/logs/{log_id}").json()["data"] == "out 2"
    assert bob.get(f"/datasets/{ds}/logs/{log_id}").status_code == 403
    big = "x" * (server_limit(server) + 1)
    r = pilot.post("/logs", json={"task_id": tid, "name": "stdout", "data": big})
    assert r.status_code == 413 and "data" in r.json()["error"]
    r = pilot.post(f"/tasks/{tid}/task_stats", json={"dataset_id": ds, "stats": {
        "walltime": 12.5, "exit_code": 0, "host": "node1"}})
    assert r.status_code == 201
    stat_id = r.json()["result"]
    stats = alice.get(f"/datasets/{ds}/tasks/{tid}/task_stats").json()
    assert stats[stat_id]["stats"]["host"] == "node1"
    assert alice.get(f"/datasets/{ds}/tasks/{tid}/task_stats/{stat_id}").json()["task_id"] == tid
    r = pilot.post(f"/tasks/{tid}/task_stats", json={"stats": {}})
    assert r.status_code == 400 and "dataset_id" in r.json()["error"]
    r = alice.post(f"/datasets/{ds}/files/{tid}", json={"remote": "gsiftp://x/y/out.i3"})
    assert r.status_code == 201
    (f,) = alice.get(f"/datasets/{ds}/files/{tid}").json()["files"]
    assert f["local"] == "out.i3" and f["movement"] == "input"
    assert f["filename"] == f["remote"] == "gsiftp://x/y/out.i3"
    assert alice.post(f"/datasets/{ds}/files", json={"remote": "/data/in"}).status_code == 201
    assert len(alice.get(f"/datasets/{ds}/files").json()["files"]) == 2
    assert alice.delete(f"/datasets/{ds}/files/{tid}").json() == {"deleted": 1}
    assert alice.get(f"/datasets/{ds}/files/{tid}").json() == {"files": []}
    r = alice.post(f"/datasets/{ds}/files", json={"remote": "/x", "movement": "sideways"})
    assert r.status_code == 400 and "movement" in r.json()["error"]


def server_limit(server: Server) -> int:
    """The log size limit the test server runs with (ICEPROD_MAX_LOG_BYTES is not set)."""
    return ServerConfig().max_log_bytes


def test_grids(system, alice) -> None:
    r = system.post("/grids", json={"host": "submit.example.org", "queues": {"q": "condor"}})
    gid = r.json()["result"]
    g = alice.get(f"/grids/{gid}").json()
    assert g["host"] == "submit.example.org" and g["queues"] == {"q": "condor"}
    assert gid in alice.get("/grids", params={"host": "submit.example.org"}).json()
    assert system.post("/grids", json={}).status_code == 400

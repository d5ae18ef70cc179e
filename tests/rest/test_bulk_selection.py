"""Bulk task actions take an explicit selection; a task is found by id alone by whoever may
read its dataset; a dataset number works wherever a dataset id does (issue 12 §6, §9)."""

from __future__ import annotations

import httpx

from tests.conftest import Server
from tests.helpers import create_dataset, create_job, create_task


def new_dataset(alice: httpx.Client, system: httpx.Client, jobs: int,
                names: tuple[str, ...]) -> tuple[str, list[list[str]]]:
    """A dataset without a config: ``jobs`` jobs of one task per name; task ids per job."""
    ds = create_dataset(alice, "physics", jobs=jobs, tasks_per_job=len(names))
    out = []
    for j in range(jobs):
        job = create_job(system, ds, j)
        out.append([create_task(system, ds, job, i, name) for i, name in enumerate(names)])
    return ds, out


def counts(client: httpx.Client, ds: str) -> dict[str, int]:
    r = client.get(f"/datasets/{ds}/task_counts/status")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_an_empty_selection_is_refused_and_changes_nothing(alice, system) -> None:
    ds, _ = new_dataset(alice, system, 2, ("gen", "sim"))
    url = f"/datasets/{ds}/task_actions/bulk_status/suspended"
    for body in (None, {}):
        r = alice.post(url, json=body) if body is not None else alice.post(url)
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("selection: give tasks")
    r = alice.post(url, json={"filter": {}})
    assert r.status_code == 400 and r.json()["error"].startswith("filter"), r.text
    r = alice.post(url, json={"tasks": []})
    assert r.status_code == 400 and r.json()["error"].startswith("tasks"), r.text
    r = alice.post(url, json={"tasks": [], "filter": {"status": ["waiting"]}})
    assert r.status_code == 400 and r.json()["error"].startswith("tasks"), r.text
    r = alice.post(url, json={"name": "sim"})  # the old "name" key is gone
    assert r.status_code == 400 and "name" in r.json()["error"], r.text
    assert counts(alice, ds) == {"waiting": 4}


def test_unknown_names_are_a_404_naming_them(alice, system) -> None:
    ds, _ = new_dataset(alice, system, 1, ("gen", "sim"))
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/suspended",
                   json={"filter": {"name": ["sim", "smi", "gne"]}})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "name: no task named 'gne', 'smi' in this dataset"
    r = alice.patch(f"/datasets/{ds}/task_actions/bulk_requirements/smi", json={"memory": 2})
    assert r.status_code == 404 and "'smi'" in r.json()["error"], r.text
    assert counts(alice, ds) == {"waiting": 2}


def test_a_filter_selects_by_status_name_and_job_index(alice, system) -> None:
    ds, jobs = new_dataset(alice, system, 4, ("gen", "sim"))
    url = f"/datasets/{ds}/task_actions/bulk_status"
    # sims of jobs 1..2 only
    r = alice.post(f"{url}/suspended", json={"filter": {
        "name": ["sim"], "job_index": {"min": 1, "max": 2}}})
    assert r.json() == {"changed": 2}
    tasks = alice.get(f"/datasets/{ds}/tasks", params={"status": "suspended"}).json()
    assert set(tasks) == {jobs[1][1], jobs[2][1]}
    # a status filter narrows the state machine's sources: waiting ones are left alone
    r = alice.post(f"{url}/waiting", json={"filter": {"status": ["suspended"],
                                                      "job_index": {"min": 2}}})
    assert r.json() == {"changed": 1}
    assert counts(alice, ds) == {"waiting": 7, "suspended": 1}
    # listed ids; one already in the target status does not count as changed
    r = alice.post(f"{url}/suspended", json={"tasks": [jobs[0][0], jobs[1][1]]})
    assert r.json() == {"changed": 1}
    assert counts(alice, ds) == {"waiting": 6, "suspended": 2}


def test_a_task_by_id_for_its_dataset_readers(alice, bob, system, server: Server) -> None:
    ds, jobs = new_dataset(alice, system, 1, ("only",))
    task = jobs[0][0]
    r = alice.get(f"/tasks/{task}", params={"keys": "dataset_id|status"})
    assert r.status_code == 200 and r.json()["dataset_id"] == ds, r.text
    assert "instance_id" not in alice.get(f"/tasks/{task}").json()
    assert bob.get(f"/tasks/{task}").status_code == 403
    assert alice.get(f"/tasks/{'0' * 32}").status_code == 404
    with server.client() as anon:
        assert anon.get(f"/tasks/{task}").status_code == 401


def test_dataset_numbers_in_urls(alice, bob, system, server: Server) -> None:
    ds, _ = new_dataset(alice, system, 2, ("only",))
    number = alice.get(f"/datasets/{ds}").json()["dataset"]
    r = alice.get(f"/datasets/{number}/task_counts/status")
    assert r.status_code == 200 and r.json() == {"waiting": 2}, r.text
    assert alice.get(f"/datasets/{number}").json()["dataset_id"] == ds
    assert alice.get(f"/config/{number}").status_code == 404  # no config yet: the id's answer
    r = alice.post(f"/datasets/{number}/task_actions/bulk_status/suspended",
                   json={"filter": {"status": ["waiting"]}})
    assert r.json() == {"changed": 2}
    # the number's dataset keeps its rules
    assert bob.get(f"/datasets/{number}").status_code == 403
    missing = 10 ** 17
    r = alice.get(f"/datasets/{missing}/task_counts/status")
    assert r.status_code == 404 and r.json()["error"] == f"dataset {missing} not found"
    for bad in ("xyz", "ABCDEF" * 6, "1" * 19, "0x10"):
        r = alice.get(f"/datasets/{bad}/task_counts/status")
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["error"] == "dataset_id: expected a 32-hex id or a dataset number"
    with server.client() as anon:
        assert anon.get(f"/datasets/{number}").status_code == 401
        assert anon.get(f"/datasets/{missing}").status_code == 401

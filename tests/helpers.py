"""Helpers that build datasets, jobs and tasks through the REST API."""

from __future__ import annotations

from typing import Any

import httpx

CHAIN_TASKS = ["generate", "process", "merge"]


def minimal_config(names: list[str] | None = None) -> dict[str, Any]:
    names = names or ["only"]
    tasks = []
    for i, name in enumerate(names):
        task: dict[str, Any] = {
            "name": name,
            "requirements": {"cpu": 1, "memory": 0.5},
            "steps": [{"command": "/bin/true"}],
        }
        if i:
            task["depends"] = [names[i - 1]]
        tasks.append(task)
    return {"tasks": tasks}


def create_dataset(client: httpx.Client, group: str, jobs: int = 1, tasks_per_job: int = 1,
                   **extra: Any) -> str:
    r = client.post("/datasets", json={
        "description": "test dataset", "jobs_submitted": jobs,
        "tasks_submitted": jobs * tasks_per_job, "tasks_per_job": tasks_per_job,
        "group": group, **extra,
    })
    assert r.status_code == 201, r.text
    return r.json()["dataset_id"]


def create_job(system: httpx.Client, dataset_id: str, job_index: int) -> str:
    r = system.post("/jobs", json={"dataset_id": dataset_id, "job_index": job_index})
    assert r.status_code == 201, r.text
    return r.json()["result"]


def create_task(system: httpx.Client, dataset_id: str, job_id: str, task_index: int = 0,
                name: str = "only", **extra: Any) -> str:
    body = {"dataset_id": dataset_id, "job_id": job_id, "task_index": task_index,
            "name": name, **extra}
    r = system.post("/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()["result"]


def register_pilot(client: httpx.Client, **resources: Any) -> str:
    r = client.post("/pilots", json={"queue_host": "localhost", "resources": resources})
    assert r.status_code == 201, r.text
    return r.json()["result"]


def claim(client: httpx.Client, pilot_id: str, **resources: Any) -> httpx.Response:
    return client.post("/task_actions/process",
                       json={"requirements": resources, "pilot_id": pilot_id})

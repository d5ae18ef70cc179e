"""Helpers that build datasets, jobs and tasks through the REST API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from iceprod.client.settings import is_registration_token


def needs(reason: str | None) -> None:
    """Skip a test whose system dependency (slapd, Slurm) is missing on a developer's machine;
    under CI, which installs them (.ci/run), a missing dependency fails instead of hiding."""
    import os

    import pytest

    if not reason:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


# scheduler rounds fast enough for tests to watch them happen
FAST = {"ICEPROD_SCHEDULER_INTERVAL": "0.1", "ICEPROD_PRIORITY_REFRESH": "0.2"}


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "",
             interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")


ROUNDS = "iceprod_scheduler_rounds_total"


def metric(url: str, name: str) -> float:
    """The sum of a counter's samples in the server's ``/metrics`` (0 while it is absent)."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_scheduler_rounds(url: str, rounds: int = 2, timeout: float = 30.0) -> None:
    """Wait until the server's scheduler has finished ``rounds`` more rounds than now.

    What a test asserting that the scheduler did *not* do something waits for: two rounds,
    because the first may have started before the state the test set up."""
    start = metric(url, ROUNDS)
    wait_for(lambda: metric(url, ROUNDS) >= start + rounds, timeout,
             f"{rounds} more scheduler rounds")


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


def submit(client: httpx.Client, config: dict[str, Any], jobs: int = 1, group: str = "physics",
           **extra: Any) -> str:
    """Create a dataset sized for ``config`` and put the config; returns the dataset id."""
    ds = create_dataset(client, group, jobs=jobs, tasks_per_job=len(config["tasks"]), **extra)
    r = client.put(f"/config/{ds}", json=config)
    assert r.status_code == 200, r.text
    return ds


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
    """Register a pilot. A client holding a registration token (a pilot token naming no
    pilot) then switches to the token bound to the new pilot, as the real pilot does, and
    acts as that pilot from then on."""
    r = client.post("/pilots", json={"queue_host": "localhost", "resources": resources})
    assert r.status_code == 201, r.text
    bearer = client.headers.get("Authorization", "").removeprefix("Bearer ")
    if is_registration_token(bearer):
        client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return r.json()["result"]


def claim(client: httpx.Client, pilot_id: str, **resources: Any) -> httpx.Response:
    return client.post("/task_actions/process",
                       json={"requirements": resources, "pilot_id": pilot_id})


def claim_this(client: httpx.Client, pilot_id: str, task_id: str,
               **resources: Any) -> httpx.Response:
    """Claim until the pilot holds ``task_id`` (or a claim is refused): the session's shared
    server may hold other tests' queued tasks, which fit any pilot and which this pilot then
    keeps. Fails when the task never comes."""
    for _ in range(200):
        r = claim(client, pilot_id, **resources)
        if r.status_code != 200 or r.json()["task_id"] == task_id:
            return r
    raise AssertionError(f"task {task_id} was never claimed")


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object inside ``node`` with its JSON-pointer-like path (``where/key/0``)."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")

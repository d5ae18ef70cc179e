"""`POST /task_actions/queue` queues under the queue lease (issue 11 §5): callers racing on
separate connections never push the queue past `queue_max`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import create_dataset, create_job, create_task

QUEUE_MAX = 5
RACERS = 8


@pytest.fixture
def small_queue(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", env={"ICEPROD_QUEUE_MAX": str(QUEUE_MAX)},
                       args=["--only", "rest"])
    yield srv
    srv.stop()


def test_concurrent_queue_calls_never_exceed_queue_max(small_queue: Server) -> None:
    srv = small_queue
    alice = srv.client(srv.token("alice", ["user"], ["physics"]))
    system = srv.client(srv.token("iceprod-system", ["system"]))
    datasets = [create_dataset(alice, "physics", jobs=10, tasks_per_job=1) for _ in range(3)]
    for ds in datasets:
        for j in range(10):
            create_task(system, ds, create_job(system, ds, j), 0, "work")
    start = threading.Barrier(RACERS)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def racer() -> None:
        # each racer its own connection, released together
        with httpx.Client(base_url=srv.url, timeout=60, headers=system.headers) as c:
            start.wait()
            r = c.post("/task_actions/queue", json={"num_tasks": QUEUE_MAX})
            with lock:
                answers.append(r)

    threads = [threading.Thread(target=racer) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == RACERS
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    queued = sum(r.json()["queued"] for r in answers)
    total = sum(system.get(f"/datasets/{ds}/task_counts/status").json().get("queued", 0)
                for ds in datasets)
    assert queued == total == QUEUE_MAX
    # and a later call finds the queue full
    assert system.post("/task_actions/queue", json={}).json() == {"queued": 0}

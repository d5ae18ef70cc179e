"""Both stores answer the same over HTTP: a real ``iceprod-server`` on the embedded SQLite store
and one on MongoDB (the ``mongoeco`` wire-protocol server) get the same requests and must give
the same answers for what MongoDB cannot hold, big logs, and dotted ``keys=``.

It lives beside the store's contract tests because it needs their ``mongoeco_uri`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BY_HAND, Server, start_server
from tests.helpers import create_dataset, create_job, create_task

MIB = 1024 * 1024


@pytest.fixture(params=["sqlite", "mongoeco"])
def backend_server(request: pytest.FixtureRequest, tmp_path: Path, mongoeco_uri: str
                   ) -> Iterator[Server]:
    env = {"ICEPROD_DB_URL": mongoeco_uri} if request.param == "mongoeco" else {}
    env.update(BY_HAND)
    server = start_server(tmp_path / "data", env=env, args=["--only", "rest"])
    yield server
    server.stop()


@pytest.fixture
def system(backend_server: Server) -> httpx.Client:
    return backend_server.client(backend_server.token("iceprod-system", ["system"]))


@pytest.fixture
def task(backend_server: Server, system: httpx.Client) -> tuple[str, str]:
    """A dataset owned by alice with one task: ``(dataset_id, task_id)``."""
    alice = backend_server.client(backend_server.token("alice", ["user"], ["physics"]))
    dataset_id = create_dataset(alice, "physics")
    job_id = create_job(system, dataset_id, 0)
    task_id = create_task(system, dataset_id, job_id, requirements={"cpu": 2, "memory": 1.5})
    return dataset_id, task_id


@pytest.mark.parametrize(
    ("stats", "error"),
    [
        ({"a\u0000b": 1}, "stats.a\\u0000b: a key must not contain a NUL byte"),
        ({"$where": "1"}, "stats.$where: a key must not start with '$'"),
        ({"deep": {"$gt": {"x": 1}}}, "stats.deep.$gt: a key must not start with '$'"),
    ],
)
def test_stats_mongodb_cannot_hold_answer_the_same_400(
    system: httpx.Client, task: tuple[str, str], stats: dict, error: str
) -> None:
    dataset_id, task_id = task
    r = system.post(f"/tasks/{task_id}/task_stats", json={"dataset_id": dataset_id, "stats": stats})
    assert r.status_code == 400, r.text
    assert r.json() == {"code": 400, "error": error}
    assert system.get(f"/datasets/{dataset_id}/tasks/{task_id}/task_stats").json() == {}


def test_integers_past_64_bits_answer_400_and_store_nothing(
    system: httpx.Client, task: tuple[str, str]
) -> None:
    dataset_id, task_id = task
    for stats in ({"n": 2**64}, {"n": [1, -(2**63) - 1]}):
        r = system.post(f"/tasks/{task_id}/task_stats",
                        json={"dataset_id": dataset_id, "stats": stats})
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("stats.n"), r.text
    r = system.post(f"/tasks/{task_id}/task_stats",
                    json={"dataset_id": dataset_id, "stats": {"n": 2**63 - 1}})
    assert r.status_code == 201, r.text
    stored = system.get(f"/datasets/{dataset_id}/tasks/{task_id}/task_stats").json()
    assert [s["stats"] for s in stored.values()] == [{"n": 2**63 - 1}]


def test_a_16_mib_log_round_trips_and_lists_with_others(
    system: httpx.Client, task: tuple[str, str]
) -> None:
    """A log at the default ICEPROD_MAX_LOG_BYTES: stored in chunks on both backends."""
    dataset_id, task_id = task
    big = "x" * (16 * MIB - 2) + "\u00e9"  # exactly 16 MiB of UTF-8
    posted = {}
    for name, data in (("stdout", big), ("stderr", "err"), ("stdlog", "log")):
        r = system.post("/logs", json={"task_id": task_id, "name": name, "data": data})
        assert r.status_code == 201, r.text[:200]
        posted[r.json()["result"]] = (name, data)
    logs = system.get(f"/datasets/{dataset_id}/tasks/{task_id}/logs").json()
    assert {log_id: (d["name"], d["data"]) for log_id, d in logs.items()} == posted
    assert set(next(iter(logs.values()))) == {
        "log_id", "dataset_id", "task_id", "name", "data", "timestamp"}
    big_id = next(log_id for log_id, (name, _) in posted.items() if name == "stdout")
    assert system.get(f"/logs/{big_id}").json()["data"] == big
    names = system.get(f"/datasets/{dataset_id}/tasks/{task_id}/logs",
                       params={"keys": "name", "group": "true"}).json()
    assert sorted(d["name"] for d in names.values()) == ["stderr", "stdlog", "stdout"]
    assert all(set(d) == {"log_id", "name"} for d in names.values())


def test_dotted_keys_project_the_same_on_both_backends(
    system: httpx.Client, task: tuple[str, str]
) -> None:
    dataset_id, task_id = task
    r = system.get(f"/datasets/{dataset_id}/tasks/{task_id}",
                   params={"keys": "requirements.cpu|status"})
    assert r.status_code == 200, r.text
    assert r.json() == {"task_id": task_id, "requirements": {"cpu": 2}, "status": "waiting"}
    r = system.get(f"/datasets/{dataset_id}/tasks", params={"keys": "requirements.gpu"})
    assert r.json() == {task_id: {"task_id": task_id}}
    r = system.get(f"/datasets/{dataset_id}/tasks/{task_id}", params={"keys": "requirements..cpu"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("keys: 'requirements..cpu' is not a field path")

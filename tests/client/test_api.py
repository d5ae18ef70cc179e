"""The typed client against a real server (sync and async), and its retry behaviour against
a scripted local HTTP server."""

from __future__ import annotations

import socket
import time

import pytest

from iceprod.client import _unasync
from iceprod.client.api import (
    NO_RETRY,
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Invalid,
    NotFound,
    RetryPolicy,
    ServerError,
    Unauthorized,
    Unavailable,
    parse_retry_after,
)
from tests.client.conftest import Scripted
from tests.conftest import Server
from tests.helpers import minimal_config

FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def alice_client(server: Server):
    with Client(server.url, server.token("alice", ["user"], ["physics"]), retry=FAST) as c:
        yield c


@pytest.fixture(scope="module")
def system_client(server: Server):
    with Client(server.url, server.token("iceprod-system", ["system"]), retry=FAST) as c:
        yield c


def queued_task(alice: Client, system: Client, name: str = "only") -> tuple[str, str]:
    ds = alice.datasets.create("client test", jobs_submitted=1, tasks_per_job=1, group="physics")
    job = system.jobs.create(ds, 0)
    task = system.tasks.create(ds, job, 0, name, status="queued",
                               requirements={"cpu": 1, "memory": 1}, priority=100.0)
    return ds, task


def test_sync_pilot_cycle(server: Server, alice_client: Client, system_client: Client) -> None:
    ds, task_id = queued_task(alice_client, system_client)
    with Client(server.url, server.token("pilot-client", ["pilot"]), retry=FAST) as pilot:
        pilot_id = pilot.pilots.create(resources={"cpu": 1, "memory": 1}, queue_host="test")
        task = pilot.tasks.claim({"cpu": 1, "memory": 1}, pilot_id)
        assert task is not None and task["task_id"] == task_id and task["instance_id"]
        assert pilot.pilots.heartbeat(pilot_id)["tasks"] == [task_id]
        assert pilot.logs.create(task_id, "stdout", "hello\n")
        assert pilot.task_stats.create(task_id, ds, {"walltime": 1.5})
        with pytest.raises(Conflict):
            pilot.tasks.complete(task_id, "0" * 32)
        pilot.tasks.complete(task_id, task["instance_id"], time_used=3.0, site="here")
        assert pilot.tasks.claim({"cpu": 1, "memory": 1}, pilot_id) is None
        assert pilot.pilots.delete(pilot_id) == 0
    assert alice_client.tasks.get(ds, task_id)["status"] == "complete"
    logs = alice_client.logs.for_task(ds, task_id)
    assert [log["data"] for log in logs.values()] == ["hello\n"]
    assert alice_client.task_stats.latest(ds, task_id)["stats"] == {"walltime": 1.5}


async def test_async_client_same_routes(server: Server) -> None:
    token = server.token("alice", ["user"], ["physics"])
    async with AsyncClient(server.url, token, retry=FAST) as client:
        ds = await client.datasets.create("async", jobs_submitted=2, tasks_per_job=1,
                                          group="physics")
        await client.config.put(ds, minimal_config())
        assert (await client.config.get(ds))["tasks"][0]["name"] == "only"
        doc = await client.datasets.get(ds)
        assert doc["status"] == "processing" and doc["tasks_submitted"] == 2
        assert (await client.datasets.by_number(doc["dataset"]))["dataset_id"] == ds
        seen = [d["dataset_id"] async for d in client.datasets.iter(page_size=1)]
        assert ds in seen
        await client.datasets.set_status(ds, "suspended")
        assert ds in (await client.datasets.ids_by_status())["suspended"]


def test_errors_carry_the_server_message(server: Server, alice_client: Client) -> None:
    with pytest.raises(Invalid) as err:
        alice_client.datasets.create("x", jobs_submitted=0, tasks_per_job=1, group="physics")
    assert err.value.code == 400 and "jobs_submitted" in err.value.message
    with pytest.raises(NotFound) as missing:
        alice_client.datasets.get("f" * 32)
    assert missing.value.code == 404 and str(missing.value).startswith("404 ")
    with pytest.raises(Forbidden):
        alice_client.datasets.create("x", jobs_submitted=1, tasks_per_job=1, group="astro")
    with (Client(server.url, "not-a-token", retry=NO_RETRY) as bad,
          pytest.raises(Unauthorized) as unauth):
        bad.datasets.list()
    assert unauth.value.message == "invalid token"


def test_pagination_follows_cursors(alice_client: Client, system_client: Client) -> None:
    ds = alice_client.datasets.create("pages", jobs_submitted=5, tasks_per_job=1,
                                      group="physics")
    for index in range(5):
        system_client.jobs.create(ds, index)
    first = alice_client.jobs.page(ds, limit=2)
    assert len(first.items) == 2 and first.next_after
    every = [job["job_index"] for job in alice_client.jobs.iter(ds, page_size=2)]
    assert sorted(every) == [0, 1, 2, 3, 4]
    assert len(alice_client.jobs.list(ds)) == 5
    assert alice_client.jobs.counts(ds) == {"processing": 5}


def test_retry_after_is_honoured(scripted: Scripted) -> None:
    scripted.replies = [(503, {"Retry-After": "1"}, {"code": 503, "error": "maintenance"}),
                        (200, {}, {"status": "ok"})]
    start = time.monotonic()
    with Client(scripted.url, retry=RetryPolicy(backoff=0.01)) as client:
        assert client.health() == {"status": "ok"}
    assert len(scripted.seen) == 2
    assert scripted.seen[1][0] - scripted.seen[0][0] >= 1.0
    assert time.monotonic() - start < 5


async def test_async_retries_with_backoff_then_raises(scripted: Scripted) -> None:
    scripted.replies = [(502, {}, {"code": 502, "error": "bad gateway"})]
    async with AsyncClient(scripted.url, retry=RetryPolicy(attempts=3, backoff=0.05)) as client:
        with pytest.raises(ServerError) as err:
            await client.request("GET", "/anything")
    assert err.value.code == 502 and err.value.message == "bad gateway"
    times = [t for t, _, _ in scripted.seen]
    assert len(times) == 3
    # jittered exponential: the 2nd wait (0.05..0.1s) follows the 1st (0.025..0.05s)
    assert 0.02 <= times[1] - times[0] and 0.045 <= times[2] - times[1]


def test_unsafe_posts_are_not_repeated_after_a_server_error(scripted: Scripted) -> None:
    scripted.replies = [(500, {}, {"code": 500, "error": "internal server error"})]
    with Client(scripted.url, retry=FAST) as client:
        with pytest.raises(ServerError):
            client.request("POST", "/datasets", {"x": 1})
        assert len(scripted.seen) == 1
        scripted.replies = [(503, {}, {"code": 503, "error": "busy"})]
        with pytest.raises(Unavailable) as err:
            client.request("POST", "/datasets", {"x": 1})
    assert err.value.message == "busy" and len(scripted.seen) == 1 + FAST.attempts


def test_too_long_retry_after_fails_at_once(scripted: Scripted) -> None:
    scripted.replies = [(429, {"Retry-After": "3600"}, {"code": 429, "error": "slow down"})]
    with Client(scripted.url, retry=FAST) as client, pytest.raises(Exception) as err:
        client.health()
    assert getattr(err.value, "retry_after", None) == 3600 and len(scripted.seen) == 1


def test_unreachable_server_raises_connection_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (Client(f"http://127.0.0.1:{port}", retry=FAST) as client,
          pytest.raises(ConnectionFailed) as err):
        client.health()
    assert err.value.code == 0 and "cannot reach" in str(err.value)


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(attempts=5, backoff=1, max_backoff=4, random=lambda: 1.0)
    assert [policy.backoff_delay(a) for a in range(5)] == [1, 2, 4, 4, 4]
    assert policy.after_status(0, 404, None, True) is None
    assert policy.after_status(4, 503, None, True) is None  # attempts used up
    assert policy.after_status(0, 500, None, False) is None  # POST may have acted
    assert policy.after_status(0, 429, 7.0, False) == pytest.approx(7.7)
    assert parse_retry_after("12") == 12
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None


def test_sync_client_is_generated_from_async() -> None:
    assert _unasync.main(["--check"]) == 0

"""Issue 13's acceptance: work moves on events, not scheduler rounds, and `GET /events`
streams every change.

The servers here run `--only rest`: no scheduler round ever runs, so whatever gets queued
is queued by the request that made it ready (a config PUT, a parent's completion).
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import metric, minimal_config, register_pilot, submit, wait_for

OFFER = {"cpu": 8, "memory": 8, "disk": 10, "time": 10}


class Stream:
    """`GET /events` read in a thread: each event as `(id, event, data)`; comment lines
    counted as heartbeats."""

    def __init__(self, url: str, token: str, params: dict[str, Any] | None = None,
                 last_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=60))
        self.events: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self.heartbeats = 0
        self.status: int | None = None
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.read, args=(headers, params or {}),
                                       daemon=True)
        self.thread.start()
        assert self.opened.wait(30), "the stream never opened"

    def read(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        try:
            with self.client.stream("GET", "/events", headers=headers, params=params) as r:
                self.status = r.status_code
                self.content_type = r.headers.get("content-type", "")
                self.opened.set()
                if r.status_code != 200:
                    return
                frame: dict[str, str] = {}
                for line in r.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith(":"):
                        self.heartbeats += "heartbeat" in line
                    elif line == "":
                        if "data" in frame:
                            self.events.put((frame.get("id", ""), frame.get("event", ""),
                                             json.loads(frame["data"])))
                        frame = {}
                    else:
                        key, _, value = line.partition(": ")
                        frame[key] = value
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.events.put(None)

    def next(self, timeout: float = 30) -> tuple[str, str, dict[str, Any]]:
        got = self.events.get(timeout=timeout)
        assert got is not None, "the stream ended"
        return got

    def until(self, done: Any, timeout: float = 30) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while True:
            out.append(self.next(timeout))
            if done(out[-1]):
                return out

    def close(self) -> None:
        self.stop.set()
        self.client.close()


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", args=["--only", "rest"])
    yield srv
    srv.stop()


def pilot_client(srv: Server) -> tuple[httpx.Client, str]:
    c = srv.client(srv.token("pilot-a", ["pilot"]))
    c.timeout = httpx.Timeout(60)
    return c, register_pilot(c, cpu=8, memory=8)


def dataset_done(item: tuple[str, str, dict[str, Any]]) -> bool:
    return item[1] == "dataset" and item[2]["status"] == "complete"


def test_events_drive_the_work_and_the_stream_sees_every_change(rest: Server) -> None:
    admin_token = rest.token("root", ["admin"])
    alice_token = rest.token("alice", ["user"], ["physics"])
    alice = rest.client(alice_token)
    # the other dataset, and a share token of it that sees nothing else
    other = submit(alice, minimal_config(), jobs=1)
    share = rest.token("alice", ["user"], ["physics"], scope=f"dataset:{other}:read")
    shared = Stream(rest.url, share)
    assert shared.status == 200 and shared.content_type.startswith("text/event-stream")

    # a chain of three: the config PUT queues the first task at once (no scheduler here)
    chain_ds_stream = Stream(rest.url, admin_token)  # everything, from before the PUT
    config = minimal_config(["generate", "process", "merge"])
    from tests.helpers import create_dataset
    ds = create_dataset(alice, "physics", jobs=1, tasks_per_job=3)
    mine = Stream(rest.url, alice_token, params={"dataset_id": ds})
    assert alice.put(f"/config/{ds}", json=config).status_code == 200
    counts = alice.get(f"/datasets/{ds}/task_counts/status").json()
    assert counts == {"queued": 1, "waiting": 2}

    pilot, pilot_id = pilot_client(rest)
    r = pilot.post("/task_actions/process",
                   json={"requirements": OFFER, "pilot_id": pilot_id, "max_tasks": 4})
    assert r.status_code == 200, r.text
    got = r.json()["tasks"]
    assert sorted(t["name"] for t in got) == ["generate", "only"]
    first = next(t for t in got if t["name"] == "generate")
    only = next(t for t in got if t["name"] == "only")

    # nothing is left: a waiting claim is answered the moment the dependent is queued by
    # its parent's completion (inline stats and log: one request finishes the task)
    answer: dict[str, Any] = {}

    def waiting_claim() -> None:
        answer["r"] = pilot.post("/task_actions/process", json={
            "requirements": OFFER, "pilot_id": pilot_id, "wait": 20})

    waits = metric(rest.url, "iceprod_claim_waits_total")
    claimer = threading.Thread(target=waiting_claim)
    claimer.start()
    wait_for(lambda: metric(rest.url, "iceprod_claim_waits_total") > waits,
             what="the claim to wait")
    r = pilot.post(f"/tasks/{first['task_id']}/task_actions/complete", json={
        "instance_id": first["instance_id"], "time_used": 1.5,
        "stats": {"walltime": 1.5, "exit_code": 0}, "log": {"stdout": "generated\n"}})
    assert r.status_code == 200, r.text
    claimer.join(30)
    assert answer["r"].status_code == 200, answer["r"].text
    second = answer["r"].json()
    assert second["name"] == "process"
    logs = alice.get(f"/datasets/{ds}/tasks/{first['task_id']}/logs").json()
    assert [(d["name"], d["data"]) for d in logs.values()] == [("stdout", "generated\n")]
    stats = alice.get(f"/datasets/{ds}/tasks/{first['task_id']}/task_stats").json()
    assert [s["stats"]["exit_code"] for s in stats.values()] == [0]

    # the stream of my dataset, read up to the second task's start, then dropped
    part = mine.until(lambda e: e[1] == "task" and e[2]["name"] == "process"
                      and e[2]["status"] == "processing")
    mine.close()
    last_id = part[-1][0]

    # more happens while nobody listens
    for task, name in ((second, "process"),):
        r = pilot.post(f"/tasks/{task['task_id']}/task_actions/complete",
                       json={"instance_id": task["instance_id"]})
        assert r.status_code == 200, r.text
    third = pilot.post("/task_actions/process",
                       json={"requirements": OFFER, "pilot_id": pilot_id}).json()
    assert third["name"] == "merge"

    # a reconnect with Last-Event-ID misses nothing, then follows live to the end
    resumed = Stream(rest.url, alice_token, params={"dataset_id": ds}, last_id=last_id)
    assert pilot.post(f"/tasks/{third['task_id']}/task_actions/complete",
                      json={"instance_id": third["instance_id"]}).status_code == 200
    rest_of_it = resumed.until(dataset_done)
    resumed.close()
    seen = part + rest_of_it
    seqs = [int(i) for i, _, _ in seen]
    assert seqs == sorted(set(seqs)), "in order, none twice"
    assert all(d["seq"] == int(i) and d["type"] == kind for i, kind, d in seen)
    assert {d["dataset_id"] for _, _, d in seen} == {ds}
    transitions = Counter((d["name"], d["prev_status"], d["status"])
                          for _, kind, d in seen if kind == "task")
    expected = {(n, a, b) for n in ("generate", "process", "merge")
                for a, b in (("waiting", "queued"), ("queued", "processing"),
                             ("processing", "complete"))}
    assert set(transitions) == expected and set(transitions.values()) == {1}
    assert [(d["status"], d["prev_status"]) for _, k, d in seen if k == "job"] == \
        [("complete", "processing")]
    job_event = next(d for _, k, d in seen if k == "job")
    assert set(job_event) == {"seq", "type", "dataset_id", "job_id", "status", "prev_status",
                              "time"}
    assert seen[-1][2]["type"] == "dataset" and "task_id" not in seen[-1][2]

    # the unfiltered admin stream saw both datasets; the share token only its own
    everything = chain_ds_stream.until(lambda e: dataset_done(e) and e[2]["dataset_id"] == ds)
    assert {d["dataset_id"] for _, _, d in everything} == {other, ds}
    chain_ds_stream.close()
    assert pilot.post(f"/tasks/{only['task_id']}/task_actions/complete",
                      json={"instance_id": only["instance_id"]}).status_code == 200
    theirs = shared.until(dataset_done)
    shared.close()
    assert {d["dataset_id"] for _, _, d in theirs} == {other}
    assert [(d["prev_status"], d["status"]) for _, k, d in theirs if k == "task"] == \
        [("queued", "processing"), ("processing", "complete")]

    # without `Accept: text/event-stream`: one JSON page, a poll, filtered the same way
    share_c = rest.client(share)
    where = share_c.get("/events").json()
    assert where["events"] == [] and where["last_event_id"] >= int(theirs[-1][0])
    page = share_c.get("/events", params={"since": 0}).json()
    # the stream opened after `other` was submitted; the poll from 0 has its queueing too
    assert {e["dataset_id"] for e in page["events"]} == {other}
    assert (page["events"][0]["prev_status"], page["events"][0]["status"]) == \
        ("waiting", "queued")
    assert [e["seq"] for e in page["events"][1:]] == [d["seq"] for _, _, d in theirs]
    assert rest.client(rest.token("bob", ["user"], ["astro"])).get(
        "/events", params={"dataset_id": ds}).status_code == 403


def test_a_second_rest_process_delivers_what_the_first_caused(rest: Server) -> None:
    """Two REST replicas on one store: each learns the other's changes from the store's
    events log (a stream and a waiting claim on the second, work done through the first)."""
    second = start_server(rest.data_dir, args=["--only", "rest"])
    try:
        alice_token = rest.token("alice", ["user"], ["physics"])
        stream = Stream(second.url, alice_token, params={"heartbeat": 1})
        pilot, pilot_id = pilot_client(second)
        answer: dict[str, Any] = {}

        def waiting_claim() -> None:
            answer["r"] = pilot.post("/task_actions/process", json={
                "requirements": OFFER, "pilot_id": pilot_id, "wait": 20, "max_tasks": 2})

        claimer = threading.Thread(target=waiting_claim)
        claimer.start()
        wait_for(lambda: metric(second.url, "iceprod_claim_waits_total") >= 1,
                 what="the claim to wait on the second replica")
        ds = submit(rest.client(alice_token), minimal_config(), jobs=1)  # through the first
        claimer.join(30)
        assert answer["r"].status_code == 200, answer["r"].text
        assert [t["dataset_id"] for t in answer["r"].json()["tasks"]] == [ds]
        got = stream.until(lambda e: e[2]["status"] == "processing")
        assert [(d["dataset_id"], d["prev_status"], d["status"]) for _, _, d in got] == \
            [(ds, "waiting", "queued"), (ds, "queued", "processing")]
        wait_for(lambda: stream.heartbeats > 0, what="a heartbeat comment")
        stream.close()
        # a bad resume point is refused, naming the header
        r = second.client(alice_token).get("/events", headers={"Last-Event-ID": "x"})
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]
    finally:
        second.stop()


def test_bulk_changes_and_released_pilots_are_events(rest: Server) -> None:
    """Changes that move many tasks at once -- a dataset suspended and resumed (its cascade),
    an operator's bulk status -- are each one `tasks` event naming the new status, how many
    changed and why; a pilot deleted while it holds a task gives the task back with the task's
    own event. A reader of another dataset sees none of it."""
    alice = rest.client(rest.token("alice", ["user"], ["physics"]))
    carol = rest.client(rest.token("carol", ["user"], ["astro"]))
    system = rest.client(rest.token("sys", ["system"]))
    start = alice.get("/events").json()["last_event_id"]
    ds = submit(alice, minimal_config(["only"]), jobs=3)
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == {"queued": 3}
    pilot, pilot_id = pilot_client(rest)
    held = pilot.post("/task_actions/process", json={"requirements": OFFER,
                                                      "pilot_id": pilot_id}).json()

    def claimed() -> int | None:
        page = alice.get("/events", params={"since": start}).json()
        return page["last_event_id"] if any(
            e.get("task_id") == held["task_id"] and e["status"] == "processing"
            for e in page["events"]) else None

    mark = wait_for(claimed, what="the claim's event")

    assert alice.put(f"/datasets/{ds}/status", json={"status": "suspended"}).json() == \
        {"changed": 3, "tasks_changed": 3}
    assert alice.put(f"/datasets/{ds}/status", json={"status": "processing"}).json()[
        "changed"] == 3
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/suspended",
                   json={"filter": {"status": ["waiting"]}})
    assert r.json() == {"changed": 3}
    r = alice.post(f"/datasets/{ds}/task_actions/bulk_status/waiting",
                   json={"filter": {"status": ["suspended"]}})
    assert r.json() == {"changed": 3}
    assert system.post("/task_actions/queue", json={"num_tasks": 3}).json() == {"queued": 3}
    held = pilot.post("/task_actions/process", json={"requirements": OFFER,
                                                      "pilot_id": pilot_id}).json()
    assert system.delete(f"/pilots/{pilot_id}").json() == {"released": 1}

    def seen() -> list[tuple[Any, ...]]:
        page = alice.get("/events", params={"since": mark}).json()["events"]
        return [(e["type"], e.get("task_id"), e["prev_status"], e["status"], e.get("changed"),
                 e.get("cause")) for e in page if e["dataset_id"] == ds]

    expected = [
        ("dataset", None, "processing", "suspended", None, None),
        ("tasks", None, None, "suspended", 3, "cascade"),
        ("dataset", None, "suspended", "processing", None, None),
        ("tasks", None, None, "waiting", 3, "cascade"),
        ("tasks", None, None, "suspended", 3, "bulk_status"),
        ("tasks", None, None, "waiting", 3, "bulk_status"),
        *[("task", None, "waiting", "queued", None, None)] * 3,
        ("task", held["task_id"], "queued", "processing", None, None),
        ("task", held["task_id"], "processing", "waiting", None, None),
    ]

    def matches() -> bool:
        got = seen()
        return len(got) == len(expected) and all(
            g == e or (e[1] is None and g[:1] + g[2:] == e[:1] + e[2:])
            for g, e in zip(got, expected, strict=True))

    wait_for(matches, what=f"the events of every change, in order (saw {seen()})")
    # a reader of another dataset sees none of this dataset's events
    others = carol.get("/events", params={"since": start}).json()["events"]
    assert others == []

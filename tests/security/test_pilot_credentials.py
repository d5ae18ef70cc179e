"""Pilot credentials die with their pilot, and groups read but do not write (issue 10, §2-3),
against a real server over HTTP.

- A pilot that is lost, finished or deleted, or whose token expired, can no longer claim,
  heartbeat, complete, reset, fail, upload logs or stats, read its task or touch the file
  store; each refusal is a 401 naming why, and nothing it sent is stored.
- A registration token (a pilot token naming no pilot) only registers.
- A real pilot renews its token through its heartbeat and keeps working past the initial
  lifetime; a lost pilot that comes back exits with one clear line, its task unreported.
- A member of a dataset's group who is not its owner reads but does not write; the owner
  writes; ``PUT /auths`` grants the group write.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest

from tests.conftest import BY_HAND, Server, start_server
from tests.helpers import claim, create_dataset, create_job, create_task, register_pilot
from tests.pilot.support import (
    FAST,
    Pilots,
    finished,
    logs,
    one_task,
    pilot_log,
    stats,
    step_process,
    submit,
    tasks,
    token_path,
    wait_for,
)

RESOURCES = {"cpu": 1, "memory": 1}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """REST only: every state is driven by hand."""
    server = start_server(tmp_path_factory.mktemp("credentials"), env=BY_HAND,
                          args=["--only", "rest"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(srv: Server) -> httpx.Client:
    return srv.client(srv.token("alice", ["user"], ["physics"]))


@pytest.fixture(scope="module")
def system(srv: Server) -> httpx.Client:
    return srv.client(srv.token("iceprod-system", ["system"]))


@pytest.fixture(scope="module")
def admin(srv: Server) -> httpx.Client:
    return srv.client(srv.token("root", ["admin"]))


class World:
    """A dataset of alice's with two queued tasks only pilots at its own site take, a file in
    its store, and a pilot holding the first task."""

    def __init__(self, srv: Server, alice: httpx.Client, system: httpx.Client) -> None:
        self.ds = create_dataset(alice, "physics", jobs=1, tasks_per_job=2)
        job = create_job(system, self.ds, 0)
        self.site = f"site-{self.ds}"
        req = {**RESOURCES, "site": self.site}
        self.held = create_task(system, self.ds, job, 0, "a", status="queued", priority=1,
                                requirements=req)
        self.spare = create_task(system, self.ds, job, 1, "b", status="queued",
                                 requirements=req)
        r = alice.put(f"/datasets/{self.ds}/store/input.txt", content=b"input")
        assert r.status_code == 201, r.text
        self.pilot = srv.client(srv.token("pilot-registrar", ["pilot"]))
        self.pilot_id = register_pilot(self.pilot, **RESOURCES)
        r = claim(self.pilot, self.pilot_id, **RESOURCES, site=self.site)
        assert r.status_code == 200, r.text
        assert r.json()["task_id"] == self.held
        self.instance_id = r.json()["instance_id"]

    def actions(self) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
        """Everything a pilot does, each as a request from ``client``."""
        ds, tid, iid, pid = self.ds, self.held, self.instance_id, self.pilot_id
        fenced = {"instance_id": iid, "time_used": 1.0, "reason": "r"}
        return {
            "claim": lambda c: claim(c, pid, **RESOURCES, site=self.site),
            "heartbeat": lambda c: c.patch(f"/pilots/{pid}",
                                           json={"resources_available": RESOURCES}),
            "get pilot": lambda c: c.get(f"/pilots/{pid}"),
            "get task": lambda c: c.get(f"/tasks/{tid}"),
            "log": lambda c: c.post("/logs", json={"task_id": tid, "name": "stdout",
                                                   "data": "from the dead"}),
            "stats": lambda c: c.post(f"/tasks/{tid}/task_stats",
                                      json={"dataset_id": ds, "stats": {"walltime": 1}}),
            "store list": lambda c: c.get(f"/datasets/{ds}/store"),
            "store get": lambda c: c.get(f"/datasets/{ds}/store/input.txt"),
            "store put": lambda c: c.put(f"/datasets/{ds}/store/output.txt", content=b"x"),
            "complete": lambda c: c.post(f"/tasks/{tid}/task_actions/complete",
                                         json={"instance_id": iid, "time_used": 1.0}),
            "reset": lambda c: c.post(f"/tasks/{tid}/task_actions/reset", json=fenced),
            "failed": lambda c: c.post(f"/tasks/{tid}/task_actions/failed", json=fenced),
        }


@pytest.fixture
def world(srv: Server, alice: httpx.Client, system: httpx.Client) -> World:
    return World(srv, alice, system)


def test_a_live_pilot_may_do_all_of_it(world: World) -> None:
    """The baseline the refusals below are measured against: each action works while the
    pilot is alive (the fenced ones last: complete ends the holding)."""
    for name, act in world.actions().items():
        if name in ("reset", "failed"):
            continue
        r = act(world.pilot)
        assert r.status_code in (200, 201), f"{name}: {r.status_code} {r.text}"


def kill_lost(admin: httpx.Client, world: World) -> str:
    r = admin.patch(f"/pilots/{world.pilot_id}", json={"status": "lost"})
    assert r.status_code == 200, r.text
    return f"pilot {world.pilot_id} is lost"


def kill_finished(admin: httpx.Client, world: World) -> str:
    r = admin.patch(f"/pilots/{world.pilot_id}", json={"status": "finished"})
    assert r.status_code == 200, r.text
    return f"pilot {world.pilot_id} is finished"


def kill_deleted(admin: httpx.Client, world: World) -> str:
    r = admin.delete(f"/pilots/{world.pilot_id}")
    assert r.status_code == 200 and r.json() == {"released": 1}, r.text
    return f"pilot {world.pilot_id} does not exist"


@pytest.mark.parametrize("kill", [kill_lost, kill_finished, kill_deleted],
                         ids=["lost", "finished", "deleted"])
def test_a_dead_pilots_token_does_nothing(srv: Server, world: World, alice: httpx.Client,
                                          admin: httpx.Client,
                                          kill: Callable[[httpx.Client, World], str]) -> None:
    why = kill(admin, world)
    for name, act in world.actions().items():
        r = act(world.pilot)
        assert r.status_code == 401, f"{name}: {r.status_code} {r.text}"
        error = r.json()["error"]
        assert why in error and "credentials are no longer valid" in error, (name, error)
    # nothing it sent was stored; its task went back to waiting, untouched
    task = alice.get(f"/datasets/{world.ds}/tasks/{world.held}").json()
    assert task["status"] == "waiting" and task["evictions"] == 1
    assert task["failures"] == 0 and task.get("walltime", 0) == 0
    assert logs(alice, world.ds, world.held) == []
    assert stats(alice, world.ds, world.held) == []
    assert "output.txt" not in alice.get(f"/datasets/{world.ds}/store").json()
    # the work was there to take: a live pilot gets it at once
    live = srv.client(srv.token("pilot-live", ["pilot"]))
    live_id = register_pilot(live, **RESOURCES)
    r = claim(live, live_id, **RESOURCES, site=world.site)
    assert r.status_code == 200 and r.json()["task_id"] in (world.held, world.spare)


def test_an_expired_pilot_token_is_refused(srv: Server, world: World) -> None:
    # exp is whole seconds: a 1 s lifetime can be a few ms, less than a loaded machine needs
    # for the first request; 3 s leaves at least 2
    short = srv.token(f"pilot-{world.pilot_id}", ["pilot"], exp=3, pilot_id=world.pilot_id)
    expires = jwt.decode(short, options={"verify_signature": False})["exp"]
    with srv.client(short) as c:
        assert world.actions()["heartbeat"](c).status_code == 200
        wait_for(lambda: time.time() > expires + 0.1, timeout=5, what="the token's expiry")
        for name, act in world.actions().items():
            r = act(c)
            assert r.status_code == 401 and r.json()["error"] == "token expired", name
    # the pilot's own token still works: expiry is per token
    assert world.actions()["heartbeat"](world.pilot).status_code == 200


def test_a_registration_token_only_registers(srv: Server, world: World) -> None:
    with srv.client(srv.token("pilot-registrar", ["pilot"])) as c:
        for name, act in world.actions().items():
            r = act(c)
            assert r.status_code == 403, f"{name}: {r.status_code} {r.text}"
            assert "names no pilot" in r.json()["error"], name
        r = c.post("/pilots", json={"resources": RESOURCES})
        assert r.status_code == 201, r.text
        body = r.json()
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["pilot_id"] == body["result"] and claims["roles"] == ["pilot"]
        assert claims["exp"] - claims["iat"] == pytest.approx(4 * 3600, abs=2)
    with srv.client(body["token"]) as bound:
        r = bound.patch(f"/pilots/{body['result']}", json={})
        assert r.status_code == 200 and "token" not in r.json()  # young: no renewal yet
        # a bound token registers nothing more
        assert bound.post("/pilots", json={"resources": RESOURCES}).status_code == 409


def test_a_pilot_that_does_not_hold_the_task_gets_403_whatever_the_instance(
        srv: Server, world: World) -> None:
    other = srv.client(srv.token("pilot-other", ["pilot"]))
    register_pilot(other, **RESOURCES)
    for instance_id in (world.instance_id, "0" * 32):
        for action in ("complete", "reset", "failed"):
            r = other.post(f"/tasks/{world.held}/task_actions/{action}",
                           json={"instance_id": instance_id})
            assert r.status_code == 403, (action, r.text)
            assert r.json()["error"] == "task is not held by your pilot"
    # the holder with a stale instance learns it is stale
    r = world.pilot.post(f"/tasks/{world.held}/task_actions/complete",
                         json={"instance_id": "0" * 32})
    assert r.status_code == 409 and "instance_id" in r.json()["error"]


def test_the_heartbeat_renews_a_token_past_half_its_life(srv: Server, world: World) -> None:
    young = srv.token(f"pilot-{world.pilot_id}", ["pilot"], exp=3600, pilot_id=world.pilot_id)
    with srv.client(young) as c:
        assert "token" not in world.actions()["heartbeat"](c).json()
    # iat an hour ago, expiring in a minute: well past half its life
    now = time.time()
    old = jwt.encode({"sub": f"pilot-{world.pilot_id}", "roles": ["pilot"], "groups": [],
                      "iat": now - 3600, "exp": int(now + 60), "pilot_id": world.pilot_id},
                     srv.secret, algorithm="HS256")
    with srv.client(old) as c:
        doc = world.actions()["heartbeat"](c).json()
    claims = jwt.decode(doc["token"], srv.secret, algorithms=["HS256"])
    assert claims["pilot_id"] == world.pilot_id and claims["exp"] > now + 3600
    assert doc["expires"].endswith("Z")
    with srv.client(doc["token"]) as renewed:
        assert world.actions()["get task"](renewed).status_code == 200


# -- real pilots -------------------------------------------------------------------------------

LIFETIME = 6  # seconds: renewed after 3, the heartbeat runs every 0.5


@pytest.fixture
def live_srv(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "data",
                          env={**FAST, "ICEPROD_PILOT_TOKEN_SECONDS": str(LIFETIME)})
    yield server
    server.stop()


@pytest.fixture
def pilots(live_srv: Server, tmp_path: Path) -> Iterator[Pilots]:
    started = Pilots(live_srv, tmp_path)
    yield started
    started.stop()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def waiting_step(go: Path) -> dict[str, Any]:
    """A step that runs until ``go`` exists (its directory is bound into the step's sandbox
    with the pilot's ``--sandbox-bind``; see `gate`)."""
    script = f"while [ ! -e {go} ]; do sleep 0.1; done; echo done"
    return {"command": "/bin/sh", "args": ["-c", script]}


def gate(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """The file that lets a `waiting_step` end, and the pilot flags that show it to steps."""
    directory = tmp_path / "gate"
    directory.mkdir()
    return directory / "go", ("--sandbox-bind", str(directory))


def running_step(pilot: subprocess.Popen[bytes], go: Path) -> psutil.Process:
    step = waiting_step(go)
    return wait_for(lambda: step_process(pilot, step["command"], *step["args"]),
                    what="the step to run")


def test_a_pilot_renews_its_token_and_works_past_its_first_lifetime(
        live_srv: Server, pilots: Pilots, tmp_path: Path) -> None:
    alice = live_srv.client(live_srv.token("alice", ["user"], ["physics"]))
    go, flags = gate(tmp_path)
    ds = submit(alice, one_task([waiting_step(go)]))
    pilot = pilots.start("p", *flags)
    token_file = token_path(tmp_path)
    # registered: the token file now holds the token bound to the new pilot
    first = wait_for(lambda: claims_of(token_file.read_text().strip()).get("pilot_id")
                     and token_file.read_text().strip(), what="the bound token")
    first_claims = claims_of(first)
    assert first_claims["exp"] - first_claims["iat"] == pytest.approx(LIFETIME, abs=1)
    running_step(pilot, go)
    # run on until the first token is dead, checking the server refuses it
    wait_for(lambda: time.time() > first_claims["exp"] + 1, timeout=LIFETIME + 5,
             what="the first token's expiry")
    with live_srv.client(first) as dead:
        r = dead.patch(f"/pilots/{first_claims['pilot_id']}", json={})
        assert r.status_code == 401 and r.json()["error"] == "token expired"
    current = token_file.read_text().strip()
    current_claims = claims_of(current)
    assert current_claims["pilot_id"] == first_claims["pilot_id"]
    assert current_claims["exp"] > first_claims["exp"]
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert not list(tmp_path.glob(".p.token.*"))  # no temporary left behind
    assert pilot.poll() is None
    # the task, claimed under the first token, is completed under a renewed one
    go.touch()
    assert wait_for(lambda: finished(alice, ds), what="the dataset to end") == "complete"
    (task,) = tasks(alice, ds).values()
    assert any(log["name"] == "stdout" and "done" in log["data"]
               for log in logs(alice, ds, task["task_id"]))
    assert pilot.wait(timeout=30) == 0  # idle, then a normal exit
    assert "token renewed" in pilot_log(tmp_path)


def test_a_lost_pilot_that_comes_back_exits_with_a_clear_message(
        live_srv: Server, pilots: Pilots, tmp_path: Path) -> None:
    alice = live_srv.client(live_srv.token("alice", ["user"], ["physics"]))
    admin = live_srv.client(live_srv.token("root", ["admin"]))
    go, flags = gate(tmp_path)
    ds = submit(alice, one_task([waiting_step(go)]))
    pilot = pilots.start("p", *flags)
    pid = running_step(pilot, go).pid
    (task,) = tasks(alice, ds).values()
    pilot_id = task["pilot_id"]
    # the pilot goes silent (its node hangs); meanwhile its grid gives it up
    pilot.send_signal(signal.SIGSTOP)
    try:
        r = admin.patch(f"/pilots/{pilot_id}", json={"status": "lost"})
        assert r.status_code == 200, r.text
        wait_for(lambda: tasks(alice, ds)[task["task_id"]]["status"] != "processing",
                 what="the task to be taken back")
    finally:
        pilot.send_signal(signal.SIGCONT)
    assert pilot.wait(timeout=20) == 1
    lines = [line for line in pilot_log(tmp_path).splitlines()
             if "the server refused its credentials" in line]
    assert len(lines) == 1, lines
    assert f"pilot {pilot_id} is lost: its credentials are no longer valid" in lines[0]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # killed, not reported: no stats and no logs from that run
    assert stats(alice, ds, task["task_id"]) == []
    assert logs(alice, ds, task["task_id"]) == []


# -- rules: groups read, owners write -----------------------------------------------------------


def test_a_group_member_reads_but_does_not_write_until_granted(srv: Server,
                                                               alice: httpx.Client) -> None:
    carol = srv.client(srv.token("carol", ["user"], ["physics"]))  # alice's group, not owner
    ds = create_dataset(alice, "physics")
    assert alice.put(f"/config/{ds}", json={"tasks": [
        {"name": "a", "steps": [{"command": "/bin/true"}]}]}).status_code == 200
    assert alice.put(f"/datasets/{ds}/store/f.txt", content=b"f").status_code == 201
    rules = alice.get(f"/auths/{ds}").json()
    assert rules["read_groups"] == ["physics"] and rules["write_groups"] == []
    assert rules["read_users"] == ["alice"] and rules["write_users"] == ["alice"]

    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", f"/datasets/{ds}/description", {"description": "carol's now"}),
        ("PUT", f"/datasets/{ds}/status", {"status": "suspended"}),
        ("POST", f"/datasets/{ds}/task_actions/bulk_status/suspended",
         {"filter": {"status": ["waiting", "queued"]}}),
        ("PUT", f"/auths/{ds}", {"write_users": ["carol"]}),
        ("GET", f"/auths/{ds}/actions/write", None),
    ]
    for method, path, body in writes:
        r = carol.request(method, path, json=body)
        assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
    assert carol.put(f"/datasets/{ds}/store/f.txt", content=b"carol").status_code == 403
    assert carol.delete(f"/datasets/{ds}/store/f.txt").status_code == 403
    # she reads it all; nothing she tried changed it
    doc = carol.get(f"/datasets/{ds}").json()
    assert doc["description"] == "test dataset" and doc["status"] == "processing"
    assert carol.get(f"/datasets/{ds}/store/f.txt").content == b"f"
    assert carol.get(f"/auths/{ds}/actions/read").status_code == 200

    # the owner writes, and grants the group write
    r = alice.put(f"/datasets/{ds}/description", json={"description": "alice's"})
    assert r.status_code == 200, r.text
    r = alice.put(f"/auths/{ds}", json={"write_groups": ["physics"]})
    assert r.status_code == 200 and r.json()["write_groups"] == ["physics"]
    for method, path, body in writes[:3]:
        r = carol.request(method, path, json=body)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
    assert carol.get(f"/auths/{ds}/actions/write").status_code == 200
    assert carol.put(f"/datasets/{ds}/store/f.txt", content=b"carol").status_code == 201
    doc = alice.get(f"/datasets/{ds}").json()
    assert doc["description"] == "carol's now" and doc["status"] == "suspended"

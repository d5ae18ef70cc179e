"""Running a facility (issue 16), over HTTP with a full server (REST + scheduler) and real
`iceprod-pilot` processes at two sites:

- drain: a drained site's pilot gets no claims (the server refuses them, the pilot stops
  claiming and exits once idle) while the other site's pilot runs everything; back again;
- maintenance: a submission answers 503 with the operator's message and `Retry-After`,
  reads keep working, claims stop; shown in `/healthz`, `/metrics` and the CLI;
- explain (`GET /tasks/{id}/explain`, `GET /datasets/{id}/explain`, `iceprod why`) names
  the right blocker: dependencies, suspended, queue place and limit, resources beyond every
  pilot, a drained site, maintenance, failed too often;
- containers: a task naming an image runs inside it (bubblewrap over a busybox root file
  system built here), seeing the image's root file system, not this machine's.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import pytest

from iceprod.client import cli
from tests.conftest import Server, start_server
from tests.helpers import create_dataset, needs, register_pilot
from tests.pilot.support import (
    FAST,
    ROOTFS_MARK,
    Pilots,
    busybox_rootfs,
    finished,
    logs,
    pilot_log,
    register,
    tasks,
    wait_for,
)

ECHO = [{"command": "sh", "args": ["-c", "echo ran at $ICEPROD_SITE"]}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("facility") / "data", env=FAST)
    yield srv
    srv.stop()


@pytest.fixture
def admin(srv: Server) -> httpx.Client:
    return srv.client(srv.token("root", ["admin"]))


@pytest.fixture
def alice(srv: Server) -> httpx.Client:
    return srv.client(srv.token("alice", ["user"], ["physics"]))


@pytest.fixture
def pilots(srv: Server, tmp_path: Path) -> Iterator[Pilots]:
    p = Pilots(srv, tmp_path)
    yield p
    p.stop()


def switch(admin: httpx.Client, node: str, status: str, **body: Any) -> dict[str, Any]:
    r = admin.post(f"/admin/maintenance/{node}/{status}", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def submit(client: httpx.Client, config: dict[str, Any], jobs: int = 1,
           **extra: Any) -> str:
    ds = create_dataset(client, "physics", jobs=jobs, tasks_per_job=len(config["tasks"]),
                        **extra)
    r = client.put(f"/config/{ds}", json=config)
    assert r.status_code == 200, r.text
    return ds


def claim_as(srv: Server, admin: httpx.Client, site: str) -> httpx.Response:
    """A claim by a pilot record of ``site`` registered by hand (its own bound token)."""
    pilot_id, token = register(admin, cpu=1, memory=1)
    admin.patch(f"/pilots/{pilot_id}", json={"site": site})
    with srv.client(token) as c:
        return c.post("/task_actions/process", json={
            "pilot_id": pilot_id, "requirements": {"cpu": 1, "memory": 1, "site": site}})


def run_cli(srv: Server, token: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main([*argv, "--url", srv.url, "--token", token])
    return code, out.getvalue()


def test_a_drained_site_gets_no_claims_while_another_does(
        srv: Server, admin: httpx.Client, alice: httpx.Client, pilots: Pilots,
        tmp_path: Path) -> None:
    state = switch(admin, "north", "on", message="disk swap")
    assert state["nodes"]["north"]["message"] == "disk swap"
    assert state["nodes"]["north"]["by"] == "root" and state["general"]["status"] == "off"
    north = pilots.start("north", "--site", "north", "--idle-timeout", "60")
    wait_for(lambda: "drained" in pilot_log(tmp_path, "north"), 30, "north pilot drained")
    ds = submit(alice, {"tasks": [{"name": "echo", "steps": ECHO}]}, jobs=4)
    # the server refuses a north claim with queued work waiting
    wait_for(lambda: alice.get(f"/datasets/{ds}/task_counts/status").json().get("queued"),
             30, "queued tasks")
    r = claim_as(srv, admin, "north")
    assert r.status_code == 404 and "north is drained: disk swap" in r.json()["error"]
    pilots.start("south", "--site", "south")
    wait_for(lambda: finished(alice, ds), 60, "dataset done at south")
    assert finished(alice, ds) == "complete"
    assert {t["site"] for t in tasks(alice, ds).values()} == {"south"}
    # the drained pilot claimed nothing and, idle, exited of itself
    assert north.wait(timeout=30) == 0
    assert "drained (north is drained: disk swap) with nothing running: exiting" in \
        pilot_log(tmp_path, "north")
    listed = admin.get("/pilots").json().values()
    assert all(p.get("drain") == "north is drained: disk swap"
               for p in listed if p.get("site") == "north")
    assert not any(p.get("drain") for p in listed if p.get("site") == "south")
    code, out = run_cli(srv, srv.token("root", ["admin"]), "pilots")
    assert code == 0 and "north is drained" in out
    # back: north claims again
    state = switch(admin, "north", "off")
    assert state["nodes"] == {}
    ds2 = submit(alice, {"tasks": [{"name": "echo", "steps": ECHO,
                                    "requirements": {"site": "north"}}]})
    pilots.start("north2", "--site", "north")
    wait_for(lambda: finished(alice, ds2), 60, "dataset done at north")
    assert {t["site"] for t in tasks(alice, ds2).values()} == {"north"}


def test_maintenance_refuses_submissions_keeps_reads_and_stops_claims(
        srv: Server, admin: httpx.Client, alice: httpx.Client) -> None:
    ds = submit(alice, {"tasks": [{"name": "echo", "steps": ECHO}]})
    wait_for(lambda: alice.get(f"/datasets/{ds}/task_counts/status").json().get("queued"),
             30, "a queued task")
    code, out = run_cli(srv, srv.token("root", ["admin"]), "admin", "maintenance", "on",
                        "--message", "store upgrade until 14:00", "--retry-after", "120")
    assert code == 0 and "maintenance: on" in out and "store upgrade" in out
    try:
        r = alice.post("/datasets", json={"description": "d", "jobs_submitted": 1,
                                          "tasks_submitted": 1, "tasks_per_job": 1,
                                          "group": "physics"})
        assert r.status_code == 503
        assert r.json() == {"code": 503,
                            "error": "server in maintenance: store upgrade until 14:00"}
        assert r.headers["Retry-After"] == "120"
        # reads keep working
        assert alice.get(f"/datasets/{ds}").status_code == 200
        assert alice.get(f"/datasets/{ds}/tasks").status_code == 200
        health = httpx.get(srv.url + "/healthz").json()
        assert health["maintenance"]["status"] == "on"
        assert health["maintenance"]["message"] == "store upgrade until 14:00"
        assert "iceprod_maintenance 1" in httpx.get(srv.url + "/metrics").text
        # claims stop, whatever the site
        r = claim_as(srv, admin, "south")
        assert r.status_code == 404 and "server in maintenance" in r.json()["error"]
        assert alice.get(f"/datasets/{ds}/task_counts/status").json() == {"queued": 1}
        code, out = run_cli(srv, srv.token("root", ["admin"]), "admin", "maintenance")
        assert code == 0 and "store upgrade until 14:00" in out
        # explain says so, for the dataset and from the CLI
        code, out = run_cli(srv, srv.token("alice", ["user"], ["physics"]), "why", ds)
        assert code == 0 and "maintenance: the server is in maintenance (store upgrade" in out
        whole = alice.get(f"/datasets/{ds}/explain").json()
        assert whole["blocker_counts"]["maintenance"] == 1
    finally:
        switch(admin, "all", "off")
    r = claim_as(srv, admin, "south")
    assert r.status_code == 200 and r.json()["dataset_id"] == ds
    assert httpx.get(srv.url + "/healthz").json()["maintenance"]["status"] == "off"
    assert "iceprod_maintenance 0" in httpx.get(srv.url + "/metrics").text
    # both switches are in the audit trail, with who flipped them
    records = admin.get("/audit", params={"action": "maintenance"}).json()["records"]
    assert [(r["username"], r["detail"]["node"], r["detail"]["status"]) for r in records][-2:] \
        == [("root", "all", "on"), ("root", "all", "off")]
    assert records[-2]["detail"]["message"] == "store upgrade until 14:00"


def test_maintenance_switch_refuses_bad_input(admin: httpx.Client) -> None:
    for path, body, field in [
        ("/admin/maintenance/all/maybe", {}, "status"),
        ("/admin/maintenance/a%20b/on", {}, "node"),
        ("/admin/maintenance/all/on", {"retry_after": 0}, "retry_after"),
        ("/admin/maintenance/all/on", {"message": "m", "colour": "red"}, "colour"),
    ]:
        r = admin.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert field in r.json()["error"], (path, r.text)
    # nothing was switched on by any of them
    assert admin.get("/admin/maintenance").json() == {"general": {"status": "off"},
                                                      "nodes": {}}


def kinds(answer: dict[str, Any]) -> list[str]:
    return [b["kind"] for b in answer["blockers"]]


def explain(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/tasks/{task_id}/explain")
    assert r.status_code == 200, r.text
    return dict(r.json())


def by_name(client: httpx.Client, ds: str) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in tasks(client, ds).values()}


def test_explain_names_the_blocker(srv: Server, admin: httpx.Client, alice: httpx.Client,
                                   pilots: Pilots, tmp_path: Path) -> None:
    pilots.start("small", "--site", "south", "--idle-timeout", "120",
                 resources="cpu=2,memory=2,disk=2")
    wait_for(lambda: any(p.get("status") == "running" and p.get("site") == "south"
                         for p in admin.get("/pilots").json().values()), 30, "a live pilot")
    switch(admin, "north", "on", message="cooling repair")
    config = {"tasks": [
        {"name": "big", "requirements": {"memory": 64}, "steps": ECHO},
        {"name": "after", "depends": ["big"], "steps": ECHO},
        {"name": "northern", "requirements": {"site": "north"}, "steps": ECHO},
        {"name": "flaky", "steps": [{"command": "sh", "args": ["-c", "exit 3"]}]},
    ]}
    ds = submit(alice, config, max_failures=1)
    wait_for(lambda: by_name(alice, ds).get("flaky", {}).get("status") == "failed", 60,
             "flaky failed")
    wait_for(lambda: by_name(alice, ds).get("big", {}).get("status") == "queued", 30,
             "big queued")
    t = by_name(alice, ds)

    big = explain(alice, t["big"]["task_id"])
    assert big["status"] == "queued" and kinds(big) == ["queue", "resources"]
    res = big["blockers"][1]
    # and, when the local grid has registered its maximum, that it is smaller too
    assert res["message"].startswith("memory 64 GB > largest pilot 2 GB"), res["message"]
    assert res["requirement"] == "memory" and res["largest_pilot"] == 2
    queue = big["blockers"][0]
    assert queue["queue_max"] == 10_000 and queue["position"] >= 1
    assert "queue limit 10000" in queue["message"]
    assert big["summary"].startswith("the task is queued: queued:")

    after = explain(alice, t["after"]["task_id"])
    assert kinds(after) == ["dependency"]
    dep = after["blockers"][0]
    assert dep["pending"] == 1 and dep["dependencies"][0]["name"] == "big"
    assert dep["dependencies"][0]["status"] == "queued"
    assert "waiting on 1 of 1 dependencies: big (queued)" in dep["message"]

    northern = explain(alice, t["northern"]["task_id"])
    drained = [b for b in northern["blockers"] if b["kind"] == "drained"]
    assert drained and drained[0]["message"] == "its site north is drained: cooling repair"

    flaky = explain(alice, t["flaky"]["task_id"])
    assert kinds(flaky) == ["failures"]
    assert flaky["blockers"][0]["failures"] == 1 and flaky["blockers"][0]["max_failures"] == 1
    assert "exited with code 3" in flaky["blockers"][0]["message"]

    # the dataset's view: per name and status, with counts
    r = alice.get(f"/datasets/{ds}/explain")
    assert r.status_code == 200, r.text
    whole = r.json()
    groups = {(g["name"], g["status"]): g for g in whole["tasks"]}
    assert set(groups) == {("big", "queued"), ("after", "waiting"), ("northern", "queued"),
                           ("flaky", "failed")}
    assert {"resources", "dependency", "drained", "failures"} <= set(whole["blocker_counts"])
    code, out = run_cli(srv, srv.token("alice", ["user"], ["physics"]), "why",
                        t["big"]["task_id"])
    assert code == 0 and "memory 64 GB > largest pilot 2 GB" in out

    # maintenance comes first while on
    switch(admin, "all", "on", message="short break")
    try:
        assert kinds(explain(alice, t["big"]["task_id"]))[0] == "maintenance"
        assert "short break" in explain(alice, t["big"]["task_id"])["blockers"][0]["message"]
    finally:
        switch(admin, "all", "off")
        switch(admin, "north", "off")
    # a suspended dataset says so
    assert alice.put(f"/datasets/{ds}/status", json={"status": "suspended"}).status_code == 200
    sus = explain(alice, t["after"]["task_id"])
    assert kinds(sus)[0] == "suspended" and "dataset is suspended" in sus["summary"]
    # only readers of the dataset may ask
    bob = srv.client(srv.token("bob", ["user"], ["astro"]))
    assert bob.get(f"/tasks/{t['big']['task_id']}/explain").status_code == 403
    assert bob.get(f"/datasets/{ds}/explain").status_code == 403


def test_a_task_with_a_container_image_runs_inside_it(
        srv: Server, alice: httpx.Client, pilots: Pilots, tmp_path: Path) -> None:
    needs(None if shutil.which("bwrap") else "bubblewrap (bwrap) is not installed")
    images = tmp_path / "images"
    busybox_rootfs(images / "busybox")
    script = ("cat /etc/os-release; echo root: $$(ls /); echo pwd: $$(pwd); "
              "test -e /usr/bin/python3 && echo host-usr || echo no-usr; echo made > out")
    config = {"tasks": [{"name": "boxed", "container": {"image": "busybox"},
                         "requirements": {"site": "boxes"},
                         "steps": [{"command": "/bin/sh", "args": ["-c", script]}]}]}
    ds = submit(alice, config)
    # a pilot at the site offering no container runtime is not handed the task
    plain = srv.client(srv.token("plain-pilot", ["pilot"]))
    plain_id = register_pilot(plain, cpu=1, memory=1)
    offer = {"cpu": 1, "memory": 1, "disk": 1, "time": 1, "site": "boxes"}
    wait_for(lambda: tasks(alice, ds) and next(iter(tasks(alice, ds).values()))["status"]
             == "queued", 30, "the container task queued")
    r = plain.post("/task_actions/process", json={"requirements": offer,
                                                   "pilot_id": plain_id})
    assert r.status_code == 404, r.text
    pilots.start("boxes", "--site", "boxes", "--container-runtime", "bwrap", "--image-dir",
                 str(images))
    wait_for(lambda: finished(alice, ds), 60, "container task done")
    task_id, task = next(iter(tasks(alice, ds).items()))
    assert finished(alice, ds) == "complete", task
    assert task["container"] == {"image": "busybox"}
    out = next(x["data"] for x in logs(alice, ds, task_id) if x["name"] == "stdout")
    assert f"ID={ROOTFS_MARK}" in out and "no-usr" in out and "host-usr" not in out
    root = out.split("root: ", 1)[1].splitlines()[0].split()
    assert "usr" not in root and {"bin", "etc", "proc", "tmp"} <= set(root)
    assert f"pwd: {tmp_path}" in out  # the task's own directory, bound in
    stdlog = next(x["data"] for x in logs(alice, ds, task_id) if x["name"] == "stdlog")
    assert "in container busybox (bwrap)" in stdlog


def test_a_drained_grid_starts_no_pilots_until_back(tmp_path: Path) -> None:
    """The local grid, drained by its name: its manager reaches the point of submitting for
    queued work and starts nothing; brought back, it runs the dataset."""
    doc = {"grids": [{"name": "local", "backend": "local", "max_pilots": 2, "max_idle": 2,
                      "max_per_cycle": 2,
                      "options": {"cores": 2, "memory": 4, "idle_timeout": 5,
                                  "heartbeat_interval": 0.5, "claim_interval": 0.2,
                                  "monitor_interval": 0.1}}]}
    (tmp_path / "grids.json").write_text(json.dumps(doc))
    srv = start_server(tmp_path / "data", env={**FAST, "ICEPROD_GRID_CONFIG":
                                               str(tmp_path / "grids.json")})
    try:
        admin = srv.client(srv.token("root", ["admin"]))
        alice = srv.client(srv.token("alice", ["user"], ["physics"]))
        switch(admin, "local", "on", message="batch system upgrade")
        ds = submit(alice, {"tasks": [{"name": "echo", "steps": ECHO,
                                       "requirements": {"memory": 64}},
                                      {"name": "small", "steps": ECHO}]})
        wait_for(lambda: "grid local: no new pilots: local is drained: batch system upgrade"
                 in srv.log_path.read_text(), 30, "the grid manager refusing to submit")
        assert admin.get("/pilots").json() == {}
        (grid,) = admin.get("/grids").json().values()
        assert grid["drain"] == "local is drained: batch system upgrade"
        assert grid["max_resources"] == {"cpu": 2, "memory": 4}
        # the grid's largest pilot is what explain compares requirements with
        big = next(t for t in tasks(alice, ds).values() if t["name"] == "echo")
        res = [b for b in explain(alice, big["task_id"])["blockers"]
               if b["kind"] == "resources"]
        assert res[0]["message"] == ("memory 64 GB > every grid's maximum (4 GB), and no "
                                     "pilot is running")
        switch(admin, "local", "off")
        small = next(t for t in tasks(alice, ds).values() if t["name"] == "small")
        wait_for(lambda: alice.get(f"/datasets/{ds}/tasks/{small['task_id']}").json()
                 ["status"] == "complete", 60, "the small task run once the grid is back")
    finally:
        srv.stop()


def test_explain_a_ready_task_waiting_for_a_queue_slot(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", env={**FAST, "ICEPROD_QUEUE_MAX": "1"})
    try:
        alice = srv.client(srv.token("alice", ["user"], ["physics"]))
        ds = submit(alice, {"tasks": [{"name": "echo", "steps": ECHO}]}, jobs=3)
        wait_for(lambda: alice.get(f"/datasets/{ds}/task_counts/status").json()
                 == {"queued": 1, "waiting": 2}, 30, "one queued, two waiting")
        waiting = next(t for t in tasks(alice, ds).values() if t["status"] == "waiting")
        answer = explain(alice, waiting["task_id"])
        assert kinds(answer) == ["queue", "resources"]
        assert answer["blockers"][0] == {
            "kind": "queue", "queued": 1, "queue_max": 1,
            "message": "ready, waiting for a queue slot: 1 task(s) are queued, the queue "
                       "holds at most 1"}
        assert answer["blockers"][1]["message"] == \
            "no pilot is running and no grid is registered to start one"
        whole = alice.get(f"/datasets/{ds}/explain").json()
        assert whole["blocker_counts"] == {"queue": 3, "resources": 3}
        assert {(g["status"], g["count"]) for g in whole["tasks"]} == \
            {("queued", 1), ("waiting", 2)}
        assert whole["summary"].startswith("dataset processing: 0 of 3 task(s) complete")
        number = alice.get(f"/datasets/{ds}").json()["dataset"]
        code, out = run_cli(srv, srv.token("alice", ["user"], ["physics"]), "why", str(number))
        assert code == 0 and f"dataset {ds}: dataset processing: 0 of 3" in out
        assert "echo waiting (2 task(s), e.g. " in out
        assert "- queue: ready, waiting for a queue slot" in out
    finally:
        srv.stop()

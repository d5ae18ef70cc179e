"""The API routes the web dashboard reads (any client may use them): the datasets overview, a
dataset's plot data, the config check, the dataset priority; and the dashboard's own pages
(headers, redirect, files)."""

from __future__ import annotations

import httpx

from tests.conftest import Server
from tests.helpers import (
    claim_this,
    create_dataset,
    create_job,
    create_task,
    minimal_config,
    register_pilot,
    submit,
)


def test_the_overview_lists_readable_datasets_with_counts_filters_search_and_pages(
        fresh_server: Server) -> None:
    srv = fresh_server
    alice = srv.client(srv.token("alice", ["user"], ["physics"]))
    bob = srv.client(srv.token("bob", ["user"], ["astro"]))
    system = srv.client(srv.token("iceprod-system", ["system"]))
    ids = [create_dataset(alice, "physics", description=f"muon run {i}") for i in range(3)]
    create_dataset(alice, "physics", description="neutrino flux")
    other = create_dataset(bob, "astro", description="muon secret")
    job = create_job(system, ids[0], 0)
    create_task(system, ids[0], job, 0, "a", status="queued")
    create_task(system, ids[0], job, 1, "b")

    r = alice.get("/dataset_overview")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 4 and page["offset"] == 0
    rows = page["datasets"]
    assert [d["dataset"] for d in rows] == [4, 3, 2, 1]  # newest first
    assert other not in {d["dataset_id"] for d in rows}
    first = next(d for d in rows if d["dataset_id"] == ids[0])
    assert first["task_counts"] == {"queued": 1, "waiting": 1}
    assert {"description", "username", "group", "status", "priority", "start_date",
            "tasks_submitted"} <= set(first)

    def numbers(**params: str) -> list[int]:
        r = alice.get("/dataset_overview", params=params)
        assert r.status_code == 200, r.text
        return [d["dataset"] for d in r.json()["datasets"]]

    assert numbers(search="MUON run") == [3, 2, 1]
    assert numbers(search="muon 2") == [3]
    assert numbers(search="4") == [4]            # a number finds that dataset
    assert numbers(search="secret") == []         # bob's, unreadable for alice
    assert numbers(group="astro") == []
    assert numbers(username="alice", limit="2") == [4, 3]
    assert numbers(limit="2", offset="2") == [2, 1]
    assert alice.put(f"/datasets/{ids[1]}/status", json={"status": "suspended"}).status_code == 200
    assert numbers(status="suspended") == [2]
    assert numbers(status="suspended|processing") == [4, 3, 2, 1]
    assert [d["dataset"] for d in bob.get("/dataset_overview").json()["datasets"]] == [5]

    r = alice.get("/dataset_overview", params={"limit": "0"})
    assert r.status_code == 400 and r.json()["error"].startswith("limit:")
    r = alice.get("/dataset_overview", params={"offset": "x"})
    assert r.status_code == 400 and r.json()["error"].startswith("offset:")


def test_task_plots_summarize_runs_and_completions(alice: httpx.Client,
                                                   system: httpx.Client) -> None:
    ds = submit(alice, minimal_config(["gen", "sim"]), jobs=2)
    job = create_job(system, ds, 0)
    site = f"plots-{ds}"  # only this test's pilot takes this task from the shared server
    done = create_task(system, ds, job, 0, "gen", status="queued",
                       requirements={"cpu": 1, "site": site})
    failed = create_task(system, ds, job, 1, "sim")
    pilot = register_pilot(system, cpu=1)
    r = claim_this(system, pilot, done, cpu=1, site=site)
    assert r.status_code == 200 and r.json()["task_id"] == done, r.text
    r = system.post(f"/tasks/{done}/task_actions/complete",
                    json={"instance_id": r.json()["instance_id"], "time_used": 1800})
    assert r.status_code == 200, r.text
    runs = [(done, 1800, 2e9, "complete", None), (failed, 60, 4e9, "reset",
                                                  "step 0 exited with code 2"),
            (failed, 30, 1e9, "reset", "Out of memory: exceeded 1 GB")]
    for task, wall, rss, outcome, reason in runs:
        r = system.post(f"/tasks/{task}/task_stats", json={"dataset_id": ds, "stats": {
            "walltime": wall, "max_rss": rss, "outcome": outcome, "reason": reason}})
        assert r.status_code == 201, r.text

    r = alice.get(f"/datasets/{ds}/task_plots")
    assert r.status_code == 200, r.text
    p = r.json()
    assert [c["count"] for c in p["completed"]] == [1] and p["completed"][0]["time"].endswith("Z")
    assert p["walltime"]["gen"] == {"edges": [0.5, 0.5], "counts": [1]}
    sim = p["walltime"]["sim"]
    assert sum(sim["counts"]) == 2 and len(sim["edges"]) == len(sim["counts"]) + 1
    assert sim["edges"][0] == 30 / 3600 and abs(sim["edges"][-1] - 60 / 3600) < 1e-12
    assert p["memory"]["sim"]["edges"][0] == 1.0 and p["memory"]["gen"]["edges"] == [2.0, 2.0]
    assert p["failures"] == {"payload": 1, "resources": 1}


def test_config_check_reports_problems_by_line_and_creates_nothing(alice: httpx.Client) -> None:
    before = alice.get("/dataset_overview").json()["total"]
    good = '{"tasks": [{"name": "a", "steps": [{"command": "/bin/true"}]}]}'
    r = alice.post("/config_check", json={"text": good})
    assert r.status_code == 200 and r.json() == {"valid": True, "tasks": 1}

    broken = '{\n  "tasks": [\n    {"name": "a",\n     "requirements": {"memory": -1},\n' \
             '     "steps": [{"command": "/bin/true"}]}\n  ]\n}\n'
    r = alice.post("/config_check", json={"text": broken})
    assert r.status_code == 200
    body = r.json()
    assert body["valid"] is False
    [problem] = body["problems"]
    assert problem["field"] == "tasks[0].requirements.memory" and problem["line"] == 4

    r = alice.post("/config_check", json={"text": '{"tasks": [\n'})
    assert r.json()["valid"] is False and r.json()["problems"][0]["line"] == 2
    assert "not valid JSON" in r.json()["problems"][0]["message"]
    r = alice.post("/config_check", json={"config": good})
    assert r.status_code == 400 and "text" in r.json()["error"]
    assert alice.get("/dataset_overview").json()["total"] == before


def test_priority_is_set_by_writers_within_bounds(alice: httpx.Client, bob: httpx.Client) -> None:
    ds = create_dataset(alice, "physics")
    r = alice.put(f"/datasets/{ds}/priority", json={"priority": 0.25})
    assert r.status_code == 200 and r.json() == {"changed": 1}
    assert alice.get(f"/datasets/{ds}").json()["priority"] == 0.25
    r = alice.put(f"/datasets/{ds}/priority", json={"priority": 1.5})
    assert r.status_code == 400 and r.json()["error"].startswith("priority:")
    assert bob.put(f"/datasets/{ds}/priority", json={"priority": 1}).status_code == 403
    assert alice.get(f"/datasets/{ds}").json()["priority"] == 0.25


def test_dashboard_pages_headers_redirect_and_files(server: Server) -> None:
    with httpx.Client(base_url=server.url) as c:
        browser = c.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert browser.status_code == 302 and browser.headers["Location"] == "/ui/"
        api = c.get("/", headers={"Accept": "application/json"})
        assert api.status_code == 404 and api.json() == {"code": 404, "error": "no such route"}
        assert c.get("/").status_code == 404  # */*: an API client

        page = c.get("/ui/")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert '<meta name="iceprod-ldap" content="off">' in page.text

        css = c.get("/ui/static/vendor/uPlot.min.css")
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert "Content-Security-Policy" in css.headers
        again = c.get("/ui/static/vendor/uPlot.min.css",
                      headers={"If-None-Match": css.headers["ETag"]})
        assert again.status_code == 304
        for bad in ("/ui/static/nope.js", "/ui/static/.hidden", "/ui/static/%2e%2e/index.html",
                    "/ui/static/vendor/../../index.html"):
            r = c.get(bad)
            assert r.status_code == 404, bad

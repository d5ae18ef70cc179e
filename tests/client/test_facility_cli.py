"""Projects, quotas, usage, billing and archiving through the REST API's edges and the CLI
(`iceprod admin projects|rates|archive`, `iceprod projects`, `iceprod usage`,
`iceprod bill`), against a real server. The end-to-end behaviour with pilots is in
tests/server/test_facility.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from iceprod.client import cli
from tests.client.test_cli import CLI
from tests.conftest import Server
from tests.helpers import claim_this, create_dataset, create_job, create_task, register_pilot

# the session's server is shared: a user and group of this module's own
USER = f"cora{uuid.uuid4().hex[:6]}"
GROUP = f"cryo{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def admin_cli(tmp_path_factory: pytest.TempPathFactory, server: Server) -> CLI:
    run = CLI(tmp_path_factory.mktemp("fadmin") / "config", server.url)
    run.login(server.token("root", ["admin"]))
    return run


@pytest.fixture(scope="module")
def carol_cli(tmp_path_factory: pytest.TempPathFactory, server: Server) -> CLI:
    run = CLI(tmp_path_factory.mktemp("fcarol") / "config", server.url)
    run.login(server.token(USER, ["user"], [GROUP]))
    return run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_projects_and_quotas_by_cli_and_api(admin_cli: CLI, carol_cli: CLI, server: Server,
                                           admin: httpx.Client, bob: httpx.Client) -> None:
    name = unique("cryo")
    made = admin_cli.json("admin", "projects", "add", name, "--groups", GROUP,
                          "--cores", "8", "--stored-bytes", "1000")
    assert made == {"name": name}
    dup = admin_cli("admin", "projects", "add", name)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert len(dup.stderr.strip().splitlines()) == 1
    quota = admin_cli.json("admin", "projects", "quota", name, "--cpu-hours", "12.5",
                           "--cores", "none")
    assert quota == {"stored_bytes": 1000, "cpu_hours": 12.5}
    bad = admin_cli("admin", "projects", "quota", name, "--cores", "many")
    assert bad.returncode == cli.EXIT_USAGE and "--cores" in bad.stderr
    changed = admin_cli.json("admin", "projects", "set", name, "--users", "dave")
    assert changed["users"] == ["dave"] and changed["groups"] == [GROUP]

    # a member reads the project; someone else may not
    mine = carol_cli.json("projects")
    assert list(mine) == [name]
    shown = carol_cli("projects", name)
    assert shown.returncode == 0 and "cpu_hours=12.5" in shown.stdout, shown.stderr
    assert bob.get(f"/projects/{name}").status_code == 403
    assert bob.get(f"/projects/{name}/quota").status_code == 403
    assert bob.get("/projects").json() == {}

    # bodies are checked field by field
    r = admin.post("/projects", json={"name": "bad name"})
    assert r.status_code == 400 and "name" in r.json()["error"]
    r = admin.put(f"/projects/{name}/quota", json={"cores": -1})
    assert r.status_code == 400 and "cores" in r.json()["error"]
    r = admin.put(f"/projects/{name}/quota", json={})
    assert r.status_code == 400
    assert admin.get("/projects/no-such").status_code == 404

    # submitting: a member may name the project, a non-member may not, an unknown one is 400
    carol = server.client(server.token(USER, ["user"], [GROUP]))
    ds = create_dataset(carol, GROUP, project=name)
    assert carol.get(f"/datasets/{ds}").json()["project"] == name
    default = create_dataset(carol, GROUP)  # her default project: the one of her group
    assert carol.get(f"/datasets/{default}").json()["project"] == name
    r = bob.post("/datasets", json={"description": "x", "jobs_submitted": 1,
                                    "tasks_submitted": 1, "tasks_per_job": 1,
                                    "group": "astro", "project": name})
    assert r.status_code == 403 and "project" in r.json()["error"]
    r = bob.post("/datasets", json={"description": "x", "jobs_submitted": 1,
                                    "tasks_submitted": 1, "tasks_per_job": 1,
                                    "group": "astro", "project": "nope"})
    assert r.status_code == 400 and r.json()["error"].startswith("project:")

    # the stored-bytes quota: Content-Length over it is refused before the body
    r = carol.put(f"/datasets/{ds}/store/a.bin", content=b"a" * 600)
    assert r.status_code == 201
    r = carol.put(f"/datasets/{ds}/store/b.bin", content=b"b" * 600)
    assert r.status_code == 413 and f"project {name}" in r.json()["error"]
    r = carol.put(f"/datasets/{ds}/store/a.bin", content=b"a" * 900)  # replaces a.bin
    assert r.status_code == 201
    assert admin_cli.json("admin", "projects", "show", name)["usage"]["stored_bytes"] == 900

    assert admin_cli("admin", "projects", "delete", name).returncode == 0
    assert admin.get(f"/projects/{name}").status_code == 404


def test_usage_billing_and_rates(admin_cli: CLI, carol_cli: CLI, server: Server,
                                 admin: httpx.Client, system: httpx.Client,
                                 bob: httpx.Client) -> None:
    carol = server.client(server.token(USER, ["user"], [GROUP]))
    ds = create_dataset(carol, GROUP, project="default")
    job = create_job(system, ds, 0)
    task = create_task(system, ds, job, status="queued")
    pilot = server.client(server.token(unique("pilot"), ["pilot"]))
    pilot_id = register_pilot(pilot, cpu=4, memory=4)
    r = claim_this(pilot, pilot_id, task, cpu=4, memory=4)
    assert r.status_code == 200 and r.json()["task_id"] == task
    stats = {"walltime": 7200, "cpu_time": 3600, "max_rss": 2 * 1024 ** 3,
             "outcome": "complete", "site": "here", "requirements": {"cpu": 2, "gpu": 1}}
    r = pilot.post(f"/tasks/{task}/task_stats", json={"dataset_id": ds, "stats": stats})
    assert r.status_code == 201, r.text
    # untrusted figures are bounded, never an error
    r = pilot.post(f"/tasks/{task}/task_stats", json={"dataset_id": ds, "stats": {
        "walltime": "long", "cpu_time": -5, "outcome": "reset", "requirements": [1]}})
    assert r.status_code == 201, r.text

    (row,) = carol.get("/usage", params={"dataset_id": ds}).json()["usage"]
    assert row == {"cpu_hours": 1.0, "core_hours": 4.0, "walltime_hours": 2.0,
                   "gpu_hours": 2.0, "memory_gb_hours": 4.0, "tasks_complete": 1,
                   "tasks_reset": 1, "tasks_failed": 0, "rollups": 2}
    by_site = carol.get("/usage", params={"dataset_id": ds, "group_by": "site|day"}).json()
    assert [(u["site"], u["tasks_complete"]) for u in by_site["usage"]] == [
        ("", 0), ("here", 1)]
    csv_text = carol.get("/usage", params={"dataset_id": ds},
                         headers={"Accept": "text/csv"}).text
    assert csv_text.splitlines()[0] == ("cpu_hours,core_hours,walltime_hours,gpu_hours,"
                                        "memory_gb_hours,tasks_complete,tasks_reset,"
                                        "tasks_failed")
    # users see their own usage only
    assert bob.get("/usage", params={"dataset_id": ds}).json()["usage"] == []
    assert bob.get("/usage", params={"user": USER}).status_code == 403
    for params, field in (({"start": "yesterday"}, "start"), ({"group_by": "color"},
                                                              "group_by"),
                          ({"format": "xml"}, "format")):
        r = carol.get("/usage", params=params)
        assert r.status_code == 400 and r.json()["error"].startswith(f"{field}:"), r.text

    out = carol_cli("usage", "--dataset", ds, "--by", "site")
    assert out.returncode == 0 and "here" in out.stdout, out.stderr
    assert carol_cli("usage", "--dataset", ds, "--csv").stdout.startswith("cpu_hours,")

    # rates and bills
    rates = admin_cli.json("admin", "rates", "--core-hours", "0.5", "--gpu-hours", "3",
                           "--currency", "CHF")
    assert rates["core_hours"] == 0.5 and rates["currency"] == "CHF"
    assert carol.get("/billing/rates").json() == rates
    assert carol.put("/billing/rates", json={"currency": "X"}).status_code == 403
    r = admin.put("/billing/rates", json={"gpu_hours": -1})
    assert r.status_code == 400 and "gpu_hours" in r.json()["error"]
    day = row_day = carol.get("/usage", params={"dataset_id": ds, "group_by": "day"}
                              ).json()["usage"][0]["day"]
    year, month = int(row_day[:4]), int(row_day[5:7])
    bill = carol.get(f"/users/{USER}/billing/{year}/{month}").json()
    (project,) = bill["projects"]
    assert project["project"] == "default" and project["cost"] == pytest.approx(4 * 0.5 + 2 * 3)
    assert bill["total"]["currency"] == "CHF" and bill["start"] == f"{day[:7]}-01"
    assert carol.get(f"/groups/{GROUP}/billing/{year}/{month}").json()["total"]["cost"] == \
        pytest.approx(8.0)
    assert carol.get(f"/groups/astro/billing/{year}/{month}").status_code == 403
    r = carol.get(f"/users/{USER}/billing/{year}/13")
    assert r.status_code == 400 and r.json()["error"].startswith("month:")
    assert carol.get(f"/users/{USER}/billing/0999/1").status_code == 400
    out = carol_cli("bill", "user", USER, f"{year}-{month:02d}")
    assert out.returncode == 0 and "cost (CHF)" in out.stdout
    assert out.stdout.splitlines()[-1].split() == ["total", "4", "2", "8"]
    csv_bill = carol_cli("bill", "user", USER, f"{year}-{month:02d}", "--csv").stdout
    assert csv_bill.splitlines()[0].startswith("project,cpu_hours")
    assert carol_cli("bill", "user", USER, "May").returncode == cli.EXIT_USAGE


def test_archive_refusals_and_dry_run_by_cli(admin_cli: CLI, carol_cli: CLI,
                                             admin: httpx.Client) -> None:
    r = admin.post("/archive", json={"dry_run": True})
    assert r.status_code == 400 and "older_than_days" in r.json()["error"]
    r = admin.post("/archive", json={"older_than_days": 1, "logs": "shred"})
    assert r.status_code == 400 and "logs" in r.json()["error"]
    assert carol_cli("admin", "archive", "--older-than", "0", "--dry-run").returncode != 0
    dry = admin_cli.json("admin", "archive", "--older-than", "36500", "--dry-run")
    assert dry["dry_run"] is True and dry["changed"] == 0
    out = admin_cli("admin", "archive", "--older-than", "36500", "--dry-run")
    assert out.returncode == 0 and "matched, 0 archived" in out.stdout

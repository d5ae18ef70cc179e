"""The grid manager and the local grid: configuration, pilot sizing, and end to end with a
real `iceprod-server` (embedded store, local grid) whose pilots are its own subprocesses:
a 20 x 3 chain completes with the right outputs, logs and stats; a pilot SIGKILLed mid-task
is noticed, its task retried by another pilot, and nothing is completed twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from iceprod.common.config import ServerConfig
from iceprod.common.errors import Invalid
from iceprod.server.grids.base import GridConfig, PilotSpec
from iceprod.server.grids.local import LocalGrid, resources_arg
from iceprod.server.grids.manager import (
    GridManager,
    GridsFile,
    Group,
    fits,
    load_grids,
    per_pilot,
    pilot_size,
    pilot_url,
)
from tests.conftest import SECRET, Server, start_server
from tests.helpers import metric
from tests.pilot.support import (
    FAST,
    PYTHON_BINDS,
    chain,
    finished,
    logs,
    stats,
    stored,
    submit,
    tasks,
    wait_for,
)

# -- configuration and sizing ------------------------------------------------------------------


def write(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "grids.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_the_default_is_one_local_grid_and_none_means_none() -> None:
    (grid,) = load_grids(None).grids
    assert (grid.name, grid.backend) == ("local", "local")
    assert grid.max_pilots == len(os.sched_getaffinity(0))
    assert load_grids("none").grids == ()


def test_a_grid_file_is_validated_field_by_field(tmp_path: Path) -> None:
    good = load_grids(write(tmp_path, {"url": "http://submit:8080", "grids": [
        {"name": "cluster", "backend": "slurm", "queue": "short", "max_pilots": 100,
         "pilot_resources": {"cpu": 8, "memory": 32, "time": 12}, "site": "here",
         "setup": "module load python", "options": {"account": "x"}}]}))
    (grid,) = good.grids
    assert (grid.queue, grid.max_pilots, grid.max_idle, grid.site) == ("short", 100, 5, "here")
    assert good.url == "http://submit:8080"
    bad = [
        ({"grids": [{"name": "x", "backend": "pbs"}]}, "grids[0].backend"),
        ({"grids": [{"name": "x", "backend": "local", "max_pilots": -1}]},
         "grids[0].max_pilots"),
        ({"grids": [{"name": "x", "backend": "local", "pilot_resources": {"cores": 2}}]},
         "grids[0].pilot_resources"),
        ({"grids": [{"name": "a", "backend": "local"}, {"name": "a", "backend": "local"}]},
         "grid names must be unique"),
    ]
    for doc, field in bad:
        with pytest.raises(Invalid, match=field.replace("[", r"\[").replace("]", r"\]")):
            load_grids(write(tmp_path, doc))
    with pytest.raises(Invalid, match="cannot read"):
        load_grids(str(tmp_path / "missing.json"))


def test_pilot_sizes_follow_the_task_groups() -> None:
    grid = GridConfig("g", "slurm", pilot_resources={"cpu": 4, "memory": 8, "time": 12})
    # small tasks share a standard pilot
    size = pilot_size(grid, {"cpu": 1, "memory": 1.5, "time": 1})
    assert size == {"cpu": 4, "memory": 8, "time": 12}
    assert per_pilot(size, {"cpu": 1, "memory": 1.5}) == 4
    # a bigger task grows its pilot; a GPU task gets GPUs, CPU tasks never do
    big = pilot_size(grid, {"cpu": 16, "memory": 64, "gpu": 2, "time": 20})
    assert big == {"cpu": 16, "gpu": 2, "memory": 64, "time": 20.1}
    assert "gpu" not in pilot_size(GridConfig("g", "slurm", pilot_resources={"gpu": 1}), {})
    # a local grid sets no walltime: its pilots have none
    assert pilot_size(GridConfig("l", "local"), {"cpu": 2, "time": 1}) == {"cpu": 2}


def test_free_room_is_counted_before_new_pilots() -> None:
    assert fits({"cpu": 3, "memory": 4}, {"cpu": 1, "memory": 1.5}) == 2
    assert fits({"cpu": 8, "gpu": 1}, {"cpu": 1}) == 0  # GPU pilots take only GPU tasks
    assert fits({"cpu": 8, "time": 1}, {"cpu": 1, "time": 2}) == 0
    grid = GridConfig("g", "local", max_pilots=10, pilot_resources={"cpu": 2})
    manager = object.__new__(GridManager)
    idle = {"status": "submitted", "resources": {"cpu": 2}}
    busy = {"status": "running", "resources_available": {"cpu": 1}}
    groups = [Group({"cpu": 1}, 8), Group({"cpu": 1, "site": "elsewhere"}, 5)]
    sizes = manager.plan(grid, groups, [idle, busy], room=10, capacity={"cpu": 8},
                         used={"cpu": 4})
    # 8 tasks: 2 fit the idle pilot, 1 the running one; 5 left need 3 pilots of 2 cores,
    # but the machine has room for only 2 more; tasks for another site are not ours
    assert sizes == [{"cpu": 2}, {"cpu": 2}]
    # what is left for the next grid
    assert [g.count for g in groups] == [1, 5]


def test_pilot_url_and_local_command(tmp_path: Path) -> None:
    cfg = ServerConfig(host="0.0.0.0")
    assert pilot_url(cfg, GridsFile(), 8123) == "http://127.0.0.1:8123"
    assert pilot_url(cfg, GridsFile(url="https://x"), 8123) == "https://x"
    assert pilot_url(cfg, GridsFile(), None) is None
    grid = LocalGrid(GridConfig("l", "local", setup="echo hi",
                                options={"idle_timeout": 5, "sandbox": "none"}), tmp_path)
    spec = PilotSpec("a" * 32, {"cpu": 2, "memory": 1.5}, "http://u", "secret-token")
    argv = grid.command(spec, tmp_path)
    assert argv[:4] == ["/bin/sh", "-c", 'echo hi\nexec "$@"', "iceprod-pilot"]
    assert "--resources" in argv and resources_arg(spec.resources) == "cpu=2,memory=1.5"
    assert "secret-token" not in " ".join(argv)  # the token goes in a file
    assert "--idle-timeout" in argv
    assert argv[argv.index("--sandbox") + 1] == "none" and not grid.isolated
    assert (grid.capacity() or {})["cpu"] >= 1


def test_isolated_local_pilots_run_in_bwrap_without_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = tmp_path / "out"
    grid = LocalGrid(GridConfig("l", "local", options={
        "sandbox": "auto", "stage_roots": [str(out)], "pass_env": ["MY_SITE_VAR"],
        "sandbox_binds": ["/cvmfs"]}), data / "grids" / "l")
    assert grid.isolation == "bwrap" and grid.isolated  # bubblewrap works on this machine
    pilot_dir = grid.pilot_dir("a" * 32)
    argv = grid.command(PilotSpec("a" * 32, {"cpu": 1}, "http://u", "t"), pilot_dir)
    sep = argv.index("--")
    outer, pilot = argv[:sep], argv[sep + 1:]
    assert outer[0].endswith("bwrap")
    # the data dir is an empty tmpfs with only this pilot's directory bound back
    assert ["--tmpfs", str(data.resolve())] == outer[outer.index("--tmpfs"):][:2]
    assert ["--bind", str(pilot_dir), str(pilot_dir)] == outer[-3:]
    assert {"--unshare-pid", "--unshare-user", "--die-with-parent"} <= set(outer)
    assert outer[outer.index("--proc") + 1] == "/proc"
    # the pilot then sandboxes its steps, with the grid's isolation options
    assert pilot[pilot.index("--sandbox") + 1] == "bwrap"
    assert pilot[pilot.index("--stage-root") + 1] == str(out)
    assert pilot[pilot.index("--pass-env") + 1] == "MY_SITE_VAR"
    assert pilot[pilot.index("--sandbox-bind") + 1] == "/cvmfs"


@pytest.mark.parametrize("options, error", [
    ({"stage_roots": ["{data}/store"]}, ("options.stage_roots: {data}/store contains or is "
                                         "inside the server's data dir")),
    ({"stage_roots": ["{tmp}"]}, "contains or is inside the server's data dir"),
    ({"stage_roots": ["{data}/../data/x"]}, "inside the server's data dir"),
    ({"sandbox": "chroot"}, "options.sandbox: 'chroot' is not one of auto, bwrap, none"),
])
def test_a_grid_refuses_staging_roots_in_the_data_dir(tmp_path: Path, options: dict[str, Any],
                                                      error: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    fill = {"data": str(data), "tmp": str(tmp_path)}
    options = {k: [v.format(**fill) for v in val] if isinstance(val, list) else val
               for k, val in options.items()}
    with pytest.raises(Invalid, match=re.escape(error.format(**fill))):
        LocalGrid(GridConfig("l", "local", options=options), data / "grids" / "l")


def test_the_server_refuses_a_staging_root_in_its_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_GRID_CONFIG": write(tmp_path, {
        "grids": [{"name": "local", "backend": "local",
                   "options": {"stage_roots": [str(tmp_path / "data")]}}]})}
    run = subprocess.run([sys.executable, "-m", "iceprod.server", "--data-dir",
                          str(tmp_path / "data")], env=env, capture_output=True, text=True,
                         timeout=30, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("iceprod-server: grids[local].options.stage_roots: ")
    assert line.endswith(f"contains or is inside the server's data dir {tmp_path / 'data'}")


def test_only_grid_names_a_configured_grid(tmp_path: Path) -> None:
    env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_URL": "http://127.0.0.1:9"}
    run = subprocess.run(
        [sys.executable, "-m", "iceprod.server", "--data-dir", str(tmp_path), "--only", "grid",
         "--grid", "nosuch"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2
    assert "no grid named 'nosuch'" in run.stderr
    env["ICEPROD_GRID_CONFIG"] = write(tmp_path, {"grids": [{"name": "x", "backend": "pbs"}]})
    run = subprocess.run([sys.executable, "-m", "iceprod.server", "--data-dir", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2 and "grids[0].backend" in run.stderr


# -- end to end ------------------------------------------------------------------------------


def local_grid(tmp_path: Path, **grid: Any) -> dict[str, str]:
    # the tests' own output directory is the one staging root (file:// staging is refused
    # elsewhere)
    (tmp_path / "out").mkdir(exist_ok=True)
    doc = {"grids": [{"name": "local", "backend": "local", "max_pilots": 3, "max_idle": 3,
                      "max_per_cycle": 3, **grid,
                      "options": {"cores": 3, "idle_timeout": 5, "heartbeat_interval": 0.5,
                                  "claim_interval": 0.2, "monitor_interval": 0.1,
                                  "stage_roots": [str(tmp_path / "out")],
                                  "sandbox_binds": PYTHON_BINDS,
                                  **grid.get("options", {})}}]}
    return {**FAST, "ICEPROD_GRID_CONFIG": write(tmp_path, doc)}


@pytest.fixture
def grid_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    options = getattr(request, "param", {})
    srv = start_server(tmp_path / "data", env=local_grid(tmp_path, options=options))
    yield srv
    pilots = pilot_processes(srv)
    assert srv.stop() == 0
    # the server stops its local pilots on the way out, and whatever they ran
    _, alive = psutil.wait_procs(pilots, timeout=10)
    assert alive == []


def pilot_processes(srv: Server) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(srv.proc.pid).children(recursive=True)
                if "iceprod.pilot" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def clients(srv: Server) -> tuple[httpx.Client, httpx.Client]:
    return (srv.client(srv.token("alice", ["user"], ["physics"])),
            srv.client(srv.token("root", ["admin"])))


def test_a_chain_dataset_runs_to_completion_on_local_pilots(grid_server: Server,
                                                            tmp_path: Path) -> None:
    alice, admin = clients(grid_server)
    t0 = time.monotonic()
    ds = submit(alice, chain(), jobs=20)
    assert wait_for(lambda: finished(alice, ds), timeout=60, what="the dataset") == "complete"
    elapsed = time.monotonic() - t0
    number = alice.get(f"/datasets/{ds}").json()["dataset"]
    for j in range(20):
        line = f"job {j} of dataset {number}"
        assert stored(alice, ds, f"example/{j}/gen.txt") == f"{line}\n"
        assert stored(alice, ds, f"example/{j}/proc.txt") == \
            f"{line}, processed by task process\n"
        assert stored(alice, ds, f"example/{j}/final.txt") == \
            f"{line}, processed by task process\nfinal: 1 line(s)\n"
    assert alice.get(f"/datasets/{ds}/task_counts/status").json() == {"complete": 60}
    pilots = admin.get("/pilots").json()
    some = [t for t in tasks(alice, ds).values() if t["job_index"] == 7]
    for task in some:
        names = {log["name"] for log in logs(alice, ds, task["task_id"])}
        assert "stdlog" in names
        (run,) = stats(alice, ds, task["task_id"])
        assert run["exit_code"] == 0 and run["outcome"] == "complete"
        assert run["walltime"] >= 0 and run["cpu_time"] >= 0 and run["max_rss"] > 0
        assert run["host"] and run["pilot_id"] in pilots
    summary = alice.get(f"/datasets/{ds}/task_stats").json()
    assert {name: s["count"] for name, s in summary.items()} == \
        {"generate": 20, "process": 20, "finish": 20}
    # the grid started its pilots, which registered and ran everything
    assert 1 <= len(pilots) <= 3
    assert {p["status"] for p in pilots.values()} <= {"running", "finished"}
    assert all(p["grid_id"] and p["grid_queue_id"] for p in pilots.values())
    print(f"20 x 3 chain on local pilots: {elapsed:.1f}s")


def test_a_killed_pilot_loses_its_task_to_another(grid_server: Server, tmp_path: Path) -> None:
    alice, admin = clients(grid_server)
    config = {"tasks": [{
        "name": "nap", "requirements": {"cpu": 1},
        "data": [{"remote": f"{tmp_path}/out/$(job_index).txt", "local": "done.txt",
                  "movement": "output"}],
        "steps": [{"command": "/bin/sh", "args": [
            "-c", "sleep 1.5; echo $(job_index) > done.txt"]}],
    }]}
    ds = submit(alice, config, jobs=6)
    # wait until a pilot is inside a task, then SIGKILL it (no chance to report anything)
    victim = wait_for(lambda: next((t for t in tasks(alice, ds).values()
                                    if t["status"] == "processing"), None),
                      what="a task to start")
    pilot = admin.get(f"/pilots/{victim['pilot_id']}").json()
    # its step, as this machine sees it (inside the sandbox it has a pid of its own)
    steps = wait_for(lambda: [p for p in psutil.Process(int(pilot["grid_queue_id"]))
                              .children(recursive=True) if p.name() == "sleep"],
                     what="the victim's step")
    os.kill(int(pilot["grid_queue_id"]), signal.SIGKILL)
    t_kill = time.monotonic()
    lost = wait_for(lambda: admin.get(f"/pilots/{pilot['pilot_id']}").json()["status"] == "lost",
                    timeout=10, what="the pilot to be marked lost")
    assert lost and time.monotonic() - t_kill < 5  # noticed by polling, not by a lease
    assert wait_for(lambda: finished(alice, ds), timeout=60, what="the dataset") == "complete"
    every = tasks(alice, ds)
    retried = every[victim["task_id"]]
    assert retried["status"] == "complete" and retried["evictions"] == 1
    assert retried["failures"] == 0  # an eviction, not the payload's failure
    for task_id in every:
        runs = stats(alice, ds, task_id)
        assert [r["outcome"] for r in runs] == ["complete"], task_id  # completed once
    (run,) = stats(alice, ds, victim["task_id"])
    assert run["pilot_id"] != pilot["pilot_id"]
    for j in range(6):
        assert (tmp_path / "out" / f"{j}.txt").read_text() == f"{j}\n"
    # the killed pilot's step did not survive it
    for step in steps:
        assert not step.is_running() or step.status() == psutil.STATUS_ZOMBIE
    assert admin.get(f"/pilots/{pilot['pilot_id']}").json()["reason"].startswith(
        "its batch job ended")


# the pilot's own heartbeat would notice too; a slow one leaves it to the manager
@pytest.mark.parametrize("grid_server", [{"heartbeat_interval": 60}], indirect=True)
def test_a_deleted_pilot_has_its_job_cancelled(grid_server: Server, tmp_path: Path) -> None:
    alice, admin = clients(grid_server)
    ds = submit(alice, {"tasks": [{"name": "long", "steps": [{"command": "sleep",
                                                              "args": ["60"]}]}]})
    task = wait_for(lambda: next((t for t in tasks(alice, ds).values()
                                  if t["status"] == "processing"), None), what="a task to run")
    pilot = admin.get(f"/pilots/{task['pilot_id']}").json()
    proc = psutil.Process(int(pilot["grid_queue_id"]))
    # an operator removes the record: the task is released, the batch job is iceprod's no more
    r = admin.delete(f"/pilots/{pilot['pilot_id']}")
    assert r.status_code == 200 and r.json() == {"released": 1}
    proc.wait(timeout=15)  # cancelled by the manager (SIGTERM; the pilot exits)
    assert grid_server.log_path is not None
    assert f"cancelling job {pilot['grid_queue_id']}" in grid_server.log_path.read_text()


def test_a_grid_process_of_its_own_serves_a_separate_api(tmp_path: Path) -> None:
    """`--only grid --grid NAME` beside a server running the API and the scheduler: a REST
    client with the URL and a token of role grid (no secret, its own data dir)."""
    env = local_grid(tmp_path)
    api = start_server(tmp_path / "data", env=FAST)  # no grid in this one
    token_file = tmp_path / "grid-token"
    token_file.write_text(api.token("grid-manager", ["grid"]))
    log = open(tmp_path / "grid.log", "wb")  # noqa: SIM115 - the process owns it
    plain = {k: v for k, v in os.environ.items() if k not in ("ICEPROD_SECRET", "ICEPROD_DB_URL")}
    grid = subprocess.Popen(
        [sys.executable, "-m", "iceprod.server", "--only", "grid", "--grid", "local",
         "--data-dir", str(tmp_path / "grid-data"), "--token-file", str(token_file)],
        env={**plain, **env, "ICEPROD_URL": api.url},
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        alice, admin = clients(api)
        ds = submit(alice, chain(), jobs=3)
        assert wait_for(lambda: finished(alice, ds), what="the dataset") == "complete"
        assert all(p["grid_id"] for p in admin.get("/pilots").json().values())
        # it neither read nor made a secret, nor opened a store of its own
        assert sorted(p.name for p in (tmp_path / "grid-data").iterdir()) == ["grids"]
    finally:
        grid.terminate()
        assert grid.wait(timeout=30) == 0
        api.stop()


def test_a_warm_pilot_waits_for_work_and_takes_it_at_once(tmp_path: Path) -> None:
    """`warm_pilots`: with no work the grid keeps a pilot running; it waits on the server
    (a claim with `wait`), and takes the next task the moment it is queued (the grid
    manager's interval is long here, so only the warm pilot can have run it)."""
    env = {**local_grid(tmp_path, warm_pilots=1, options={"claim_interval": 5}),
           "ICEPROD_GRID_INTERVAL": "3600"}
    srv = start_server(tmp_path / "data", env=env)
    try:
        alice, admin = clients(srv)
        wait_for(lambda: [p["status"] for p in admin.get("/pilots").json().values()]
                 == ["running"], what="one warm pilot running")
        wait_for(lambda: metric(srv.url, "iceprod_claim_waits_total") >= 1,
                 what="the warm pilot's claim to wait")
        ds = submit(alice, {"tasks": [{"name": "t", "steps": [{"command": "/bin/true"}]}]})
        assert wait_for(lambda: finished(alice, ds), timeout=60, what="the dataset") == \
            "complete"
        assert len(admin.get("/pilots").json()) == 1  # the warm one ran it
    finally:
        srv.stop()

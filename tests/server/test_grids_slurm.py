"""The slurm grid backend against a real single-node Slurm started by the tests
(tests/slurm_cluster.py): submission with sbatch, polling with squeue and scontrol (this
cluster has no accounting, so sacct says so and the backend falls back), cancellation with
scancel, and the pilot's token handed over as a 0600 file only.

The pilot here is a stand-in shell script (option ``pilot_command``) that records what it was
given and sleeps; the real pilot is exercised by the end-to-end grid tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from iceprod.server.grids.base import GridConfig, GridError, GridJob, GridJobState, PilotSpec
from iceprod.server.grids.slurm import (
    SlurmGrid,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    slurm_state,
    time_limit,
)
from tests.conftest import Server, start_server
from tests.helpers import needs
from tests.pilot.support import (
    FAST,
    PILOT_FLAGS,
    chain,
    finished,
    one_task,
    stats,
    stored,
    submit,
    tasks,
    wait_for,
)
from tests.slurm_cluster import SlurmCluster, missing_binaries, slurm_cluster_fixture  # noqa: F401

TOKEN = "secret-token-" + "s" * 40

FAKE_PILOT = """#!/bin/sh
# a stand-in pilot: records its arguments, environment and token, then sleeps
seconds=$1; shift
echo "$@" > args.txt
echo "$ICEPROD_PILOT_ID" > pilot_id.txt
env > env.txt
while [ $# -gt 0 ]; do
    if [ "$1" = "--token-file" ]; then cat "$2" > token_seen.txt; fi
    shift
done
exec sleep "$seconds"
"""


def pilot_id(n: int) -> str:
    return f"{n:032x}"


def spec(n: int, **resources: Any) -> PilotSpec:
    return PilotSpec(pilot_id=pilot_id(n), url="http://127.0.0.1:1/", token=TOKEN,
                     resources={"cpu": 1, "memory": 0.25, "time": 1, **resources})


def make_grid(tmp_path: Path, cluster: SlurmCluster | None = None, name: str = "slurm-test",
              sleep: float = 60, **options: Any) -> SlurmGrid:
    fake = tmp_path / "fake-pilot.sh"
    fake.write_text(FAKE_PILOT)
    opts: dict[str, Any] = {"pilot_command": ["/bin/sh", str(fake), str(sleep)],
                            "retry_delay": 0.05, **options}
    if cluster is not None:
        opts.setdefault("slurm_conf", str(cluster.conf))
    config = GridConfig(name=name, backend="slurm", queue=cluster.partition if cluster else "",
                        setup="export ICEPROD_TEST_SETUP=1", options=opts)
    return SlurmGrid(config, tmp_path / name)


async def poll_until(grid: SlurmGrid, job_id: str, states: set[GridJobState],
                     timeout: float = 30) -> GridJob:
    deadline = time.monotonic() + timeout
    seen: list[GridJobState] = []
    while time.monotonic() < deadline:
        for job in await grid.poll():
            if job.grid_queue_id == job_id:
                seen.append(job.state)
                if job.state in states:
                    return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}; seen {seen}")


async def wait_file(path: Path, timeout: float = 20) -> str:
    await until(lambda: _exists(path), timeout, str(path))
    return path.read_text()


async def _exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- against the real cluster


async def test_pilot_runs_to_completion(slurm_cluster: SlurmCluster, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the server's own secrets are in its environment, which sbatch would pass on
    monkeypatch.setenv("ICEPROD_SECRET", "server-signing-secret")
    grid = make_grid(tmp_path, slurm_cluster, sleep=2)
    started = time.monotonic()
    submitted = await grid.submit([spec(1)])
    assert list(submitted) == [pilot_id(1)]
    job_id = submitted[pilot_id(1)]

    pilot_dir = tmp_path / "slurm-test" / "pilots" / pilot_id(1)
    token_file = pilot_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    script = (pilot_dir / "pilot.sh").read_text()
    assert TOKEN not in script
    assert str(token_file) in script and "export ICEPROD_TEST_SETUP=1" in script

    first = await poll_until(grid, job_id, {GridJobState.IDLE, GridJobState.RUNNING})
    assert first.pilot_id == pilot_id(1)
    await poll_until(grid, job_id, {GridJobState.RUNNING})
    assert time.monotonic() - started < 10
    # the pilot got its id, the server url and the token through the file
    assert await wait_file(pilot_dir / "token_seen.txt") == TOKEN
    assert (pilot_dir / "pilot_id.txt").read_text().strip() == pilot_id(1)
    args = (pilot_dir / "args.txt").read_text().split()
    assert args[:2] == ["--url", "http://127.0.0.1:1/"] and TOKEN not in args
    assert args[-2:] == ["--grid-queue-id", job_id]
    env = (pilot_dir / "env.txt").read_text()
    assert f"ICEPROD_PILOT_ID={pilot_id(1)}" in env and "ICEPROD_TEST_SETUP=1" in env
    assert "server-signing-secret" not in env and TOKEN not in env

    done = await poll_until(grid, job_id, {GridJobState.COMPLETED})
    assert done.pilot_id == pilot_id(1)
    # a finished job no longer needs its token on disk
    assert not token_file.exists()
    # the final state stays visible to the manager's next cycles
    assert [j.state for j in await grid.poll() if j.grid_queue_id == job_id] == [
        GridJobState.COMPLETED]


async def test_cancel_removes_the_pilot(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    grid = make_grid(tmp_path, slurm_cluster, sleep=300)
    job_id = (await grid.submit([spec(2)]))[pilot_id(2)]
    await poll_until(grid, job_id, {GridJobState.RUNNING})

    await grid.cancel([job_id])
    removed = await poll_until(grid, job_id, {GridJobState.REMOVED})
    assert removed.pilot_id == pilot_id(2) and "CANCELLED" in removed.reason
    # cancelling again, or a job Slurm never had, is not an error
    await grid.cancel([job_id, "999999"])


async def test_poll_sees_only_this_grids_pilots(slurm_cluster: SlurmCluster,
                                               tmp_path: Path) -> None:
    mine = make_grid(tmp_path, slurm_cluster, name="mine", sleep=300)
    other = make_grid(tmp_path, slurm_cluster, name="other", sleep=300)
    # a pending job (more CPUs than the node has) of each grid, and one that is not a pilot
    big = {"cpu": slurm_cluster.cpus + 1}
    mine_ids = await mine.submit([spec(3, **big), spec(4, **big)])
    other_ids = await other.submit([spec(5, **big)])
    plain = await mine.run_checked(["sbatch", "--parsable", "--job-name=iceprod-pilot-x",
                                    f"--cpus-per-task={slurm_cluster.cpus + 1}",
                                    f"--chdir={tmp_path}", "--wrap", "sleep 300"])
    try:
        jobs = await mine.poll()
        assert {(j.grid_queue_id, j.pilot_id) for j in jobs} == {
            (job_id, pid) for pid, job_id in mine_ids.items()}
        assert {j.state for j in jobs} == {GridJobState.IDLE}
        assert {j.pilot_id for j in await other.poll()} == set(other_ids)
    finally:
        await mine.cancel([*mine_ids.values(), *other_ids.values(), plain.stdout.strip()])


async def test_submit_failure_is_logged_and_skipped(slurm_cluster: SlurmCluster,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    grid = make_grid(tmp_path, slurm_cluster, attempts=2,
                     sbatch_options=["--partition=no-such-partition"])
    with caplog.at_level(logging.WARNING):
        assert await grid.submit([spec(6), spec(7)]) == {}
    # Slurm's own words reach the log, once per attempt; the second pilot is not tried
    errors = [r.getMessage() for r in caplog.records if "sbatch" in r.getMessage()]
    assert len(errors) == 2 and all("invalid partition" in e.lower() for e in errors)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "slurm-test" / "pilots" / pilot_id(6) / "token").exists()


async def test_poll_fails_loudly_when_slurm_is_unreachable(tmp_path: Path) -> None:
    """An empty answer would make the manager mark every pilot lost: poll raises instead."""
    needs("Slurm is not installed here" if missing_binaries() else None)
    # a controller on a port where nothing listens
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n"
                    "MessageTimeout=1\nNodeName=localhost NodeAddr=127.0.0.1 CPUs=1\n"
                    "PartitionName=debug Nodes=localhost Default=YES\n")
    grid = make_grid(tmp_path, attempts=2, slurm_conf=str(conf))
    with pytest.raises(GridError, match="Unable to contact slurm controller"):
        await grid.poll()


# --- end to end: a server whose grid manager submits real pilots with sbatch


@pytest.fixture
def slurm_server(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[Server]:
    """A server (scheduler and grid manager on) whose only grid is the test cluster; pilots
    are the real ``iceprod-pilot``, quick to claim and to leave when idle."""
    pilot = [sys.executable, "-m", "iceprod.pilot", *PILOT_FLAGS, "--server-timeout", "30"]
    grids = {"grids": [{
        "name": f"slurm-{tmp_path.name[-12:]}", "backend": "slurm", "queue": slurm_cluster.partition,
        "max_pilots": 2, "max_idle": 2, "max_per_cycle": 2,
        "pilot_resources": {"cpu": 1, "memory": 0.5, "time": 1},
        "options": {"slurm_conf": str(slurm_cluster.conf), "pilot_command": pilot,
                    "retry_delay": 0.1},
    }]}
    config = tmp_path / "grids.json"
    config.write_text(json.dumps(grids))
    server = start_server(tmp_path / "data", env={**FAST, "ICEPROD_GRID_CONFIG": str(config)})
    yield server
    # pilots still queued or idling must not hold the node for the next test; cancelled
    # while the server runs, they report and leave at once
    try:
        drain(slurm_cluster, timeout=10)
    except AssertionError:
        pass
    server.stop()
    drain(slurm_cluster)


def drain(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Cancel every job of this user and wait until the queue is empty."""
    subprocess.run(["scancel", "--me"], env=cluster.env, capture_output=True, timeout=30,
                   check=False)
    wait_for(lambda: not subprocess.run(
        ["squeue", "--noheader", "--me"], env=cluster.env, capture_output=True, text=True,
        timeout=30, check=False).stdout.strip(), timeout=timeout,
        what="the pilots to leave the Slurm queue", interval=0.2)


def slurm_job(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    result = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], env=cluster.env,
                            capture_output=True, text=True, timeout=30, check=True)
    return parse_scontrol(result.stdout)


def test_a_dataset_completes_on_pilots_submitted_with_sbatch(
        slurm_server: Server, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    alice = slurm_server.client(slurm_server.token("alice", ["user"], ["physics"]))
    admin = slurm_server.client(slurm_server.token("root", ["admin"]))
    ds = submit(alice, chain(), jobs=5)

    assert wait_for(lambda: finished(alice, ds), timeout=90,
                    what="the dataset to finish") == "complete"
    number = alice.get(f"/datasets/{ds}").json()["dataset"]
    for j in range(5):
        assert stored(alice, ds, f"example/{j}/final.txt") == (
            f"job {j} of dataset {number}, processed by task process\nfinal: 1 line(s)\n")
    pilots = admin.get("/pilots").json()
    assert 1 <= len(pilots) <= 2 and all(p["queue_version"] == "slurm" for p in pilots.values())
    for task in tasks(alice, ds).values():
        # every task ran in a pilot that is a Slurm job of this grid
        (run,) = stats(alice, ds, task["task_id"])
        job = slurm_job(slurm_cluster, pilots[run["pilot_id"]]["grid_queue_id"])
        assert job["JobName"] == f"iceprod-pilot-{run['pilot_id']}"
        assert job["Partition"] == slurm_cluster.partition


def kill_pilot(pilot_id: str) -> None:
    """SIGKILL the pilot process on the node (found by its token file's path)."""
    marker = f"/pilots/{pilot_id}/token"
    (proc,) = [p for p in psutil.process_iter(["cmdline"])
               if any(marker in arg for arg in p.info["cmdline"] or ())]
    proc.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("how, pilot_status", [
    # scancel: SIGTERM, the pilot resets its task and leaves
    ("scancel", "finished"),
    # killed on the node: the manager sees the job end under a running pilot and requeues
    ("sigkill", "lost"),
])
def test_a_pilot_cancelled_with_scancel_has_its_task_requeued(
        slurm_server: Server, slurm_cluster: SlurmCluster, how: str, pilot_status: str) -> None:
    alice = slurm_server.client(slurm_server.token("alice", ["user"], ["physics"]))
    admin = slurm_server.client(slurm_server.token("root", ["admin"]))
    step = {"command": "sleep", "args": ["4"]}
    # no time requirement: an interrupted run must not leave a time limit behind that
    # kills every retry (grown_requirements only raises requirements a task set)
    ds = submit(alice, one_task([step], requirements={"cpu": 1, "memory": 0.25}))

    def running() -> dict[str, Any] | None:
        found = [t for t in tasks(alice, ds).values() if t["status"] == "processing"]
        return found[0] if found else None

    task = wait_for(running, timeout=60, what="the task to run in a Slurm pilot")
    first = admin.get(f"/pilots/{task['pilot_id']}").json()
    if how == "scancel":
        subprocess.run(["scancel", first["grid_queue_id"]], env=slurm_cluster.env,
                       check=True, timeout=30)
    else:
        kill_pilot(first["pilot_id"])

    assert wait_for(lambda: finished(alice, ds), timeout=90,
                    what="the dataset to finish") == "complete"
    task = tasks(alice, ds)[task["task_id"]]
    assert task["failures"] + task["evictions"] == 1
    assert admin.get(f"/pilots/{first['pilot_id']}").json()["status"] == pilot_status
    # another pilot, in another Slurm job, finished it
    others = [p for p in admin.get("/pilots").json().values()
              if p["pilot_id"] != first["pilot_id"]]
    assert others and all(p["grid_queue_id"] != first["grid_queue_id"] for p in others)


# --- what the backend asks Slurm for, and how it reads Slurm's answers


def test_sbatch_arguments_carry_resources_and_options(tmp_path: Path) -> None:
    config = GridConfig(name="g", backend="slurm", queue="short", options={
        "account": "icecube", "sbatch_options": ["--qos=normal", "--constraint=avx2"]})
    grid = SlurmGrid(config, tmp_path)
    args = grid.sbatch_args(spec(8, cpu=2, gpu=1, memory=3.5, time=1.5, disk=10),
                            tmp_path / "pilot.sh")
    assert args[:2] == ["sbatch", "--parsable"] and args[-1] == str(tmp_path / "pilot.sh")
    for expected in [f"--job-name=iceprod-pilot-{pilot_id(8)}", f"--comment=iceprod:g:{pilot_id(8)}",
                     "--cpus-per-task=2", "--mem=3584M", "--gres=gpu:1", "--time=0-01:30:00",
                     "--partition=short", "--account=icecube", "--qos=normal",
                     "--constraint=avx2"]:
        assert expected in args
    # disk is only asked for where nodes declare TmpDisk
    assert not any(a.startswith("--tmp") for a in args)
    assert TOKEN not in " ".join(args)


def test_time_limits() -> None:
    assert time_limit(1) == "0-01:00:00"
    assert time_limit(0.01) == "0-00:01:00"
    assert time_limit(49.25) == "2-01:15:00"


@pytest.mark.parametrize("state, reason, expected", [
    ("PENDING", "Resources", GridJobState.IDLE),
    ("PENDING", "JobHeldUser", GridJobState.HELD),
    ("RUNNING", "None", GridJobState.RUNNING),
    ("COMPLETING", "None", GridJobState.RUNNING),
    ("SUSPENDED", "", GridJobState.HELD),
    ("REQUEUE_HOLD", "", GridJobState.HELD),
    ("COMPLETED", "", GridJobState.COMPLETED),
    ("FAILED", "", GridJobState.COMPLETED),
    ("TIMEOUT", "", GridJobState.COMPLETED),
    ("OUT_OF_MEMORY", "", GridJobState.COMPLETED),
    ("NODE_FAIL", "", GridJobState.COMPLETED),
    ("CANCELLED", "", GridJobState.REMOVED),
    ("CANCELLED by 0", "", GridJobState.REMOVED),
    ("SOMETHING_NEW", "", None),
])
def test_state_mapping(state: str, reason: str, expected: GridJobState | None) -> None:
    assert slurm_state(state, reason) is expected


def test_squeue_output_is_filtered_to_this_grid() -> None:
    text = "\n".join([
        f"11|RUNNING|iceprod-pilot-{pilot_id(1)}|iceprod:g:{pilot_id(1)}|None",
        f"12|PENDING|iceprod-pilot-{pilot_id(2)}|iceprod:g:{pilot_id(2)}|Priority",
        f"13|RUNNING|iceprod-pilot-{pilot_id(3)}|iceprod:other:{pilot_id(3)}|None",
        "14|RUNNING|analysis|(null)|None",
        "garbage",
    ])
    assert parse_squeue(text, "g") == [
        GridJob("11", pilot_id(1), GridJobState.RUNNING, "RUNNING"),
        GridJob("12", pilot_id(2), GridJobState.IDLE, "PENDING: Priority"),
    ]


def test_sacct_and_scontrol_output() -> None:
    """sacct needs slurmdbd (not run here), so its output format is checked on a sample."""
    sacct = "21|COMPLETED|None\n21.batch|COMPLETED|\n22|CANCELLED by 0|None\n"
    assert parse_sacct(sacct) == {"21": ("COMPLETED", "None"), "22": ("CANCELLED by 0", "None")}
    fields = parse_scontrol("JobId=5 JobName=x JobState=TIMEOUT Reason=TimeLimit Comment=a=b")
    assert (fields["JobId"], fields["JobState"], fields["Reason"]) == ("5", "TIMEOUT",
                                                                       "TimeLimit")


# --- a grid manager of its own: a submit host holding only a URL and a token


def open_paths(pid: int) -> set[str]:
    """The files a process holds open now."""
    try:
        return {f.path for f in psutil.Process(pid).open_files()}
    except psutil.NoSuchProcess:
        return set()


def test_a_separate_grid_process_runs_slurm_pilots_with_a_url_and_a_token(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """`--only rest` plus a scheduler in one data dir; `--only grid --grid cluster` from
    another directory with ICEPROD_URL and a token file of role grid: no secret, no database
    settings, not the API's data dir. A dataset completes on its Slurm pilots."""
    data = tmp_path / "data"
    api = start_server(data, env=FAST, args=["--only", "rest"])
    scheduler = start_scheduler(data)
    submit_host = tmp_path / "submit-host"
    submit_host.mkdir()
    pilot = [sys.executable, "-m", "iceprod.pilot", *PILOT_FLAGS, "--server-timeout", "30"]
    (submit_host / "grids.json").write_text(json.dumps({"grids": [{
        "name": "cluster", "backend": "slurm", "queue": slurm_cluster.partition,
        "max_pilots": 2, "max_idle": 2, "max_per_cycle": 2,
        "pilot_resources": {"cpu": 1, "memory": 0.5, "time": 1},
        "options": {"slurm_conf": str(slurm_cluster.conf), "pilot_command": pilot,
                    "retry_delay": 0.1},
    }]}))
    (submit_host / "token").write_text(api.token("submit-host", ["grid"]))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ICEPROD_") or k in FAST}
    env.update(FAST, ICEPROD_URL=api.url, ICEPROD_GRID_CONFIG=str(submit_host / "grids.json"))
    assert "ICEPROD_SECRET" not in env and "ICEPROD_DB_URL" not in env
    log = open(submit_host / "grid.log", "wb")  # noqa: SIM115 - the process owns it
    grid = subprocess.Popen(
        [sys.executable, "-m", "iceprod.server", "--only", "grid", "--grid", "cluster",
         "--token-file", "token", "--data-dir", "state"],
        cwd=submit_host, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    seen: set[str] = set()
    try:
        assert str(data) not in " ".join(psutil.Process(grid.pid).cmdline())
        alice = api.client(api.token("alice", ["user"], ["physics"]))
        admin = api.client(api.token("root", ["admin"]))
        ds = submit(alice, chain(), jobs=3)

        def done() -> str | None:
            seen.update(open_paths(grid.pid))
            return finished(alice, ds)

        assert wait_for(done, timeout=120, what="the dataset to finish") == "complete"
        pilots = admin.get("/pilots").json()
        assert pilots and all(p["queue_version"] == "slurm" and p["grid_name"] == "cluster"
                              for p in pilots.values())
        (registered,) = admin.get("/grids").json().values()
        assert registered["queues"] == {"cluster": "slurm"}
        assert registered["isolation"] in ("bwrap", "batch")
    finally:
        grid.terminate()
        code = grid.wait(timeout=30)
        drain(slurm_cluster)
        scheduler.terminate()
        scheduler.wait(timeout=30)
        api.stop()
    assert code == 0, (submit_host / "grid.log").read_text()
    # it never held a file of the API's data dir (the database, the secret) open, and made
    # neither a secret nor a database of its own
    assert not {p for p in seen if p.startswith(str(data))}
    assert sorted(p.name for p in (submit_host / "state").iterdir()) == ["grids"]
    assert not list((submit_host / "state").rglob("secret"))
    assert not list((submit_host / "state").rglob("*.sqlite3*"))


def start_scheduler(data: Path) -> subprocess.Popen[bytes]:
    """The scheduler beside an `--only rest` server, in the same data dir."""
    from tests.conftest import SECRET

    env = {**os.environ, **FAST, "ICEPROD_SECRET": SECRET, "ICEPROD_GRID_CONFIG": "none"}
    log = open(data / "scheduler.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([sys.executable, "-m", "iceprod.server", "--only", "scheduler",
                             "--data-dir", str(data)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    return proc

"""The condor grid backend: submit descriptions rendered by the real ``htcondor2.Submit``, and
the backend's logic (state mapping, held-pilot policy, removal, history, retries) against a
FAKE schedd.

The schedd is faked because no HTCondor pool can run here: the ``htcondor`` wheel ships the
Python bindings only, without the schedd, negotiator and startd daemons. ``FakeSchedd`` stands
in at the backend's seam (``schedd_factory``): it keeps job ads, evaluates the backend's
constraints with the real ClassAd library, returns only the projected attributes, and records
every submit and action.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import classad2
import htcondor2
import pytest

from iceprod.client._async import AsyncClient
from iceprod.common.config import ServerConfig
from iceprod.server.grids.base import GridConfig, GridError, GridJob, GridJobState, PilotSpec
from iceprod.server.grids.condor import CondorGrid, submit_description
from iceprod.server.grids.manager import GridManager, GridsFile, Group
from tests.conftest import start_server

TOKEN = "secret-token-" + "c" * 40
GRID = "osg"


def pilot_id(n: int) -> str:
    return f"{n:032x}"


def spec(n: int, **resources: Any) -> PilotSpec:
    return PilotSpec(pilot_id=pilot_id(n), url="https://iceprod.example/", token=TOKEN,
                     resources={"cpu": 1, "memory": 2, "disk": 1, "time": 1, **resources})


class FakeResult:
    def __init__(self, cluster: int) -> None:
        self._cluster = cluster

    def cluster(self) -> int:
        return self._cluster


class FakeSchedd:
    """A stand-in for ``htcondor2.Schedd`` (no schedd can run here; see the module
    docstring). ``queue`` and ``history_ads`` hold plain job ads; ``fail`` makes the next
    that many calls raise like an unreachable schedd."""

    def __init__(self) -> None:
        self.queue: dict[str, dict[str, Any]] = {}
        self.history_ads: list[dict[str, Any]] = []
        self.submitted: list[htcondor2.Submit] = []
        self.constraints: list[str] = []
        self.actions: list[tuple[htcondor2.JobAction, list[str], str | None]] = []
        self.next_cluster = 100
        self.fail = 0

    def _call(self) -> None:
        if self.fail:
            self.fail -= 1
            raise htcondor2.HTCondorException("Failed to connect to schedd")

    def add(self, cluster: int, **attrs: Any) -> str:
        """Script a job ad, as if submitted before (or by someone else)."""
        ad = {"ClusterId": cluster, "ProcId": 0, "JobStatus": 1, **attrs}
        self.queue[f"{cluster}.0"] = ad
        return f"{cluster}.0"

    def leave(self, job_id: str, **attrs: Any) -> None:
        """The job leaves the queue, into history."""
        self.history_ads.append({**self.queue.pop(job_id), **attrs})

    def submit(self, description: htcondor2.Submit, count: int = 0) -> FakeResult:
        self._call()
        assert count == 1
        self.submitted.append(description)
        attrs = {key.lstrip("+").removeprefix("MY."): classad2.ExprTree(value).eval()
                 for key, value in description.items() if key.startswith(("+", "MY."))}
        cluster = self.next_cluster
        self.next_cluster += 1
        self.add(cluster, **attrs)
        return FakeResult(cluster)

    def _select(self, ads: list[dict[str, Any]], constraint: str,
                projection: list[str]) -> list[classad2.ClassAd]:
        expr = classad2.ExprTree(constraint)
        return [classad2.ClassAd({k: v for k, v in ad.items() if k in projection})
                for ad in ads if expr.eval(classad2.ClassAd(ad)) is True]

    def query(self, constraint: str = "True",
              projection: list[str] | None = None) -> list[classad2.ClassAd]:
        self._call()
        self.constraints.append(constraint)
        return self._select(list(self.queue.values()), constraint, projection or [])

    def history(self, constraint: str, projection: list[str] | None = None,
                match: int = -1) -> list[classad2.ClassAd]:
        self._call()
        self.constraints.append(constraint)
        return self._select(self.history_ads, constraint, projection or [])[:match]

    def act(self, action: htcondor2.JobAction, job_spec: list[str],
            reason: str | None = None) -> classad2.ClassAd:
        self._call()
        self.actions.append((action, list(job_spec), reason))
        for job_id in job_spec:
            if job_id not in self.queue:
                continue
            if action is htcondor2.JobAction.Release:
                self.queue[job_id]["JobStatus"] = 1
            elif action is htcondor2.JobAction.Remove:
                self.queue[job_id]["JobStatus"] = 3
        return classad2.ClassAd({"TotalSuccess": len(job_spec)})


@pytest.fixture
def schedd() -> FakeSchedd:
    return FakeSchedd()


@pytest.fixture
def grid(schedd: FakeSchedd, tmp_path: Path) -> Iterator[CondorGrid]:
    yield make_grid(schedd, tmp_path)


def make_grid(schedd: FakeSchedd, tmp_path: Path, **options: Any) -> CondorGrid:
    config = GridConfig(name=GRID, backend="condor", setup="source /cvmfs/setup.sh",
                        options={"retry_delay": 0.01, **options})
    return CondorGrid(config, tmp_path / GRID, schedd_factory=lambda: schedd)


def states(jobs: list[GridJob]) -> dict[str, tuple[str | None, GridJobState]]:
    return {j.grid_queue_id: (j.pilot_id, j.state) for j in jobs}


# --- submit descriptions


def test_submit_description_of_a_gpu_pilot(tmp_path: Path) -> None:
    config = GridConfig(name=GRID, backend="condor", options={
        "requirements": "HAS_CVMFS_icecube_opensciencegrid_org",
        "submit": {"accounting_group": "icecube.prod"}})
    pilot = spec(1, cpu=2, gpu=1, memory=3.5, disk=10, time=1.5, os="el9")
    pilot = PilotSpec(pilot.pilot_id, pilot.resources, pilot.url, pilot.token, site="Wisc")
    rendered = str(submit_description(config, pilot, tmp_path / "p1", tmp_path / "pilots.log"))
    assert rendered == f"""\
universe = vanilla
executable = {tmp_path}/p1/pilot.sh
arguments = --grid-queue-id $(ClusterId).$(ProcId)
transfer_executable = true
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
transfer_input_files = {tmp_path}/p1/iceprod-pilot-token
transfer_output_files = \n\
output = {tmp_path}/p1/pilot.out
error = {tmp_path}/p1/pilot.err
log = {tmp_path}/pilots.log
batch_name = iceprod-pilot-osg
request_cpus = 2
+IceProdPilot = true
+IceProdPilotId = "{pilot_id(1)}"
+IceProdGrid = "osg"
request_gpus = 1
request_memory = 3584
request_disk = 10485760
+MaxWallTimeMins = 90
periodic_remove = (JobStatus == 2) && (time() - JobCurrentStartDate > MaxWallTimeMins * 60)
requirements = (OpSysAndVer == "AlmaLinux9" || OpSysAndVer == "Rocky9") && \
(GLIDEIN_Site == "Wisc") && (HAS_CVMFS_icecube_opensciencegrid_org)
accounting_group = icecube.prod
queue
"""
    assert TOKEN not in rendered


def test_submit_description_of_a_plain_pilot(tmp_path: Path) -> None:
    config = GridConfig(name="cluster \"A\"", backend="condor", site="UW", options={
        "os": ["el9", "AlmaLinux10"], "os_map": {"el9": "CentOS9"}, "site_attribute": "Site"})
    pilot = PilotSpec(pilot_id(2), {"cpu": 1}, "u", TOKEN)
    description = submit_description(config, pilot, tmp_path, tmp_path / "log")
    commands = dict(description.items())
    assert commands["+IceProdGrid"] == '"cluster \\"A\\""'
    assert commands["requirements"] == ('(OpSysAndVer == "CentOS9" || OpSysAndVer == '
                                        '"AlmaLinux10") && (Site == "UW")')
    # no time asked for: no wall-time policy; nothing optional invented
    for absent in ("+MaxWallTimeMins", "periodic_remove", "request_gpus", "request_memory",
                   "request_disk", "environment"):
        assert absent not in commands


# --- submit


async def test_submit_hands_over_the_token_as_a_file(grid: CondorGrid, schedd: FakeSchedd,
                                                     tmp_path: Path) -> None:
    submitted = await grid.submit([spec(1), spec(2)])
    assert submitted == {pilot_id(1): "100.0", pilot_id(2): "101.0"}
    assert len(schedd.submitted) == 2
    for n, description in ((1, schedd.submitted[0]), (2, schedd.submitted[1])):
        pilot_dir = tmp_path / GRID / "pilots" / pilot_id(n)
        token = pilot_dir / "iceprod-pilot-token"
        assert token.read_text() == TOKEN
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert description["transfer_input_files"] == str(token)
        assert description["+IceProdPilotId"] == f'"{pilot_id(n)}"'
        assert TOKEN not in str(description)
        script = (pilot_dir / "pilot.sh").read_text()
        assert TOKEN not in script
        # on the node the token is the transferred copy in the job's scratch directory
        assert 'token_file="${_CONDOR_SCRATCH_DIR:-$PWD}/iceprod-pilot-token"' in script
        assert "source /cvmfs/setup.sh" in script
        assert f"export ICEPROD_PILOT_ID={pilot_id(n)}" in script
        assert '--token-file "$token_file" "$@"' in script


async def test_submit_that_keeps_failing_returns_without_those_pilots(
        grid: CondorGrid, schedd: FakeSchedd, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    schedd.fail = 10
    with caplog.at_level(logging.WARNING):
        assert await grid.submit([spec(1), spec(2)]) == {}
    assert schedd.submitted == []
    assert "Failed to connect to schedd" in caplog.text and TOKEN not in caplog.text
    assert not list((tmp_path / GRID / "pilots").glob("*/iceprod-pilot-token"))


async def test_a_transient_schedd_failure_is_retried(grid: CondorGrid,
                                                     schedd: FakeSchedd) -> None:
    schedd.fail = 2
    assert await grid.submit([spec(1)]) == {pilot_id(1): "100.0"}


# --- poll


async def test_poll_reports_this_grids_pilots_with_mapped_states(
        grid: CondorGrid, schedd: FakeSchedd) -> None:
    ids = {status: schedd.add(status, JobStatus=status, IceProdPilot=True, IceProdGrid=GRID,
                              IceProdPilotId=pilot_id(status))
           for status in (1, 2, 3, 4, 6)}
    suspended = schedd.add(7, JobStatus=7, IceProdGrid=GRID, IceProdPilotId=pilot_id(7))
    no_id = schedd.add(8, JobStatus=2, IceProdGrid=GRID)
    schedd.add(9, JobStatus=2, IceProdGrid="other", IceProdPilotId=pilot_id(9))
    schedd.add(10, JobStatus=2)  # somebody's analysis job

    jobs = await grid.poll()
    assert schedd.constraints == ['IceProdGrid == "osg"']
    assert states(jobs) == {
        ids[1]: (pilot_id(1), GridJobState.IDLE),
        ids[2]: (pilot_id(2), GridJobState.RUNNING),
        ids[3]: (pilot_id(3), GridJobState.REMOVED),
        ids[4]: (pilot_id(4), GridJobState.COMPLETED),
        ids[6]: (pilot_id(6), GridJobState.RUNNING),  # transferring output
        suspended: (pilot_id(7), GridJobState.HELD),  # suspended: no policy acts on it
        no_id: (None, GridJobState.RUNNING),
    }
    assert schedd.actions == []


async def test_held_pilots_are_released_or_removed_by_policy(grid: CondorGrid,
                                                             schedd: FakeSchedd) -> None:
    def held(n: int, code: int, holds: int) -> str:
        return schedd.add(n, JobStatus=5, IceProdGrid=GRID, IceProdPilotId=pilot_id(n),
                          HoldReasonCode=code, NumHolds=holds,
                          HoldReason=f"hold code {code}")

    transfer_failed = held(1, 13, 1)
    held_too_often = held(2, 13, 4)
    by_user = held(3, 1, 1)
    out_of_memory = held(4, 34, 1)

    jobs = {j.grid_queue_id: j for j in await grid.poll()}
    release, remove = htcondor2.JobAction.Release, htcondor2.JobAction.Remove
    assert [(a, ids) for a, ids, _ in schedd.actions] == [
        (release, [transfer_failed]),
        (remove, sorted([held_too_often, by_user, out_of_memory])),
    ]
    assert jobs[transfer_failed].state is GridJobState.IDLE
    assert jobs[transfer_failed].reason == "released after hold: hold code 13"
    for removed in (held_too_often, by_user, out_of_memory):
        assert jobs[removed].state is GridJobState.REMOVED
    # the schedd agrees on the next poll
    assert schedd.queue[transfer_failed]["JobStatus"] == 1
    assert states(await grid.poll())[by_user] == (pilot_id(3), GridJobState.REMOVED)


async def test_hold_policy_comes_from_the_options(schedd: FakeSchedd, tmp_path: Path) -> None:
    grid = make_grid(schedd, tmp_path, hold_release_max=0, hold_release_codes=[1])
    job = schedd.add(1, JobStatus=5, IceProdGrid=GRID, IceProdPilotId=pilot_id(1),
                     HoldReasonCode=13, NumHolds=1)
    assert states(await grid.poll())[job][1] is GridJobState.REMOVED
    grid = make_grid(schedd, tmp_path, hold_release_max=5, hold_release_codes=[1])
    job = schedd.add(2, JobStatus=5, IceProdGrid=GRID, IceProdPilotId=pilot_id(2),
                     HoldReasonCode=1, NumHolds=3)
    assert states(await grid.poll())[job][1] is GridJobState.IDLE


async def test_pilots_leaving_the_queue_are_looked_up_once(grid: CondorGrid,
                                                           schedd: FakeSchedd,
                                                           tmp_path: Path) -> None:
    submitted = await grid.submit([spec(1), spec(2)])
    done, vanished = submitted[pilot_id(1)], submitted[pilot_id(2)]
    schedd.queue[done]["JobStatus"] = 2
    assert states(await grid.poll())[done] == (pilot_id(1), GridJobState.RUNNING)

    schedd.leave(done, JobStatus=4, ExitCode=0)
    del schedd.queue[vanished]  # gone without a trace (history rotated away)
    jobs = await grid.poll()
    assert [(j.grid_queue_id, j.pilot_id, j.state, j.reason) for j in jobs] == [
        (done, pilot_id(1), GridJobState.COMPLETED, "exit code 0")]
    assert schedd.constraints[-1] == 'IceProdGrid == "osg" && member(ClusterId, {100, 101})'
    # its token is no longer needed; the vanished one is left for the manager to mark lost
    assert not (tmp_path / GRID / "pilots" / pilot_id(1) / "iceprod-pilot-token").exists()
    assert not (tmp_path / GRID / "pilots" / pilot_id(2) / "iceprod-pilot-token").exists()
    assert await grid.poll() == []


async def test_poll_raises_when_the_schedd_stays_unreachable(grid: CondorGrid,
                                                             schedd: FakeSchedd) -> None:
    """An empty answer would make the manager mark every pilot lost."""
    schedd.add(1, JobStatus=2, IceProdGrid=GRID, IceProdPilotId=pilot_id(1))
    schedd.fail = 3
    with pytest.raises(GridError, match="Failed to connect to schedd"):
        await grid.poll()
    schedd.fail = 1
    assert len(await grid.poll()) == 1


# --- cancel


async def test_cancel_removes_unknown_and_lost_pilots(grid: CondorGrid,
                                                      schedd: FakeSchedd) -> None:
    mine = (await grid.submit([spec(1)]))[pilot_id(1)]
    stray = schedd.add(7, JobStatus=1, IceProdGrid=GRID, IceProdPilotId=pilot_id(99))
    await grid.cancel([mine, stray])
    assert schedd.actions == [(htcondor2.JobAction.Remove, [mine, stray],
                               "iceprod: pilot no longer wanted")]
    assert {j.state for j in await grid.poll()} == {GridJobState.REMOVED}
    await grid.cancel([])
    assert len(schedd.actions) == 1


async def test_cancel_raises_when_the_schedd_refuses(grid: CondorGrid,
                                                     schedd: FakeSchedd) -> None:
    schedd.fail = 5
    with pytest.raises(GridError, match="could not remove 1.0"):
        await grid.cancel(["1.0"])


# --- the grid manager over the condor backend (real store, fake schedd)


async def test_the_manager_throttles_and_reconciles_condor_pilots(
        schedd: FakeSchedd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submission limits, a pilot whose job the schedd lost, and a job iceprod never knew,
    handled by the grid manager through this backend."""
    grid = GridConfig(name=GRID, backend="condor", max_pilots=4, max_idle=3, max_per_cycle=2,
                      pilot_resources={"cpu": 1, "memory": 2, "time": 2},
                      options={"retry_delay": 0.01})
    # the manager is a REST client: a real API server, the manager holding a grid token
    server = start_server(tmp_path / "data", args=["--only", "rest"])
    admin = AsyncClient(server.url, server.token("root", ["admin"]))
    try:
        config = ServerConfig(data_dir=str(tmp_path / "grid"))
        api = AsyncClient(server.url, server.token("grid-manager", ["grid"]))
        manager = GridManager(api, config, GridsFile((grid,)), "http://127.0.0.1:1")
        state = manager.grids[0]
        state.plugin = CondorGrid(grid, tmp_path / "work", schedd_factory=lambda: schedd)
        state.grid_id = await manager.register_grid(grid)
        work = [Group({"cpu": 1, "memory": 1}, 10)]

        # per cycle, then max idle: 2 + 1 pilots, none while all three wait in the queue
        assert await manager.submit(state, work) == 2
        assert await manager.submit(state, work) == 1
        assert await manager.submit(state, work) == 0
        pilots = await manager.live_pilots(state.grid_id)
        assert sorted(p["grid_queue_id"] for p in pilots) == ["100.0", "101.0", "102.0"]
        rendered = "".join(str(d) for d in schedd.submitted)
        for p in pilots:  # each record is its job, and its token went by file only
            ad = schedd.queue[p["grid_queue_id"]]
            assert ad["IceProdPilotId"] == p["pilot_id"] and ad["IceProdGrid"] == GRID
            token = tmp_path / "work" / "pilots" / p["pilot_id"] / "iceprod-pilot-token"
            assert token.read_text().count(".") == 2  # a JWT
            assert token.read_text() not in rendered

        # the schedd loses one job; a stray job of this grid appears
        lost = pilots[0]
        del schedd.queue[lost["grid_queue_id"]]
        # no grace for a fresh pilot that the schedd does not list yet
        monkeypatch.setattr("iceprod.server.grids.manager.SUBMIT_GRACE", 0)
        stray = schedd.add(7, JobStatus=2, IceProdGrid=GRID, IceProdPilotId=pilot_id(7))
        assert await manager.reconcile(state)
        assert (await admin.pilots.get(lost["pilot_id"]))["status"] == "lost"
        assert schedd.actions[-1][:2] == (htcondor2.JobAction.Remove, [stray])
        # a pilot starts running: two may wait again, up to four alive in all
        schedd.queue[pilots[1]["grid_queue_id"]]["JobStatus"] = 2
        await admin.pilots.heartbeat(pilots[1]["pilot_id"], status="running")
        assert await manager.submit(state, work) == 2
        assert await manager.submit(state, work) == 0
        assert len(await manager.live_pilots(state.grid_id)) == 4

        # an unreachable schedd marks nothing lost
        schedd.fail = 10
        assert not await manager.reconcile(state)
        assert len(await manager.live_pilots(state.grid_id)) == 4
    finally:
        await manager.api.aclose()
        await admin.aclose()
        server.stop()

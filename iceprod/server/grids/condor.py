"""The ``condor`` grid backend: pilots as HTCondor jobs, through the ``htcondor2`` bindings
(the optional extra ``iceprod[condor]``).

Each pilot is one job whose executable is a generated wrapper script (the grid's setup
command, then the pilot) in ``<work_dir>/pilots/<pilot_id>/``; its token is written beside it
mode 0600 and reaches the node only through ``transfer_input_files``, never on a command line
or in the environment. Jobs carry ``IceProdPilot = true``, ``IceProdPilotId`` and
``IceProdGrid``; ``poll`` asks the schedd for ``IceProdGrid == "<grid>"`` and looks up jobs
that left the queue in its history once. Held pilots are released or removed by policy.

The schedd is reached through a factory (``schedd_factory``), the seam where tests put a fake:
no HTCondor pool can run on a test machine. Binding calls block, so they run in a thread.

Options (``GridConfig.options``): ``schedd`` (name) and ``pool`` (collector) to locate the
schedd, ``requirements`` (an extra ClassAd expression), ``os`` (the os pilots need, a name or
a list, unless the pilot's resources name one), ``os_map`` (os name -> OpSysAndVer, one or a
list), ``site_attribute`` (default ``GLIDEIN_Site``), ``submit`` (extra submit
commands), ``hold_release_max`` and ``hold_release_codes`` (the held-pilot policy),
``pilot_command``, ``attempts``, ``retry_delay``. ``GridConfig.queue`` is not used: a pool's
schedd is chosen with ``schedd``/``pool``, its accounting with ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from iceprod.server.grids.base import (
    GridConfig,
    GridError,
    GridJob,
    GridJobState,
    GridPlugin,
    PilotSpec,
    pilot_script,
    with_backoff,
    write_secret_file,
)

if TYPE_CHECKING:
    import htcondor2

logger = logging.getLogger(__name__)

TOKEN_NAME = "iceprod-pilot-token"
STATES: Mapping[int, GridJobState] = {
    1: GridJobState.IDLE,
    2: GridJobState.RUNNING,
    3: GridJobState.REMOVED,
    4: GridJobState.COMPLETED,
    5: GridJobState.HELD,
    6: GridJobState.RUNNING,  # transferring output
    7: GridJobState.HELD,  # suspended
}
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "IceProdPilotId", "IceProdGrid",
              "HoldReason", "HoldReasonCode", "HoldReasonSubCode", "NumHolds", "ExitCode",
              "RemoveReason"]
#: hold reason codes worth a release: the process could not start, file I/O or transfer
#: failed, the iwd was missing, the startd held the job; not a user's or a policy's hold
TRANSIENT_HOLD_CODES = (6, 7, 8, 9, 10, 11, 12, 13, 14, 21)
#: pilot os names (as pilots report them) -> HTCondor OpSysAndVer values
OS_MAP: Mapping[str, str | Sequence[str]] = {
    "RHEL_7_x86_64": "CentOS7", "el7": "CentOS7",
    "RHEL_8_x86_64": ("AlmaLinux8", "Rocky8"), "el8": ("AlmaLinux8", "Rocky8"),
    "RHEL_9_x86_64": ("AlmaLinux9", "Rocky9"), "el9": ("AlmaLinux9", "Rocky9"),
}


class Schedd(Protocol):
    """What the backend uses of ``htcondor2.Schedd``."""

    def submit(self, description: Any, count: int = ...) -> Any: ...
    def query(self, constraint: Any = ..., projection: list[str] = ...) -> list[Any]: ...
    def act(self, action: Any, job_spec: Any, reason: str | None = ...) -> Any: ...
    def history(self, constraint: Any, projection: list[str] = ...,
                match: int = ...) -> Iterable[Any]: ...


def _htcondor() -> Any:
    try:
        import htcondor2
    except ImportError as e:  # the extra is optional; say which one
        raise GridError("the condor backend needs the htcondor bindings: "
                        "pip install 'iceprod[condor]'") from e
    return htcondor2


def _quote(value: str) -> str:
    """A ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def job_id(ad: Mapping[str, Any]) -> str:
    return f"{ad['ClusterId']}.{ad.get('ProcId', 0)}"


def grid_constraint(grid: str) -> str:
    """The schedd constraint that selects this grid's pilots."""
    return f"IceProdGrid == {_quote(grid)}"


def os_requirement(os_names: Any, os_map: Mapping[str, Any]) -> str:
    """``OpSysAndVer`` alternatives for the pilot's os (a name or a list of names)."""
    names = [os_names] if isinstance(os_names, str) else list(os_names or ())
    values: list[str] = []
    for name in names:
        mapped = os_map.get(name, name)
        for value in [mapped] if isinstance(mapped, str) else mapped:
            if value not in values:
                values.append(value)
    return " || ".join(f"OpSysAndVer == {_quote(v)}" for v in values)


def requirements(config: GridConfig, spec: PilotSpec) -> str:
    """The job's requirements: os, site and the grid's own expression, all required."""
    parts = []
    os_expr = os_requirement(spec.resources.get("os") or config.options.get("os"),
                             {**OS_MAP, **config.options.get("os_map", {})})
    if os_expr:
        parts.append(os_expr)
    site = spec.site or config.site
    if site:
        attribute = config.options.get("site_attribute", "GLIDEIN_Site")
        parts.append(f"{attribute} == {_quote(site)}")
    if config.options.get("requirements"):
        parts.append(str(config.options["requirements"]))
    return " && ".join(f"({p})" for p in parts)


def submit_commands(config: GridConfig, spec: PilotSpec, pilot_dir: Path,
                    log: Path) -> dict[str, str]:
    """The submit description of one pilot, as commands (see ``submit_description``)."""
    res = spec.resources
    commands = {
        "universe": "vanilla",
        "executable": str(pilot_dir / "pilot.sh"),
        "arguments": "--grid-queue-id $(ClusterId).$(ProcId)",
        "transfer_executable": "true",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": str(pilot_dir / TOKEN_NAME),
        # the pilot uploads what matters itself; nothing comes back through the schedd
        "transfer_output_files": "",
        "output": str(pilot_dir / "pilot.out"),
        "error": str(pilot_dir / "pilot.err"),
        "log": str(log),
        "batch_name": f"iceprod-pilot-{config.name}",
        "request_cpus": str(max(1, math.ceil(float(res.get("cpu") or 1)))),
        "+IceProdPilot": "true",
        "+IceProdPilotId": _quote(spec.pilot_id),
        "+IceProdGrid": _quote(config.name),
    }
    if res.get("gpu"):
        commands["request_gpus"] = str(math.ceil(float(res["gpu"])))
    if res.get("memory"):
        commands["request_memory"] = str(math.ceil(float(res["memory"]) * 1024))
    if res.get("disk"):
        commands["request_disk"] = str(math.ceil(float(res["disk"]) * 1024 * 1024))
    if res.get("time"):
        commands["+MaxWallTimeMins"] = str(max(1, math.ceil(float(res["time"]) * 60)))
        commands["periodic_remove"] = ("(JobStatus == 2) && (time() - JobCurrentStartDate "
                                       "> MaxWallTimeMins * 60)")
    reqs = requirements(config, spec)
    if reqs:
        commands["requirements"] = reqs
    commands.update({str(k): str(v) for k, v in config.options.get("submit", {}).items()})
    return commands


def submit_description(config: GridConfig, spec: PilotSpec, pilot_dir: Path,
                       log: Path) -> htcondor2.Submit:
    """One pilot's ``htcondor2.Submit`` (built command by command, which keeps the order
    and the ``+Attr`` spelling of custom job attributes)."""
    description = _htcondor().Submit()
    for key, value in submit_commands(config, spec, pilot_dir, log).items():
        description[key] = value
    return description


def default_schedd(config: GridConfig) -> Schedd:
    """The schedd named in the options (located through ``pool``), else the local one."""
    htcondor2 = _htcondor()
    name, pool = config.options.get("schedd"), config.options.get("pool")
    if not (name or pool):
        return htcondor2.Schedd()  # type: ignore[no-any-return]
    collector = htcondor2.Collector(pool) if pool else htcondor2.Collector()
    location = collector.locate(htcondor2.DaemonType.Schedd, name) if name else \
        collector.locate(htcondor2.DaemonType.Schedd)
    return htcondor2.Schedd(location)  # type: ignore[no-any-return]


class CondorGrid(GridPlugin):
    """Pilots as HTCondor jobs (see the module docstring)."""

    backend = "condor"

    def __init__(self, config: GridConfig, work_dir: Path,
                 schedd_factory: Callable[[], Schedd] | None = None) -> None:
        super().__init__(config, work_dir)
        self.schedd_factory = schedd_factory or (lambda: default_schedd(config))
        self._schedd: Schedd | None = None
        opts = config.options
        self.attempts = int(opts.get("attempts", 3))
        self.retry_delay = float(opts.get("retry_delay", 1.0))
        self.hold_release_max = int(opts.get("hold_release_max", 3))
        self.hold_release_codes = frozenset(int(c) for c in
                                            opts.get("hold_release_codes", TRANSIENT_HOLD_CODES))
        self._tracked: dict[str, str] = {}  # job id -> pilot id, to look up jobs that left

    # --- schedd calls

    async def call(self, what: str, method: str, *args: Any, **kw: Any) -> Any:
        """Call a schedd method in a thread, with retries; a failure forgets the schedd so
        the next call locates it again."""
        async def once() -> Any:
            try:
                if self._schedd is None:
                    self._schedd = self.schedd_factory()
                return await asyncio.to_thread(getattr(self._schedd, method), *args, **kw)
            except GridError:
                raise
            except Exception as e:  # the bindings raise several types, none of them ours
                self._schedd = None
                raise GridError(f"{method}: {type(e).__name__}: {e}") from e
        return await with_backoff(once, f"condor grid {self.config.name}: {what}",
                                  self.attempts, self.retry_delay)

    # --- submit

    def pilot_dir(self, pilot_id: str) -> Path:
        return self.work_dir / "pilots" / pilot_id

    def write_pilot(self, spec: PilotSpec) -> Path:
        """Write the token file (0600) and the wrapper script; returns their directory."""
        directory = self.pilot_dir(spec.pilot_id)
        write_secret_file(directory / TOKEN_NAME, spec.token)
        script = directory / "pilot.sh"
        token_file = f'"${{_CONDOR_SCRATCH_DIR:-$PWD}}/{TOKEN_NAME}"'
        script.write_text(pilot_script(self.config, spec, token_file, '"$@"'))
        script.chmod(0o700)
        return directory

    async def submit(self, pilots: Sequence[PilotSpec]) -> dict[str, str]:
        submitted: dict[str, str] = {}
        for i, spec in enumerate(pilots):
            directory = await asyncio.to_thread(self.write_pilot, spec)
            description = submit_description(self.config, spec, directory,
                                             self.work_dir / "pilots.log")
            try:
                result = await self.call(f"submit pilot {spec.pilot_id}", "submit",
                                         description, count=1)
            except GridError:
                logger.error("condor grid %s: not submitting %d pilot(s) this cycle",
                             self.config.name, len(pilots) - i)
                for rest in pilots[i:]:
                    self.forget_pilot(rest.pilot_id)
                break
            queue_id = f"{result.cluster()}.0"
            submitted[spec.pilot_id] = queue_id
            self._tracked[queue_id] = spec.pilot_id
            logger.info("condor grid %s: pilot %s is job %s", self.config.name, spec.pilot_id,
                        queue_id)
        return submitted

    def forget_pilot(self, pilot_id: str) -> None:
        """Remove a pilot's token file once its job is gone (the shadow reads it whenever
        the job starts, so it stays while the job lives)."""
        (self.pilot_dir(pilot_id) / TOKEN_NAME).unlink(missing_ok=True)

    # --- poll

    async def poll(self) -> list[GridJob]:
        ads = await self.call("query", "query", constraint=grid_constraint(self.config.name),
                              projection=PROJECTION)
        jobs = [self.to_job(ad) for ad in ads]
        for job in jobs:
            self._tracked[job.grid_queue_id] = job.pilot_id or ""
        seen = {job.grid_queue_id for job in jobs}
        gone = [j for j in self._tracked if j not in seen]
        if gone:
            jobs += await self.history(gone)
        jobs = await self.apply_hold_policy(jobs, {job_id(ad): ad for ad in ads})
        for job in jobs:
            if job.state in (GridJobState.COMPLETED, GridJobState.REMOVED) and job.pilot_id:
                self.forget_pilot(job.pilot_id)
        return jobs

    def to_job(self, ad: Mapping[str, Any]) -> GridJob:
        status = int(ad.get("JobStatus", 0))
        state = STATES.get(status, GridJobState.IDLE)
        reason = ""
        if state is GridJobState.HELD:
            reason = str(ad.get("HoldReason", "") or ("suspended" if status == 7 else ""))
        elif state is GridJobState.REMOVED:
            reason = str(ad.get("RemoveReason", "") or "")
        elif state is GridJobState.COMPLETED and ad.get("ExitCode") is not None:
            reason = f"exit code {ad['ExitCode']}"
        pilot_id = ad.get("IceProdPilotId")
        return GridJob(job_id(ad), str(pilot_id) if pilot_id else None, state, reason)

    async def history(self, gone: Sequence[str]) -> list[GridJob]:
        """Final states of tracked jobs that left the queue; they are looked up once."""
        clusters = ", ".join(sorted({j.split(".")[0] for j in gone}))
        constraint = f"{grid_constraint(self.config.name)} && member(ClusterId, {{{clusters}}})"
        try:
            ads = await self.call("history", "history", constraint, PROJECTION, len(gone))
        except GridError:
            ads = []  # no history: the manager treats them as lost
        found = {job_id(ad): ad for ad in ads}
        jobs = []
        for queue_id in gone:
            pilot_id = self._tracked.pop(queue_id)
            if queue_id in found:
                jobs.append(self.to_job(found[queue_id]))
            else:
                logger.info("condor grid %s: job %s (pilot %s) left the queue unseen",
                            self.config.name, queue_id, pilot_id)
                self.forget_pilot(pilot_id)
        return jobs

    # --- held pilots

    def hold_decision(self, ad: Mapping[str, Any]) -> str:
        """``release`` for a transient hold not yet released too often, else ``remove``."""
        code = int(ad.get("HoldReasonCode", 0) or 0)
        holds = int(ad.get("NumHolds", 1) or 1)
        if code in self.hold_release_codes and holds <= self.hold_release_max:
            return "release"
        return "remove"

    async def apply_hold_policy(self, jobs: list[GridJob],
                                ads: Mapping[str, Mapping[str, Any]]) -> list[GridJob]:
        """Release or remove held pilots (not suspended ones: those resume by themselves);
        returns the jobs with the state each action leads to."""
        held = {j.grid_queue_id for j in jobs if j.state is GridJobState.HELD
                and j.grid_queue_id in ads and int(ads[j.grid_queue_id].get("JobStatus", 0)) == 5}
        decisions = {queue_id: self.hold_decision(ads[queue_id]) for queue_id in held}
        done: dict[str, tuple[GridJobState, str]] = {}
        for action, state, verb in (("release", GridJobState.IDLE, "released"),
                                    ("remove", GridJobState.REMOVED, "removed")):
            ids = sorted(j for j, d in decisions.items() if d == action)
            if ids and await self.act(action, ids, "iceprod held-pilot policy"):
                done.update(dict.fromkeys(ids, (state, verb)))
        result = []
        for job in jobs:
            if job.grid_queue_id in done:
                state, verb = done[job.grid_queue_id]
                job = GridJob(job.grid_queue_id, job.pilot_id, state,
                              f"{verb} after hold: {job.reason}")
            result.append(job)
        return result

    async def act(self, action: str, ids: Sequence[str], reason: str) -> bool:
        """Release or remove jobs; False (logged) when the schedd would not."""
        job_action = getattr(_htcondor().JobAction, action.capitalize())
        try:
            await self.call(f"{action} {len(ids)} job(s)", "act", job_action, list(ids),
                            reason=reason)
        except GridError:
            return False
        logger.info("condor grid %s: %s %s", self.config.name,
                    "released" if action == "release" else "removed", ", ".join(ids))
        return True

    # --- cancel

    async def cancel(self, grid_queue_ids: Sequence[str]) -> None:
        if grid_queue_ids and not await self.act("remove", grid_queue_ids,
                                                 "iceprod: pilot no longer wanted"):
            raise GridError(f"condor grid {self.config.name}: could not remove "
                            f"{', '.join(grid_queue_ids)}")

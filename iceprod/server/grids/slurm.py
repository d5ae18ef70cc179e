"""The ``slurm`` grid backend: pilots as Slurm batch jobs.

Each pilot is one ``sbatch --parsable`` job running a generated batch script (the grid's
setup command, then the pilot) from ``<work_dir>/pilots/<pilot_id>/``; its token sits
beside the script in a 0600 file and only the file's path reaches Slurm, so the work dir
must be on a file system the nodes share. Jobs carry the name ``iceprod-pilot-<pilot_id>``
and the comment ``iceprod:<grid>:<pilot_id>``, which is how ``poll`` finds this grid's
pilots in ``squeue``. Jobs that left ``squeue`` are looked up once in ``sacct`` (when
accounting exists) or ``scontrol show job`` for their final state. Slurm commands run
without the server's ``ICEPROD_*`` environment, which ``sbatch`` would otherwise copy into
every job.

Options (``GridConfig.options``): ``account``, ``sbatch_options`` (extra arguments),
``slurm_conf`` (a ``SLURM_CONF`` for the commands), ``tmp_disk`` (ask for the pilot's disk
with ``--tmp``), ``pilot_command``, ``attempts``, ``retry_delay``, ``command_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

logger = logging.getLogger(__name__)

COMMENT_PREFIX = "iceprod:"
JOB_NAME_PREFIX = "iceprod-pilot-"
SQUEUE_FORMAT = "%i|%T|%j|%k|%r"

STATES: Mapping[str, GridJobState] = {
    "PENDING": GridJobState.IDLE,
    "REQUEUED": GridJobState.IDLE,
    "REQUEUE_FED": GridJobState.IDLE,
    "CONFIGURING": GridJobState.RUNNING,
    "RUNNING": GridJobState.RUNNING,
    "COMPLETING": GridJobState.RUNNING,
    "RESIZING": GridJobState.RUNNING,
    "SIGNALING": GridJobState.RUNNING,
    "STAGE_OUT": GridJobState.RUNNING,
    "SUSPENDED": GridJobState.HELD,
    "STOPPED": GridJobState.HELD,
    "REQUEUE_HOLD": GridJobState.HELD,
    "SPECIAL_EXIT": GridJobState.HELD,
    "RESV_DEL_HOLD": GridJobState.HELD,
    "COMPLETED": GridJobState.COMPLETED,
    "FAILED": GridJobState.COMPLETED,
    "TIMEOUT": GridJobState.COMPLETED,
    "OUT_OF_MEMORY": GridJobState.COMPLETED,
    "NODE_FAIL": GridJobState.COMPLETED,
    "BOOT_FAIL": GridJobState.COMPLETED,
    "DEADLINE": GridJobState.COMPLETED,
    "PREEMPTED": GridJobState.COMPLETED,
    "CANCELLED": GridJobState.REMOVED,
    "REVOKED": GridJobState.REMOVED,
}
FINAL = frozenset({GridJobState.COMPLETED, GridJobState.REMOVED})
# a pending job held by a user or an admin waits for a release, like a held condor job
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
# scancel errors that mean the job is already gone: nothing to retry
GONE = ("Invalid job id", "already completing or completed", "Job/step already")


def slurm_state(state: str, reason: str = "") -> GridJobState | None:
    """Map a Slurm job state (``squeue %T``, ``sacct`` or ``scontrol``, e.g. ``CANCELLED by
    0``) to a grid job state; None for a state Slurm may add later."""
    name = state.split()[0].rstrip("+").upper() if state.strip() else ""
    mapped = STATES.get(name)
    if mapped is GridJobState.IDLE and reason in HELD_REASONS:
        return GridJobState.HELD
    return mapped


def comment(grid: str, pilot_id: str) -> str:
    return f"{COMMENT_PREFIX}{grid}:{pilot_id}"


def parse_comment(text: str) -> tuple[str, str] | None:
    """``(grid, pilot_id)`` from a job comment made by ``comment``, else None."""
    if not text.startswith(COMMENT_PREFIX):
        return None
    grid, sep, pilot_id = text[len(COMMENT_PREFIX):].rpartition(":")
    return (grid, pilot_id) if sep and pilot_id else None


def parse_squeue(text: str, grid: str) -> list[GridJob]:
    """This grid's pilots in ``squeue --format=SQUEUE_FORMAT`` output."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) < 5:
            continue
        job_id, state_name, _name, text_comment, reason = parts
        owner = parse_comment(text_comment)
        state = slurm_state(state_name, reason)
        if owner is None or owner[0] != grid or state is None:
            continue
        jobs.append(GridJob(job_id, owner[1], state, _reason(state_name, reason)))
    return jobs


def parse_sacct(text: str) -> dict[str, tuple[str, str]]:
    """``{job_id: (state, reason)}`` from ``sacct --parsable2 --format=JobIDRaw,State,Reason``
    (allocations only; job steps are skipped)."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0] and "." not in parts[0]:
            found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return found


def parse_scontrol(text: str) -> dict[str, str]:
    """The ``key=value`` fields of one ``scontrol --oneliner show job`` record."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _reason(state: str, reason: str) -> str:
    reason = "" if reason in ("None", "(null)") else reason
    return f"{state}: {reason}" if reason else state


def time_limit(hours: float) -> str:
    """Slurm's ``days-hours:minutes:seconds`` for a wall time in hours (whole minutes up)."""
    minutes = max(1, math.ceil(float(hours) * 60))
    days, minutes = divmod(minutes, 24 * 60)
    return f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class SlurmGrid(GridPlugin):
    """Pilots as Slurm batch jobs (see the module docstring)."""

    backend = "slurm"
    #: how long a job's final state is still reported after it left Slurm (seconds)
    final_retention = 600.0

    def __init__(self, config: GridConfig, work_dir: Path) -> None:
        super().__init__(config, work_dir)
        opts = config.options
        self.attempts = int(opts.get("attempts", 3))
        self.retry_delay = float(opts.get("retry_delay", 1.0))
        self.command_timeout = float(opts.get("command_timeout", 60.0))
        # sbatch hands its environment to the job: never the server's own ICEPROD_* settings
        # (the signing secret, the database URL)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}
        if opts.get("slurm_conf"):
            self.env["SLURM_CONF"] = str(opts["slurm_conf"])
        self._sacct = True  # until sacct says accounting is disabled
        self._tracked: dict[str, str] = {}  # job id -> pilot id, for jobs that leave squeue
        self._final: dict[str, tuple[GridJob, float]] = {}

    # --- commands

    async def run(self, argv: Sequence[str]) -> CommandResult:
        """Run one Slurm command (an argument list, never a shell)."""
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.command_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return CommandResult(-1, "", f"timed out after {self.command_timeout:g}s")
        return CommandResult(proc.returncode or 0, out.decode(errors="replace"),
                             err.decode(errors="replace"))

    async def run_checked(self, argv: Sequence[str], ok: Sequence[str] = ()) -> CommandResult:
        """Run a command, retrying failures with backoff; stderr containing any of ``ok``
        counts as success. Raises ``GridError`` once the attempts are spent."""
        async def once() -> CommandResult:
            try:
                result = await self.run(argv)
            except OSError as e:
                raise GridError(f"{argv[0]}: {e}") from e
            if result.returncode and not any(s in result.stderr for s in ok):
                raise GridError(f"{shlex.join(argv)} exited {result.returncode}: "
                                f"{result.stderr.strip()}")
            return result
        return await with_backoff(once, f"slurm grid {self.config.name}: {argv[0]}",
                                  self.attempts, self.retry_delay)

    # --- submit

    def pilot_dir(self, pilot_id: str) -> Path:
        return self.work_dir / "pilots" / pilot_id

    def sbatch_args(self, spec: PilotSpec, script: Path) -> list[str]:
        """The ``sbatch`` command line for one pilot."""
        res: Mapping[str, Any] = spec.resources
        opts = self.config.options
        args = ["sbatch", "--parsable", f"--job-name={JOB_NAME_PREFIX}{spec.pilot_id}",
                f"--comment={comment(self.config.name, spec.pilot_id)}",
                f"--chdir={script.parent}", f"--output={script.parent}/slurm-%j.out",
                "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={max(1, math.ceil(float(res.get('cpu') or 1)))}"]
        if res.get("memory"):
            args.append(f"--mem={math.ceil(float(res['memory']) * 1024)}M")
        if res.get("gpu"):
            args.append(f"--gres=gpu:{math.ceil(float(res['gpu']))}")
        if res.get("time"):
            args.append(f"--time={time_limit(res['time'])}")
        if res.get("disk") and opts.get("tmp_disk"):
            args.append(f"--tmp={math.ceil(float(res['disk']) * 1024)}M")
        if self.config.queue:
            args.append(f"--partition={self.config.queue}")
        if opts.get("account"):
            args.append(f"--account={opts['account']}")
        args += [str(a) for a in opts.get("sbatch_options", ())]
        return [*args, str(script)]

    def write_pilot(self, spec: PilotSpec) -> Path:
        """Write the pilot's token file (0600) and batch script; returns the script."""
        directory = self.pilot_dir(spec.pilot_id)
        token = directory / "token"
        write_secret_file(token, spec.token)
        script = directory / "pilot.sh"
        script.write_text(pilot_script(self.config, spec, shlex.quote(str(token)),
                                       '--grid-queue-id "$SLURM_JOB_ID"'))
        script.chmod(0o700)
        return script

    async def submit(self, pilots: Sequence[PilotSpec]) -> dict[str, str]:
        submitted: dict[str, str] = {}
        for i, spec in enumerate(pilots):
            script = await asyncio.to_thread(self.write_pilot, spec)
            try:
                result = await self.run_checked(self.sbatch_args(spec, script))
            except GridError:
                self.forget_pilot(spec.pilot_id)
                logger.error("slurm grid %s: not submitting %d more pilot(s) this cycle",
                             self.config.name, len(pilots) - i - 1)
                for rest in pilots[i + 1:]:
                    self.forget_pilot(rest.pilot_id)
                break
            job_id = result.stdout.strip().split(";")[0]
            submitted[spec.pilot_id] = job_id
            self._tracked[job_id] = spec.pilot_id
            logger.info("slurm grid %s: pilot %s is job %s", self.config.name, spec.pilot_id,
                        job_id)
        return submitted

    def forget_pilot(self, pilot_id: str) -> None:
        """Remove a pilot's token file: the job will never read it again."""
        (self.pilot_dir(pilot_id) / "token").unlink(missing_ok=True)

    # --- poll

    async def poll(self) -> list[GridJob]:
        result = await self.run_checked(["squeue", "--noheader", "--me",
                                         f"--format={SQUEUE_FORMAT}"])
        jobs = parse_squeue(result.stdout, self.config.name)
        for job in jobs:
            self._tracked[job.grid_queue_id] = job.pilot_id or ""
        seen = {job.grid_queue_id for job in jobs}
        gone = [j for j in self._tracked if j not in seen and j not in self._final]
        if gone:
            jobs += await self.lookup(gone)
        now = time.monotonic()
        for job_id, (job, since) in list(self._final.items()):
            if job_id in seen:  # requeued
                del self._final[job_id]
            elif now - since > self.final_retention:
                del self._final[job_id]
                self._tracked.pop(job_id, None)
            elif job not in jobs:
                jobs.append(job)
        return jobs

    async def lookup(self, job_ids: Sequence[str]) -> list[GridJob]:
        """The state of jobs no longer in squeue; a job Slurm forgot is dropped."""
        states = (await self.sacct(job_ids) if self._sacct else None) or {}
        for job_id in job_ids:
            # accounting may lag behind the controller, which still knows recent jobs
            if job_id not in states:
                found = await self.scontrol(job_id)
                if found is not None:
                    states[job_id] = found
        jobs = []
        for job_id in job_ids:
            pilot_id = self._tracked[job_id]
            if job_id not in states:
                logger.info("slurm grid %s: job %s (pilot %s) is unknown to Slurm",
                            self.config.name, job_id, pilot_id)
                del self._tracked[job_id]
                self.forget_pilot(pilot_id)
                continue
            state_name, reason = states[job_id]
            state = slurm_state(state_name, reason)
            if state is None:
                continue
            job = GridJob(job_id, pilot_id or None, state, _reason(state_name, reason))
            if state in FINAL:
                self._final[job_id] = (job, time.monotonic())
                self.forget_pilot(pilot_id)
            jobs.append(job)
        return jobs

    async def sacct(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
        """Final states from accounting; None (and no more tries) when it is disabled."""
        argv = ["sacct", "--noheader", "--parsable2", "--allocations",
                "--format=JobIDRaw,State,Reason", f"--jobs={','.join(job_ids)}"]
        try:
            result = await self.run(argv)
        except OSError as e:
            logger.warning("slurm grid %s: sacct: %s", self.config.name, e)
            return None
        if result.returncode:
            if "accounting storage is disabled" in result.stderr:
                logger.info("slurm grid %s: no accounting, using scontrol", self.config.name)
                self._sacct = False
            else:
                logger.warning("slurm grid %s: sacct exited %d: %s", self.config.name,
                               result.returncode, result.stderr.strip())
            return None
        return parse_sacct(result.stdout)

    async def scontrol(self, job_id: str) -> tuple[str, str] | None:
        """``(state, reason)`` of one job the controller still remembers, else None."""
        result = await self.run_checked(["scontrol", "--oneliner", "show", "job", job_id],
                                        ok=("Invalid job id",))
        if result.returncode:
            return None
        fields = parse_scontrol(result.stdout)
        if fields.get("JobId") != job_id or "JobState" not in fields:
            return None
        return fields["JobState"], fields.get("Reason", "")

    # --- cancel

    async def cancel(self, grid_queue_ids: Sequence[str]) -> None:
        if not grid_queue_ids:
            return
        await self.run_checked(["scancel", *grid_queue_ids], ok=GONE)
        logger.info("slurm grid %s: cancelled jobs %s", self.config.name,
                    ", ".join(grid_queue_ids))

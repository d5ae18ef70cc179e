"""The ``local`` grid backend: pilots as subprocesses of the server's machine.

It is the embedded default, so ``iceprod-server`` alone runs work end to end. Each pilot is
``<python> -m iceprod.pilot`` started in its own session from
``<work_dir>/pilots/<pilot_id>/`` (its token in a 0600 file there, its log in
``pilot.log``, its task directories under ``work/``), with none of the server's ``ICEPROD_*``
environment (the secret stays in the server). The batch job id is the pilot's process id.

``capacity()`` is this machine's cores and memory (options ``cores``, ``memory`` GB
override them), so the manager never starts more local pilots than the machine holds.
Options passed to the pilots: ``idle_timeout``, ``heartbeat_interval``, ``claim_interval``,
``monitor_interval`` (seconds), ``log_level``; ``python`` picks the interpreter (default:
the server's).

When a pilot process is gone, whatever it left running in its session (a step orphaned by
a SIGKILL) is killed. ``close()`` stops the pilots with SIGTERM (they report their tasks as
reset) and kills those still running after ``shutdown_timeout`` seconds.

Isolation (option ``sandbox``: auto|bwrap|none, default auto). With bubblewrap working here
(``auto`` probes it once at start-up, the pilot's sandbox with a step's nested inside), each
pilot runs inside bwrap: the server's data dir is an empty tmpfs except the pilot's own
directory bound back (its token and work dir), with its own user, pid, ipc and uts
namespaces and a fresh ``/proc`` (the server's environment and other processes are out of
sight); the pilot then runs each step in a sandbox of its own (``iceprod.pilot.sandbox``).
Without bubblewrap the grid is not ``isolated``: the manager then restricts its pilots to
the operator's datasets (single-user mode). The pilot's directory is 0700, its token and
log 0600.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from iceprod.common.errors import Invalid
from iceprod.pilot.sandbox import MODES
from iceprod.server.grids.base import (
    GridConfig,
    GridJob,
    GridJobState,
    GridPlugin,
    PilotSpec,
    isolation_args,
    write_secret_file,
)

log = logging.getLogger(__name__)

PILOT_FLAGS = ("idle_timeout", "heartbeat_interval", "claim_interval", "monitor_interval",
               "log_level")
DRAIN_GRACE = 20.0
"""The pilot's default ``--drain-grace``."""
KILL_AFTER = DRAIN_GRACE + 15.0
"""Seconds a cancelled pilot gets to finish or give back its tasks before it is killed."""


@dataclass
class LocalPilot:
    pilot_id: str
    proc: asyncio.subprocess.Process
    cancelled_at: float | None = None


def resources_arg(resources: Mapping[str, Any]) -> str:
    """``cpu=2,memory=4`` for the pilot's ``--resources``."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(resources.items())
                    if k in ("cpu", "gpu", "memory", "disk", "time"))


def pilot_bwrap_args(data_dir: Path, pilot_dir: Path) -> list[str]:
    """bubblewrap's arguments for a pilot (before ``--`` and its command): this machine's
    files as they are, but the data dir hidden under an empty tmpfs with the pilot's own
    directory bound back, in namespaces of its own. No ``--new-session``: the pilot stays in
    the process group the grid signals."""
    data, own = str(data_dir), str(pilot_dir)
    return ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", data, "--bind", own, own]


PROBE = ("import sys; from iceprod.pilot.sandbox import probe; why = probe(); "
         "print(why or 'ok'); sys.exit(1 if why else 0)")


def probe_isolation(bwrap: str, data_dir: Path, python: str) -> str | None:
    """Run a pilot's sandbox with the pilot's own step probe inside (a step's sandbox
    nested in it), as the grid will; None when it works, else why not."""
    with tempfile.TemporaryDirectory(prefix="iceprod-probe-", dir=data_dir) as d:
        argv = [bwrap, *pilot_bwrap_args(data_dir, Path(d)), "--", python, "-c", PROBE]
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=60, check=False,
                                    env={**pilot_environment(), "TMPDIR": d})
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        if result.returncode == 0:
            return None
        err = (result.stdout + result.stderr).decode(errors="replace").strip().splitlines()
        return err[-1] if err else f"exit code {result.returncode}"


def pilot_environment() -> dict[str, str]:
    """The server's environment without its own ``ICEPROD_*`` settings (the secret, the
    database URL stay in the server)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}


def resolve_isolation(config: GridConfig, data_dir: Path) -> str:
    """``bwrap`` or ``none`` for the grid's ``sandbox`` option; ``bwrap`` asked for but not
    working here is a configuration error."""
    mode = str(config.options.get("sandbox") or "auto")
    if mode not in MODES:
        raise Invalid(f"grids[{config.name}].options.sandbox: {mode!r} is not one of "
                      f"{', '.join(MODES)}")
    if mode == "none":
        return "none"
    bwrap = shutil.which("bwrap")
    data_dir.mkdir(parents=True, exist_ok=True)
    python = str(config.options.get("python") or sys.executable)
    why = probe_isolation(bwrap, data_dir, python) if bwrap else "bwrap is not installed"
    if why is None:
        return "bwrap"
    if mode == "bwrap":
        raise Invalid(f"grids[{config.name}].options.sandbox: bwrap does not work here: {why}")
    log.warning("local grid %s: bubblewrap does not work here (%s)", config.name, why)
    return "none"


def machine_capacity(options: Mapping[str, Any]) -> dict[str, float]:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    memory = psutil.virtual_memory().total / 1024**3
    return {"cpu": float(options.get("cores") or cores),
            "memory": float(options.get("memory") or memory)}


class LocalGrid(GridPlugin):
    """Pilots as subprocesses of this machine."""

    backend = "local"

    def __init__(self, config: GridConfig, work_dir: Path) -> None:
        super().__init__(config, work_dir.resolve())  # pilots get their own cwd
        self.pilots: dict[str, LocalPilot] = {}
        self._capacity = machine_capacity(config.options)
        self.isolation = resolve_isolation(config, self.data_dir)
        self.bwrap = shutil.which("bwrap") or "bwrap"

    @property
    def isolated(self) -> bool:
        return self.isolation == "bwrap"

    def capacity(self) -> Mapping[str, float] | None:
        return self._capacity

    def pilot_dir(self, pilot_id: str) -> Path:
        return self.work_dir / "pilots" / pilot_id

    def command(self, spec: PilotSpec, pilot_dir: Path) -> list[str]:
        """The pilot's argument list (wrapped in ``sh -c`` only when the grid has a setup
        command; the pilot's arguments stay separate arguments, never interpolated)."""
        opts = self.config.options
        python = str(opts.get("python") or sys.executable)
        argv = [python, "-m", "iceprod.pilot", "--url", spec.url,
                "--token-file", str(pilot_dir / "token"), "--work-dir", str(pilot_dir / "work")]
        if spec.resources:
            argv += ["--resources", resources_arg(spec.resources)]
        if spec.site:
            argv += ["--site", spec.site]
        for name in PILOT_FLAGS:
            if opts.get(name) is not None:
                argv += [f"--{name.replace('_', '-')}", str(opts[name])]
        argv += isolation_args(self.config, self.isolation)
        if self.config.setup:
            argv = ["/bin/sh", "-c", self.config.setup + '\nexec "$@"', "iceprod-pilot", *argv]
        if self.isolated:
            argv = [self.bwrap, *pilot_bwrap_args(self.data_dir, pilot_dir), "--", *argv]
        return argv

    def environment(self, spec: PilotSpec) -> dict[str, str]:
        env = pilot_environment()
        env["ICEPROD_PILOT_ID"] = spec.pilot_id
        return env

    async def submit(self, pilots: Sequence[PilotSpec]) -> dict[str, str]:
        started: dict[str, str] = {}
        for spec in pilots:
            try:
                started[spec.pilot_id] = await self._start(spec)
            except OSError as e:
                log.error("local grid %s: cannot start pilot %s: %s", self.config.name,
                          spec.pilot_id, e)
        return started

    async def _start(self, spec: PilotSpec) -> str:
        pilot_dir = self.pilot_dir(spec.pilot_id)
        await asyncio.to_thread(private_dir, pilot_dir)
        await asyncio.to_thread(write_secret_file, pilot_dir / "token", spec.token)
        logfile = await asyncio.to_thread(open_private, pilot_dir / "pilot.log")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(spec, pilot_dir), cwd=pilot_dir, env=self.environment(spec),
                stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        queue_id = str(proc.pid)
        self.pilots[queue_id] = LocalPilot(spec.pilot_id, proc)
        log.info("local grid %s: started pilot %s (pid %s)", self.config.name, spec.pilot_id,
                 queue_id)
        return queue_id

    async def poll(self) -> list[GridJob]:
        jobs = []
        now = time.monotonic()
        for queue_id, p in list(self.pilots.items()):
            code = p.proc.returncode
            if code is None:
                if p.cancelled_at is not None and now - p.cancelled_at > KILL_AFTER:
                    kill_session(p.proc.pid, signal.SIGKILL)
                jobs.append(GridJob(queue_id, p.pilot_id, GridJobState.RUNNING))
                continue
            # gone: report it once, and clear what it left behind in its session
            kill_session(p.proc.pid, signal.SIGKILL)
            del self.pilots[queue_id]
            state = GridJobState.REMOVED if p.cancelled_at is not None else \
                GridJobState.COMPLETED
            jobs.append(GridJob(queue_id, p.pilot_id, state, f"exit code {code}"))
        return jobs

    async def cancel(self, grid_queue_ids: Sequence[str]) -> None:
        """Stop pilots at once (SIGINT: no drain grace): the manager cancels a pilot that is
        surplus, or that iceprod no longer counts as live (its tasks were taken back)."""
        self._stop(grid_queue_ids, signal.SIGINT)

    def _stop(self, grid_queue_ids: Sequence[str], sig: int) -> None:
        for queue_id in grid_queue_ids:
            p = self.pilots.get(queue_id)
            if p is None or p.proc.returncode is not None:
                continue
            log.info("local grid %s: stopping pilot %s (pid %s)", self.config.name, p.pilot_id,
                     queue_id)
            p.cancelled_at = p.cancelled_at or time.monotonic()
            self.signal_pilot(p, sig)

    def signal_pilot(self, p: LocalPilot, sig: int) -> None:
        """Signal the pilot itself: inside bwrap that is the pilot's process, not bwrap
        (which would die at once, taking the pilot with it before it reports its tasks)."""
        target: psutil.Process | None = None
        if self.isolated:
            try:
                target = next((c for c in psutil.Process(p.proc.pid).children(recursive=True)
                               if c.name() != "bwrap"), None)
            except psutil.Error:
                target = None
        try:
            if target is not None:
                target.send_signal(sig)
            else:
                p.proc.send_signal(sig)
        except (ProcessLookupError, psutil.Error):
            pass

    async def close(self) -> None:
        """Stop every pilot (SIGTERM: running tasks finish within the drain grace, the rest
        is given back uncounted), then kill what is left after ``shutdown_timeout``
        seconds."""
        running = [p for p in self.pilots.values() if p.proc.returncode is None]
        if not running:
            return
        log.info("local grid %s: stopping %d pilot(s)", self.config.name, len(running))
        # SIGTERM: a planned stop, running tasks get the pilots' drain grace
        self._stop([str(p.proc.pid) for p in running], signal.SIGTERM)
        # the pilots' drain grace, then time to report what they give back
        timeout = float(self.config.options.get("shutdown_timeout")
                        or drain_grace(self.config.options) + 15.0)
        waits = [asyncio.create_task(p.proc.wait()) for p in running]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        for p in running:
            kill_session(p.proc.pid, signal.SIGKILL)
        await asyncio.gather(*waits, return_exceptions=True)


def drain_grace(options: Mapping[str, Any]) -> float:
    """Seconds a stopped pilot lets its running tasks finish (the pilot's default too)."""
    value = options.get("drain_grace")
    return float(value) if value is not None else DRAIN_GRACE


def private_dir(path: Path) -> None:
    """A directory only the server's account can enter (0700, parents included)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (path, path.parent):
        os.chmod(p, 0o700)


def open_private(path: Path) -> Any:
    """Open a log for appending, created 0600."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def kill_session(pid: int, sig: int) -> None:
    """Signal the process group a pilot leads (its own session): the pilot and any step it
    left behind."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def defaults(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The embedded default grid: one pilot per core of this machine at most, one kept
    warm (a task queued on an idle server starts at once)."""
    cores = int(machine_capacity(options or {})["cpu"])
    return {"name": "local", "backend": "local", "max_pilots": cores, "max_idle": cores,
            "max_per_cycle": cores, "warm_pilots": 1, "options": dict(options or {})}

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
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from iceprod.server.grids.base import (
    GridConfig,
    GridJob,
    GridJobState,
    GridPlugin,
    PilotSpec,
    write_secret_file,
)

log = logging.getLogger(__name__)

PILOT_FLAGS = ("idle_timeout", "heartbeat_interval", "claim_interval", "monitor_interval",
               "log_level")
KILL_AFTER = 30.0
"""Seconds a cancelled pilot gets to report its tasks before it is killed."""


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
        if self.config.setup:
            return ["/bin/sh", "-c", self.config.setup + '\nexec "$@"', "iceprod-pilot", *argv]
        return argv

    def environment(self, spec: PilotSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}
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
        await asyncio.to_thread(write_secret_file, pilot_dir / "token", spec.token)
        logfile = await asyncio.to_thread(open, pilot_dir / "pilot.log", "ab")
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
        for queue_id in grid_queue_ids:
            p = self.pilots.get(queue_id)
            if p is None or p.proc.returncode is not None:
                continue
            log.info("local grid %s: stopping pilot %s (pid %s)", self.config.name, p.pilot_id,
                     queue_id)
            p.cancelled_at = p.cancelled_at or time.monotonic()
            try:
                p.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    async def close(self) -> None:
        """Stop every pilot (SIGTERM: they report their tasks as reset), then kill what is
        left after ``shutdown_timeout`` seconds."""
        running = [p for p in self.pilots.values() if p.proc.returncode is None]
        if not running:
            return
        log.info("local grid %s: stopping %d pilot(s)", self.config.name, len(running))
        await self.cancel([str(p.proc.pid) for p in running])
        timeout = float(self.config.options.get("shutdown_timeout") or 20.0)
        waits = [asyncio.create_task(p.proc.wait()) for p in running]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        for p in running:
            kill_session(p.proc.pid, signal.SIGKILL)
        await asyncio.gather(*waits, return_exceptions=True)


def kill_session(pid: int, sig: int) -> None:
    """Signal the process group a pilot leads (its own session): the pilot and any step it
    left behind."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def defaults(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The embedded default grid: one pilot per core of this machine at most."""
    cores = int(machine_capacity(options or {})["cpu"])
    return {"name": "local", "backend": "local", "max_pilots": cores, "max_idle": cores,
            "max_per_cycle": cores, "options": dict(options or {})}

"""Running one claimed task, and reporting it.

`TaskRunner.run()` gives the task a fresh directory (`<work>/<task_id>-<instance>/`, with
the task's files in `run/` and its `stdout`, `stderr` and `stdlog` beside it), stages its
inputs, runs its steps in order (each `command` + `args` directly, no shell, in the pilot's
sandbox (`sandbox.py`: bubblewrap, or none), or inside the container image the task names
through one of the pilot's container runtimes (`containers.py`), with an environment built
from an allow-list plus the task's and the step's `env`), and stages its outputs when every step succeeded.
`file://` and absolute-path staging is confined to the pilot's staging roots. While a step runs
it watches the process tree (psutil) and kills it, with a reason saying so, when:

- the task runs past its time requirement (`requirements.time` hours), or a step past its
  own `timeout`, or the pilot's walltime runs out;
- it grossly overuses memory (more than `memory_factor` x requested), cpu (more than
  `cpu_factor` x requested cores, averaged over `cpu_window` seconds) or disk;
- the pilot aborts it (`abort()`: the task was taken away, or the pilot is stopping).

`report()` then uploads the logs (stdout and stderr when not empty, stdlog always), a stats
record (`walltime` s, `cpu_time` s, `max_rss` bytes, `exit_code`, `host`, `site`, per-step
figures) and completes or resets the task with its reason and measured use. The pilot's
fencing token (`instance_id`) goes with every report, so a task that was handed to another
pilot can never be completed from here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import httpx

from iceprod.client.api import (
    APIError,
    AsyncClient,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Resources,
    TooLarge,
)
from iceprod.pilot.containers import ContainerError, ContainerRuntime, Containers
from iceprod.pilot.process import TreeMonitor, dir_size, signal_tree, spawn, wait_pid
from iceprod.pilot.resources import GB, Allocation
from iceprod.pilot.sandbox import Sandbox, StepContext, step_environment
from iceprod.pilot.staging import (
    DataEntry,
    ServerStore,
    StagingError,
    entries,
    stage_in,
    stage_out,
)

log = logging.getLogger(__name__)

LOG_NAMES = ("stdout", "stderr", "stdlog")
INLINE_LOG_BYTES = 64 * 1024  # the server's limit for a log sent inline with a completion


@dataclass(frozen=True)
class RunnerSettings:
    """How the pilot runs and reports tasks."""

    pilot_id: str
    host: str = field(default_factory=socket.gethostname)
    site: str = ""
    monitor_interval: float = 1.0
    kill_grace: float = 5.0
    memory_factor: float = 2.0
    cpu_factor: float = 4.0
    cpu_window: float = 60.0
    disk_factor: float = 2.0
    disk_interval: float = 30.0
    max_log_bytes: int = 4 * 1024 * 1024
    keep_dirs: bool = False
    pilot_end: float | None = None
    sandbox: Sandbox = field(default_factory=Sandbox)
    containers: Containers = field(default_factory=Containers)
    stage_roots: tuple[str, ...] = ()
    # complete with stats and short logs inline (one request); off: logs, stats, complete
    inline_complete: bool = True


@dataclass
class StepResult:
    name: str
    exit_code: int | None
    walltime: float
    cpu_time: float
    max_rss: int


@dataclass
class Outcome:
    """How a run ended: `ok`, else the reason; measured use for the report."""

    ok: bool
    reason: str = ""
    exit_code: int | None = None
    walltime: float = 0.0
    cpu_time: float = 0.0
    max_rss: int = 0
    disk: int = 0
    steps: list[StepResult] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    report: bool = True
    """False when the task is no longer this pilot's: nothing may be reported."""
    requeue: bool = False
    """True when the run was stopped from outside (the pilot is shutting down): it is given
    back without counting a failure."""

    def measured(self, requested: Mapping[str, Any]) -> dict[str, float]:
        """Measured use in the units of requirements (cores, GB, hours), for the resources
        the task requested: the server grows a requirement to 1.5x a measured value above
        it, and also sets one the task never had, so a short failed run must not give the
        task a time limit of a fraction of a second."""
        out = {"memory": self.max_rss / GB, "time": self.walltime / 3600,
               "disk": self.disk / GB}
        out = {k: v for k, v in out.items() if requested.get(k)}
        if self.walltime > 0:
            out["cpu"] = round(self.cpu_time / self.walltime, 4)  # against 1 core by default
        return out


class Killed(Exception):
    """A step was stopped by the monitor or the pilot; the message is the reason."""

    def __init__(self, reason: str, report: bool = True, requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = report
        self.requeue = requeue


class NextWork(Protocol):
    """The pilot's side of a completion that claims the next work in the same request: the
    offer is what the finishing task frees (its allocation), so it never overlaps what the
    pilot's own claims offer; the answer's tasks take that allocation over."""

    def next_offer(self, task_id: str) -> tuple[Resources, int] | None:
        """The resources freed by ``task_id`` and how many tasks may share them, or None
        (stopping, draining, out of walltime, or the server does not take such claims)."""
        ...

    def take_over(self, task_id: str, tasks: Sequence[dict[str, Any]]) -> None:
        """``task_id`` is done: its allocation goes to ``tasks``, which start now."""
        ...

    def claims_refused(self, why: Exception) -> None:
        """The server refused a claim with a completion (an older server): stop asking."""
        ...


class TaskLog:
    """The pilot's log of one task: lines go to the task's `stdlog` and the pilot's log.

    The file is opened once, at the first line, and each line is one append (no text-mode
    file object per line); ``close`` ends it (the runner closes it when the task ends)."""

    def __init__(self, path: Path, task_id: str) -> None:
        self.path = path
        self.task_id = task_id
        self._fd: int | None = None
        self._closed = False

    def info(self, msg: str, *args: Any) -> None:
        self.write(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.write(logging.WARNING, msg, *args)

    def write(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        log.log(level, "task %s: %s", self.task_id, text)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} {logging.getLevelName(level)} {text}\n".encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                   | os.O_CLOEXEC, 0o600)
            os.write(self._fd, line)
        except OSError:
            pass
        if self._closed:  # a line after the end: written, and the file closed again
            self.close()

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def tail_text(path: Path, limit: int) -> str:
    """A log file's text, keeping its end when longer than `limit` bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    with open(path, "rb") as f:
        if size > limit:
            f.seek(size - limit)
            data = f.read()
            note = f"[... {size - limit} bytes cut; the end follows ...]\n".encode()
            data = note + data
        else:
            data = f.read()
    return data.decode("utf-8", errors="replace")


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def last_line(path: Path) -> str:
    text = tail_text(path, 2000).strip().splitlines()
    return text[-1][:300] if text else ""


def exit_reason(step: str, code: int, stderr: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        reason = f"step {step} killed by signal {name}"
    else:
        reason = f"step {step} exited with code {code}"
    if line := last_line(stderr):
        reason += f": {line}"
    return reason


class TaskRunner:
    """One claimed task on this pilot."""

    def __init__(self, task: Mapping[str, Any], alloc: Allocation, work_dir: Path,
                 settings: RunnerSettings, client: AsyncClient,
                 http: httpx.AsyncClient | None = None,
                 next_work: NextWork | None = None) -> None:
        self.task = task
        self.next_work = next_work
        self.task_id: str = task["task_id"]
        self.instance_id: str = task["instance_id"]
        self.alloc = alloc
        self.settings = settings
        self.client = client
        self.http = http
        self.root = work_dir / f"{self.task_id}-{self.instance_id[:8]}"
        self.run_dir = self.root / "run"
        self.tlog = TaskLog(self.root / "stdlog", self.task_id)
        self.requirements: Mapping[str, Any] = task.get("requirements") or {}
        self.started = time.monotonic()
        self.claimed_at = time.monotonic()
        self.reporting = False
        self._abort: Killed | None = None
        self._abort_event = asyncio.Event()

    # -- control -------------------------------------------------------------------------

    def abort(self, reason: str, report: bool = True, requeue: bool = False) -> None:
        """Stop the task: the running step is killed and the run ends with `reason`;
        `report=False` when the task is no longer this pilot's to report; `requeue=True`
        when the run did not fail but is given back (the pilot is shutting down)."""
        if self._abort is None:
            self._abort = Killed(reason, report, requeue)
            self._abort_event.set()

    @property
    def deadline(self) -> float | None:
        """Monotonic time by which the task must end (its time requirement)."""
        hours = self.requirements.get("time")
        return self.started + float(hours) * 3600 if hours else None

    # -- running -------------------------------------------------------------------------

    async def execute(self) -> Outcome:
        """Run and report; never raises for the task's own failures."""
        try:
            outcome = await self.run()
        finally:
            self.tlog.close()  # all of stdlog is written: the report reads it
        await self.report(outcome)
        if not self.settings.keep_dirs:
            await asyncio.to_thread(shutil.rmtree, self.root, True)
        return outcome

    async def run(self) -> Outcome:
        self.run_dir.mkdir(parents=True, mode=0o700)
        (self.root / "tmp").mkdir(mode=0o700)
        (self.root / ".empty").touch(mode=0o400)  # what masked files show inside a sandbox
        t = self.task
        self.tlog.info("claimed by pilot %s on %s: task %s (%s) of dataset %s, job %s; "
                       "requirements %s; holds %s", self.settings.pilot_id, self.settings.host,
                       t.get("name"), self.task_id, t.get("dataset_id"), t.get("job_index"),
                       dict(self.requirements), self.alloc)
        outcome = Outcome(ok=False)
        try:
            data = entries(t.get("data") or [])
            outcome.bytes_in = await self._guarded(self._stage_in(data))
            for index, step in enumerate(t.get("steps") or []):
                result = await self.run_step(index, step, outcome)
                outcome.exit_code = result.exit_code
                if result.exit_code != 0:
                    assert result.exit_code is not None
                    outcome.reason = exit_reason(self._step_name(index, step), result.exit_code,
                                                 self.root / "stderr")
                    break
            else:
                outcome.bytes_out = await self._guarded(self._stage_out(data))
                outcome.ok = True
        except Killed as k:
            outcome.reason, outcome.report, outcome.requeue = k.reason, k.report, k.requeue
        except StagingError as e:
            outcome.reason = str(e)
        except Exception as e:  # a pilot bug must not lose the task: report it as a reset
            log.exception("task %s: unexpected error", self.task_id)
            outcome.reason = f"pilot error: {type(e).__name__}: {e}"
        outcome.walltime = time.monotonic() - self.started
        self.tlog.info("%s after %.2fs: %s", "succeeded" if outcome.ok else "failed",
                       outcome.walltime, outcome.reason or "all steps exited 0")
        return outcome

    async def _stage_in(self, data: list[DataEntry]) -> int:
        size = await stage_in(data, self.run_dir, self.http, self._store(),
                              self.settings.stage_roots)
        if any(e.is_input for e in data):
            self.tlog.info("staged in %d file(s), %d bytes", sum(e.is_input for e in data), size)
        return size

    async def _stage_out(self, data: list[DataEntry]) -> int:
        size = await stage_out(data, self.run_dir, self.http, self._store(),
                               self.settings.stage_roots)
        if any(e.is_output for e in data):
            self.tlog.info("staged out %d file(s), %d bytes", sum(e.is_output for e in data),
                           size)
        return size

    def _store(self) -> ServerStore:
        """The server's file store of this task's dataset (`iceprod:` remotes)."""
        return ServerStore(self.client, str(self.task.get("dataset_id") or ""))

    async def _guarded(self, work: Any) -> int:
        """Await staging, but end early (raising `Killed`) if the task is aborted or runs
        out of time meanwhile."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._abort_event.wait())
        limit = self.deadline
        timeout = None if limit is None else max(0.0, limit - time.monotonic())
        try:
            done, _ = await asyncio.wait({job, stop}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if job in done:
            return int(job.result())
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        if self._abort is not None:
            raise self._abort
        raise Killed(self._time_reason())

    @staticmethod
    def _step_name(index: int, step: Mapping[str, Any]) -> str:
        return f"{index} ({step['name']!r})" if step.get("name") else str(index)

    def _env(self, step: Mapping[str, Any]) -> dict[str, str]:
        """The step's environment: an allow-list (see ``sandbox.step_environment``), never
        the pilot's token file, id or the server's settings."""
        t = self.task
        tmp = str(self.root / "tmp")
        ctx = StepContext(
            task_vars={
                "ICEPROD_TASK_ID": self.task_id,
                "ICEPROD_DATASET_ID": str(t.get("dataset_id", "")),
                "ICEPROD_JOB_INDEX": str(t.get("job_index", "")),
                "ICEPROD_TASK_INDEX": str(t.get("task_index", "")),
                "ICEPROD_TASK_NAME": str(t.get("name", "")),
                "ICEPROD_SITE": self.settings.site,
            },
            home=tmp, tmp=tmp, threads=self.alloc.cpu, gpus=",".join(self.alloc.gpus),
            task_env=t.get("env") or {}, step_env=step.get("env") or {})
        return step_environment(ctx, self.settings.sandbox.pass_env)

    async def run_step(self, index: int, step: Mapping[str, Any], outcome: Outcome) -> StepResult:
        """Run one step to its end; raises `Killed` when it was stopped."""
        name = self._step_name(index, step)
        argv = [str(step["command"]), *(str(a) for a in step.get("args") or [])]
        self.tlog.info("step %s: running %s", name, argv)
        t0 = time.monotonic()
        step_deadline = t0 + float(step["timeout"]) if step.get("timeout") else None
        env = self._env(step)
        sandbox = self.settings.sandbox
        runtime: ContainerRuntime | None = None
        try:
            if container := self.task.get("container"):
                runtime = self.settings.containers.runtime(container.get("runtime"))
                command = runtime.command(str(container["image"]), argv, self.run_dir,
                                          self.root / "tmp", env)
                self.tlog.info("step %s: in container %s (%s)", name, container["image"],
                               runtime.name)
            else:
                if "/" not in argv[0] and shutil.which(argv[0], path=env["PATH"]) is None:
                    raise FileNotFoundError(f"{argv[0]} is not on PATH ({env['PATH']})")
                command = sandbox.wrap(argv, self.run_dir, self.root / "tmp",
                                       self.root / ".empty")
            proc = spawn(command, self.run_dir, env, self.root / "stdout",
                         self.root / "stderr")
        except (OSError, ContainerError) as e:
            self.tlog.warning("step %s: cannot start %s: %s", name, argv[0], e)
            await asyncio.to_thread(_append, self.root / "stderr",
                                    f"iceprod-pilot: cannot run {argv[0]}: {e}\n")
            return StepResult(name, 127, 0.0, 0.0, 0)
        monitor = TreeMonitor(proc.pid)
        waiter = asyncio.ensure_future(wait_pid(proc.pid))
        killed: Killed | None = None
        try:
            killed = await self._watch(waiter, monitor, step_deadline, step, name, outcome)
        finally:
            if not waiter.done():  # cancelled from outside: never leave the tree running
                await self._kill(monitor, waiter)
        code, usage = waiter.result()
        proc.returncode = code  # reaped here: keep Popen from waiting again
        code = (runtime or sandbox).exit_code(code, killed is not None)
        signal_tree(monitor.leftovers(), signal.SIGKILL)  # descendants that outlived the step
        cpu = max(monitor.cpu_time, usage.ru_utime + usage.ru_stime)
        peak = max(monitor.peak_rss, usage.ru_maxrss * 1024)
        result = StepResult(name, code, time.monotonic() - t0, cpu, peak)
        outcome.steps.append(result)
        outcome.cpu_time += cpu
        outcome.max_rss = max(outcome.max_rss, peak)
        self.tlog.info("step %s: exit code %s after %.2fs, cpu %.2fs, max rss %.1f MB", name,
                       code, result.walltime, cpu, peak / 1e6)
        if killed is not None:
            outcome.exit_code = code
            self.tlog.warning("step %s stopped: %s", name, killed.reason)
            raise killed
        return result

    async def _watch(self, waiter: asyncio.Future[Any], monitor: TreeMonitor,
                     step_deadline: float | None, step: Mapping[str, Any], name: str,
                     outcome: Outcome) -> Killed | None:
        """Sample the tree until the step exits; kill it and answer why when it must stop."""
        next_disk = time.monotonic() + self.settings.disk_interval
        limits = [d for d in (self.deadline, step_deadline) if d is not None]
        stop = asyncio.ensure_future(self._abort_event.wait())
        try:
            while not waiter.done():
                # wake at the next sample, or right at a time limit
                wait = min([self.settings.monitor_interval,
                            *(max(0.0, d - time.monotonic()) + 0.01 for d in limits)])
                await asyncio.wait({waiter, stop}, timeout=wait,
                                   return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    return None
                monitor.sample()
                reason = self._abort or self._limits(monitor, step_deadline, step, name)
                if reason is None and time.monotonic() >= next_disk:
                    next_disk = time.monotonic() + self.settings.disk_interval
                    reason = await self._disk_check(outcome)
                if reason is not None:
                    await self._kill(monitor, waiter)
                    return reason
        finally:
            stop.cancel()
        return None

    def _time_reason(self, step_name: str | None = None, timeout: float = 0.0) -> str:
        if step_name is not None:
            return (f"time limit exceeded: step {step_name} ran over its timeout of "
                    f"{timeout:g}s")
        elapsed = time.monotonic() - self.started
        hours = float(self.requirements.get("time") or 0)
        return (f"time limit exceeded: the task ran {elapsed:.0f}s, over its time "
                f"requirement of {hours * 3600:.0f}s ({hours:g} h)")

    def _limits(self, monitor: TreeMonitor, step_deadline: float | None,
                step: Mapping[str, Any], name: str) -> Killed | None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return Killed(self._time_reason())
        if step_deadline is not None and now >= step_deadline:
            return Killed(self._time_reason(name, float(step["timeout"])))
        end = self.settings.pilot_end
        if end is not None and time.time() >= end:
            return Killed("pilot walltime ran out: the batch slot ends now")
        s = self.settings
        req_mem = float(self.requirements.get("memory") or 0)
        if req_mem and monitor.rss > req_mem * s.memory_factor * GB:
            return Killed(f"memory overuse: the task used {monitor.rss / GB:.3f} GB, more than "
                          f"{s.memory_factor:g}x its requirement of {req_mem:g} GB")
        req_cpu = float(self.requirements.get("cpu") or 1)
        cores = monitor.cores(s.cpu_window)
        if cores is not None and cores > req_cpu * s.cpu_factor:
            return Killed(f"cpu overuse: the task used {cores:.1f} cores over "
                          f"{s.cpu_window:g}s, more than {s.cpu_factor:g}x its requirement "
                          f"of {req_cpu:g}")
        return None

    async def _disk_check(self, outcome: Outcome) -> Killed | None:
        used = await asyncio.to_thread(dir_size, self.root)
        outcome.disk = max(outcome.disk, used)
        req = float(self.requirements.get("disk") or 0)
        if req and used > req * self.settings.disk_factor * GB:
            return Killed(f"disk usage overuse: the task wrote {used / GB:.3f} GB, more than "
                          f"{self.settings.disk_factor:g}x its requirement of {req:g} GB")
        return None

    async def _kill(self, monitor: TreeMonitor, waiter: asyncio.Future[Any]) -> None:
        """SIGTERM the tree, then SIGKILL what is left after the grace period."""
        monitor.sample()
        signal_tree(monitor.alive(), signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.settings.kill_grace)
        except TimeoutError:
            pass
        monitor.sample()
        signal_tree(monitor.alive(), signal.SIGKILL)
        await asyncio.shield(waiter)

    # -- reporting -----------------------------------------------------------------------

    async def report(self, outcome: Outcome) -> None:
        """Logs, stats, then complete or reset. A task taken away is reported nowhere."""
        self.reporting = True
        if not outcome.report:
            log.info("task %s is no longer this pilot's; not reporting (%s)", self.task_id,
                     outcome.reason)
            return
        try:
            outcome.disk = max(outcome.disk, await asyncio.to_thread(dir_size, self.root))
            if outcome.ok and self.settings.inline_complete:
                try:
                    await self._complete_inline(outcome)
                    return
                except Invalid as e:  # a server without inline stats and logs
                    log.info("task %s: inline completion refused (%s); reporting in parts",
                             self.task_id, e)
            await self._upload_logs()
            await self.client.task_stats.create(self.task_id, self.task["dataset_id"],
                                                self.stats(outcome))
            await self._finish(outcome)
        except (Forbidden, NotFound, Conflict) as e:
            log.warning("task %s was taken away before it was reported: %s", self.task_id, e)
        except APIError as e:
            # the server will requeue the task when its lease expires
            log.error("task %s: could not report (%s); its lease will expire", self.task_id, e)

    async def _complete_inline(self, outcome: Outcome) -> None:
        """One request finishes a task: completion with the stats and the short logs inline
        (a log over `INLINE_LOG_BYTES` still goes through the log route first)."""
        inline: dict[str, str] = {}
        for name in LOG_NAMES:
            path = self.root / name
            size = path.stat().st_size if path.exists() else 0
            if name != "stdlog" and size == 0:
                continue
            if size <= INLINE_LOG_BYTES:
                inline[name] = tail_text(path, INLINE_LOG_BYTES)  # small: no thread hop
            else:
                await self._upload_log(name)
        s = self.settings
        stats = self.stats(outcome)

        async def complete(claim: tuple[Resources, int] | None) -> Sequence[dict[str, Any]] | None:
            return await self.client.tasks.complete(
                self.task_id, self.instance_id, time_used=round(outcome.walltime, 3),
                site=s.site or None, stats=stats, log=inline, claim=claim)

        nxt = self.next_work.next_offer(self.task_id) if self.next_work is not None else None
        if nxt is None:
            await complete(None)
        else:
            assert self.next_work is not None
            try:
                tasks = await complete(nxt)
            except Invalid as e:  # a server without claims on completion: report alone
                self.next_work.claims_refused(e)
                await complete(None)
            else:
                self.next_work.take_over(self.task_id, tasks or [])
        log.debug("task %s complete", self.task_id)

    async def _finish(self, outcome: Outcome) -> None:
        s = self.settings
        if outcome.ok:
            await self.client.tasks.complete(self.task_id, self.instance_id,
                                             time_used=round(outcome.walltime, 3),
                                             site=s.site or None)
            # the run's end is already in the log ("succeeded after ..."): once is enough
            log.debug("task %s complete", self.task_id)
            return
        if outcome.requeue:
            answer = await self.client.tasks.requeue(
                self.task_id, self.instance_id, reason=outcome.reason[:10_000],
                time_used=round(outcome.walltime, 3), site=s.site or None)
            log.info("task %s given back (%s): now %s", self.task_id, outcome.reason,
                     answer.get("status"))
            return
        answer = await self.client.tasks.reset(
            self.task_id, self.instance_id, time_used=round(outcome.walltime, 3),
            resources=cast(Resources, outcome.measured(self.requirements)),
            site=s.site or None, reason=outcome.reason[:10_000])
        log.info("task %s reset (%s): now %s after %s failure(s)", self.task_id, outcome.reason,
                 answer.get("status"), answer.get("failures"))

    async def _upload_logs(self) -> None:
        for name in LOG_NAMES:
            path = self.root / name
            if name != "stdlog" and (not path.exists() or path.stat().st_size == 0):
                continue
            await self._upload_log(name)

    async def _upload_log(self, name: str) -> None:
        limit = self.settings.max_log_bytes
        path = self.root / name
        data = tail_text(path, limit)
        try:
            await self.client.logs.create(self.task_id, name, data,
                                          dataset_id=self.task.get("dataset_id"))
        except TooLarge:
            await self.client.logs.create(self.task_id, name, tail_text(path, limit // 16),
                                          dataset_id=self.task.get("dataset_id"))

    def stats(self, outcome: Outcome) -> dict[str, Any]:
        s = self.settings
        return {
            "walltime": round(outcome.walltime, 3),
            "cpu_time": round(outcome.cpu_time, 3),
            "max_rss": int(outcome.max_rss),
            "disk": int(outcome.disk),
            "exit_code": outcome.exit_code,
            "outcome": "complete" if outcome.ok else "reset",
            "reason": outcome.reason,
            "host": s.host,
            "site": s.site,
            "pilot_id": s.pilot_id,
            "instance_id": self.instance_id,
            "requirements": dict(self.requirements),
            "bytes_in": outcome.bytes_in,
            "bytes_out": outcome.bytes_out,
            "steps": [
                {"name": r.name, "exit_code": r.exit_code, "walltime": round(r.walltime, 3),
                 "cpu_time": round(r.cpu_time, 3), "max_rss": int(r.max_rss)}
                for r in outcome.steps
            ],
        }

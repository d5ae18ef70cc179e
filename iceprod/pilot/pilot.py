"""The pilot: a small asyncio loop on a grid node that claims tasks and runs them.

1. Register: a token bound to a pilot (its `pilot_id` claim: the grid registered the pilot)
   starts it with a first heartbeat with status `running`; a registration token (naming no
   pilot) registers with `POST /pilots`, whose answer is a token bound to the new pilot,
   used from then on.
2. Claim while resources are free: each claim offers the free resources
   (`ResourcePool.offer()`); each task subtracts its requirements and runs in its own
   `TaskRunner`, so several run at once. When nothing fits, claims back off up to
   `claim_interval`.
3. Heartbeat every `heartbeat_interval` seconds: renews the leases of its tasks; a task
   missing from the answer's `tasks` was taken away (a user's suspend or reset, or a lease
   that expired) and is killed without being reported. An answer carrying a `token` (the
   current one is past half its life) replaces the pilot's token, in memory and in the token
   file (rewritten atomically, 0600, so a restarted pilot process picks it up). An answer
   carrying `drain` (its site, host or grid drained, or the server in maintenance) stops
   claims; the pilot exits once its running tasks are done (claims resume if the drain is
   lifted before).
   A pilot whose credentials the server refuses (401/403: it was marked lost or finished,
   removed, or its token expired) stops claiming, kills its tasks without reporting them
   (they are no longer its to report) and exits with code 1.
4. Stop: on SIGTERM running tasks get `drain_grace` seconds to finish (on SIGINT none); what
   still runs then is given back to the queue without counting a failure; the pilot
   marks itself `finished` and exits; it also exits by itself after `idle_timeout` seconds
   with nothing running and nothing to claim, and when the server stays unreachable for
   `server_timeout` seconds (its tasks' leases have expired by then).

Everything goes through `iceprod.client`: the pilot imports no server code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

import iceprod
from iceprod.client.api import (
    APIError,
    AsyncClient,
    Forbidden,
    Invalid,
    NotFound,
    Resources,
    RetryPolicy,
    Unauthorized,
)
from iceprod.client.settings import TokenError, token_claims
from iceprod.pilot.containers import make_containers
from iceprod.pilot.resources import Capacity, ResourcePool, detect
from iceprod.pilot.runner import RunnerSettings, TaskRunner
from iceprod.pilot.sandbox import Sandbox, SandboxError, resolve_mode

log = logging.getLogger(__name__)

MIN_CLAIM_WAIT = 0.1
MAX_CLAIM_WAIT = 20.0  # the server's longest claim wait


@dataclass(frozen=True)
class PilotConfig:
    """Everything the pilot is told (flags and environment)."""

    url: str
    token_file: Path
    work_dir: Path
    resources: dict[str, float] = field(default_factory=dict)
    site: str = ""
    os_name: str | None = None
    pilot_id: str | None = None
    idle_timeout: float = 300.0
    heartbeat_interval: float = 30.0
    claim_interval: float = 10.0
    monitor_interval: float = 1.0
    server_timeout: float = 900.0
    max_log_bytes: int = 4 * 1024 * 1024
    keep_task_dirs: bool = False
    grid_queue_id: str = ""
    sandbox: str = "none"
    sandbox_binds: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()
    stage_roots: tuple[str, ...] = ()
    drain_grace: float = 20.0
    container_runtimes: tuple[str, ...] = ()
    image_dir: Path | None = None


def read_token(path: Path) -> str:
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


class Pilot:
    """One pilot process's loop."""

    def __init__(self, config: PilotConfig, capacity: Capacity | None = None) -> None:
        self.config = config
        self.token_mtime = _mtime(config.token_file)
        token = read_token(config.token_file)
        self.client = AsyncClient(config.url, token,
                                  retry=RetryPolicy(attempts=6, backoff=0.5, max_backoff=20))
        self.http: httpx.AsyncClient | None = None
        self.capacity = capacity
        self.pool: ResourcePool | None = None
        try:
            self.bound = token_claims(token).get("pilot_id") or None
        except TokenError:
            self.bound = None  # not a JWT: the server refuses it with a clear message
        self.pilot_id = self.bound
        if config.pilot_id and self.bound and config.pilot_id != self.bound:
            raise ValueError(f"--pilot-id {config.pilot_id}: the token is bound to pilot "
                             f"{self.bound}")
        self.refused = ""
        self.runners: dict[str, TaskRunner] = {}
        self.jobs: dict[str, asyncio.Task[Any]] = {}
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self.planned_stop = False
        self.grace = config.drain_grace
        self.wake = asyncio.Event()
        self.last_work = time.monotonic()
        self.last_contact = time.monotonic()
        self.tasks_run = 0
        self.sandbox = Sandbox()
        self.containers = make_containers(config.container_runtimes, config.image_dir,
                                          config.sandbox_binds)
        self.drain_reason = ""
        """Set while the server says this pilot is to take no new work (its site, host or
        grid drained, or maintenance): it claims nothing and exits once idle."""
        self.multi_claim = True  # until the server refuses multi-task claims
        self.combined_claims = True  # until the server refuses claims with completions
        self.claim_waited = False

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Register, work until stopped or idle, drain, deregister. Answers an exit code."""
        self.config.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.sandbox = await asyncio.to_thread(self.make_sandbox)
        except SandboxError as e:
            log.error("pilot cannot start: %s", e)
            await self.client.aclose()
            return 1
        log.info("steps run %s", "in a bubblewrap sandbox" if self.sandbox.mode == "bwrap"
                 else "without a sandbox (--sandbox none, or bwrap does not work here)")
        if self.containers.runtimes:
            log.info("container runtimes: %s (images in %s)", ", ".join(self.containers.names),
                     self.config.image_dir or "the runtime's own store")
        loop = asyncio.get_running_loop()
        # SIGTERM drains (running tasks get the grace); SIGINT gives them back at once
        loop.add_signal_handler(signal.SIGTERM, self.stop, "pilot stopped by SIGTERM", True)
        loop.add_signal_handler(signal.SIGINT, self.stop, "pilot stopped by SIGINT", True, 0.0)
        if self.capacity is None:
            self.capacity = detect(self.config.work_dir, self.config.resources,
                                   site=self.config.site, os_name=self.config.os_name)
        self.pool = ResourcePool(self.capacity)
        log.info("pilot resources: %s", self.capacity.as_resources())
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=30.0),
                                      follow_redirects=True)
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self.register()
            heartbeat = asyncio.create_task(self.heartbeat_loop())
            await self.claim_loop()
            await self.drain()
            return 1 if self.refused else 0
        except APIError as e:  # refused (401/403/409) or unreachable after retries
            log.error("pilot cannot go on: %s", e)
            await self.drain()
            return 1
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await self.deregister()
            await self.http.aclose()
            await self.client.aclose()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def make_sandbox(self) -> Sandbox:
        """The step sandbox the configuration asks for (``auto`` probes bubblewrap)."""
        mode = resolve_mode(self.config.sandbox)
        bwrap = shutil.which("bwrap") or "bwrap"
        return Sandbox(mode, tuple(self.config.sandbox_binds), tuple(self.config.pass_env),
                       bwrap)

    def stop(self, reason: str, planned: bool = False, grace: float | None = None) -> None:
        """Stop claiming. A `planned` stop (SIGTERM: a restart, a batch system ending the
        job) lets running tasks finish within the drain grace and gives back the rest
        without counting a failure; otherwise they are killed and reported as reset."""
        if not self.stopping.is_set():
            log.info("stopping: %s", reason)
            self.stop_reason = reason
            self.planned_stop = planned
            if grace is not None:
                self.grace = grace
            self.stopping.set()
            self.wake.set()

    async def register(self) -> None:
        assert self.capacity is not None
        fields = {
            "host": socket.gethostname(), "site": self.config.site or None,
            "version": iceprod.__version__, "grid_queue_id": self.config.grid_queue_id or None,
        }
        if self.pilot_id:
            doc = await self.client.pilots.heartbeat(
                self.pilot_id, status="running",
                resources_available=self.capacity.as_resources(), **fields)
            log.info("pilot %s running (registered by its grid)", self.pilot_id)
            self.renew(doc)
            return
        if self.config.pilot_id:
            log.warning("ignoring --pilot-id %s: the token names no pilot, so this pilot "
                        "registers as a new one", self.config.pilot_id)
        answer = await self.client.pilots.register(
            resources=cast(Resources, self.capacity.as_resources()), **fields)
        self.pilot_id = str(answer["result"])
        if token := answer.get("token"):  # the client switched to it; keep it for a restart
            self.adopt_token(str(token))
        log.info("pilot %s registered", self.pilot_id)

    async def deregister(self) -> None:
        """Mark the pilot finished (best effort: the grid manager reconciles the rest)."""
        if not self.pilot_id or self.refused:
            return
        try:
            await self.client.pilots.heartbeat(self.pilot_id, status="finished")
        except APIError as e:
            log.info("could not mark pilot %s finished: %s", self.pilot_id, e)
        log.info("pilot %s finished after %d task(s)", self.pilot_id, self.tasks_run)

    # -- claiming ------------------------------------------------------------------------

    async def claim_loop(self) -> None:
        wait = MIN_CLAIM_WAIT
        while not self.stopping.is_set():
            claimed = False
            if self.drain_reason and not self.runners:
                log.info("drained (%s) with nothing running: exiting", self.drain_reason)
                return
            self.claim_waited = False
            self.wake.clear()  # before looking: a task finishing from now on wakes the wait
            if self.pool is not None and self.pool.can_claim() and not self.drain_reason:
                claimed = await self.claim_one()
            if claimed:
                wait = MIN_CLAIM_WAIT
                continue
            if not self.runners and self.idle():
                return
            if self.claim_waited:
                continue  # the server already waited for work on our behalf
            if self.pool is not None and self.pool.can_claim():
                wait = min(wait * 2, self.config.claim_interval)
            else:
                wait = self.config.claim_interval  # full: a finishing task wakes us
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass

    def idle(self) -> bool:
        """Whether to exit: idle too long, or out of walltime (with nothing running)."""
        assert self.pool is not None
        if self.pool.time_left() == 0:
            log.info("out of walltime")
            return True
        if time.monotonic() - self.last_work > self.config.idle_timeout:
            log.info("idle for %.0fs with nothing to claim", self.config.idle_timeout)
            return True
        return False

    async def claim_one(self) -> bool:
        """Claim what fits in the free resources: as many tasks as free cores in one request
        (waiting on the server for work while nothing runs here), or one at a time against a
        server without that (it answers 400 to the new form; remembered)."""
        assert self.pool is not None and self.pilot_id
        offer = self.with_runtimes(self.pool.offer())
        self.claim_waited = False
        try:
            if self.multi_claim:
                tasks = await self.claim_many(offer)
            else:
                one = await self.client.tasks.claim(offer, self.pilot_id)
                tasks = [] if one is None else [one]
        except Invalid as e:
            if not self.multi_claim:
                raise
            log.info("the server does not take multi-task claims (%s); claiming one at a "
                     "time", e)
            self.multi_claim = False
            return False
        except (Unauthorized, Forbidden) as e:
            self.credentials_refused(e)
            return False
        except APIError as e:
            log.warning("claim failed: %s", e)
            self.check_contact()
            return False
        self.last_contact = time.monotonic()
        for task in tasks:
            self.start(task)
        return bool(tasks)

    async def claim_many(self, offer: Resources) -> Sequence[dict[str, Any]]:
        """One multi-task claim; while nothing runs here it waits on the server (up to
        `claim_interval`, at most 20 s) for a task to be queued, and a stop cancels it (the
        server gives back what it claimed for a request nobody reads any more)."""
        assert self.pool is not None and self.pilot_id
        slots = max(1, int(self.pool.free()["cpu"]))
        wait = 0.0 if self.runners else min(self.config.claim_interval, MAX_CLAIM_WAIT)
        started = time.monotonic()
        claim = asyncio.ensure_future(
            self.client.tasks.claim_many(offer, self.pilot_id, slots, wait=wait))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not claim.done():
            claim.cancel()
            await asyncio.gather(claim, return_exceptions=True)
            return []
        self.claim_waited = wait > 0 and time.monotonic() - started >= wait / 2
        return claim.result()

    def start(self, task: dict[str, Any]) -> None:
        assert self.pool is not None and self.pilot_id
        task_id = task["task_id"]
        alloc = self.pool.allocate(task_id, task.get("requirements") or {})
        settings = RunnerSettings(
            pilot_id=self.pilot_id, site=self.config.site,
            monitor_interval=self.config.monitor_interval,
            max_log_bytes=self.config.max_log_bytes, keep_dirs=self.config.keep_task_dirs,
            pilot_end=self.pool.capacity.end_time, sandbox=self.sandbox,
            stage_roots=tuple(self.config.stage_roots), containers=self.containers,
        )
        runner = TaskRunner(task, alloc, self.config.work_dir, settings, self.client, self.http,
                            next_work=self)
        self.runners[task_id] = runner
        job = asyncio.create_task(runner.execute())
        self.jobs[task_id] = job
        job.add_done_callback(lambda _: self.finished(task_id))
        self.tasks_run += 1
        self.last_work = time.monotonic()

    # -- the next work, claimed with a completion (runner.NextWork) --------------------------

    def next_offer(self, task_id: str) -> tuple[Resources, int] | None:
        """What ``task_id`` frees, as an offer for the tasks that take its place."""
        if not (self.multi_claim and self.combined_claims) or self.pool is None \
                or self.stopping.is_set() or self.drain_reason:
            return None
        alloc = self.pool.held.get(task_id)
        left = self.pool.time_left()
        if alloc is None or alloc.cpu < 1 or (left is not None and left <= 0):
            return None
        offer = self.pool.offer()  # walltime left, os, site
        offer.update(cpu=alloc.cpu, gpu=len(alloc.gpus), memory=alloc.memory, disk=alloc.disk)
        return self.with_runtimes(offer), int(alloc.cpu)

    def with_runtimes(self, offer: dict[str, Any]) -> Resources:
        """``offer`` naming this pilot's container runtimes: tasks with an image come only
        to a pilot that can run it."""
        if self.containers.runtimes:
            offer["containers"] = self.containers.names
        return cast(Resources, offer)

    def take_over(self, task_id: str, tasks: Sequence[dict[str, Any]]) -> None:
        assert self.pool is not None
        self.pool.release(task_id)
        self.last_contact = time.monotonic()
        for task in tasks:
            self.start(task)

    def claims_refused(self, why: Exception) -> None:
        log.info("the server does not take claims with completions (%s); claiming apart", why)
        self.combined_claims = False

    def finished(self, task_id: str) -> None:
        job = self.jobs.pop(task_id, None)
        self.runners.pop(task_id, None)
        if self.pool is not None:
            self.pool.release(task_id)
        if job is not None and not job.cancelled() and job.exception() is not None:
            log.error("task %s: runner crashed", task_id, exc_info=job.exception())
        self.last_work = time.monotonic()
        self.wake.set()

    async def drain(self) -> None:
        """End what runs and wait for the reports. After a planned stop, running tasks get
        `drain_grace` seconds to finish; what still runs then is given back (requeued, not
        a failure). Otherwise it is killed and reported as reset."""
        reason = self.stop_reason or "pilot stopped"
        grace = self.grace
        if self.planned_stop and self.jobs and grace > 0:
            log.info("draining: %d running task(s) get %gs to finish", len(self.jobs), grace)
            await asyncio.wait(list(self.jobs.values()), timeout=grace)
        for runner in list(self.runners.values()):
            if self.planned_stop:
                runner.abort(f"{reason}: given back to the queue, not a failure",
                             requeue=True)
            else:
                runner.abort(reason)
        if self.jobs:
            await asyncio.gather(*self.jobs.values(), return_exceptions=True)

    # -- heartbeat -----------------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.config.heartbeat_interval)
                return
            except TimeoutError:
                pass
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew leases; kill the tasks the server no longer counts as this pilot's."""
        assert self.pool is not None and self.pilot_id
        self.refresh_token()
        sent = time.monotonic()
        try:
            doc = await self.client.pilots.heartbeat(
                self.pilot_id, resources_available=self.pool.offer(),
                resources_claimed=self.pool.claimed())
        except NotFound:
            self.take_away(set(self.runners), "the pilot's record was removed from the server")
            self.stop("the pilot's record was removed from the server")
            return
        except (Unauthorized, Forbidden) as e:
            self.credentials_refused(e)
            return
        except APIError as e:
            log.warning("heartbeat failed: %s", e)
            self.check_contact()
            return
        self.last_contact = time.monotonic()
        self.renew(doc)
        drain = str(doc.get("drain") or "")
        if drain != self.drain_reason:
            log.info("%s", f"drained: {drain}; claiming nothing more" if drain
                     else "no longer drained: claiming again")
            self.drain_reason = drain
            self.wake.set()
        if doc.get("status") in ("lost", "finished"):
            # the server gave this pilot up (e.g. its grid lost track of it): its tasks were
            # requeued, so it must not run or claim anything more
            why = f"the server marked this pilot {doc['status']}"
            self.take_away(set(self.runners), why)
            self.stop(why)
            return
        held = set(doc.get("tasks") or [])
        lost = {tid for tid, r in self.runners.items()
                if tid not in held and r.claimed_at < sent and not r.reporting}
        self.take_away(lost, "the task is no longer this pilot's (suspended, reset or "
                             "handed to another pilot)")

    def credentials_refused(self, e: APIError) -> None:
        """The server no longer accepts this pilot (lost, finished, removed, or its token
        expired): its tasks were taken back, so they are killed unreported and it exits."""
        if self.refused:
            return
        self.refused = str(e)
        log.error("pilot %s: the server refused its credentials (%s); killing %d task(s) "
                  "without reporting them and exiting", self.pilot_id, e, len(self.runners))
        for runner in list(self.runners.values()):
            runner.abort(f"the server refused the pilot's credentials: {e}", report=False)
        self.stop(f"credentials refused: {e}")

    def renew(self, doc: dict[str, Any]) -> None:
        """Switch to the fresh token a heartbeat answer carries, if any."""
        token = doc.get("token")
        if isinstance(token, str) and token and token != self.client.token:
            self.adopt_token(token)
            log.info("pilot %s: token renewed (expires %s)", self.pilot_id,
                     doc.get("expires", "?"))

    def adopt_token(self, token: str) -> None:
        """Use ``token`` from now on, and keep it in the token file for a restart."""
        self.client.token = token
        try:
            write_token(self.config.token_file, token)
        except OSError as e:
            log.warning("cannot rewrite the token file %s: %s (the pilot goes on with the new "
                        "token in memory)", self.config.token_file, e)
            return
        self.token_mtime = _mtime(self.config.token_file)

    def take_away(self, task_ids: set[str], reason: str) -> None:
        for task_id in task_ids:
            if runner := self.runners.get(task_id):
                log.warning("task %s: %s; killing it", task_id, reason)
                runner.tlog.warning("%s; killing it", reason)
                runner.abort(reason, report=False)

    def check_contact(self) -> None:
        """Give up when the server has been unreachable for too long."""
        silent = time.monotonic() - self.last_contact
        if silent > self.config.server_timeout:
            self.take_away(set(self.runners), f"lost contact with the server for {silent:.0f}s")
            self.stop(f"lost contact with the server for {silent:.0f}s")

    def refresh_token(self) -> None:
        """Read the token file again when it changed (a grid may renew the token)."""
        mtime = _mtime(self.config.token_file)
        if mtime != self.token_mtime:
            try:
                self.client.token = read_token(self.config.token_file)
                self.token_mtime = mtime
                log.info("token file changed: using the new token")
            except (OSError, ValueError) as e:
                log.warning("cannot read the token file again: %s", e)


def write_token(path: Path, token: str) -> None:
    """Replace the token file atomically (a temporary file in the same directory, 0600 from
    creation on, renamed over it), so no reader ever sees a partial or readable token."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def default_work_dir() -> Path:
    base = os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / f"iceprod-pilot-{os.getpid()}"

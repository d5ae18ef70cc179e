"""Processes of a running step: waiting for one without blocking the event loop (and
getting its resource usage), sampling its process tree with psutil, signalling the tree, and
measuring a directory's size."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from pathlib import Path

import psutil


def spawn(argv: list[str], cwd: Path, env: dict[str, str], stdout: Path,
          stderr: Path) -> subprocess.Popen[bytes]:
    """Start a step with its output appended to the task's log files. Only fork and exec
    happen here (quick); the wait is `wait_pid`."""
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, close_fds=True)


async def wait_pid(pid: int) -> tuple[int, resource.struct_rusage]:
    """Wait for a child to exit without blocking the loop; its exit code (-N: killed by
    signal N) and resource usage (including its waited-for descendants)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        _, status, usage = await asyncio.to_thread(os.wait4, pid, 0)
        return os.waitstatus_to_exitcode(status), usage
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return reap(pid)


def reap(pid: int) -> tuple[int, resource.struct_rusage]:
    """Collect a child that has exited (its pidfd became readable: this does not block)."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage


class TreeMonitor:
    """Samples a process tree: memory now and at peak, cpu time, average cores recently.

    The root's psutil handle is made at the first sample, not at the start: a step that
    ends before its first sample (most trivial steps) costs no /proc reads. Until it is
    reaped the root's pid cannot be reused, so a late handle names the same process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._root: psutil.Process | None = None
        self.procs: dict[int, psutil.Process] = {}
        self.cpu_seen: dict[int, float] = {}
        self.rss = 0
        self.peak_rss = 0
        self.history: list[tuple[float, float]] = []

    @property
    def root(self) -> psutil.Process:
        if self._root is None:
            self._root = psutil.Process(self.pid)
            self.procs[self.pid] = self._root
        return self._root

    def sample(self) -> None:
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            children = []
        for p in children:
            self.procs.setdefault(p.pid, p)
        rss = 0
        for pid, p in list(self.procs.items()):
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    used = t.user + t.system + (t.children_user + t.children_system
                                                if pid == self.pid else 0.0)
            except psutil.Error:
                continue
            self.cpu_seen[pid] = max(self.cpu_seen.get(pid, 0.0), used)
        self.rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.history.append((time.monotonic(), self.cpu_time))

    @property
    def cpu_time(self) -> float:
        return sum(self.cpu_seen.values())

    def cores(self, window: float) -> float | None:
        """Average cores used over the last `window` seconds (None until a full window)."""
        if not self.history:
            return None
        now, latest = self.history[-1]
        while len(self.history) > 2 and self.history[1][0] <= now - window:
            self.history.pop(0)
        start, first = self.history[0]
        if now - start < window * 0.9:
            return None
        return (latest - first) / (now - start)

    def alive(self) -> list[psutil.Process]:
        """The tree's processes still running (the root included while it is not reaped)."""
        out = []
        for p in self.procs.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def leftovers(self) -> list[psutil.Process]:
        """After the root was reaped: the descendants seen by a sample that still run."""
        self.procs.pop(self.pid, None)
        return self.alive()


def signal_tree(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total

"""What a pilot can offer, and what its running tasks hold.

Detection (`detect`) finds the pilot's slot: cores (CPU affinity, capped by a cgroup v2 CPU
quota), memory (physical, capped by a cgroup v2 memory limit), free disk of its work dir,
GPUs (`CUDA_VISIBLE_DEVICES`), remaining walltime (`SLURM_JOB_END_TIME`, or `time=` hours
from the command line), and its os name. Command-line values (`--resources`) override what
is detected: a batch slot is usually smaller than the node it lands on.

`ResourcePool` keeps the books while tasks run: each claimed task subtracts its
requirements (cpu, gpu, memory GB, disk GB) and gets concrete GPU ids; `offer()` is what the
pilot sends with a claim (free resources plus remaining walltime, os and site).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

GB = 1024**3
NUMERIC = ("cpu", "gpu", "memory", "disk", "time")
# a claim offers the walltime left minus this margin, so a task is not started just to be
# killed at the pilot's end (seconds)
TIME_MARGIN = 60.0
CGROUP = Path("/sys/fs/cgroup")


def parse_resources(text: str) -> dict[str, float]:
    """`cpu=4,memory=8,gpu=1,disk=10,time=2` or a JSON object with those keys (what batch
    backends write); memory and disk in GB, time in hours."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            raw: Any = json.loads(text)
        except ValueError:
            raise ValueError(f"--resources: not valid JSON: {text!r}") from None
        if not isinstance(raw, dict):
            raise ValueError("--resources: expected a JSON object")
        pairs = list(raw.items())
    else:
        pairs = []
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--resources: expected key=value, got {item!r}")
            pairs.append((key.strip(), value.strip()))
    out: dict[str, float] = {}
    for key, value in pairs:
        if key not in NUMERIC:
            raise ValueError(f"--resources: unknown resource {key!r} (one of {', '.join(NUMERIC)})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--resources: {key} must be a number, got {value!r}") from None
        if number < 0 or not math.isfinite(number):
            raise ValueError(f"--resources: {key} must be >= 0")
        out[key] = number
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def detect_cpu(cgroup: Path = CGROUP) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _read(cgroup / "cpu.max")
    if quota:
        limit, _, period = quota.partition(" ")
        if limit != "max" and period:
            try:
                cores = min(cores, max(1, math.floor(int(limit) / int(period))))
            except ValueError:
                pass
    return max(1, cores)


def detect_memory(cgroup: Path = CGROUP) -> float:
    """Memory in GB: physical memory, capped by a cgroup v2 limit."""
    total = float(psutil.virtual_memory().total)
    limit = _read(cgroup / "memory.max")
    if limit and limit != "max":
        try:
            total = min(total, float(limit))
        except ValueError:
            pass
    return total / GB


def detect_disk(path: Path) -> float:
    """Free disk under `path` in GB."""
    return shutil.disk_usage(path).free / GB


def detect_gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    """GPU ids the batch system gave this pilot (`CUDA_VISIBLE_DEVICES`); none when unset,
    empty, or one of the values that mean "no device"."""
    raw = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if raw in ("", "-1", "NoDevFiles", "none"):
        return ()
    return tuple(g.strip() for g in raw.split(",") if g.strip())


def detect_end_time(env: Mapping[str, str]) -> float | None:
    """When the batch job's walltime runs out (Unix time), from `SLURM_JOB_END_TIME`."""
    raw = env.get("SLURM_JOB_END_TIME", "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def detect_os(os_release: Path = Path("/etc/os-release")) -> str:
    """An os name for matching tasks' `os` lists: `<ID>_<major version>` from os-release
    (e.g. `rhel_9`, `ubuntu_24`), else the platform's system name."""
    text = _read(os_release)
    if text:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        if fields.get("ID"):
            major = fields.get("VERSION_ID", "").split(".")[0]
            return f"{fields['ID']}_{major}" if major else fields["ID"]
    return platform.system().lower() or "unknown"


@dataclass(frozen=True)
class Capacity:
    """The pilot's whole slot."""

    cpu: int
    memory: float
    disk: float
    gpus: tuple[str, ...] = ()
    end_time: float | None = None
    os: str = ""
    site: str = ""

    def as_resources(self, now: float | None = None) -> dict[str, Any]:
        """The slot as a resources document (for registration)."""
        out: dict[str, Any] = {"cpu": self.cpu, "gpu": len(self.gpus),
                               "memory": self.memory, "disk": self.disk}
        if self.end_time is not None:
            left = self.end_time - (time.time() if now is None else now)
            out["time"] = max(0.0, left) / 3600
        if self.os:
            out["os"] = self.os
        if self.site:
            out["site"] = self.site
        return out


def detect(work_dir: Path, overrides: Mapping[str, float] | None = None, *,
           env: Mapping[str, str] | None = None, site: str = "", os_name: str | None = None,
           now: float | None = None) -> Capacity:
    """The pilot's slot: detected values, overridden by `overrides` (cpu, gpu, memory GB,
    disk GB, time hours from now). A `gpu` override takes that many of the visible GPUs,
    or numbers them 0..n-1 when none are visible."""
    env = os.environ if env is None else env
    over = dict(overrides or {})
    now = time.time() if now is None else now
    cpu = int(over["cpu"]) if "cpu" in over else detect_cpu()
    memory = float(over["memory"]) if "memory" in over else detect_memory()
    disk = float(over["disk"]) if "disk" in over else detect_disk(work_dir)
    gpus = detect_gpus(env)
    if "gpu" in over:
        n = int(over["gpu"])
        gpus = gpus[:n] if len(gpus) >= n else tuple(str(i) for i in range(n))
    end_time = detect_end_time(env)
    if "time" in over:
        flag_end = now + float(over["time"]) * 3600
        end_time = flag_end if end_time is None else min(end_time, flag_end)
    return Capacity(cpu=max(cpu, 0), memory=memory, disk=disk, gpus=gpus, end_time=end_time,
                    os=os_name if os_name is not None else detect_os(), site=site)


@dataclass(frozen=True)
class Allocation:
    """What one running task holds."""

    cpu: int
    memory: float
    disk: float
    gpus: tuple[str, ...] = ()


def allocation_for(requirements: Mapping[str, Any]) -> tuple[int, int, float, float]:
    """(cpu, gpu, memory, disk) a task holds: its requirements, 1 core when it names none."""
    cpu = int(requirements.get("cpu") or 1)
    gpu = int(requirements.get("gpu") or 0)
    memory = float(requirements.get("memory") or 0.0)
    disk = float(requirements.get("disk") or 0.0)
    return cpu, gpu, memory, disk


@dataclass
class ResourcePool:
    """The pilot's slot minus what its running tasks hold."""

    capacity: Capacity
    clock: Callable[[], float] = time.time
    held: dict[str, Allocation] = field(default_factory=dict)

    def free(self) -> dict[str, float]:
        """Free cpu, gpu, memory GB and disk GB."""
        c = self.capacity
        return {
            "cpu": c.cpu - sum(a.cpu for a in self.held.values()),
            "gpu": len(self.free_gpus()),
            "memory": max(0.0, c.memory - sum(a.memory for a in self.held.values())),
            "disk": max(0.0, c.disk - sum(a.disk for a in self.held.values())),
        }

    def free_gpus(self) -> list[str]:
        taken = {g for a in self.held.values() for g in a.gpus}
        return [g for g in self.capacity.gpus if g not in taken]

    def time_left(self) -> float | None:
        """Seconds of walltime left for a new task (None: no limit)."""
        if self.capacity.end_time is None:
            return None
        return max(0.0, self.capacity.end_time - self.clock() - TIME_MARGIN)

    def offer(self) -> dict[str, Any]:
        """The free resources as a claim offer."""
        free = self.free()
        # exact values: rounding could offer less than a small requirement that fits
        out: dict[str, Any] = {
            "cpu": int(max(0, free["cpu"])), "gpu": int(free["gpu"]),
            "memory": free["memory"], "disk": free["disk"],
        }
        left = self.time_left()
        if left is not None:
            out["time"] = left / 3600
        if self.capacity.os:
            out["os"] = self.capacity.os
        if self.capacity.site:
            out["site"] = self.capacity.site
        return out

    def claimed(self) -> dict[str, float]:
        """What the running tasks hold, summed."""
        return {
            "cpu": sum(a.cpu for a in self.held.values()),
            "gpu": sum(len(a.gpus) for a in self.held.values()),
            "memory": round(sum(a.memory for a in self.held.values()), 4),
            "disk": round(sum(a.disk for a in self.held.values()), 4),
        }

    def can_claim(self) -> bool:
        """Whether a claim could get anything: a free core and walltime left."""
        left = self.time_left()
        return self.free()["cpu"] >= 1 and (left is None or left > 0)

    def allocate(self, task_id: str, requirements: Mapping[str, Any]) -> Allocation:
        """Hold a task's requirements (the server only hands out tasks that fit the offer;
        this re-checks so a bug can never oversubscribe the slot)."""
        cpu, gpu, memory, disk = allocation_for(requirements)
        free = self.free()
        if cpu > free["cpu"] or gpu > free["gpu"] or memory > free["memory"] + 1e-9 \
                or disk > free["disk"] + 1e-9:
            raise ValueError(f"task {task_id} does not fit the free resources {free}")
        alloc = Allocation(cpu=cpu, memory=memory, disk=disk, gpus=tuple(self.free_gpus()[:gpu]))
        self.held[task_id] = alloc
        return alloc

    def release(self, task_id: str) -> None:
        self.held.pop(task_id, None)

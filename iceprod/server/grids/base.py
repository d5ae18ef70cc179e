"""The grid backend interface: every backend (local, slurm, condor) is a small subclass of
``GridPlugin`` and nothing else; the grid manager (``manager.py``) decides how many pilots of
which size to start, registers them, and reconciles what the backend reports.

A backend only knows its batch system: it starts pilots described by ``PilotSpec``, lists
the iceprod pilots the batch system knows (``poll``), and cancels them.

Every backend passes the grid's isolation options to its pilots (``isolation_args``):
``sandbox`` (auto|bwrap|none), ``sandbox_binds``, ``pass_env`` and ``stage_roots``. A
staging root inside the server's data dir is refused when the grid is loaded.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from iceprod.common.errors import Invalid


class GridJobState(StrEnum):
    """What a batch system says about one pilot job, mapped to pilot states by the manager:
    idle -> submitted, running -> running, held -> submitted (a policy releases or removes
    it), completed/removed -> finished, and a job the batch system no longer knows -> lost."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"
    REMOVED = "removed"


@dataclass(frozen=True)
class GridConfig:
    """One grid of the server's grid configuration file (schema:
    resources/schemas/grid_config.schema.json)."""

    name: str
    backend: str
    queue: str = ""
    max_pilots: int = 10
    max_idle: int = 5
    max_per_cycle: int = 5
    warm_pilots: int = 0
    pilot_resources: Mapping[str, Any] = field(default_factory=dict)
    site: str = ""
    setup: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PilotSpec:
    """One pilot to start: its registered id, the resources it should ask the batch system
    for (cpu, gpu, memory GB, disk GB, time hours), and how it reaches the server. The token
    is a secret: backends hand it to the pilot as a file, never on a command line."""

    pilot_id: str
    resources: Mapping[str, Any]
    url: str
    token: str
    site: str = ""


@dataclass(frozen=True)
class GridJob:
    """One pilot job as the batch system reports it."""

    grid_queue_id: str
    pilot_id: str | None
    state: GridJobState
    reason: str = ""


class GridPlugin(abc.ABC):
    """A batch system that runs pilots. Subclasses implement the three coroutines; commands
    run as argument lists (``asyncio.create_subprocess_exec``), never through a shell."""

    backend: str = ""

    def __init__(self, config: GridConfig, work_dir: Path) -> None:
        self.config = config
        self.work_dir = work_dir
        # the manager gives each grid <data dir>/grids/<name>
        self.data_dir = work_dir.resolve().parent.parent
        check_stage_roots(config, self.data_dir)

    @property
    def isolated(self) -> bool:
        """Whether other users' payloads cannot reach the server's files from this grid's
        pilots. Batch pilots run on other nodes (and sandbox their steps as configured);
        the local backend answers for itself."""
        return True

    @abc.abstractmethod
    async def submit(self, pilots: Sequence[PilotSpec]) -> dict[str, str]:
        """Start pilots; returns ``{pilot_id: grid_queue_id}`` for those submitted."""

    @abc.abstractmethod
    async def poll(self) -> list[GridJob]:
        """Every iceprod pilot job the batch system knows on this grid."""

    @abc.abstractmethod
    async def cancel(self, grid_queue_ids: Sequence[str]) -> None:
        """Remove pilot jobs (lost, no longer wanted, or unknown to iceprod)."""

    def capacity(self) -> Mapping[str, float] | None:
        """Resources this grid can ever offer at once (None: no known limit)."""
        return None

    async def close(self) -> None:
        """The manager is stopping: release what the backend holds. Batch jobs outlive
        the server, so the default does nothing; the local backend stops its pilots."""


# Helpers shared by the batch-system backends (slurm, condor): errors, retries, and the
# pilot's wrapper script and token file.

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How a backend starts the pilot on a node, before the pilot's own arguments; a grid may
#: override it with the option ``pilot_command`` (a list of strings).
PILOT_COMMAND: tuple[str, ...] = ("python3", "-m", "iceprod.pilot")
#: the resources a pilot's ``--resources`` takes
PILOT_RESOURCES = ("cpu", "gpu", "memory", "disk", "time")


class GridError(RuntimeError):
    """The batch system could not be asked or refused a command, after retries. ``poll``
    raises it rather than return a partial list: the manager keeps its pilots as they are
    for that cycle instead of marking them lost."""


async def with_backoff(call: Callable[[], Awaitable[T]], what: str, attempts: int = 3,
                       delay: float = 1.0, max_delay: float = 30.0) -> T:
    """Await ``call()``, retrying a ``GridError`` with exponential backoff (``delay``,
    doubling up to ``max_delay``) at most ``attempts`` times in all; the last error is
    raised."""
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            return await call()
        except GridError as e:
            if attempt >= attempts:
                logger.error("%s failed after %d attempts: %s", what, attempt, e)
                raise
            wait = min(delay * 2 ** (attempt - 1), max_delay)
            logger.warning("%s failed (attempt %d of %d), retrying in %.1fs: %s",
                           what, attempt, attempts, wait, e)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from creation on, so the
    secret is never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def check_stage_roots(config: GridConfig, data_dir: Path) -> None:
    """Refuse a staging root inside (or above) the server's data dir: staging there would
    hand payloads the server's files."""
    data = Path(os.path.realpath(data_dir))
    for root in config.options.get("stage_roots") or ():
        real = Path(os.path.realpath(root))
        if real == data or real.is_relative_to(data) or data.is_relative_to(real):
            raise Invalid(f"grids[{config.name}].options.stage_roots: {root} contains or is "
                          f"inside the server's data dir {data_dir}")


def isolation_args(config: GridConfig, sandbox: str | None = None) -> list[str]:
    """The pilot's isolation flags from the grid's options (``sandbox`` overrides the
    configured mode), and how long a stopped pilot lets its tasks finish (``drain_grace``)."""
    opts = config.options
    args = ["--sandbox", str(sandbox or opts.get("sandbox") or "auto")]
    for flag, key in (("--sandbox-bind", "sandbox_binds"), ("--pass-env", "pass_env"),
                      ("--stage-root", "stage_roots")):
        for value in opts.get(key) or ():
            args += [flag, str(value)]
    for runtime in opts.get("container_runtimes") or ():
        args += ["--container-runtime", str(runtime)]
    if opts.get("image_dir"):
        args += ["--image-dir", str(opts["image_dir"])]
    if opts.get("drain_grace") is not None:
        args += ["--drain-grace", f"{float(opts['drain_grace']):g}"]
    return args


def pilot_command(config: GridConfig) -> list[str]:
    """The pilot's command line before its arguments (option ``pilot_command``)."""
    command = config.options.get("pilot_command") or PILOT_COMMAND
    return [str(c) for c in command]


def pilot_script(config: GridConfig, spec: PilotSpec, token_file: str,
                 extra_args: str = "") -> str:
    """A bash script that runs the grid's setup command, then the pilot. ``token_file`` is a
    shell expression for the token file's path on the node and ``extra_args`` more pilot
    arguments as shell words (the caller quotes both); the token itself never appears
    here."""
    args = ["--url", spec.url]
    numeric = {k: v for k, v in spec.resources.items() if k in PILOT_RESOURCES and v}
    if numeric:
        args += ["--resources", json.dumps(numeric, sort_keys=True, separators=(",", ":"))]
    if spec.site:
        args += ["--site", spec.site]
    args += isolation_args(config)
    command = shlex.join([*pilot_command(config), *args])
    lines = [
        "#!/bin/bash",
        f"# iceprod pilot {spec.pilot_id} of grid {config.name}: generated by iceprod;",
        "# the pilot's token is read from a file and never written here",
        f"export ICEPROD_PILOT_ID={shlex.quote(spec.pilot_id)}",
        f"token_file={token_file}",
        'chmod 600 "$token_file" 2>/dev/null || true',
        *([config.setup] if config.setup else []),
        f'exec {command} --token-file "$token_file"' + (f" {extra_args}" if extra_args else ""),
    ]
    return "\n".join(lines) + "\n"

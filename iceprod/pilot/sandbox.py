"""Payload isolation: how a task step is started, and what it sees.

A step is untrusted code. In ``bwrap`` mode it runs under bubblewrap with

- its own pid, ipc and uts namespaces (a fresh ``/proc`` shows only its own processes),
  a new session (no terminal to inject into), no capabilities (``--cap-drop ALL``: uid 0
  inside has none, even where the pilot runs as root) and death with the pilot;
- a root file system built from an allow-list: the system directories read-only
  (``SYSTEM_DIRS``, symlinks such as ``/bin -> usr/bin`` reproduced as symlinks), the
  extra read-only binds the grid names (``--sandbox-bind``), a private ``/tmp``, and the
  task's own ``run`` and ``tmp`` directories, the only places it can write. Nothing else
  exists inside: not the server's data dir, not the pilot's directory (token file,
  ``pilot.log``), not other tasks' directories, not any home directory. The system
  directories are not all harmless when the pilot runs as root (root still owns root's
  files without capabilities), so obviously sensitive files under ``/etc`` are masked
  (``MASKED_FILES`` read as empty, ``MASKED_DIRS`` are empty).

``none`` runs the step directly (the pilot's own rights); ``auto`` picks ``bwrap`` when a
probe run of bubblewrap succeeds here. bwrap's exit code is the child's (``128 + N`` for a
child killed by signal N, read back as ``-N``), so the runner's limits and exit codes work
through the wrapper unchanged: the monitor samples and signals the whole tree, bwrap
included.

The step's environment is built from an allow-list (``step_environment``): nothing of the
pilot's own environment reaches it unless named with ``--pass-env``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "none")
BWRAP = "bwrap"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
               "/opt")
MASKED_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                "/etc/sudoers", "/etc/security/opasswd", "/etc/munge/munge.key",
                "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key",
                "/etc/ssh/ssh_host_ed25519_key")
MASKED_DIRS = ("/etc/ssl/private", "/etc/sudoers.d", "/etc/iceprod")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
PASSED_NAMES = ("LANG", "LANGUAGE", "TZ")
PROBE_TIMEOUT = 15.0


class SandboxError(Exception):
    """The requested sandbox cannot be used here; the message says why."""


@dataclass(frozen=True)
class Sandbox:
    """How this pilot starts steps: ``mode`` is ``bwrap`` or ``none`` (``auto`` resolved),
    ``binds`` the extra read-only paths a step sees, ``pass_env`` extra variable names
    passed from the pilot's environment."""

    mode: str = "none"
    binds: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()
    bwrap: str = BWRAP

    def wrap(self, argv: Sequence[str], run_dir: Path, tmp_dir: Path,
             empty: Path | None = None) -> list[str]:
        """The command that runs ``argv`` for a task whose writable directories are
        ``run_dir`` and ``tmp_dir``; ``empty`` is an empty file masked files show."""
        if self.mode != "bwrap":
            return list(argv)
        return [self.bwrap, *bwrap_args(run_dir, tmp_dir, self.binds, empty), "--", *argv]

    def exit_code(self, code: int, killed: bool) -> int:
        """The step's own exit code from the wrapper's: bwrap reports a child killed by
        signal N as 128 + N (unless the pilot killed bwrap itself, which waitpid shows)."""
        if self.mode == "bwrap" and not killed and 128 < code < 128 + signal.NSIG:
            return -(code - 128)
        return code


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def system_args(paths: Sequence[str] = SYSTEM_DIRS) -> list[str]:
    """Read-only binds of the system directories present here; a top-level symlink
    (``/bin -> usr/bin``) is reproduced as the same symlink."""
    args: list[str] = []
    for path in paths:
        if not _exists(path):
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args


def mask_args(empty: Path | None = None, files: Sequence[str] = MASKED_FILES,
              dirs: Sequence[str] = MASKED_DIRS) -> list[str]:
    """Hide sensitive files under the bound system directories: files read as the empty
    file ``empty`` (or are ``/dev/null``, which a step cannot open there), directories are
    empty."""
    args: list[str] = []
    for path in files:
        if os.path.isfile(path):
            args += ["--ro-bind", str(empty or "/dev/null"), path]
    for path in dirs:
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
    return args


def rootfs_args(root: Path, keep: Sequence[Path] = ()) -> list[str]:
    """Read-only binds of every top-level entry of an unpacked root file system (a
    container image): the step sees it as ``/`` and nothing of this machine's own system;
    its symlinks (``/bin -> usr/bin``) are reproduced as symlinks. Mount points the sandbox
    makes itself (``/proc``, ``/dev``, ``/tmp``) are left out. A directory on the way to a
    path of ``keep`` (the task's directories, bound afterwards at the same paths) is made
    anew with its other entries bound one by one, since nothing can be mounted inside a
    read-only bind."""
    return _tree_args(root, "", {str(k) for k in keep})


def _tree_args(src: Path, dst: str, keep: set[str]) -> list[str]:
    args: list[str] = []
    for entry in sorted(src.iterdir()):
        target = f"{dst}/{entry.name}"
        if target in ("/proc", "/dev", "/tmp"):
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry), target]
        elif entry.is_dir() and any(k == target or k.startswith(target + "/") for k in keep):
            args += ["--dir", target, *_tree_args(entry, target, keep)]
        else:
            args += ["--ro-bind", str(entry), target]
    return args


def bwrap_args(run_dir: Path, tmp_dir: Path, binds: Sequence[str] = (),
               empty: Path | None = None, root: Path | None = None) -> list[str]:
    """bubblewrap's arguments for one step (before ``--`` and the command): this machine's
    system directories, or with ``root`` an unpacked root file system instead."""
    run, tmp = str(run_dir), str(tmp_dir)
    system = rootfs_args(root, (run_dir, tmp_dir)) if root is not None \
        else [*system_args(), *mask_args(empty)]
    args = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--cap-drop", "ALL", "--hostname", "iceprod-task",
            "--proc", "/proc", "--dev", "/dev", *system, "--tmpfs", "/tmp"]
    for path in binds:
        if _exists(path):
            args += ["--ro-bind", path, path]
    args += ["--bind", run, run, "--bind", tmp, tmp, "--chdir", run]
    return args


def resolve_mode(requested: str, bwrap: str = BWRAP) -> str:
    """``bwrap`` or ``none`` for a requested mode; ``bwrap`` that does not work here raises
    ``SandboxError``, ``auto`` falls back to ``none``."""
    if requested not in MODES:
        raise SandboxError(f"sandbox: {requested!r} is not one of {', '.join(MODES)}")
    if requested == "none":
        return "none"
    why = probe(bwrap)
    if why is None:
        return "bwrap"
    if requested == "bwrap":
        raise SandboxError(f"sandbox: bwrap does not work here: {why}")
    log.warning("bubblewrap does not work here (%s): steps run without a sandbox", why)
    return "none"


def probe(bwrap: str = BWRAP) -> str | None:
    """Run a step-like sandbox once; None when it works, else why not."""
    exe = shutil.which(bwrap)
    if exe is None:
        return f"{bwrap} is not installed"
    with tempfile.TemporaryDirectory(prefix="iceprod-probe-") as d:
        run, tmp = Path(d) / "run", Path(d) / "tmp"
        run.mkdir()
        tmp.mkdir()
        argv = Sandbox("bwrap", bwrap=exe).wrap(["/bin/sh", "-c", "echo ok > probe"], run, tmp)
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=PROBE_TIMEOUT, check=False, env={"PATH": DEFAULT_PATH})
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        marker = run / "probe"
        if result.returncode == 0 and marker.exists() and marker.read_text().strip() == "ok":
            return None
        err = result.stderr.decode(errors="replace").strip().splitlines()
        return err[-1] if err else f"exit code {result.returncode}"


@dataclass(frozen=True)
class StepContext:
    """What the runner tells the environment builder about one step."""

    task_vars: Mapping[str, str]
    home: str
    tmp: str
    threads: int
    gpus: str
    task_env: Mapping[str, object] = field(default_factory=dict)
    step_env: Mapping[str, object] = field(default_factory=dict)


def step_environment(ctx: StepContext, pass_env: Sequence[str] = (),
                     source: Mapping[str, str] | None = None) -> dict[str, str]:
    """A step's environment from an allow-list: a sane PATH, the locale and time zone, the
    task's own variables, then the task's and the step's ``env``; of the pilot's
    environment only the names in ``pass_env`` (never its token file, never the server's
    settings)."""
    source = os.environ if source is None else source
    env = {"PATH": DEFAULT_PATH}
    for name, value in source.items():
        if name in PASSED_NAMES or name.startswith("LC_") or name in pass_env:
            env[name] = value
    env.update(ctx.task_vars)
    env.update({"HOME": ctx.home, "TMPDIR": ctx.tmp, "OMP_NUM_THREADS": str(ctx.threads),
                "CUDA_VISIBLE_DEVICES": ctx.gpus})
    env.update({k: str(v) for k, v in ctx.task_env.items()})
    env.update({k: str(v) for k, v in ctx.step_env.items()})
    return env

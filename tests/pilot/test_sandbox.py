"""The step sandbox's command builder, mode resolution, exit codes and environment
allow-list (the sandbox at work is in test_runner.py and tests/security/)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from iceprod.pilot.sandbox import (
    DEFAULT_PATH,
    Sandbox,
    SandboxError,
    StepContext,
    bwrap_args,
    resolve_mode,
    step_environment,
)


def pairs(args: list[str], flag: str, width: int = 2) -> list[tuple[str, ...]]:
    """Every occurrence of ``flag`` with the ``width`` arguments after it."""
    return [tuple(args[i + 1:i + 1 + width]) for i, a in enumerate(args) if a == flag]


def test_a_step_sees_an_allow_list_and_writes_only_its_directories(tmp_path: Path) -> None:
    run, tmp, empty = tmp_path / "run", tmp_path / "tmp", tmp_path / ".empty"
    args = bwrap_args(run, tmp, ["/cvmfs", "/no/such/path"], empty)
    for flag in ("--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
                 "--unshare-uts"):
        assert flag in args
    assert pairs(args, "--cap-drop", 1) == [("ALL",)]
    assert ("/proc",) in pairs(args, "--proc", 1) and ("/dev",) in pairs(args, "--dev", 1)
    # writable: the task's two directories, nothing else
    assert pairs(args, "--bind") == [(str(run), str(run)), (str(tmp), str(tmp))]
    assert pairs(args, "--chdir", 1) == [(str(run),)]
    ro = pairs(args, "--ro-bind")
    # never the whole root: an allow-list of system dirs (symlinked ones as symlinks)
    assert ("/", "/") not in ro
    assert ("/usr", "/usr") in ro and ("/etc", "/etc") in ro
    assert ("/cvmfs", "/cvmfs") not in ro  # bound only where it exists
    assert all(src in ("/usr", "/etc", "/opt", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                       "/bin", str(empty)) for src, _ in ro)
    assert (str(empty), "/etc/shadow") in ro  # masked by an empty file
    links = pairs(args, "--symlink")
    if Path("/bin").is_symlink():
        assert ("usr/bin", "/bin") in links
    assert ("/tmp",) in pairs(args, "--tmpfs", 1)
    if Path("/etc/ssl/private").is_dir():
        assert ("/etc/ssl/private",) in pairs(args, "--tmpfs", 1)


def test_wrap_is_the_command_itself_without_a_sandbox(tmp_path: Path) -> None:
    argv = ["/bin/echo", "hi"]
    assert Sandbox("none").wrap(argv, tmp_path, tmp_path) == argv
    wrapped = Sandbox("bwrap", bwrap="/usr/bin/bwrap").wrap(argv, tmp_path, tmp_path)
    assert wrapped[0] == "/usr/bin/bwrap" and wrapped[-3:] == ["--", "/bin/echo", "hi"]


def test_bwraps_exit_codes_read_back_as_the_steps() -> None:
    sandbox = Sandbox("bwrap")
    assert sandbox.exit_code(3, killed=False) == 3
    assert sandbox.exit_code(128 + signal.SIGSEGV, killed=False) == -signal.SIGSEGV
    assert sandbox.exit_code(-signal.SIGKILL, killed=True) == -signal.SIGKILL
    assert Sandbox("none").exit_code(139, killed=False) == 139


def test_modes() -> None:
    assert resolve_mode("none") == "none"
    assert resolve_mode("auto") == "bwrap"  # bubblewrap works on this machine (.ci/run)
    assert resolve_mode("auto", bwrap="no-such-bwrap") == "none"
    with pytest.raises(SandboxError, match="bwrap does not work here: no-such-bwrap is not "
                                           "installed"):
        resolve_mode("bwrap", bwrap="no-such-bwrap")
    with pytest.raises(SandboxError, match="'chroot' is not one of auto, bwrap, none"):
        resolve_mode("chroot")


def test_the_environment_is_an_allow_list() -> None:
    pilot_env = {"PATH": "/pilot/bin", "ICEPROD_TOKEN_FILE": "/p/token", "HOME": "/root",
                 "ICEPROD_SECRET": "s", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
                 "SITE_SETUP": "/opt/site", "AWS_SECRET_ACCESS_KEY": "k"}
    ctx = StepContext(task_vars={"ICEPROD_TASK_ID": "t"}, home="/task/tmp", tmp="/task/tmp",
                      threads=2, gpus="0", task_env={"A": 1}, step_env={"A": 2, "B": "b"})
    env = step_environment(ctx, pass_env=("SITE_SETUP",), source=pilot_env)
    assert env == {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
                   "SITE_SETUP": "/opt/site", "ICEPROD_TASK_ID": "t", "HOME": "/task/tmp",
                   "TMPDIR": "/task/tmp", "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0",
                   "A": "2", "B": "b"}

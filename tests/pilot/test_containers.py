"""Container runtimes: the command each renders (apptainer, singularity, podman, docker,
bwrap), their refusals, and a real bubblewrap container over a busybox root file system the
test builds: the step sees the image's root, not this machine's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from iceprod.pilot.containers import (
    RUNTIMES,
    ApptainerRuntime,
    BwrapRuntime,
    ContainerError,
    DockerRuntime,
    PodmanRuntime,
    SingularityRuntime,
    make_containers,
)
from iceprod.pilot.sandbox import DEFAULT_PATH
from tests.helpers import needs
from tests.pilot.support import ROOTFS_MARK, busybox_rootfs

ENV = {"PATH": DEFAULT_PATH, "ICEPROD_TASK_ID": "t1"}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    images, run, tmp = tmp_path / "images", tmp_path / "task" / "run", tmp_path / "task" / "tmp"
    for d in (images, run, tmp):
        d.mkdir(parents=True)
    return images, run, tmp


def test_apptainer_and_singularity_render_exec_with_the_task_dir_bound(
        dirs: tuple[Path, Path, Path]) -> None:
    images, run, tmp = dirs
    (images / "sim.sif").write_bytes(b"sif")
    (images / "tree").mkdir()
    rt = ApptainerRuntime(image_dir=images, binds=("/cvmfs",))
    assert rt.command("sim", ["python3", "x.py"], run, tmp, ENV) == [
        "apptainer", "exec", "--contain", "--no-home", "--ipc", "--pid",
        "--bind", f"{run}:{run}", "--bind", f"{tmp}:{tmp}", "--bind", "/cvmfs:/cvmfs:ro",
        "--pwd", str(run), str((images / "sim.sif").resolve()), "python3", "x.py"]
    # a directory image, and singularity's own executable
    cmd = SingularityRuntime(image_dir=images).command("tree", ["ls"], run, tmp, ENV)
    assert cmd[0] == "singularity" and cmd[-2:] == [str((images / "tree").resolve()), "ls"]


def test_podman_and_docker_render_run_with_volumes_and_env_names(
        dirs: tuple[Path, Path, Path]) -> None:
    _, run, tmp = dirs
    expected = ["run", "--rm", "--init", "--network", "none", "--pull", "never",
                "--volume", f"{run}:{run}", "--volume", f"{tmp}:{tmp}", "--workdir", str(run),
                "--env", "ICEPROD_TASK_ID", "--env", "PATH",
                "registry.example.org/icecube/sim:1.2", "sh", "-c", "echo hi"]
    argv = ["sh", "-c", "echo hi"]
    image = "registry.example.org/icecube/sim:1.2"
    assert PodmanRuntime().command(image, argv, run, tmp, ENV) == ["podman", *expected]
    assert DockerRuntime(executable="/usr/local/bin/docker").command(
        image, argv, run, tmp, ENV) == ["/usr/local/bin/docker", *expected]


def test_bwrap_renders_the_sandbox_with_the_image_as_root(
        tmp_path: Path, dirs: tuple[Path, Path, Path]) -> None:
    images, run, tmp = dirs
    root = images / "busybox"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "lib64").symlink_to("lib")
    (root / "proc").mkdir()  # a mount point the sandbox makes itself
    cmd = BwrapRuntime(image_dir=images).command("busybox", ["/bin/sh"], run, tmp, ENV)
    r = str(root.resolve())
    assert cmd[0] == "bwrap" and cmd[-2:] == ["--", "/bin/sh"]
    text = " ".join(cmd)
    assert f"--ro-bind {r}/bin /bin" in text and f"--ro-bind {r}/etc /etc" in text
    assert "--symlink lib /lib64" in text and f"{r}/proc" not in text
    assert f"--bind {run} {run}" in text and f"--chdir {run}" in text
    assert "--ro-bind /usr /usr" not in text  # nothing of this machine's system
    assert "--cap-drop ALL" in text and "--unshare-pid" in text


def test_bwrap_makes_the_way_to_a_task_dir_inside_an_image_directory(
        dirs: tuple[Path, Path, Path]) -> None:
    """A task directory under a directory the image also has (/srv here): that directory is
    made anew, its other entries bound one by one, so the task's directory can be bound."""
    images, _, _ = dirs
    root = images / "img"
    for d in ("srv/data", "srv/work/old", "bin"):
        (root / d).mkdir(parents=True)
    run, tmp = Path("/srv/work/t1/run"), Path("/srv/work/t1/tmp")
    cmd = BwrapRuntime(image_dir=images).command("img", ["/bin/sh"], run, tmp, ENV)
    r = str(root.resolve())
    text = " ".join(cmd)
    assert f"--ro-bind {r}/bin /bin" in text
    assert "--dir /srv " in text and f"--ro-bind {r}/srv/data /srv/data" in text
    assert "--dir /srv/work " in text and f"--ro-bind {r}/srv/work/old /srv/work/old" in text
    assert f"--ro-bind {r}/srv /srv" not in text
    assert text.index("--dir /srv/work ") < text.index(f"--bind {run} {run}")


def test_refusals_name_the_problem(dirs: tuple[Path, Path, Path]) -> None:
    images, run, tmp = dirs
    rt = BwrapRuntime(image_dir=images)
    with pytest.raises(ContainerError, match="not found in"):
        rt.command("nope", ["sh"], run, tmp, ENV)
    for bad in ("../etc", "a/../../b", "/abs", ""):
        with pytest.raises(ContainerError, match="not a valid image name"):
            rt.command(bad, ["sh"], run, tmp, ENV)
    (images / "file").write_text("x")
    with pytest.raises(ContainerError, match="not an unpacked root file system"):
        rt.command("file", ["sh"], run, tmp, ENV)
    with pytest.raises(ContainerError, match="no image directory"):
        BwrapRuntime().command("x", ["sh"], run, tmp, ENV)
    none = make_containers([], None)
    with pytest.raises(ContainerError, match="runs no containers"):
        none.runtime(None)
    two = make_containers(["podman", "bwrap"], images)
    assert two.runtime(None).name == "podman" and two.runtime("bwrap").name == "bwrap"
    with pytest.raises(ContainerError, match=r"'docker' is not allowed.*podman, bwrap"):
        two.runtime("docker")
    with pytest.raises(ValueError, match="'rkt' is not one of"):
        make_containers(["rkt"], None)
    assert set(RUNTIMES) == {"bwrap", "apptainer", "singularity", "podman", "docker"}


def test_a_real_bwrap_container_sees_its_own_root(tmp_path: Path,
                                                  dirs: tuple[Path, Path, Path]) -> None:
    needs(None if shutil.which("bwrap") else "bubblewrap (bwrap) is not installed")
    images, run, tmp = dirs
    busybox_rootfs(images / "busybox")
    script = ("cat /etc/os-release; ls /; pwd; echo written > out.txt; "
              "test -e /usr/bin/python3 && echo HOST-USR || echo no-usr")
    cmd = BwrapRuntime(image_dir=images).command("busybox", ["/bin/sh", "-c", script], run,
                                                 tmp, ENV)
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"ID={ROOTFS_MARK}" in out and "no-usr" in out and "HOST-USR" not in out
    listing = set(out.split())
    assert "usr" not in listing and {"bin", "etc", "proc", "tmp"} <= listing
    assert str(run) in out  # the task dir is bound in, as the working directory
    assert (run / "out.txt").read_text() == "written\n"
    # a step killed by a signal reads back as -N
    cmd = BwrapRuntime(image_dir=images).command("busybox", ["/bin/sh", "-c", "kill -9 $$"],
                                                 run, tmp, ENV)
    code = subprocess.run(cmd, env=ENV, timeout=30, check=False).returncode
    assert BwrapRuntime().exit_code(code, killed=False) == -9

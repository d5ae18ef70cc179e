"""Container runtimes: how a step runs inside the container image its task names.

A task may carry ``container: {image, runtime}`` (dataset config). The pilot is told which
runtimes it may use (``--container-runtime``, repeatable; the first is the default when a
task names none) and where images live (``--image-dir``: a directory holding, per image
name, an unpacked root file system directory or, for Apptainer, a ``.sif`` file). Each
runtime is a small class rendering the command that runs a step's ``argv`` inside the image,
with the task's ``run`` and ``tmp`` directories bound in at the same paths (the step's working
directory is ``run``) and the step's allow-listed environment passed on:

- ``bwrap``: bubblewrap over an unpacked root file system; the pilot's step sandbox
  (``sandbox.bwrap_args``) with the image as its root instead of this machine's system;
- ``apptainer`` / ``singularity``: ``exec --contain`` of a directory or SIF image;
- ``podman`` / ``docker``: ``run --rm`` of an image reference (the runtime's own store; no
  registry is contacted here unless the runtime is configured to).

A runtime reports a step's exit code as the child's (a child killed by signal N as 128 + N),
read back like the sandbox's (``exit_code``).
"""

from __future__ import annotations

import abc
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from iceprod.pilot.sandbox import bwrap_args

IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,255}$")


class ContainerError(Exception):
    """The task's container cannot run on this pilot; the message says why."""


@dataclass(frozen=True)
class ContainerRuntime(abc.ABC):
    """One runtime: ``executable`` (found on PATH when not absolute), ``image_dir`` where
    images are looked up by name (runtimes with their own store may ignore it) and ``binds``
    (the grid's extra read-only paths)."""

    image_dir: Path | None = None
    binds: tuple[str, ...] = ()
    executable: str = ""

    name: ClassVar[str] = ""
    default_executable: ClassVar[str] = ""

    @property
    def exe(self) -> str:
        return self.executable or self.default_executable

    @abc.abstractmethod
    def command(self, image: str, argv: Sequence[str], run_dir: Path, tmp_dir: Path,
                env: Mapping[str, str]) -> list[str]:
        """The command that runs ``argv`` inside ``image``."""

    def image_path(self, image: str, suffixes: Sequence[str] = ("",)) -> Path:
        """``image`` under the image directory (never outside it)."""
        if self.image_dir is None:
            raise ContainerError(f"container runtime {self.name}: no image directory "
                                 "configured (--image-dir)")
        check_image(image)
        base = self.image_dir.resolve()
        for suffix in suffixes:
            path = (base / (image + suffix)).resolve()
            if not path.is_relative_to(base):
                raise ContainerError(f"container image {image!r}: outside the image directory")
            if path.exists():
                return path
        raise ContainerError(f"container image {image!r} not found in {self.image_dir}")

    def exit_code(self, code: int, killed: bool) -> int:
        if not killed and 128 < code < 128 + signal.NSIG:
            return -(code - 128)
        return code

    def available(self) -> str | None:
        """None when the runtime can be used here, else why not."""
        if shutil.which(self.exe) is None:
            return f"{self.exe} is not installed"
        return None


class BwrapRuntime(ContainerRuntime):
    """bubblewrap over an unpacked root file system ``<image_dir>/<image>/``."""

    name = "bwrap"
    default_executable = "bwrap"

    def command(self, image: str, argv: Sequence[str], run_dir: Path, tmp_dir: Path,
                env: Mapping[str, str]) -> list[str]:
        root = self.image_path(image)
        if not root.is_dir():
            raise ContainerError(f"container image {image!r}: {root} is not an unpacked "
                                 "root file system (a directory)")
        return [self.exe, *bwrap_args(run_dir, tmp_dir, self.binds, root=root), "--",
                *argv]


class ApptainerRuntime(ContainerRuntime):
    """``apptainer exec`` of ``<image_dir>/<image>.sif`` or the directory ``<image>``."""

    name = "apptainer"
    default_executable = "apptainer"

    def command(self, image: str, argv: Sequence[str], run_dir: Path, tmp_dir: Path,
                env: Mapping[str, str]) -> list[str]:
        path = self.image_path(image, (".sif", ""))
        run, tmp = str(run_dir), str(tmp_dir)
        args = [self.exe, "exec", "--contain", "--no-home", "--ipc", "--pid",
                "--bind", f"{run}:{run}", "--bind", f"{tmp}:{tmp}"]
        for path_ in self.binds:
            args += ["--bind", f"{path_}:{path_}:ro"]
        # the step's environment is already an allow-list: it goes in as it is
        return [*args, "--pwd", run, str(path), *argv]


class SingularityRuntime(ApptainerRuntime):
    name = "singularity"
    default_executable = "singularity"


class PodmanRuntime(ContainerRuntime):
    """``podman run`` of an image reference from the runtime's own store."""

    name = "podman"
    default_executable = "podman"

    def command(self, image: str, argv: Sequence[str], run_dir: Path, tmp_dir: Path,
                env: Mapping[str, str]) -> list[str]:
        check_image(image)
        run, tmp = str(run_dir), str(tmp_dir)
        args = [self.exe, "run", "--rm", "--init", "--network", "none", "--pull", "never",
                "--volume", f"{run}:{run}", "--volume", f"{tmp}:{tmp}", "--workdir", run]
        for path in self.binds:
            args += ["--volume", f"{path}:{path}:ro"]
        for name in sorted(env):  # values come from the runtime's own environment
            args += ["--env", name]
        return [*args, image, *argv]


class DockerRuntime(PodmanRuntime):
    name = "docker"
    default_executable = "docker"


RUNTIMES: dict[str, type[ContainerRuntime]] = {
    cls.name: cls for cls in (BwrapRuntime, ApptainerRuntime, SingularityRuntime,
                              PodmanRuntime, DockerRuntime)
}


def check_image(image: str) -> str:
    if not IMAGE.fullmatch(image) or ".." in image.split("/"):
        raise ContainerError(f"container image {image!r}: not a valid image name")
    return image


@dataclass(frozen=True)
class Containers:
    """The runtimes this pilot may use, the first being the default."""

    runtimes: tuple[ContainerRuntime, ...] = ()

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runtimes]

    def runtime(self, requested: str | None) -> ContainerRuntime:
        if not self.runtimes:
            raise ContainerError("this pilot runs no containers (no --container-runtime)")
        if not requested:
            return self.runtimes[0]
        for r in self.runtimes:
            if r.name == requested:
                return r
        raise ContainerError(f"container runtime {requested!r} is not allowed on this pilot "
                             f"(allowed: {', '.join(self.names)})")


def make_containers(names: Sequence[str], image_dir: Path | None,
                    binds: Sequence[str] = ()) -> Containers:
    """The runtimes named (``ValueError`` for an unknown one)."""
    out = []
    for name in names:
        if name not in RUNTIMES:
            raise ValueError(f"--container-runtime: {name!r} is not one of "
                             f"{', '.join(RUNTIMES)}")
        out.append(RUNTIMES[name](image_dir=image_dir, binds=tuple(binds)))
    return Containers(tuple(out))

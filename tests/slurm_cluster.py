"""A real single-node Slurm cluster on this machine, for tests of the slurm grid backend.

``SlurmCluster`` writes a private ``slurm.conf`` (controller and node on 127.0.0.1 only, free
ports, state and spool under a temporary directory), starts a private ``munged`` as the munge
user on its own socket, then ``slurmctld -D`` and ``slurmd -D`` in the background, and waits
until ``sinfo`` shows the node idle. Clients find it through ``SLURM_CONF`` (``cluster.env``)
or the grid option ``slurm_conf``.

The private munge socket (``AuthInfo=socket=...``) keeps two test sessions on one machine
from sharing, or stopping, each other's munged. Test modules get the session fixture
``slurm_cluster`` with ``from tests.slurm_cluster import slurm_cluster_fixture  # noqa: F401``
(one cluster for the whole session, whichever modules ask for it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import needs

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
SYSTEM_MUNGE_KEY = Path("/etc/munge/munge.key")


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def missing_binaries() -> list[str]:
    """Slurm and munge programs this machine lacks (CI installs them through .ci/run)."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    # a node that claims more memory than it has is drained, so stay a little below
    return int(psutil.virtual_memory().total / 2**20 * 0.9)


class SlurmCluster:
    """One controller and one node (``localhost``) in one partition (``debug``)."""

    partition = "debug"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.munge_dir = root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.cpus = os.cpu_count() or 1
        self.memory_mb = _real_memory_mb()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, daemon: str) -> str:
        path = self.root / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 30) -> None:
        try:
            self._start_munged()
            self._write_conf()
            self._start("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-f",
                                      str(self.conf)])
            self._start("slurmd", [_which("slurmd") or "slurmd", "-D", "-N", "localhost",
                                   "-f", str(self.conf)])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel every job and wait for the queue to empty, stop the daemons, then kill
        whatever outlived them in this cluster's name (a job step's processes carry its
        ``SLURM_CONF``)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self._cancel_all(timeout=15)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs.clear()
        for leftover in self._leftovers():
            try:
                leftover.kill()
            except psutil.Error:
                pass

    def _cancel_all(self, timeout: float) -> None:
        self._client(["scancel", "--full", "--me"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = self._client(["squeue", "--noheader", "--me"])
            if queue.returncode == 0 and not queue.stdout.strip():
                return
            time.sleep(0.2)

    def _client(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10,
                              check=False)

    def _leftovers(self) -> list[psutil.Process]:
        conf = str(self.conf)
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and proc.environ().get("SLURM_CONF") == conf:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def _start(self, name: str, argv: list[str], **kw: object) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env,
                                                **kw)  # type: ignore[call-overload]

    def _start_munged(self) -> None:
        self.munge_dir.mkdir(mode=0o755)
        shutil.chown(self.munge_dir, "munge", "munge")
        key = SYSTEM_MUNGE_KEY
        if not key.exists():
            key = self.munge_dir / "munge.key"
            subprocess.run([_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)],
                           check=True, capture_output=True, user="munge", group="munge")
        self._start("munged", [
            _which("munged") or "munged", "--foreground", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ], user="munge", group="munge", extra_groups=[])
        self._wait(lambda: self.munge_socket.exists(), 10, "munged socket")

    def _write_conf(self) -> None:
        state, spool = self.root / "state", self.root / "spool"
        state.mkdir()
        spool.mkdir()
        lines = [
            "ClusterName=iceprodtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0",
            "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "KillWait=5",
            "MinJobAge=300",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}",
            (f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} "
             f"RealMemory={self.memory_mb} State=UNKNOWN"),
            (f"PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE "
             "State=UP"),
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _node_state(self) -> str:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
        return self._client(["sinfo", "--noheader", "--nodes=localhost", "--format=%T"]).stdout.strip()

    def _wait_idle(self, timeout: float) -> None:
        self._wait(lambda: self._node_state() == "idle", timeout, "the Slurm node to be idle")

    def _wait(self, check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in self.procs)
        raise RuntimeError(f"timed out waiting for {what}\n{logs}")


_shared: SlurmCluster | None = None


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """A running single-node Slurm, started once per session however many test modules
    import this fixture, and torn down at the session's end."""
    global _shared
    missing = missing_binaries()
    if missing:
        needs("Slurm is not installed here (missing: " + ", ".join(missing)
              + "); install slurmctld slurmd slurm-client munge, as .ci/run does")
    if os.geteuid() != 0:
        needs("a private Slurm cluster needs root (slurmd and munged switch users)")
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="iceprod-slurm-"))
        # munged (running as munge) must reach its directory inside this one
        root.chmod(0o755)
        cluster = SlurmCluster(root)
        cluster.start()
        _shared = cluster
    yield _shared
    if _shared is not None:
        _shared.stop()
        shutil.rmtree(_shared.root, ignore_errors=True)
        _shared = None

"""Shared fixtures: a real ``iceprod-server`` subprocess on a free port with the embedded
store, tokens for every role, and HTTP clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from iceprod.core.tokens import create_token

SECRET = "test-secret-" + "x" * 20
os.environ.setdefault("ICEPROD_CHECK_RESPONSES", "1")
"""Every server the tests start (they inherit the environment) validates each JSON success
answer against its response model and answers 500 on a mismatch: the whole suite is a
contract test of ``resources/schemas/responses.schema.json``."""
BY_HAND = {"ICEPROD_MATERIALIZE_ON_PUT": "0"}
"""For servers whose tests build jobs and tasks by hand after a config PUT: the PUT then
leaves materializing to a scheduler round (none runs with ``--only rest``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server process and what tests need to talk to it."""

    url: str
    data_dir: Path
    proc: subprocess.Popen
    secret: str = SECRET
    log_path: Path | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    def token(self, username: str, roles: list[str], groups: list[str] | None = None,
              **kw: object) -> str:
        return create_token(self.secret, username, roles, groups or [], **kw)  # type: ignore[arg-type]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def stop(self, sig: int | None = None) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def start_server(data_dir: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    # no grid unless a test asks for one: most tests drive claims by hand
    full_env = {**os.environ, "ICEPROD_SECRET": SECRET, "ICEPROD_GRID_CONFIG": "none",
                **(env or {})}
    full_env.pop("ICEPROD_DB_URL", None) if "ICEPROD_DB_URL" not in (env or {}) else None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iceprod.server", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir), *(args or [])],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url=url, data_dir=data_dir, proc=proc, log_path=log_path)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start: {log_path.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # the REST suite drives every state by hand, so no scheduler runs beside it
    srv = start_server(tmp_path_factory.mktemp("server"), env=BY_HAND, args=["--only", "rest"])
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token("root", ["admin"])) as c:
        yield c


@pytest.fixture(scope="session")
def system(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token("iceprod-system", ["system"])) as c:
        yield c


@pytest.fixture(scope="session")
def alice(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token("alice", ["user"], ["physics"])) as c:
        yield c


@pytest.fixture(scope="session")
def bob(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token("bob", ["user"], ["astro"])) as c:
        yield c

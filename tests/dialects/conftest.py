"""A full server (REST, scheduler, a local grid of real pilots) for the dialect tests, and
the catalog entries they use. The pilots run without a sandbox, in single-user mode for
alice (README "Isolation"), so payloads may leave a pid file where the test can see it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server, start_server
from tests.pilot.support import FAST

MAX_DOWNLOAD = 50_000
"""The server's zip download limit here, so a test can exceed it cheaply."""


def grid_env(tmp_path: Path) -> dict[str, str]:
    doc = {"grids": [{"name": "local", "backend": "local", "max_pilots": 4, "max_idle": 4,
                      "max_per_cycle": 4,
                      "options": {"cores": 4, "idle_timeout": 60, "heartbeat_interval": 0.3,
                                  "claim_interval": 0.1, "monitor_interval": 0.1,
                                  "sandbox": "none"}}]}
    path = tmp_path / "grids.json"
    path.write_text(json.dumps(doc))
    return {**FAST, "ICEPROD_GRID_CONFIG": str(path), "ICEPROD_OPERATOR": "alice",
            "ICEPROD_MAX_DOWNLOAD_BYTES": str(MAX_DOWNLOAD)}


@pytest.fixture(scope="package")
def grid_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dialects")
    srv = start_server(tmp / "data", env={"ICEPROD_SECRET": "", **grid_env(tmp)})
    srv.secret = (srv.data_dir / "secret").read_text().strip()
    yield srv
    srv.stop()


class Session(requests.Session):
    """A `requests` session on the server, as the seed systems' docs use it."""

    def __init__(self, url: str, token: str | None) -> None:
        super().__init__()
        self.base = url
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return super().request(method, f"{self.base}{url!s}", *args, **kwargs)


@pytest.fixture(scope="package")
def users(grid_server: Server) -> Iterator[dict[str, Session]]:
    s = grid_server
    out = {
        "admin": Session(s.url, s.token("root", ["admin"])),
        "alice": Session(s.url, s.token("alice", ["user"], ["physics"])),
        "bob": Session(s.url, s.token("bob", ["user"], ["astro"])),
        "anon": Session(s.url, None),
    }
    yield out
    for session in out.values():
        session.close()


# wc-like: repeat the uploaded file n times into result.txt, and write a file in a subdir
REPEAT = {
    "command": "/bin/sh",
    "args": ["-c", ('set -e; i=0; while [ "$i" -lt "$1" ]; do cat "$2"; i=$$((i+1)); '
                    'done > result.txt; mkdir -p sub; echo "n=$1" > sub/note.txt; '
                    'ln -s /etc/hostname leak'), "repeat",
             "$(param.n)", "$(param.input)"],
    "param": [{"name": "n", "type": "int", "required": True, "min": 1, "max": 10},
              {"name": "input", "type": "file", "required": True}],
    "groups": ["physics"],
    "max_clock_time": "00:05:00",
    "is_output_visible": True,
    "requirements": {"cpu": 1, "memory": 0.1, "disk": 0.1},
}


@pytest.fixture(scope="package")
def catalog(users: dict[str, Session], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entries: `repeat` (an int and a file), `sleeper` (writes its pid where the test
    sees it, then sleeps) and `echo` (one string argument, for batches)."""
    pids = tmp_path_factory.mktemp("pids")
    admin = users["admin"]
    entries = {
        "repeat": REPEAT,
        "sleeper": {"command": "/bin/sh",
                    "args": ["-c", 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 300',
                             "sleeper", "$(param.pidfile)"],
                    "param": [{"name": "pidfile", "type": "string", "required": True}],
                    "groups": ["physics"], "max_clock_time": "00:10:00",
                    "requirements": {"cpu": 1, "memory": 0.1}},
        "echo": {"command": "/bin/echo", "args": ["$(param.word)"],
                 "param": [{"name": "word", "type": "string", "default": "hello",
                            "pattern": "[a-z0-9]{1,20}"}],
                 "groups": [], "max_clock_time": "00:01:00", "is_output_visible": False,
                 "requirements": {"cpu": 1, "memory": 0.1}},
    }
    for name, entry in entries.items():
        r = admin.put(f"/script/{name}", json=entry)
        assert r.status_code in (200, 201), r.text
    return pids

"""Fixtures for the client and CLI tests: a scripted local HTTP server for retry behaviour."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Scripted:
    """A tiny HTTP server answering from a script of (status, headers, body) replies, the
    last one repeated; it records when each request arrived."""

    url: str = ""
    replies: list[tuple[int, dict[str, str], object]] = field(default_factory=list)
    seen: list[tuple[float, str, str]] = field(default_factory=list)
    bodies: list[object] = field(default_factory=list)

    def reply(self) -> tuple[int, dict[str, str], object]:
        index = min(len(self.seen) - 1, len(self.replies) - 1)
        return self.replies[index]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                state.bodies.append(json.loads(self.rfile.read(length)))
            state.seen.append((time.monotonic(), self.command, self.path))
            status, headers, body = state.reply()
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)

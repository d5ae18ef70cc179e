"""What the benchmarks share: a real `iceprod-server` subprocess on a free port (its secret
read from its data dir, as an operator minting a token would), tokens and clients, server
memory, percentiles, and a small keep-alive HTTP/1.1 load client.

The load client exists so that a comparison (REST claim against a no-op handler) uses one
client cheap enough not to be the bottleneck on a small machine: it writes prepared request
bytes on persistent connections and reads answers by Content-Length, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iceprod.core.tokens import create_token

TRIVIAL = {"name": "trivial", "requirements": {"cpu": 1}, "steps": [{"command": "/bin/true"}]}
# an offer every benchmark task fits
OFFER = {"cpu": 1000, "memory": 1000, "disk": 1000, "time": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running `iceprod-server` and the secret it signs tokens with."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    secret: str
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def token(self, user: str, roles: Sequence[str], groups: Sequence[str] = (),
              **claims: Any) -> str:
        return create_token(self.secret, user, list(roles), list(groups), **claims)

    def client(self, user: str, roles: Sequence[str], groups: Sequence[str] = (),
               **claims: Any) -> httpx.Client:
        c = httpx.Client(base_url=self.url, timeout=120,
                         headers=auth(self.token(user, roles, groups, **claims)))
        self.clients.append(c)
        return c

    def admin(self) -> httpx.Client:
        return self.client("root", ["admin"], ["bench"])

    def rss(self) -> int:
        """The server process's resident memory, bytes."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_server(data: Path, env: Mapping[str, str] | None = None,
                 log_name: str = "server.log", args: Sequence[str] = ()) -> Server:
    """Start `iceprod-server` on `data` with the process environment stripped of any
    ICEPROD_* setting, plus `env`: what is not given is the server's default. `args` are
    more command-line arguments (`--only rest`)."""
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith("ICEPROD_")}
    child.update({"ICEPROD_LOG_LEVEL": "WARNING", **(env or {})})
    with open(data / log_name, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iceprod.server", "--port", str(port), "--data-dir",
             str(data), *args], env=child, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                secret = (data / "secret").read_text().strip()
                return Server(proc, url, data, secret)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start; see {data / log_name}")


def create_dataset(c: httpx.Client, jobs: int, tasks_per_job: int = 1,
                   description: str = "bench") -> str:
    r = c.post("/datasets", json={"description": description, "jobs_submitted": jobs,
                                  "tasks_submitted": jobs * tasks_per_job,
                                  "tasks_per_job": tasks_per_job, "group": "bench"})
    r.raise_for_status()
    return str(r.json()["dataset_id"])


def submit(c: httpx.Client, jobs: int, tasks: Sequence[Mapping[str, Any]]) -> str:
    ds = create_dataset(c, jobs, len(tasks))
    c.put(f"/config/{ds}", json={"tasks": list(tasks)}).raise_for_status()
    return ds


def counts(c: httpx.Client, ds: str) -> dict[str, int]:
    r = c.get(f"/datasets/{ds}/task_counts/status")
    r.raise_for_status()
    return dict(r.json())


def wait_counts(c: httpx.Client, ds: str, status: str, n: int, timeout: float,
                interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while counts(c, ds).get(status, 0) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} {status} tasks: {counts(c, ds)}")
        time.sleep(interval)


def register_pilots(server: Server, n: int, prefix: str = "bench-pilot") -> list[tuple[str, str]]:
    """Register `n` pilots, each with its own registration token: `[(bound token,
    pilot_id)]` (the token the registration answers, bound to the new pilot)."""
    out = []
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for i in range(n):
            token = server.token(f"{prefix}-{i}", ["pilot"])
            r = c.post("/pilots", json={"resources": {"cpu": 1}}, headers=auth(token))
            r.raise_for_status()
            out.append((str(r.json()["token"]), str(r.json()["result"])))
    return out


LATENCY = re.compile(r'^iceprod_http_request_seconds_(sum|count)\{method="(\w+)",'
                     r'route="([^"]*)"\} ([\d.e+-]+)$')


def server_time(c: httpx.Client) -> dict[str, tuple[float, int]]:
    """Time the server spent per route so far (from `/metrics`): `{"POST /x": (s, n)}`."""
    out: dict[str, tuple[float, int]] = {}
    for line in c.get("/metrics").text.splitlines():
        if m := LATENCY.match(line):
            kind, method, route, value = m.groups()
            spent, n = out.get(f"{method} {route}", (0.0, 0))
            out[f"{method} {route}"] = ((spent + float(value), n) if kind == "sum"
                                        else (spent, n + int(float(value))))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


# -- the load client ---------------------------------------------------------------------

def post_bytes(port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """One prepared HTTP/1.1 keep-alive POST."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length) if length else b""


class Conn:
    """One keep-alive HTTP/1.1 connection that sends JSON requests and reads answers by
    Content-Length: a simulated client costing a fraction of a general-purpose one, so that
    hundreds of them on the server's own machine measure the server, not themselves."""

    def __init__(self, port: int, headers: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.headers = dict(headers or {})
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """`(status, parsed JSON or None)`; reconnects once if the server closed the
        connection between requests."""
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                 f"Content-Length: {len(data)}",
                 *(f"{k}: {v}" for k, v in self.headers.items())]
        if body is not None:
            lines.append("Content-Type: application/json")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        for attempt in (0, 1):
            if self._streams is None:
                self._streams = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self._streams
            try:
                writer.write(raw)
                status, answer = await read_response(reader)
                return status, json.loads(answer) if answer else None
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass
class LoadResult:
    seconds: float
    codes: Counter[int]
    latencies: list[float]

    @property
    def ok(self) -> int:
        return self.codes.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


async def load(port: int, requests: Sequence[bytes], seconds: float,
               budget: int | None = None) -> LoadResult:
    """One connection per prepared request (`len(requests)` concurrent clients), each sending
    its request again as soon as the answer arrives, for `seconds` or until `budget` answers
    of 200 (or until a connection gets anything but 200: the queue ran dry)."""
    codes: Counter[int] = Counter()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(request: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and (budget is None or codes[200] < budget):
                t0 = time.perf_counter()
                writer.write(request)
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                codes[status] += 1
                if status != 200:
                    return
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(r) for r in requests))
    return LoadResult(time.perf_counter() - t0, codes, latencies)


def run_load(port: int, requests: Sequence[bytes], seconds: float,
             budget: int | None = None) -> LoadResult:
    return asyncio.run(load(port, requests, seconds, budget))


def summary(name: str, figures: Mapping[str, str]) -> None:
    """The one closing line `make bench` collects: `summary <bench>: key=value; ...`."""
    print(f"summary {name}: " + "; ".join(f"{k}={v}" for k, v in figures.items()))


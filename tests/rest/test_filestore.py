"""The file store over HTTP: upload/download, listing, delete, names, the size limit, and who
may read and write (dataset rules, and pilots holding a task of the dataset)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iceprod.client.api import AsyncClient, Client, NotFound
from tests.conftest import Server, start_server
from tests.helpers import claim, create_dataset, create_job, create_task, register_pilot

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("filestore"),
                          env={"ICEPROD_MAX_FILE_BYTES": str(LIMIT)}, args=["--only", "rest"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(srv: Server) -> httpx.Client:
    return srv.client(srv.token("alice", ["user"], ["physics"]))


@pytest.fixture(scope="module")
def bob(srv: Server) -> httpx.Client:
    return srv.client(srv.token("bob", ["user"], ["astro"]))


@pytest.fixture(scope="module")
def system(srv: Server) -> httpx.Client:
    return srv.client(srv.token("iceprod-system", ["system"]))


@pytest.fixture
def ds(alice: httpx.Client) -> str:
    return create_dataset(alice, "physics")


def store_dir(srv: Server, ds: str) -> Path:
    return srv.data_dir / "store" / ds


def srv_url(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/") + "/"


def leftovers(srv: Server) -> list[Path]:
    partial = srv.data_dir / "store" / ".partial"
    return list(partial.iterdir()) if partial.exists() else []


def test_roundtrip_list_and_delete(srv: Server, alice: httpx.Client, ds: str) -> None:
    blob = bytes(range(256)) * 100 + b"\x00\xff\r\n"
    r = alice.put(f"/datasets/{ds}/store/in/data.bin", content=blob)
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "in/data.bin", "size": len(blob)}
    r = alice.get(f"/datasets/{ds}/store/in/data.bin")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content == blob
    assert (store_dir(srv, ds) / "in" / "data.bin").read_bytes() == blob
    assert alice.put(f"/datasets/{ds}/store/empty", content=b"").status_code == 201
    assert alice.put(f"/datasets/{ds}/store/in/data.bin", content=b"v2").status_code == 201
    listing = alice.get(f"/datasets/{ds}/store").json()
    assert {k: v["size"] for k, v in listing.items()} == {"in/data.bin": 2, "empty": 0}
    r = alice.delete(f"/datasets/{ds}/store/in/data.bin")
    assert r.status_code == 200, r.text
    assert not (store_dir(srv, ds) / "in").exists()  # emptied directories go too
    assert alice.get(f"/datasets/{ds}/store/in/data.bin").status_code == 404
    assert alice.delete(f"/datasets/{ds}/store/in/data.bin").status_code == 404
    assert list(alice.get(f"/datasets/{ds}/store").json()) == ["empty"]
    # a name may not turn a stored file into a directory, nor a directory into a file
    assert alice.put(f"/datasets/{ds}/store/empty/inside", content=b"x").status_code == 400
    assert alice.put(f"/datasets/{ds}/store/d/f", content=b"x").status_code == 201
    assert alice.put(f"/datasets/{ds}/store/d", content=b"x").status_code == 400
    assert alice.get(f"/datasets/{ds}/store/d").status_code == 404
    assert leftovers(srv) == []


@pytest.mark.parametrize("name", ["a/%2E%2E/b", "%2E%2E", "a//b", "a/", "%2Fetc%2Fpasswd",
                                  "%2E/a", "a%2F..%2F..%2Fb"])
def test_bad_names(alice: httpx.Client, ds: str, name: str) -> None:
    # encoded: httpx (like any client) would resolve plain dot segments before sending
    url = httpx.URL(srv_url(alice)).copy_with(raw_path=f"/datasets/{ds}/store/{name}".encode())
    for method in ("PUT", "GET", "DELETE"):
        r = alice.request(method, url, content=b"x" if method == "PUT" else None)
        assert r.status_code == 400, (method, name, r.text)
        assert r.json()["error"].startswith("name:")


def test_over_the_limit_is_413_and_leaves_nothing(srv: Server, alice: httpx.Client,
                                                  ds: str) -> None:
    r = alice.put(f"/datasets/{ds}/store/big", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413, r.text
    assert r.json()["code"] == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(3):
            yield b"y" * (LIMIT // 2)

    r = alice.put(f"/datasets/{ds}/store/big", content=chunks())
    assert r.status_code == 413, r.text
    assert alice.get(f"/datasets/{ds}/store/big").status_code == 404
    assert not (store_dir(srv, ds) / "big").exists()
    assert leftovers(srv) == []
    r = alice.put(f"/datasets/{ds}/store/big", content=b"z" * LIMIT)  # exactly the limit
    assert r.status_code == 201, r.text


def test_other_users_and_anonymous(srv: Server, alice: httpx.Client, bob: httpx.Client,
                                   ds: str) -> None:
    assert alice.put(f"/datasets/{ds}/store/f", content=b"secret").status_code == 201
    for method in ("GET", "PUT", "DELETE"):
        r = bob.request(method, f"/datasets/{ds}/store/f",
                        content=b"mine" if method == "PUT" else None)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == 403
    assert bob.get(f"/datasets/{ds}/store").status_code == 403
    r = srv.client().put(f"/datasets/{ds}/store/f", content=b"anon")
    assert r.status_code == 401 and r.json()["code"] == 401
    assert alice.get(f"/datasets/{ds}/store/f").content == b"secret"
    assert leftovers(srv) == []


def test_a_pilot_holding_a_task_reads_and_writes(srv: Server, alice: httpx.Client,
                                                 system: httpx.Client) -> None:
    ds = create_dataset(alice, "physics")
    job = create_job(system, ds, 0)
    site = f"store-{ds}"
    create_task(system, ds, job, 0, "a", status="queued",
                requirements={"cpu": 1, "memory": 1, "site": site})
    holder = srv.client(srv.token("pilot-holder", ["pilot"]))
    pilot_id = register_pilot(holder, cpu=1, memory=1)
    r = claim(holder, pilot_id, cpu=1, memory=1, site=site)
    assert r.status_code == 200, r.text
    held = r.json()
    stranger = srv.client(srv.token("pilot-stranger", ["pilot"]))
    register_pilot(stranger, cpu=1, memory=1)

    assert alice.put(f"/datasets/{ds}/store/input.txt", content=b"in").status_code == 201
    assert holder.get(f"/datasets/{ds}/store/input.txt").content == b"in"
    r = holder.put(f"/datasets/{ds}/store/out/result.txt", content=b"out")
    assert r.status_code == 201, r.text
    assert alice.get(f"/datasets/{ds}/store/out/result.txt").content == b"out"
    assert set(holder.get(f"/datasets/{ds}/store").json()) == {"input.txt", "out/result.txt"}
    # pilots do not delete, and one holding no task of the dataset gets nothing
    assert holder.delete(f"/datasets/{ds}/store/input.txt").status_code == 403
    assert stranger.get(f"/datasets/{ds}/store").status_code == 403
    for method in ("GET", "PUT"):
        r = stranger.request(method, f"/datasets/{ds}/store/input.txt",
                             content=b"no" if method == "PUT" else None)
        assert r.status_code == 403, r.text
    assert alice.get(f"/datasets/{ds}/store/input.txt").content == b"in"
    # once the task is no longer processing, the pilot's access ends
    r = holder.post(f"/tasks/{held['task_id']}/task_actions/complete",
                    json={"instance_id": held["instance_id"]})
    assert r.status_code == 200, r.text
    assert holder.get(f"/datasets/{ds}/store/input.txt").status_code == 403


def test_client_store_methods(srv: Server, ds: str, tmp_path: Path) -> None:
    token = srv.token("alice", ["user"], ["physics"])
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 + 7))
    with Client(srv.url, token) as c:
        assert c.files.store_put(ds, "a/b.bin", src) == {"name": "a/b.bin",
                                                         "size": src.stat().st_size}
        assert c.files.store_put(ds, "c d.txt", b"spaced") == {"name": "c d.txt", "size": 6}
        assert c.files.store_get(ds, "a/b.bin", tmp_path / "got.bin") == src.stat().st_size
        assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()
        assert c.files.store_read(ds, "c d.txt") == b"spaced"
        assert set(c.files.store_list(ds)) == {"a/b.bin", "c d.txt"}
        c.files.store_delete(ds, "c d.txt")
        with pytest.raises(NotFound):
            c.files.store_get(ds, "c d.txt", tmp_path / "none")
        assert not (tmp_path / "none").exists()


async def test_async_client_store_methods(srv: Server, ds: str, tmp_path: Path) -> None:
    token = srv.token("alice", ["user"], ["physics"])
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01" * 5000)
    async with AsyncClient(srv.url, token) as c:
        assert (await c.files.store_put(ds, "x", src))["size"] == 10000
        assert await c.files.store_get(ds, "x", tmp_path / "x") == 10000
        assert (tmp_path / "x").read_bytes() == src.read_bytes()


def test_two_rest_processes_share_a_store_on_one_mount(tmp_path: Path) -> None:
    """ICEPROD_FILE_STORE names a directory (a shared mount): what one REST process stores,
    another pointed at the same directory serves, and the data dir does not hold it. (Both
    replicas use the one SQLite file of the data dir for their records, enough for a few
    requests; a real deployment shares MongoDB.)"""
    shared = tmp_path / "mount"
    env = {"ICEPROD_FILE_STORE": str(shared)}
    one = start_server(tmp_path / "data", env=env, args=["--only", "rest"])
    two = start_server(tmp_path / "data", env={"ICEPROD_FILE_STORE": f"file://{shared}"},
                       args=["--only", "rest"])
    try:
        admin = one.client(one.token("root", ["admin"]))
        ds = create_dataset(admin, "physics")
        r = admin.put(f"/datasets/{ds}/store/in/x.txt", content=b"shared bytes")
        assert r.status_code == 201, r.text
        other = two.client(two.token("root", ["admin"]))
        assert other.get(f"/datasets/{ds}/store/in/x.txt").content == b"shared bytes"
        assert set(other.get(f"/datasets/{ds}/store").json()) == {"in/x.txt"}
        assert (shared / ds / "in" / "x.txt").read_bytes() == b"shared bytes"
        assert not (tmp_path / "data" / "store").exists()
        assert other.delete(f"/datasets/{ds}/store/in/x.txt").status_code == 200
        assert admin.get(f"/datasets/{ds}/store/in/x.txt").status_code == 404
    finally:
        one.stop()
        two.stop()


def test_a_relative_file_store_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "iceprod.server", "--only", "rest", "--port", "0",
         "--data-dir", str(tmp_path)],
        env={**os.environ, "ICEPROD_FILE_STORE": "relative/dir", "ICEPROD_SECRET": "s" * 32},
        capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        "iceprod-server: ICEPROD_FILE_STORE: expected an absolute path")

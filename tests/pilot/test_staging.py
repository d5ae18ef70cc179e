"""Staging a task's files: file:// URLs, plain paths and http(s) (a real HTTP server on
127.0.0.1 that serves GET and takes PUT), transfer rules and local-name safety; file
staging confined to the pilot's staging roots (symlinks and `..` resolved), and outputs
confined to the task's directory."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from iceprod.pilot.staging import (
    StagingError,
    entries,
    entry_from_doc,
    stage_in,
    stage_out,
)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server over a directory: GET reads files, PUT writes them."""
    root = tmp_path / "web"
    root.mkdir()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            (root / self.path.lstrip("/")).write_bytes(self.rfile.read(length))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


async def test_inputs_from_file_urls_plain_paths_and_http(tmp_path: Path,
                                                          web: tuple[str, Path]) -> None:
    url, root = web
    (tmp_path / "a.txt").write_text("from a file url")
    (tmp_path / "b.txt").write_text("from a plain path")
    (root / "c.txt").write_text("from http")
    run = tmp_path / "run"
    run.mkdir()
    data = entries([
        {"remote": f"file://{tmp_path / 'a.txt'}", "movement": "input"},
        {"remote": str(tmp_path / "b.txt"), "local": "sub/renamed.txt", "movement": "both"},
        {"remote": f"{url}/c.txt", "movement": "input"},
        {"remote": str(tmp_path / "missing"), "movement": "input", "transfer": "maybe"},
        {"remote": str(tmp_path / "ignored"), "movement": "input", "transfer": False},
    ])
    size = await stage_in(data, run, roots=[str(tmp_path)])
    assert (run / "a.txt").read_text() == "from a file url"
    assert (run / "sub" / "renamed.txt").read_text() == "from a plain path"
    assert (run / "c.txt").read_text() == "from http"
    assert not (run / "missing").exists()
    assert size == len("from a file url") + len("from a plain path") + len("from http")


async def test_outputs_to_paths_and_http(tmp_path: Path, web: tuple[str, Path]) -> None:
    url, root = web
    run = tmp_path / "run"
    run.mkdir()
    (run / "out.txt").write_text("result")
    (run / "up.bin").write_bytes(b"\x00\x01" * 1000)
    dest = tmp_path / "deep" / "dir" / "out.txt"
    data = entries([
        {"remote": str(dest), "local": "out.txt", "movement": "output"},
        {"remote": f"{url}/up.bin", "movement": "output"},
        {"remote": str(tmp_path / "never"), "local": "never", "movement": "output",
         "transfer": "maybe"},
    ])
    await stage_out(data, run, roots=[str(tmp_path)])
    assert dest.read_text() == "result"
    assert (root / "up.bin").read_bytes() == b"\x00\x01" * 1000
    assert not (tmp_path / "never").exists()
    # written through a temporary name, so nothing partial is left beside it
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.txt"]


async def test_missing_files_fail_with_a_reason(tmp_path: Path, web: tuple[str, Path]) -> None:
    url, _ = web
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(StagingError, match="input not found: .*nothing.txt"):
        await stage_in(entries([{"remote": str(tmp_path / "nothing.txt"),
                                 "movement": "input"}]), run, roots=[str(tmp_path)])
    with pytest.raises(StagingError, match="input not found: http"):
        await stage_in(entries([{"remote": f"{url}/nothing.txt", "movement": "input"}]), run)
    with pytest.raises(StagingError, match="output 'gone.txt' was not produced"):
        await stage_out(entries([{"remote": str(tmp_path / "x"), "local": "gone.txt",
                                  "movement": "output"}]), run)


@pytest.mark.parametrize("doc, error", [
    ({"remote": "/x", "local": "../escape", "movement": "input"}, "inside the task directory"),
    ({"remote": "/x", "local": "/etc/passwd", "movement": "input"}, "inside the task directory"),
    ({"local": "only-local", "movement": "output"}, "has no remote location"),
    # the whole task directory (`.`) is an output only, never an input
    ({"remote": "iceprod:x", "local": ".", "movement": "input"}, "inside the task directory"),
    ({"remote": "iceprod:x", "local": ".", "movement": "both"}, "inside the task directory"),
])
def test_bad_entries_are_refused(doc: dict[str, str], error: str) -> None:
    with pytest.raises(StagingError, match=error):
        entry_from_doc(doc)


async def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="unsupported location 'gsiftp://host/x'"):
        await stage_in(entries([{"remote": "gsiftp://host/x", "movement": "input"}]), tmp_path)


def test_local_name_defaults_to_the_remote_basename() -> None:
    assert entry_from_doc({"remote": "http://h/a/b/file.dat?x=1", "movement": "input"}).local \
        == "file.dat"
    assert entry_from_doc({"remote": "/data/run/f.i3", "movement": "input"}).local == "f.i3"


async def test_file_staging_is_confined_to_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "in.txt").write_text("fine")
    secret = tmp_path / "data" / "secret"
    secret.parent.mkdir()
    secret.write_text("signing secret")
    (root / "link").symlink_to(secret)  # a symlink inside a root pointing out of it
    run = tmp_path / "run"
    run.mkdir()

    async def stage(remote: str, roots: list[str]) -> int:
        return await stage_in(entries([{"remote": remote, "local": "x",
                                        "movement": "input"}]), run, roots=roots)

    assert await stage(f"file://{root}/sub/in.txt", [str(root)]) == 4
    assert await stage(f"{root}/sub/../sub/in.txt", [str(root) + "/"]) == 4
    refused = [
        (str(secret), [], (f"staging refused: {secret} is outside this pilot's staging "
                           "roots (none configured)")),
        (f"file://{secret}", [str(root)], f"outside this pilot's staging roots ({root})"),
        (f"{root}/../data/secret", [str(root)], "outside"),
        (f"{root}/link", [str(root)], "outside"),
        (f"{root}x/in.txt", [str(root)], "outside"),  # a sibling sharing the prefix
    ]
    for remote, roots, why in refused:
        with pytest.raises(StagingError, match=re.escape(why)):
            await stage(remote, roots)
    assert (run / "x").read_text() == "fine"  # the last good input; nothing overwrote it
    with pytest.raises(StagingError, match="outside this pilot's staging roots"):
        await stage_out(entries([{"remote": str(tmp_path / "data" / "new"), "local": "x",
                                  "movement": "output"}]), run, roots=[str(root)])
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret"]


async def test_an_output_must_stay_inside_the_task_directory(tmp_path: Path) -> None:
    token = tmp_path / "pilot" / "token"
    token.parent.mkdir()
    token.write_text("pilot-token")
    run = tmp_path / "run"
    run.mkdir()
    (run / "out.txt").symlink_to(token)  # what a step could leave behind
    dest = tmp_path / "results"
    with pytest.raises(StagingError, match="output 'out.txt' points outside the task's"):
        await stage_out(entries([{"remote": str(dest / "out.txt"), "local": "out.txt",
                                  "movement": "output"}]), run, roots=[str(dest)])
    assert not dest.exists()
    # a directory output keeps its symlinks as links: the token is never copied
    (run / "dir").mkdir()
    (run / "dir" / "t").symlink_to(token)
    await stage_out(entries([{"remote": str(dest / "dir"), "local": "dir",
                              "movement": "output"}]), run, roots=[str(dest)])
    assert (dest / "dir" / "t").is_symlink()

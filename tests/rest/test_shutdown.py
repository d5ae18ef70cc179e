"""A request caught by the server's shutdown (a long poll woken after the store closed)
answers 503 with Retry-After and one INFO line, not 500 with an ERROR and a traceback; the
same failure while the server runs is still a 500."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver

from iceprod.common.config import ServerConfig
from iceprod.core.tokens import create_token
from iceprod.db import Database, all_specs
from iceprod.db.sqlite import SQLiteStore
from iceprod.rest.app import make_app
from iceprod.rest.base import AppContext, log_request
from tests.conftest import free_port

SECRET = "s" * 40


@dataclass
class Served:
    """The real app served on a free port over a store of the test's own."""

    ctx: AppContext
    store: SQLiteStore
    url: str


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = SQLiteStore(str(tmp_path / "data"))
    await store.ensure_indexes(all_specs())
    ctx = AppContext(db=Database(store),
                     config=ServerConfig(data_dir=str(tmp_path / "data"), secret=SECRET))
    app = make_app(ctx)
    app.settings["log_function"] = log_request
    port = free_port()
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    try:
        yield Served(ctx, store, f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        await store.close()


def bearer(username: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(SECRET, username, [role], [])}"}


@pytest.mark.parametrize("stopping", [True, False])
async def test_a_request_caught_by_the_shutdown_answers_503(
        served: Served, caplog: pytest.LogCaptureFixture, stopping: bool) -> None:
    await served.store.close()  # the store is gone, as at the end of a shutdown
    served.ctx.stopping = stopping
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{served.url}/datasets", headers=bearer("root", "admin"))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if not stopping:
        assert answer.status_code == 500
        assert errors  # a real failure stays loud
        return
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json() == {"code": 503,
                             "error": "the server is shutting down; try again shortly"}
    assert errors == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("iceprod")]
    assert len(ours) == 1 and ours[0].startswith("GET /datasets -> 503 the server is shutting")


async def test_a_long_poll_cancelled_as_the_loop_ends_answers_503(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """As the event loop ends, a waiting request's task is cancelled (Tornado then sends a
    500 of its own): while the server stops, that answer is a 503 with one INFO line."""
    caplog.set_level(logging.INFO)

    def handlers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if "_execute" in repr(t.get_coro())]

    async with httpx.AsyncClient(timeout=30) as client:
        poll = asyncio.ensure_future(client.get(
            f"{served.url}/task_demand", params={"wait": 20},
            headers=bearer("grid-manager", "grid")))
        while not handlers():  # the long poll's handler task exists in the server
            await asyncio.sleep(0.01)
        served.ctx.stopping = True
        for task in handlers():
            task.cancel()
        answer = await poll
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("iceprod")]
    assert ours == ["GET /task_demand -> 503 the server is shutting down (cancelled)"]

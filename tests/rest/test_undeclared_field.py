"""A repository's filter on a field of unknown shape is our bug, not the caller's: the API
answers 500 "internal server error" (naming nothing internal) and the server logs one ERROR
line naming the collection and the field, without a traceback.

No route can reach it (filters are built only in ``db/``, from typed parameters; see
``tests/test_queries_in_db.py``), so this test serves the real ``APIHandler`` machinery over
HTTP with one extra handler carrying such a bug, on a free port.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import tornado.httpserver
import tornado.web

from iceprod.common.config import ServerConfig
from iceprod.db import Database, all_specs
from iceprod.db.sqlite import SQLiteStore
from iceprod.rest.base import APIHandler, AppContext, log_request, public
from tests.conftest import free_port


class CarelessHandler(APIHandler):
    @public()
    async def get(self) -> None:
        """A handler over a repository with a bug (a filter on an undeclared field)."""
        count = await self.db.tasks._count({"status": "queued", "colour": "red"})
        self.write_json({"count": count})


async def test_an_undeclared_field_answers_500_with_one_error_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(str(tmp_path / "data"))
    await store.ensure_indexes(all_specs())
    config = ServerConfig(data_dir=str(tmp_path / "data"), secret="s" * 40)
    ctx = AppContext(db=Database(store), config=config)
    app = tornado.web.Application(
        [tornado.web.url(r"/careless$", CarelessHandler, {"ctx": ctx, "route": "/careless"})],
        log_function=log_request)
    port = free_port()
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    try:
        caplog.set_level(logging.INFO)
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/careless")
    finally:
        server.stop()
        await store.close()
    assert answer.status_code == 500
    assert answer.json() == {"code": 500, "error": "internal server error"}
    ours = [r for r in caplog.records if r.name.startswith("iceprod")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    line = ours[0]
    assert line.levelno == logging.ERROR and line.exc_info is None
    message = line.getMessage()
    assert "\n" not in message
    assert message.startswith("GET /careless -> 500")
    assert "colour: tasks does not declare this field's shape" in message
    # besides it the server logs only the access line; no traceback anywhere
    others = [r for r in caplog.records if r.name.startswith("tornado")]
    assert [r.name for r in others] == ["tornado.access"]
    assert all(r.exc_info is None for r in caplog.records)

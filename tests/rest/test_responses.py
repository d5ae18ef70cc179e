"""Response models (``resources/schemas/responses.schema.json``): every route declares what it
answers, /openapi.json documents it from the same file, answers are projected onto their
model, and with ``ICEPROD_CHECK_RESPONSES`` a document that does not match is caught (500).

The session server and every server a test starts run with the check on (tests/conftest.py),
so the rest of the suite checks the models against real answers; this file checks the
declarations and that the check can fail."""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from iceprod.common.config import ServerConfig
from iceprod.common.schema import load_schema
from iceprod.db import Database
from iceprod.rest.app import all_routes
from iceprod.rest.base import APIHandler, AppContext, public
from iceprod.rest.openapi import handler_methods, template
from iceprod.rest.responses import CHECK_ENV, ResponseMismatch, check, project, responds
from tests.conftest import Server
from tests.helpers import walk

MODELS = load_schema("responses")["$defs"]
JSON_ANSWER = re.compile(r"self\.(write_json|reply|list_page|write_page|write_preview|answer)\(")


def answering_source(handler: type, fn: Any) -> str:
    """A method's source and that of the handler's own methods it calls (one level)."""
    source = inspect.getsource(fn)
    for name in set(re.findall(r"self\.(\w+)\(", source)):
        helper = getattr(handler, name, None)
        if inspect.isfunction(helper) and helper.__module__.startswith("iceprod.rest.handlers"):
            source += inspect.getsource(helper)
    return source


def test_every_route_declares_its_response() -> None:
    """Route coverage against the route table: every verb of every route declares its
    success answer; a method that answers JSON names at least one model, and every model
    it names exists."""
    seen: set[str] = set()
    for pattern, handler in all_routes():
        for verb, fn in handler_methods(handler).items():
            where = f"{verb.upper()} {template(pattern)}"
            assert hasattr(fn, "response_models"), f"{where}: no @responds"
            assert set(fn.response_models) <= set(MODELS), where
            answers_json = JSON_ANSWER.search(answering_source(handler, fn))
            if answers_json and "application/json" not in fn.response_media:
                assert fn.response_models, f"{where}: answers JSON without a model"
            assert fn.response_models or fn.response_media or verb == "get", where
            seen.update(fn.response_models)
    # every model is used by a route or by another model (no dead definitions)
    text = (Path(__file__).parents[2] / "resources/schemas/responses.schema.json").read_text()
    referenced = set(re.findall(r'"#/\$defs/(\w+)"', text))
    assert set(MODELS) - seen - referenced == {"Error"}
    assert len(seen) > 70


def test_openapi_documents_every_success_body(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert len(ok) == 1, (verb, path)
            content = op["responses"][ok[0]].get("content", {})
            if path == "/":
                assert content == {}  # a redirect for browsers, else 404
                continue
            assert content, (verb, path)
            body = content.get("application/json", {}).get("schema")
            if body is None or path.startswith("/ui/static"):
                continue
            refs = [body] if "$ref" in body else body["anyOf"]
            for ref in refs:
                name = ref["$ref"].removeprefix("#/components/schemas/")
                assert name.startswith("responses."), (verb, path, name)
                assert name.removeprefix("responses.") in MODELS
                assert name in schemas
    task = spec["paths"]["/datasets/{dataset_id}/tasks/{task_id}"]["get"]
    assert task["responses"]["200"]["content"]["application/json"]["schema"] == {"anyOf": [
        {"$ref": "#/components/schemas/responses.Task"},
        {"$ref": "#/components/schemas/responses.HeldTask"}]}
    # one requirements definition, shared by request and response schemas
    held = schemas["responses.HeldTask"]["properties"]
    assert held["requirements"] == {"$ref": "#/components/schemas/api.requirements"}
    assert "instance_id" in held and "instance_id" not in schemas["responses.Task"]["properties"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert not [w for w, n in walk(spec) if "$ref" in n and "responses.schema" in n["$ref"]]


def test_projection_drops_what_a_model_does_not_declare() -> None:
    task = {"task_id": "a" * 32, "status": "queued", "instance_id": "i" * 32,
            "dataset_priority": 0.3, "requirements": {"cpu": 2, "bogus": 1}}
    assert project(task, "Task") == {"task_id": "a" * 32, "status": "queued",
                                     "requirements": {"cpu": 2}}
    assert project(task, "HeldTask")["instance_id"] == "i" * 32
    page = project({"a" * 32: task}, "TaskPage")
    assert "instance_id" not in page["a" * 32]
    claimed = project({"tasks": [task]}, "ClaimedTasks")
    assert claimed["tasks"][0]["instance_id"] == "i" * 32
    # free-form parts (a config, a stats record's stats) are kept whole
    stat = {"task_stat_id": "b" * 32, "stats": {"anything": {"x": 1}}, "secret": 1}
    assert project(stat, "TaskStat") == {"task_stat_id": "b" * 32,
                                         "stats": {"anything": {"x": 1}}}


def test_check_names_the_model_and_the_field() -> None:
    check({"task_id": "a" * 32, "failures": 2}, "Task", "here")
    with pytest.raises(ResponseMismatch, match=r"here: .*'Task'.*failures"):
        check({"task_id": "a" * 32, "failures": "two"}, "Task", "here")
    with pytest.raises(ResponseMismatch, match="task_id"):
        check({"status": "queued"}, "Task", "here")


# -- the check, end to end, on a real server built from the same base class -----------------


class WrongHandler(APIHandler):
    @responds("Health")
    @public()
    async def get(self) -> None:
        """Answers a document whose `backend` has the wrong type."""
        self.write_json({"status": "ok", "backend": 5, "internal": "x"})

    @responds("Health")
    @public()
    async def post(self) -> None:
        """Answers a model it does not declare."""
        self.reply({"changed": 1}, "Changed")


class UndeclaredHandler(APIHandler):
    @public()
    async def get(self) -> None:
        """Declares no model."""
        self.write_json({"status": "ok"})


class RightHandler(APIHandler):
    @responds("Health")
    @public()
    async def get(self) -> None:
        """A good answer with an internal field."""
        self.write_json({"status": "ok", "backend": "sqlite", "internal": "x"})


@asynccontextmanager
async def serve(tmp_path: Path, check_on: bool) -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP server on a free port with the three handlers above, and a client."""
    db = await Database.open(None, str(tmp_path))
    ctx = AppContext(db=db, config=ServerConfig(data_dir=str(tmp_path), secret="s" * 32),
                     check_responses=check_on)
    app = tornado.web.Application([
        (path, handler, {"ctx": ctx, "route": path})
        for path, handler in (("/wrong", WrongHandler), ("/undeclared", UndeclaredHandler),
                              ("/right", RightHandler))])
    socks = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(socks)
    try:
        async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{socks[0].getsockname()[1]}") as http:
            yield http
    finally:
        server.stop()
        await db.close()


async def test_a_wrong_document_is_caught_and_answered_500(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    async with serve(tmp_path, check_on=True) as http:
        r = await http.get("/wrong")
        assert r.status_code == 500
        assert r.json() == {"code": 500, "error": "internal server error"}
        assert "WrongHandler.get: answer does not match response model 'Health': " \
               "backend: 5 is not of type 'string'" in caplog.text
        r = await http.post("/wrong")
        assert r.status_code == 500
        assert "answers 'Changed', which it does not declare" in caplog.text
        r = await http.get("/undeclared")
        assert r.status_code == 500
        assert "UndeclaredHandler.get: declares no response model" in caplog.text
        r = await http.get("/right")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "backend": "sqlite"}  # projected


async def test_without_the_switch_answers_are_projected_not_checked(tmp_path: Path) -> None:
    async with serve(tmp_path, check_on=False) as http:
        r = await http.get("/wrong")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "backend": 5}  # "internal" dropped
        assert (await http.get("/undeclared")).json() == {"status": "ok"}


def test_the_switch_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHECK_ENV, raising=False)
    assert AppContext.__dataclass_fields__["check_responses"].default_factory() is False  # type: ignore[misc]
    monkeypatch.setenv(CHECK_ENV, "1")
    assert AppContext.__dataclass_fields__["check_responses"].default_factory() is True  # type: ignore[misc]


def test_the_session_server_checks_answers(server: Server) -> None:
    """The switch reaches the servers tests start (else the suite checks nothing)."""
    assert os.environ.get(CHECK_ENV) == "1"
    proc = Path(f"/proc/{server.proc.pid}/environ")
    if proc.exists():
        assert f"{CHECK_ENV}=1".encode() in proc.read_bytes().split(b"\0")

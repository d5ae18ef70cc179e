"""The script catalog (DRMAAtic's ``/script``; GO-Docker's recipes): admins define entries,
users list them in DRMAAtic's paginated shape and submit them as DRMAAtic tasks or batches."""

from __future__ import annotations

from urllib.parse import urlencode

from iceprod.core.scripts import check_script
from iceprod.db.store import Doc
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body, definition
from iceprod.rest.openapi import query
from iceprod.rest.responses import responds

PUT_BODY = body("scripts_put")
DEFAULT_PAGE_SIZE = 100
PAGE_NUMBER = definition("page_number")
PAGE_SIZE = definition("page_size")
MAX_PAGE: int = PAGE_NUMBER["maximum"]
MAX_PAGE_SIZE: int = PAGE_SIZE["maximum"]
FIELDS = ("name", "command", "args", "param", "groups", "is_array", "max_clock_time",
          "is_output_visible", "requirements", "job", "description", "created", "updated")
DEFAULTS: Doc = {"args": [], "param": [], "groups": [], "is_array": False,
                 "max_clock_time": None, "is_output_visible": True, "requirements": {},
                 "job": "", "description": ""}


def script_model(doc: Doc) -> Doc:
    """An entry as the API shows it (DRMAAtic's fields, then ours)."""
    return {k: doc.get(k, DEFAULTS.get(k)) for k in FIELDS}


class ScriptsHandler(APIHandler):
    @responds("ScriptPage")
    @query(page=PAGE_NUMBER, page_size=PAGE_SIZE)
    @requires("read:datasets")
    async def get(self) -> None:
        """The catalog, DRMAAtic's way: `{count, next, previous, results}`, `page` and
        `page_size` (each entry as `GET /script/{name}` answers it)."""
        page = self.int_arg("page", 1, minimum=1, maximum=MAX_PAGE) or 1
        size = self.int_arg("page_size", DEFAULT_PAGE_SIZE, minimum=1,
                            maximum=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        count, docs = await self.db.scripts.window((page - 1) * size, size)
        base = f"{self.request.protocol}://{self.request.host}{self.request.path}"

        def link(n: int) -> str:
            return f"{base}?{urlencode({'page': n, 'page_size': size})}"

        self.write_json({
            "count": count,
            "next": link(page + 1) if page * size < count else None,
            "previous": link(page - 1) if page > 1 and (page - 2) * size < count else None,
            "results": [script_model(d) for d in docs],
        })


class ScriptHandler(APIHandler):
    @responds("Script")
    @requires("read:datasets")
    async def get(self, name: str) -> None:
        """One catalog entry: its command, parameters with their types and rules, groups,
        clock time and whether outputs are visible."""
        self.write_json(script_model(await self.db.scripts.get(name)))

    @responds("Script")
    @requires("write:scripts", body=PUT_BODY)
    async def put(self, name: str) -> None:
        """Create or replace an entry (admin). `$(param.NAME)` may appear in `args` only
        as a whole argument; defaults must fit their parameter."""
        doc = {**self.body, "name": name}
        check_script(doc)
        await self.db.scripts.put(doc)
        self.write_json(script_model(await self.db.scripts.get(name)))

    @responds("Deleted")
    @requires("write:scripts")
    async def delete(self, name: str) -> None:
        """Remove an entry (datasets already submitted from it are not affected)."""
        await self.db.scripts.delete(name)
        self.write_json({"deleted": 1})


NAME = r"(?P<name>[A-Za-z0-9_.-]{1,64})"
routes = [
    (r"/script", ScriptsHandler),
    (rf"/script/{NAME}", ScriptHandler),
]

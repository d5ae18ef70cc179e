"""The web dashboard's pages and files: ``/ui/`` (one page; the browser code draws every view
from the REST API with the user's token) and ``/ui/static/...`` (its script, styles and the
vendored libraries, all shipped in the package: nothing is loaded from the network).

Auth: these routes are public on purpose. They hold no data: the page asks for a token (or
an LDAP login) and every datum then comes from the API, which checks that token as for any
client. The token is held in the page's memory only (no cookie, so no cross-site request
can carry it, and no storage a later page could read).

Every answer carries a Content-Security-Policy without inline scripts or styles, so even a
string that slipped into the page as markup could not run.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path

from iceprod.common.errors import NotFound
from iceprod.rest.base import APIHandler, public
from iceprod.rest.openapi import FILE_NAME, path
from iceprod.rest.responses import responds

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
"""``iceprod/ui``: index.html and static/ (package data)."""
STATIC_DIR = UI_DIR / "static"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain; charset=utf-8",
         ".json": "application/json; charset=utf-8"}
STATIC_MEDIA = tuple(sorted({t.split(";")[0] for t in TYPES.values()}))
"""What the dashboard's static files are served as (for the OpenAPI document)."""
LDAP_OFF = b'<meta name="iceprod-ldap" content="off">'
LDAP_ON = b'<meta name="iceprod-ldap" content="on">'
STATIC_NAME = FILE_NAME["pattern"][1:-1]


def prefers_html(accept: str) -> bool:
    """Whether an Accept header ranks HTML above JSON (a browser's does; curl's ``*/*``
    and API clients' do not)."""
    quality: dict[str, float] = {}
    for part in accept.split(","):
        kind, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[kind.strip().lower()] = q
    html = quality.get("text/html", 0.0)
    json = quality.get("application/json", quality.get("*/*", 0.0))
    return html > 0 and html > json


class PageHandler(APIHandler):
    """Security headers for everything the dashboard serves."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def send_file(self, file: Path, cache: str, body: bytes | None = None) -> None:
        if body is None:
            body, etag = _read(file)
        else:
            etag = _etag(body)
        self.set_header("Content-Type", TYPES.get(file.suffix)
                        or mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self.set_header("Cache-Control", cache)
        self.set_header("ETag", etag)
        if self.request.headers.get("If-None-Match") == etag:
            self.set_status(304)
            self.finish()
            return
        self.finish(body)


@lru_cache(maxsize=64)
def _read(file: Path) -> tuple[bytes, str]:
    body = file.read_bytes()
    return body, _etag(body)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


class RootHandler(PageHandler):
    @responds()
    @public()
    async def get(self) -> None:
        """A browser (Accept preferring text/html) is sent to the dashboard at `/ui/`;
        any other client gets the 404 this path always answered."""
        if not prefers_html(self.request.headers.get("Accept", "")):
            raise NotFound("no such route")
        self.redirect("/ui/")


class DashboardHandler(PageHandler):
    @responds(media="text/html")
    @public()
    async def get(self) -> None:
        """The dashboard (HTML). Public: the page holds no data; it logs in and reads
        everything through the API with the user's token. It says whether LDAP login is
        configured (so the page offers the form only then)."""
        page = UI_DIR / "index.html"
        body, _ = _read(page)
        if self.ctx.config.ldap_enabled:
            body = body.replace(LDAP_OFF, LDAP_ON)
        self.send_file(page, "no-cache", body)


class StaticHandler(PageHandler):
    @responds(media=STATIC_MEDIA)
    @path(name=FILE_NAME)
    @public()
    async def get(self, name: str) -> None:
        """One of the dashboard's files (script, styles, vendored libraries, licences)."""
        file = (STATIC_DIR / name).resolve()
        if not file.is_relative_to(STATIC_DIR) or not file.is_file():
            raise NotFound("no such file")
        self.send_file(file, "no-cache")


routes = [
    (r"/", RootHandler),
    (r"/ui/", DashboardHandler),
    (rf"/ui/static/(?P<name>{STATIC_NAME})", StaticHandler),
]

"""The one handler base every REST handler derives from.

It owns authentication (bearer JWT), deny-by-default authorization (``@requires`` /
``@public``), per-dataset rules for routes with a ``dataset_id``, JSON body parsing against
a schema, list parameters, and mapping errors to ``{"code": n, "error": "..."}``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, TypeVar

import tornado.web

from iceprod.common import strict_json
from iceprod.common.config import Network, ServerConfig
from iceprod.common.errors import (
    Forbidden,
    IceProdError,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
    UndeclaredField,
)
from iceprod.common.schema import validate
from iceprod.core.events import EventHub
from iceprod.db import Database
from iceprod.db.auths import allows
from iceprod.db.base import Page, Paging, Repository
from iceprod.db.store import Doc
from iceprod.rest.auth.apikeys import is_api_key
from iceprod.rest.auth.external import ExternalVerifier
from iceprod.rest.auth.ratelimit import LoginLimiter
from iceprod.rest.auth.resolver import TokenResolver
from iceprod.rest.auth.tokens import ANONYMOUS, UNBOUND_PILOT, Principal
from iceprod.rest.filestore import FileStore, make_file_store
from iceprod.rest.metrics import Metrics
from iceprod.rest.responses import ResponseMismatch, check, check_enabled, project

log = logging.getLogger(__name__)
access = logging.getLogger("tornado.access")

VERBS = ("get", "post", "put", "patch", "delete")
MAX_INT_ARG = 1_000_000_000
"""Largest integer query parameter unless a handler says otherwise (far below 64 bits)."""
MAX_LIMIT_ARG = 100_000
_INTEGER = re.compile(r"-?[0-9]{1,19}")
DATASET_REF = r"(?:[0-9a-f]{32}|[0-9]{1,18})"
"""A ``dataset_id`` in a URL: the dataset's 32-hex id, or its number (``iceprod datasets``'s
``#``), resolved to the id before anything else looks at it."""
_DATASET_ID = re.compile(r"[0-9a-f]{32}")
_DATASET_NUMBER = re.compile(r"[0-9]{1,18}")
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


class ShuttingDown(Unavailable):
    """503 for a request caught by the process's shutdown."""

    retry_after = 5


SHUTTING_DOWN = ShuttingDown("the server is shutting down; try again shortly")


@dataclass
class AppContext:
    """Everything handlers need, created once per process."""

    db: Database
    config: ServerConfig
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)
    check_responses: bool = field(default_factory=check_enabled)
    """Validate every JSON success answer against its model (``ICEPROD_CHECK_RESPONSES``)."""
    stopping: bool = False
    """Set when the process shuts down: a request that then fails unexpectedly (a long poll
    woken after the store closed) answers 503 with ``Retry-After``, not 500."""
    resolver: TokenResolver = field(init=False)
    login_limiter: LoginLimiter = field(init=False)
    external: ExternalVerifier | None = field(init=False)
    files: FileStore = field(init=False)
    events: EventHub = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.files = make_file_store(c)
        # started by the process that serves (``server.daemon``); publishing works without
        self.events = EventHub(self.db, c.events_poll_interval,
                               keep_seconds=c.events_keep_seconds)
        self.resolver = TokenResolver(self.db, c.secret, c.auth_cache_seconds)
        self.login_limiter = LoginLimiter(c.login_max_failures, c.login_window_seconds)
        self.external = ExternalVerifier(c) if c.oidc_enabled else None


@dataclass(frozen=True)
class AuthSpec:
    """What a handler method requires; read by the app builder and the OpenAPI generator."""

    scopes: tuple[str, ...]
    dataset: str | None = None
    body: Doc | None = None
    public: bool = False
    created: bool = False


def requires(
    *scopes: str, dataset: str | None = None, body: Doc | None = None, created: bool = False
) -> Callable[[F], F]:
    """Require any one of ``scopes``; with ``dataset="read"|"write"`` also the dataset's
    rules for the route's ``dataset_id``; with ``body`` a JSON body valid for that schema
    (parsed into ``self.body``). ``created`` documents a 201 answer."""
    return _guarded(AuthSpec(scopes=scopes, dataset=dataset, body=body, created=created))


def public(body: Doc | None = None, created: bool = False) -> Callable[[F], F]:
    """Mark a method as open to anyone (still parsing ``body`` if given)."""
    return _guarded(AuthSpec(scopes=(), body=body, public=True, created=created))


def _guarded(spec: AuthSpec) -> Callable[[F], F]:
    """Wrap a verb method: authorize (unless public), parse the body, then run it."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(self: APIHandler, *args: Any, **kwargs: Any) -> None:
            if not spec.public:
                self.check_scopes(spec.scopes)
                if spec.dataset and "dataset_id" in kwargs:
                    await self.authorize_dataset(kwargs["dataset_id"], spec.dataset)
            if spec.body is not None:
                self.body = self.parse_body(spec.body)
            await fn(self, *args, **kwargs)

        wrapper.auth_spec = spec  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


class APIHandler(tornado.web.RequestHandler):
    ctx: AppContext
    principal: Principal
    body: Doc
    route: str = ""
    quiet_log: bool = False
    """Set for an expected error answer, so the access log line is DEBUG (``log_request``)."""

    def initialize(self, ctx: AppContext, route: str) -> None:
        self.ctx = ctx
        self.route = route
        self.principal = ANONYMOUS
        self.body = {}
        self._t0 = time.perf_counter()

    @property
    def db(self) -> Database:
        return self.ctx.db

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")

    async def prepare(self) -> None:
        self.check_request()
        if token := self.bearer_token():
            self.principal = await self.ctx.resolver.principal(token)
        if "dataset_id" in self.path_kwargs:
            self.path_kwargs["dataset_id"] = await self.dataset_ref(
                self.path_kwargs["dataset_id"])

    async def dataset_ref(self, ref: str) -> str:
        """The dataset id a URL's ``dataset_id`` segment names: the id itself, or the id of
        the dataset with that number. Resolved before authorization, which then sees only
        ids; an anonymous caller learns nothing about which numbers exist (401 first)."""
        if _DATASET_ID.fullmatch(ref):
            return ref
        if not _DATASET_NUMBER.fullmatch(ref):
            raise NotFound("dataset_id: expected a 32-hex id or a dataset number")
        dataset_id = await self.db.datasets.id_of_number(int(ref))
        if dataset_id is None:
            if not self.principal.authenticated:
                raise Unauthorized("authentication required")
            raise NotFound(f"dataset {int(ref)} not found")
        return dataset_id

    def check_request(self) -> None:
        """Settle the client's address (for logs and limits), then refuse query parameters
        that are not valid UTF-8 (UTF-8-encoded surrogates are not) or hold a NUL: no store
        or log should see either."""
        self.request.remote_ip = client_ip(self.request, self.ctx.config.trusted_proxies)
        for name, values in self.request.query_arguments.items():
            # tornado keeps names as latin-1 text and values as bytes
            raw_name = name.encode("latin-1")
            for raw in (raw_name, *values):
                if not _clean_text(raw):
                    shown = raw_name.decode() if _clean_text(raw_name) else "query"
                    raise Invalid(f"{shown}: not valid UTF-8 text (or holds a NUL)",
                                  field=shown)

    def bearer_token(self) -> str | None:
        """The token of ``Authorization: Bearer``; an API key may also come bare in
        ``Authorization`` or in ``X-Api-Key`` (``iceprod.rest.auth.apikeys``)."""
        header = self.request.headers.get("Authorization", "").strip()
        if not header:
            key = self.request.headers.get("X-Api-Key", "").strip()
            if key and not is_api_key(key):
                raise Unauthorized("X-Api-Key: expected an API key")
            return key or None
        if is_api_key(header):
            return header
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization: expected 'Bearer <token>'")
        return token.strip()

    def check_scopes(self, scopes: tuple[str, ...]) -> None:
        if not self.principal.authenticated:
            raise Unauthorized("authentication required")
        if not any(self.principal.has(s) for s in scopes):
            if self.principal.registration_only:
                raise Forbidden(UNBOUND_PILOT)
            raise Forbidden(f"requires {' or '.join(scopes)}")

    async def authorize_dataset(self, dataset_id: str, action: str) -> None:
        """Check the dataset's read/write rules; admin and system bypass them; a share token
        reaches only its own dataset."""
        p = self.principal
        scope = p.scope or ""
        if scope.startswith("dataset:") and scope.split(":")[1] != dataset_id:
            raise Forbidden("token is scoped to another dataset")
        if p.privileged:
            if await self.db.datasets.find(dataset_id) is None:
                raise NotFound("dataset not found")
            return
        if "pilot" in p.roles and not p.has("read:datasets"):
            raise Forbidden("pilots may not access datasets directly")
        rules = await self.db.auths.find(dataset_id)
        if rules is None:
            raise NotFound("dataset not found")
        if scope.startswith("dataset:"):
            if action != "read":
                raise Forbidden("share tokens are read-only")
            return
        if not allows(rules, action, p.username, p.groups):
            raise Forbidden(f"no {action} access to dataset {dataset_id}")

    def parse_body(self, schema: Doc) -> Doc:
        """The body, parsed strictly (depth, NaN/Infinity, surrogates, 64-bit integers:
        see ``strict_json``) and then checked against ``schema``."""
        raw = self.request.body
        data: Any = strict_json.loads(raw) if raw else {}
        validate(data, schema)
        return data

    # -- list parameters -------------------------------------------------------------------

    def keys_arg(self) -> list[str] | None:
        raw = self.get_argument("keys", "")
        return [k for k in raw.split("|") if k] or None

    def status_arg(self) -> list[str] | None:
        raw = self.get_argument("status", "")
        return [s for s in raw.split("|") if s] or None

    def int_arg(self, name: str, default: int | None = None, minimum: int = 0,
                maximum: int = MAX_INT_ARG) -> int | None:
        """An integer query parameter within ``minimum..maximum`` (plain decimal digits)."""
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return default
        if not _INTEGER.fullmatch(raw):
            raise Invalid(f"{name}: must be an integer", field=name)
        value = int(raw)
        if value < minimum:
            raise Invalid(f"{name}: must be >= {minimum}", field=name)
        if value > maximum:
            raise Invalid(f"{name}: must be <= {maximum}", field=name)
        return value

    def paging(self) -> Paging:
        """The page a list request asks for: its ``keys``, ``limit`` and ``after``."""
        return Paging(self.keys_arg(), self.int_arg("limit", minimum=1, maximum=MAX_LIMIT_ARG),
                      self.get_argument("after", None))

    async def list_page(self, repo: Repository, fetch: Callable[[Paging], Awaitable[Page]],
                        shown: Callable[[Doc], Doc] | None = None,
                        model: str | None = None) -> None:
        """Answer the page of ``repo``'s documents that ``fetch`` (one of its typed ``page``
        methods) reads for the request's ``keys``, ``limit`` and ``after`` (``shown`` may
        add to each document), as response model ``model`` (default: the method's first)."""
        page = await fetch(self.paging())
        docs = [shown(d) for d in page.docs] if shown else page.docs
        self.write_page(docs, repo.id_field, page.next_after, model)

    def write_page(self, docs: list[Doc], id_field: str, next_after: str | None,
                   model: str | None = None) -> None:
        """Lists answer ``{id: doc}``; the next page's cursor travels in ``X-Next-After``."""
        if next_after:
            self.set_header("X-Next-After", next_after)
        self.reply({d[id_field]: d for d in docs}, model)

    # -- responses ----------------------------------------------------------------------------

    def write_json(self, data: Any, status: int = 200) -> None:
        self.reply(data, status=status)

    def reply(self, data: Any, model: str | None = None, status: int = 200) -> None:
        """Answer ``data`` as response model ``model`` (by default the first the method
        declares with ``@responds``): projected onto the model, so undeclared (internal)
        fields never leave the server, and with ``ICEPROD_CHECK_RESPONSES`` on, validated
        against it (a mismatch raises ``ResponseMismatch``: logged, answered 500)."""
        method = (self.request.method or "").lower()
        models = getattr(getattr(type(self), method, None), "response_models", ())
        name = model or (models[0] if models else None)
        where = f"{type(self).__name__}.{method}"
        if name is not None:
            if name not in models:
                raise ResponseMismatch(f"{where}: answers {name!r}, which it does not "
                                       "declare with @responds")
            data = project(data, name)
        if self.ctx.check_responses:
            if name is None:
                raise ResponseMismatch(f"{where}: declares no response model")
            check(data, name, where)
        self.set_status(status)
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, UndeclaredField):
            message = "internal server error"  # our bug: the log names it, not the answer
        elif isinstance(exc, IceProdError):
            message = exc.message
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = "internal server error"
        if (retry_after := getattr(exc, "retry_after", None)) is not None:
            self.set_header("Retry-After", str(retry_after))
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        body = {"code": status_code, "error": message}
        if self.ctx.check_responses:
            check(body, "Error", f"{type(self).__name__}.write_error")
        self.finish(json.dumps(body))

    def _shutdown_casualty(self, exc: BaseException | None, status_code: int = 500) -> bool:
        """A failure while the process shuts down that is not one of our answers: an
        exception (a store already closed), or the request's task cancelled as the event
        loop ends (Tornado then sends a 500 with no exception)."""
        return self.ctx.stopping and status_code >= 500 and not isinstance(
            exc, IceProdError | tornado.web.HTTPError)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if self._shutdown_casualty(exc, status_code):
            self.quiet_log = True
            cause = f" ({type(exc).__name__}: {exc})" if exc is not None else " (cancelled)"
            log.info("%s %s -> 503 the server is shutting down%s", self.request.method,
                     self.request.path, cause)
            exc = SHUTTING_DOWN
            kwargs["exc_info"] = (ShuttingDown, exc, None)
        if isinstance(exc, IceProdError):
            status_code = exc.code
            kwargs["reason"] = None
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if self._shutdown_casualty(value):
            return  # send_error answers 503 and logs it
        if isinstance(value, UndeclaredField):
            log.error("%s %s -> 500 a repository's filter is refused: %s",
                      self.request.method, self.request.path, value.message)
            return
        if isinstance(value, IceProdError):
            self.quiet_log = value.quiet
            log.log(logging.DEBUG if value.quiet else logging.INFO, "%s %s -> %d %s", self.request.method, self.request.path, value.code,
                     value.message)
            return
        super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        self.ctx.metrics.observe_request(
            self.request.method or "", self.route, self.get_status(),
            time.perf_counter() - self._t0,
        )


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: errors at WARNING/ERROR as Tornado does, except expected answers
    (an idle pilot polling for work every few seconds) at DEBUG."""
    status = handler.get_status()
    if getattr(handler, "quiet_log", False):
        level = logging.DEBUG
    elif status < 400:
        level = logging.INFO
    else:
        level = logging.WARNING if status < 500 else logging.ERROR
    access.log(level, "%d %s %.2fms", status, handler._request_summary(),
               1000.0 * handler.request.request_time())


def _clean_text(raw: bytes) -> bool:
    """Valid UTF-8 without NUL (UTF-8 encoded surrogates are invalid UTF-8)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in raw


def client_ip(request: Any, trusted: tuple[Network, ...]) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says in ``X-Real-Ip`` /
    ``X-Forwarded-For`` (its last address a trusted proxy did not add). Forwarding headers
    from anyone else are ignored: they would let a client choose its address in our logs."""
    peer = _peer_address(request)
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
    for address in reversed([a for a in forwarded if a]):
        if not _valid_ip(address):
            break
        if not _in(address, trusted):
            return address
    real = request.headers.get("X-Real-Ip", "").strip()
    return real if _valid_ip(real) else peer


def _peer_address(request: Any) -> str:
    address = getattr(request.connection.context, "address", None) if request.connection \
        else None
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(request.remote_ip or "")


def _valid_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class NotFoundHandler(APIHandler):
    """Any URL no route matches."""

    async def prepare(self) -> None:
        raise NotFound("no such route")


class OwnershipMixin:
    """Checks that a pilot token acts only on its own pilot record and the tasks that pilot
    holds. The token names its pilot (``pilot_id``); a registration token (naming none) acts
    on nothing. That the named pilot is still active is checked when the token is resolved."""

    principal: Principal
    db: Database

    def check_pilot_id(self, pilot_id: str) -> None:
        """Privileged callers act on any pilot, a grid manager (scope ``grid``) on pilots
        registered for a grid (checked in ``check_pilot``); a pilot token only on the one it
        names."""
        p = self.principal
        if p.privileged or p.pilot_id == pilot_id or p.has("grid"):
            return
        if p.registration_only:
            raise Forbidden(UNBOUND_PILOT)
        raise Forbidden("pilot_id: not your pilot")

    async def check_pilot(self, pilot_id: str) -> Doc:
        self.check_pilot_id(pilot_id)
        p = self.principal
        # the record the token's check read for this request, else the store's
        doc = dict(p.pilot) if p.pilot is not None and p.pilot_id == pilot_id \
            else await self.db.pilots.get(pilot_id)
        if not (p.privileged or p.pilot_id == pilot_id) and not doc.get("grid_id"):
            raise Forbidden("pilot_id: not a pilot of a grid")
        return doc

    async def check_task_holder(self, task: Doc) -> None:
        """A non-privileged caller must hold the task through the pilot its token names."""
        p = self.principal
        if p.privileged:
            return
        if p.registration_only:
            raise Forbidden(UNBOUND_PILOT)
        if not p.pilot_id or task.get("pilot_id") != p.pilot_id:
            raise Forbidden("task is not held by your pilot")

"""Runs the REST API and the server's background loops in one asyncio process, or a grid
manager alone (``serve_grid``: a REST client holding a URL and a token, nothing else)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from pathlib import Path

import tornado.httpserver

from iceprod.client import errors as api_errors
from iceprod.client._async import AsyncClient
from iceprod.common.config import ServerConfig
from iceprod.common.errors import Invalid
from iceprod.core.events import EventHub
from iceprod.core.tokens import create_token
from iceprod.db import Database
from iceprod.rest.app import make_app
from iceprod.rest.base import AppContext
from iceprod.rest.filestore import make_file_store
from iceprod.rest.storeops import remover
from iceprod.server.grids.manager import (
    GridManager,
    GridsFile,
    TokenSource,
    chosen_grids,
    load_grids,
    require_pilot_url,
)
from iceprod.server.scheduler import Scheduler

log = logging.getLogger(__name__)


async def serve(config: ServerConfig, only: str | None = None, grid: str | None = None) -> None:
    grids = load_grids(config.grid_config) if only in (None, "grid") else GridsFile()
    db = await Database.open(config.db_url, config.data_dir)
    log.info("store: %s (%s)", db.store.backend, config.masked_db_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = None
    port: int | None = None
    if only in (None, "rest"):
        ctx = AppContext(db=db, config=config)
        app = make_app(ctx)
        # buffered JSON bodies stay small; the file store's streamed uploads raise this limit
        # for their own request to ICEPROD_MAX_FILE_BYTES (filestore.StoreHandler.prepare).
        # No xheaders: forwarding headers count only from ICEPROD_TRUSTED_PROXIES
        # (base.client_ip), never from any client.
        server = tornado.httpserver.HTTPServer(
            app, max_body_size=2 * config.max_log_bytes + (1 << 20)
        )
        try:
            sock = socket.create_server((config.host, config.port), reuse_port=False)
        except OSError as e:
            raise Invalid(f"--port: cannot listen on {config.host}:{config.port}: "
                          f"{os.strerror(e.errno) if e.errno else e}") from None
        sock.setblocking(False)
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        log.info("iceprod-server serving on http://%s:%d", config.host, port)
    # one events hub per process: the API's reads the store's log (wake-ups, /events);
    # a scheduler alone only publishes
    hub = ctx.events if server is not None else EventHub(db)
    if server is not None:
        await hub.start()
    tasks = []
    if only in (None, "scheduler"):
        # with the API in this process, /metrics counts the rounds (tests wait on it)
        on_round = None if server is None else functools.partial(
            ctx.metrics.inc, "iceprod_scheduler_rounds_total",
            help="scheduler rounds done while holding the lease")
        files = remover(make_file_store(config))  # the archive policy empties file stores
        tasks.append(asyncio.create_task(
            Scheduler(db, config, on_round, files, events=hub).run(stop)))
    grid_task = None
    if grids.grids and port is not None:
        # the embedded grid manager is a client of this process's own API, like any other
        api = AsyncClient(local_url(config.host, port))
        manager = GridManager(api, config, grids, require_pilot_url(config, grids, port), grid,
                              token=SelfToken(config.secret))
        grid_task = asyncio.create_task(manager.run(stop))
    await stop.wait()
    log.info("shutting down")
    if server is not None:
        ctx.stopping = True  # a request failing from here on answers 503, not 500
    if grid_task is not None:
        # local pilots stop and report their tasks while the API still serves
        await asyncio.gather(grid_task, return_exceptions=True)
    await hub.stop()  # ends event streams and waiting claims' wake-ups
    if server is not None:
        server.stop()
        await server.close_all_connections()
    # the scheduler ends its round and releases its lease (a standby takes over at once);
    # one stuck longer than that is cancelled, and releases it on the way out
    if tasks:
        _, stuck = await asyncio.wait(tasks, timeout=SCHEDULER_STOP_SECONDS)
        for t in stuck:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await db.close()
    log.info("stopped")


SCHEDULER_STOP_SECONDS = 10.0
GRID_SUBJECT = "iceprod-grid-manager"
SELF_TOKEN_SECONDS = 86400


class SelfToken:
    """The embedded grid manager's token (role ``grid``), minted in memory from the secret
    this process holds, and minted again when half its life is gone."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.token = ""
        self.renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self.renew_at:
            self.token = create_token(self.secret, GRID_SUBJECT, ["grid"],
                                      exp=SELF_TOKEN_SECONDS)
            self.renew_at = now + SELF_TOKEN_SECONDS / 2
        return self.token


def local_url(host: str, port: int) -> str:
    """This process's own API on the address it listens on (a wildcard is loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def file_token(path: str) -> TokenSource:
    """Reads the token file on every call, so an operator may replace the token in place."""

    def read() -> str:
        token = Path(path).read_text().strip()
        if not token:
            raise OSError(f"{path} is empty")
        return token

    return read


async def serve_grid(config: ServerConfig, only: str | None, token_file: str | None) -> None:
    """``--only grid``: run the grid manager as a REST client of ``ICEPROD_URL`` with the
    token in ``token_file``; no database is opened and no secret is read."""
    grids = load_grids(config.grid_config)
    if not chosen_grids(grids, only):
        raise Invalid("ICEPROD_GRID_CONFIG: no grids to manage")
    if not token_file:
        raise Invalid("--token-file: --only grid needs a token of role grid (--token-file or "
                      "ICEPROD_TOKEN_FILE)")
    token = file_token(token_file)
    try:
        first = token()
    except OSError as e:
        raise Invalid(f"--token-file: cannot read the token: {e}") from None
    url = require_pilot_url(config, grids, None)
    api = AsyncClient(url, first)
    await check_access(api)
    manager = GridManager(api, config, grids, url, only, token=token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.run(stop)
    log.info("stopped")


async def check_access(api: AsyncClient) -> None:
    """Refuse to start with a token the server refuses; an unreachable server is only
    logged (the rounds retry until it answers)."""
    try:
        await api.grids.demand()
    except (api_errors.Unauthorized, api_errors.Forbidden) as e:
        await api.aclose()
        raise Invalid(f"--token-file: the server at {api.url} refuses the token: {e}") from None
    except api_errors.APIError as e:
        log.warning("grids: the server at %s does not answer yet: %s", api.url, e)

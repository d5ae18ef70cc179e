"""Runs the REST API and the server's background loops in one asyncio process."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket

import tornado.httpserver

from iceprod.common.config import ServerConfig
from iceprod.common.errors import Invalid
from iceprod.db import Database
from iceprod.rest.app import make_app
from iceprod.rest.base import AppContext
from iceprod.server.grids.manager import GridManager, GridsFile, load_grids, require_pilot_url
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
    tasks = []
    if only in (None, "scheduler"):
        # with the API in this process, /metrics counts the rounds (tests wait on it)
        on_round = None if server is None else functools.partial(
            ctx.metrics.inc, "iceprod_scheduler_rounds_total",
            help="scheduler rounds done while holding the lease")
        tasks.append(asyncio.create_task(Scheduler(db, config, on_round).run(stop)))
    grid_task = None
    if grids.grids:
        manager = GridManager(db, config, grids, require_pilot_url(config, grids, port), grid)
        grid_task = asyncio.create_task(manager.run(stop))
    await stop.wait()
    log.info("shutting down")
    if grid_task is not None:
        # local pilots stop and report their tasks while the API still serves
        await asyncio.gather(grid_task, return_exceptions=True)
    if server is not None:
        server.stop()
        await server.close_all_connections()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await db.close()
    log.info("stopped")

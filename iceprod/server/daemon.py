"""Runs the REST API and the server's background loops in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import tornado.httpserver

from iceprod.common.config import ServerConfig
from iceprod.db import Database
from iceprod.rest.app import make_app
from iceprod.rest.base import AppContext

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 30.0


async def reconcile_leases(db: Database) -> None:
    """Tasks whose pilot went silent past its lease go back to waiting."""
    expired = await db.tasks.expire_leases()
    if expired:
        log.info("requeued %d task(s) with expired leases", expired)


async def every(interval: float, job: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("background job %s failed", getattr(job, "__name__", job))
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


async def serve(config: ServerConfig, only: str | None = None) -> None:
    db = await Database.open(config.db_url, config.data_dir)
    log.info("store: %s (%s)", db.store.backend, config.masked_db_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = None
    if only in (None, "rest"):
        ctx = AppContext(db=db, config=config)
        app = make_app(ctx)
        server = tornado.httpserver.HTTPServer(
            app, max_body_size=2 * config.max_log_bytes + (1 << 20), xheaders=True
        )
        sock = socket.create_server((config.host, config.port), reuse_port=False)
        sock.setblocking(False)
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        log.info("iceprod-server serving on http://%s:%d", config.host, port)
    tasks = []
    if only in (None, "scheduler"):
        tasks.append(asyncio.create_task(
            every(RECONCILE_INTERVAL, lambda: reconcile_leases(db), stop)))
    await stop.wait()
    log.info("shutting down")
    if server is not None:
        server.stop()
        await server.close_all_connections()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await db.close()
    log.info("stopped")

"""Health, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from iceprod.common.states import statuses
from iceprod.core.maintenance import get_state, health
from iceprod.rest.base import APIHandler, public

GAUGE_TTL = 10.0


class HealthHandler(APIHandler):
    @public()
    async def get(self) -> None:
        """Liveness and store reachability, and `maintenance`: `{status: on|off, message,
        since, drained_nodes}`."""
        state = await get_state(self.db)
        self.write_json({"status": "ok", "backend": self.db.store.backend,
                         "uptime": round(time.time() - self.ctx.started, 3),
                         "maintenance": health(state)})


class OpenAPIHandler(APIHandler):
    @public()
    async def get(self) -> None:
        """The OpenAPI 3.1 description of every route."""
        self.write_json(self.application.settings["openapi"])


class MetricsHandler(APIHandler):
    @public()
    async def get(self) -> None:
        """Prometheus metrics (text format): requests by route template, tasks by status,
        maintenance and drained nodes."""
        gauges = dict(await self._gauges())
        state = await get_state(self.db)  # not cached: an operator's switch shows at once
        gauges["iceprod_maintenance"] = (
            "1 while the server is in maintenance", {(): int(state.general is not None)})
        gauges["iceprod_drained_nodes"] = (
            "sites, hosts or grids drained", {(): len(state.nodes)})
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.ctx.metrics.render(gauges))

    async def _gauges(self) -> dict[str, Any]:
        cache = self.application.settings["gauge_cache"]
        now = time.monotonic()
        if cache.get("at", -GAUGE_TTL) + GAUGE_TTL > now:
            return cache["gauges"]
        by_status = {s: 0 for s in statuses("task")}
        by_status.update(await self.db.tasks.status_counts())
        ds = {s: 0 for s in statuses("dataset")}
        ds.update(await self.db.datasets.status_counts())
        gauges = {
            "iceprod_tasks": ("tasks by status", {(("status", k),): v for k, v in by_status.items()}),
            "iceprod_datasets": ("datasets by status", {(("status", k),): v for k, v in ds.items()}),
            "iceprod_uptime_seconds": ("seconds since start", {(): time.time() - self.ctx.started}),
        }
        cache.update(at=now, gauges=gauges)
        return gauges


routes = [
    (r"/healthz", HealthHandler),
    (r"/openapi.json", OpenAPIHandler),
    (r"/metrics", MetricsHandler),
]

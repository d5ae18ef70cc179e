"""Health, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from iceprod.common.states import statuses
from iceprod.common.timeutil import parse
from iceprod.core.maintenance import get_state, health
from iceprod.db.settings import METRICS_SNAPSHOT
from iceprod.rest.base import APIHandler, public
from iceprod.rest.responses import responds


class HealthHandler(APIHandler):
    @responds("Health")
    @public()
    async def get(self) -> None:
        """Liveness and store reachability, and `maintenance`: `{status: on|off, message,
        since, drained_nodes}`."""
        state = await get_state(self.db)
        self.write_json({"status": "ok", "backend": self.db.store.backend,
                         "uptime": round(time.time() - self.ctx.started, 3),
                         "maintenance": health(state)})


class OpenAPIHandler(APIHandler):
    @responds("OpenAPI")
    @public()
    async def get(self) -> None:
        """The OpenAPI 3.1 description of every route."""
        self.write_json(self.application.settings["openapi"])


class MetricsHandler(APIHandler):
    @responds(media="text/plain")
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
        """Tasks and datasets by status as the scheduler last counted them (one document
        read: a scrape never counts), with the snapshot's age; uptime."""
        gauges: dict[str, Any] = {
            "iceprod_uptime_seconds": ("seconds since start", {(): time.time() - self.ctx.started}),
        }
        snap = await self.db.settings.get_value(METRICS_SNAPSHOT)
        if snap is None:
            return gauges  # no scheduler has counted yet
        for name, kind in (("iceprod_tasks", "task"), ("iceprod_datasets", "dataset")):
            counts = {s: 0 for s in statuses(kind)}
            counts.update(snap["value"].get(name.removeprefix("iceprod_"), {}))
            gauges[name] = (f"{kind}s by status (counted by the scheduler)",
                            {(("status", k),): v for k, v in counts.items()})
        gauges["iceprod_status_counts_age_seconds"] = (
            "seconds since the scheduler counted tasks and datasets",
            {(): max(0.0, time.time() - parse(snap["updated"]))})
        return gauges


routes = [
    (r"/healthz", HealthHandler),
    (r"/openapi.json", OpenAPIHandler),
    (r"/metrics", MetricsHandler),
]

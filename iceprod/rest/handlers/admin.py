"""Operators' switches: server-wide maintenance and per-node drain (GO-Docker's routes).

`GET /admin/maintenance` answers the general and per-node status; `POST
/admin/maintenance/{node}/{status}` turns it on or off (`node`: `all` for the whole server,
else a site, pilot host or grid name). The state and what it does live in
``iceprod.core.maintenance``."""

from __future__ import annotations

from iceprod.common.errors import Invalid
from iceprod.core.maintenance import check_node, get_state, set_maintenance
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body, definition
from iceprod.rest.openapi import path
from iceprod.rest.responses import responds

SET_BODY = body("maintenance_set")


class MaintenanceHandler(APIHandler):
    @responds("Maintenance")
    @requires("maintenance")
    async def get(self) -> None:
        """Maintenance status: `{general: {status, message, retry_after, since, by},
        nodes: {node: {...}}}` (the drained nodes)."""
        self.write_json((await get_state(self.db)).as_doc())


class MaintenanceSetHandler(APIHandler):
    @responds("Maintenance")
    @path(node=definition("maintenance_node"), status=definition("maintenance_status"))
    @requires("maintenance", body=SET_BODY)
    async def post(self, node: str, status: str) -> None:
        """Turn maintenance (`all`) or a node's drain on or off, with an optional `message`
        and `retry_after` (seconds); answers the new status."""
        check_node(node)
        if status not in ("on", "off"):
            raise Invalid("status: must be on or off", field="status")
        state = await set_maintenance(
            self.db, node, status == "on", actor=self.principal.username,
            message=self.body.get("message"), retry_after=self.body.get("retry_after"))
        await audit(self, "maintenance", detail={
            "node": node, "status": status, "message": self.body.get("message"),
            "retry_after": self.body.get("retry_after")})
        self.write_json(state.as_doc())


routes = [
    (r"/admin/maintenance", MaintenanceHandler),
    (r"/admin/maintenance/(?P<node>[^/]+)/(?P<status>[^/]+)", MaintenanceSetHandler),
]

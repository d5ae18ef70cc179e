"""Projects: members (users and groups) and quotas (cores, CPU-hours per period, stored
bytes). Admins manage them; members read their own project, its quota and its usage."""

from __future__ import annotations

from iceprod.common.errors import Forbidden
from iceprod.core.projects import is_member
from iceprod.core.quota import project_load
from iceprod.db.store import Doc
from iceprod.rest.audit import audit
from iceprod.rest.base import APIHandler, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.openapi import PAGE, query
from iceprod.rest.responses import responds
from iceprod.rest.storeops import stored_bytes

CREATE_BODY = body("projects_create")
UPDATE_BODY = body("projects_update")
QUOTA_BODY = body("project_quota")


class ProjectReader(APIHandler):
    async def readable_project(self, name: str) -> Doc:
        """The project, if the caller is a member or reads accounts (else 403)."""
        doc = await self.db.projects.get(name)
        if not self.principal.has("read:accounts") and not is_member(doc, self.principal):
            raise Forbidden(f"project {name}: you are not a member")
        return doc


class ProjectsHandler(APIHandler):
    @responds("ProjectPage")
    @query(**PAGE)
    @requires("account")
    async def get(self) -> None:
        """Projects as `{name: project}`: every project for admins (paged), else the
        caller's own."""
        p = self.principal
        if p.has("read:accounts"):
            await self.list_page(self.db.projects, self.db.projects.page)
            return
        docs = await self.db.projects.of_member(p.username, p.groups)
        self.write_page(docs, "name", None)

    @responds("Created")
    @requires("facility", body=CREATE_BODY, created=True)
    async def post(self) -> None:
        """Create a project (409 when the name is taken)."""
        b = self.body
        doc = self.db.projects.new_doc(b["name"], b.get("description", ""), b.get("users", []),
                                       b.get("groups", []), _quota(b.get("quota") or {}))
        await self.db.projects.create(doc)
        await audit(self, "project.create", detail={"name": doc["name"], "users": doc["users"],
                                                   "groups": doc["groups"],
                                                   "quota": doc.get("quota")})
        self.write_json({"result": doc["name"]}, 201)


def _quota(quota: Doc) -> Doc:
    return {k: v for k, v in quota.items() if v is not None}


class ProjectHandler(ProjectReader):
    @responds("Project")
    @requires("account")
    async def get(self, name: str) -> None:
        """One project (members and admins)."""
        self.write_json(await self.readable_project(name))

    @responds("Project")
    @requires("facility", body=UPDATE_BODY)
    async def put(self, name: str) -> None:
        """Change a project's description or members (the lists given replace the old)."""
        doc = await self.db.projects.update(name, dict(self.body))
        await audit(self, "project.update", detail={"name": name, **self.body})
        self.write_json(doc)

    @responds("Empty")
    @requires("facility")
    async def delete(self, name: str) -> None:
        """Delete a project; its datasets keep its name (and no quota holds them back)."""
        await self.db.projects.delete(name)
        await audit(self, "project.delete", detail={"name": name})
        self.write_json({})


class ProjectQuotaHandler(ProjectReader):
    @responds("Quota")
    @requires("account")
    async def get(self, name: str) -> None:
        """A project's quota (members and admins)."""
        self.write_json((await self.readable_project(name)).get("quota") or {})

    @responds("Quota")
    @requires("facility", body=QUOTA_BODY)
    async def put(self, name: str) -> None:
        """Set quota fields (`null` removes one: no limit); answers the whole quota. Work
        over the new quota waits from the next queueing round."""
        doc = await self.db.projects.set_quota(name, dict(self.body))
        await audit(self, "project.quota", detail={"name": name, "quota": dict(self.body)})
        self.write_json(doc.get("quota") or {})


class ProjectUsageHandler(ProjectReader):
    @responds("ProjectUsage")
    @requires("account")
    async def get(self, name: str) -> None:
        """What the project holds against its quota now, and what holds its work back:
        `{cores_in_use, core_hours, period_days, stored_bytes, quota, blockers}`."""
        doc = await self.readable_project(name)
        load = await project_load(self.db, doc, everything=True)
        stored = 0
        size = stored_bytes(self.ctx.files)
        for dataset_id in await self.db.projects.dataset_ids(name):
            stored += await size(dataset_id)
        self.write_json({
            "project": name, "quota": doc.get("quota") or {},
            "cores_in_use": load.cores_held, "core_hours": round(load.core_hours, 6),
            "period_days": load.period_days, "stored_bytes": stored,
            "blockers": load.blockers(),
        })


N = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
routes = [
    (r"/projects", ProjectsHandler),
    (rf"/projects/{N}", ProjectHandler),
    (rf"/projects/{N}/quota", ProjectQuotaHandler),
    (rf"/projects/{N}/usage", ProjectUsageHandler),
]

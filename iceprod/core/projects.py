"""Project membership: who may submit to or read a project, and a submitter's default
project."""

from __future__ import annotations

from typing import Protocol

from iceprod.common.errors import Forbidden, Invalid
from iceprod.db import Database
from iceprod.db.projects import DEFAULT_PROJECT
from iceprod.db.store import Doc


class Member(Protocol):
    @property
    def username(self) -> str: ...

    @property
    def groups(self) -> tuple[str, ...]: ...


def is_member(project: Doc, who: Member) -> bool:
    """The ``default`` project is everyone's; another lists the user or one of its groups."""
    if project.get("name") == DEFAULT_PROJECT:
        return True
    return who.username in (project.get("users") or []) \
        or bool(set(who.groups) & set(project.get("groups") or []))


async def default_project(db: Database, who: Member) -> str:
    """A submitter's default project: the first (by name) listing the user by name, else
    the first listing one of its groups, else ``default``."""
    projects = [p for p in await db.projects.of_member(who.username, who.groups)
                if p["name"] != DEFAULT_PROJECT]
    for p in projects:
        if who.username in (p.get("users") or []):
            return str(p["name"])
    return str(projects[0]["name"]) if projects else DEFAULT_PROJECT


async def project_for_submission(db: Database, who: Member, asked: str | None,
                                 privileged: bool) -> str:
    """The project a new dataset joins: the one asked for (which must exist, and have the
    submitter as a member unless privileged), else the submitter's default."""
    if asked is None:
        return await default_project(db, who)
    if asked == DEFAULT_PROJECT:
        return asked
    project = await db.projects.find(asked)
    if project is None:
        raise Invalid(f"project: no project {asked!r}", field="project")
    if not privileged and not is_member(project, who):
        raise Forbidden(f"project: you are not a member of {asked!r}")
    return asked

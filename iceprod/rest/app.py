"""Builds the Tornado application from the explicit list of handler modules.

Deny by default: building fails if any handler method carries neither ``@requires`` nor
``@public``.
"""

from __future__ import annotations

import re
from types import ModuleType

import tornado.web

from iceprod.rest.base import DATASET_REF, AppContext, NotFoundHandler, log_request
from iceprod.rest.handlers import (
    admin,
    archive,
    audit,
    auths,
    config,
    dashboard,
    datasets,
    events,
    explain,
    files,
    filestore,
    grids,
    groups,
    jobs,
    login,
    logs,
    pilots,
    projects,
    roles,
    system,
    task_stats,
    tasks,
    ui,
    usage,
    users,
)
from iceprod.rest.handlers.dialects import apikeys, batches, drmaatic, scripts
from iceprod.rest.openapi import build as build_openapi
from iceprod.rest.openapi import handler_methods, template

HANDLER_MODULES: tuple[ModuleType, ...] = (
    system, datasets, config, jobs, tasks, task_stats, logs, files, filestore, grids, pilots,
    roles, groups, users, login, auths, audit, admin, explain, projects, usage, archive,
    events, dashboard, ui, scripts, drmaatic, batches, apikeys,
)


_DATASET_GROUP = re.compile(r"\(\?P<dataset_id>\[0-9a-f\]\{32\}\)")
DATASET_GROUP = f"(?P<dataset_id>{DATASET_REF})"
"""What a ``dataset_id`` path segment documents: the 32-hex id or the dataset's number."""
LOOSE_DATASET_GROUP = "(?P<dataset_id>[^/]+)"
"""What it matches: any segment, so ``APIHandler.prepare`` can resolve a number and answer
a malformed one with what is expected (instead of "no such route")."""


def all_routes() -> list[tuple[str, type]]:
    """Every route, with ``dataset_id`` documented as an id or a dataset number."""
    return [(_DATASET_GROUP.sub(lambda _: DATASET_GROUP, pattern), handler)
            for module in HANDLER_MODULES for pattern, handler in module.routes]


def matching_pattern(pattern: str) -> str:
    """The regex tornado matches a route with (a loose ``dataset_id`` segment)."""
    return pattern.replace(DATASET_GROUP, LOOSE_DATASET_GROUP)


def check_auth(routes: list[tuple[str, type]]) -> None:
    for pattern, handler in routes:
        for verb, fn in handler_methods(handler).items():
            if not hasattr(fn, "auth_spec"):
                raise RuntimeError(
                    f"{handler.__name__}.{verb} ({pattern}) has neither @requires nor @public"
                )


def make_app(ctx: AppContext) -> tornado.web.Application:
    routes = all_routes()
    check_auth(routes)
    rules = [
        tornado.web.url(matching_pattern(pattern) + "$", handler,
                        {"ctx": ctx, "route": template(pattern)})
        for pattern, handler in routes
    ]
    return tornado.web.Application(
        rules,
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx, "route": "unmatched"},
        openapi=build_openapi(routes),
        compress_response=True,
        log_function=log_request,
    )

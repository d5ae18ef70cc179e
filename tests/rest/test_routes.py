"""Route coverage checked against two independent sources: the route table the server is
built from, and a list kept by hand from the IceProd REST API this server reimplements.

``SEED_API`` is the seed API's route list, copied by hand (verb and path as it documents
them); each maps to our route, or is listed in ``ABSENT`` with the reason it is left out.
``OURS_ONLY`` lists, with a reason, every route we serve that the seed API does not have. A
route added to the table, or dropped from it, without updating these lists fails here; and
every listed route must be answered by a running server and documented in ``/openapi.json``
(not just generated from the same table).
"""

from __future__ import annotations

import re

import httpx

from iceprod.rest.app import all_routes
from iceprod.rest.openapi import handler_methods, template
from tests.conftest import Server

# The seed API, section by section, as its documentation lists it.
SEED_API = """
GET /datasets
POST /datasets
GET /datasets/<dataset_id>
PUT /datasets/<dataset_id>/status
PUT /datasets/<dataset_id>/description
PUT /datasets/<dataset_id>/jobs_submitted
GET /dataset_summaries/status
GET /config/<dataset_id>
PUT /config/<dataset_id>
GET /datasets/<dataset_id>/jobs
GET /datasets/<dataset_id>/jobs/<job_id>
PUT /datasets/<dataset_id>/jobs/<job_id>/status
GET /datasets/<dataset_id>/job_summaries/status
GET /datasets/<dataset_id>/job_counts/status
POST /jobs
GET /jobs/<job_id>
PATCH /jobs/<job_id>
GET /datasets/<dataset_id>/tasks
GET /datasets/<dataset_id>/tasks/<task_id>
PUT /datasets/<dataset_id>/tasks/<task_id>/status
GET /datasets/<dataset_id>/task_summaries/status
GET /datasets/<dataset_id>/task_counts/status
GET /datasets/<dataset_id>/task_counts/name_status
POST /datasets/<dataset_id>/task_actions/bulk_status/<status>
PATCH /datasets/<dataset_id>/task_actions/bulk_requirements/<name>
GET /datasets/<dataset_id>/task_stats
GET /datasets/<dataset_id>/files
POST /datasets/<dataset_id>/files
GET /datasets/<dataset_id>/files/<task_id>
POST /datasets/<dataset_id>/files/<task_id>
DELETE /datasets/<dataset_id>/files/<task_id>
POST /tasks
GET /tasks/<task_id>
PATCH /tasks/<task_id>
POST /tasks/<task_id>/task_actions/reset
POST /tasks/<task_id>/task_actions/complete
POST /task_actions/queue
POST /task_actions/process
GET /datasets/<dataset_id>/tasks/<task_id>/task_stats
GET /datasets/<dataset_id>/tasks/<task_id>/task_stats/<task_stat_id>
POST /tasks/<task_id>/task_stats
POST /datasets/<dataset_id>/logs
GET /datasets/<dataset_id>/logs/<log_id>
GET /datasets/<dataset_id>/tasks/<task_id>/logs
POST /logs
GET /logs/<log_id>
GET /grids
POST /grids
GET /grids/<grid_id>
GET /pilots
POST /pilots
GET /pilots/<pilot_id>
PATCH /pilots/<pilot_id>
DELETE /pilots/<pilot_id>
GET /roles
PUT /roles/<role_name>
GET /roles/<role_name>
DELETE /roles/<role_name>
GET /groups
POST /groups
GET /groups/<group_id>
DELETE /groups/<group_id>
GET /users
POST /users
GET /users/<user_id>
DELETE /users/<user_id>
GET /users/<user_id>/groups
POST /users/<user_id>/groups
PUT /users/<user_id>/groups
PUT /users/<user_id>/roles
POST /ldap
POST /create_token
PUT /auths/<dataset_id>
GET /auths/<dataset_id>
GET /auths/<dataset_id>/actions/read
GET /auths/<dataset_id>/actions/write
"""

# Seed routes we serve under another path: (verb, seed path) -> our template.
RENAMED: dict[tuple[str, str], str] = {}

# Seed routes we deliberately do not serve: (verb, seed path) -> why.
ABSENT: dict[tuple[str, str], str] = {}

# Our routes the seed API does not have: (verb, template) -> why.
OURS_ONLY: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness and store reachability for load balancers and tests",
    ("GET", "/openapi.json"): "the machine-readable description of every route",
    ("GET", "/metrics"): "Prometheus metrics",
    ("POST", "/tasks/{task_id}/task_actions/failed"):
        "a pilot ends a task as failed at once (no retry), fenced like complete/reset",
    ("GET", "/datasets/{dataset_id}/store"): "the built-in file store: list a dataset's files",
    ("GET", "/datasets/{dataset_id}/store/{name}"): "the built-in file store: download",
    ("PUT", "/datasets/{dataset_id}/store/{name}"): "the built-in file store: upload",
    ("DELETE", "/datasets/{dataset_id}/store/{name}"): "the built-in file store: delete",
    ("PATCH", "/users/{user_id}"): "an admin edits a user's identities (email, ORCID iD)",
    ("POST", "/users/{user_id}/actions/revoke_tokens"): "revoke every token a user holds",
    ("GET", "/admin/maintenance"):
        "GO-Docker's (seeds/003) general and per-node maintenance status",
    ("POST", "/admin/maintenance/{node}/{status}"):
        "GO-Docker's (seeds/003) maintenance switch: all = the server, else drain a node",
    ("GET", "/tasks/{task_id}/explain"): "why a task is not running, in plain words",
    ("GET", "/datasets/{dataset_id}/explain"):
        "why a dataset's tasks are not running, per task name and status",
    ("GET", "/token/{username}"): "exchange an external OpenID provider's token for ours",
    ("GET", "/task_demand"): "a grid manager reads queued tasks grouped by requirements",
    ("GET", "/events"): "a server-sent event stream of dataset, job and task state changes",
    ("PUT", "/grids/{grid_id}"): "a grid manager registers its grid under a stable id",
    ("PUT", "/datasets/{dataset_id}/priority"): "IceProd v2.7: set a dataset's priority",
    ("POST", "/datasets/{dataset_id}/job_actions/bulk_status/{status}"):
        "IceProd v2.7: set the status of listed jobs (with the task cascade)",
    ("GET", "/audit"): "the audit trail (admin)",
    ("GET", "/tasks"): "IceProd v2.7: every dataset's tasks (admin, system; filtered, paged)",
    ("PUT", "/tasks/{task_id}/status"): "IceProd v2.7: a task's status by id (admin, system)",
    ("PATCH", "/grids/{grid_id}"): "IceProd v2.7: update some of a grid's fields",
    ("GET", "/datasets/{dataset_id}/bulk/task_stats"):
        "IceProd v2.7: every stats record of a dataset as NDJSON",
    ("GET", "/datasets/{dataset_id}/audit"): "a dataset's audit trail, for its readers",
    # GO-Docker's facility operations (issue 16), under our names
    ("GET", "/projects"): "projects: admins list all, users their own",
    ("POST", "/projects"): "an admin creates a project (members, quotas)",
    ("GET", "/projects/{name}"): "a project, for its members and admins",
    ("PUT", "/projects/{name}"): "an admin changes a project's members or description",
    ("DELETE", "/projects/{name}"): "an admin deletes a project",
    ("GET", "/projects/{name}/quota"): "a project's quota",
    ("PUT", "/projects/{name}/quota"): "an admin sets a project's quota",
    ("GET", "/projects/{name}/usage"): "what a project holds against its quota, and blockers",
    ("GET", "/usage"): "usage rollups with filters, a day range and grouping (CSV too)",
    ("GET", "/users/{username}/billing/{year}/{month}"): "a user's monthly bill",
    ("GET", "/groups/{group}/billing/{year}/{month}"): "a group's monthly bill",
    ("GET", "/projects/{name}/billing/{year}/{month}"): "a project's monthly bill",
    ("GET", "/billing/rates"): "the billing rate table",
    ("PUT", "/billing/rates"): "an admin sets billing rates",
    ("POST", "/archive"): "archive finished datasets (dry run shows what would go)",
    ("GET", "/"): "a browser is sent to the dashboard; other clients get the old 404",
    ("GET", "/ui/"): "the web dashboard's page",
    ("GET", "/ui/static/{name}"): "the web dashboard's script, styles and vendored libraries",
    ("GET", "/dataset_overview"): "the dashboard's datasets table: rows with task counts, "
                                  "filters, search and pages in one request",
    ("GET", "/datasets/{dataset_id}/task_plots"): "what the dataset page plots: completions over "
                                                  "time, walltime/memory histograms, failures",
    ("POST", "/config_check"): "check a config's text (errors by line) without creating anything",
    # the other seed systems' APIs (docs/dialects/): DRMAAtic's script catalog and tasks
    ("GET", "/script"): "DRMAAtic: list the script catalog (paginated)",
    ("GET", "/script/{name}"): "DRMAAtic: one catalog entry",
    ("PUT", "/script/{name}"): "DRMAAtic: an admin creates or replaces a catalog entry",
    ("DELETE", "/script/{name}"): "DRMAAtic: an admin removes a catalog entry",
    ("POST", "/task"): "DRMAAtic: submit a task (multipart form)",
    ("POST", "/task/"): "DRMAAtic: its usage examples post to /task/",
    ("GET", "/task/{uuid}"): "DRMAAtic: a task's status in DRMAAtic's fields",
    ("DELETE", "/task/{uuid}"): "DRMAAtic: stop a task and mark it deleted",
    ("GET", "/task/{uuid}/file"): "DRMAAtic: list a task's working directory",
    ("GET", "/task/{uuid}/download"): "DRMAAtic: a task's working directory as a zip",
    # the batch API
    ("GET", "/batches"): "batch API: the caller's batches",
    ("POST", "/batches"): "batch API: submit a batch of jobs running a catalog entry",
    ("DELETE", "/batches"): "batch API: delete all the caller's batches (dry_run previews)",
    ("GET", "/batches/{batch_id}"): "batch API: a batch with its jobs counted by status",
    ("DELETE", "/batches/{batch_id}"): "batch API: delete a batch",
    ("GET", "/batches/{batch_id}/jobs"): "batch API: a batch's jobs",
    ("GET", "/batches/{batch_id}/jobs/{job_id}"): "batch API: one job of a batch",
    # API keys (the batch API's clients authenticate with one)
    ("GET", "/users/{user_id}/apikeys"): "a user's API keys",
    ("POST", "/users/{user_id}/apikeys"): "create a named, long-lived API key",
    ("DELETE", "/users/{user_id}/apikeys/{name}"): "revoke an API key",
}

# A value of the right shape for each path parameter, so a probe reaches its handler.
SAMPLE = {"status": "complete", "name": "only", "role_name": "someone", "username": "someone",
          "year": "2026", "month": "11"}
HEX_ID = "0123456789abcdef0123456789abcdef"


def seed_routes() -> list[tuple[str, str]]:
    routes = [tuple(line.split()) for line in SEED_API.strip().splitlines()]
    assert all(len(r) == 2 for r in routes)
    assert len(set(routes)) == len(routes), "a seed route is listed twice"
    return routes  # type: ignore[return-value]


def ours(verb: str, seed_path: str) -> str:
    """Our template for a seed route: renamed, else the same path with ``{param}``."""
    return RENAMED.get((verb, seed_path), re.sub(r"<(\w+)>", r"{\1}", seed_path))


def expected_routes() -> set[tuple[str, str]]:
    """Every (verb, template) the hand-kept lists say we serve."""
    from_seed = {(v, ours(v, p)) for v, p in seed_routes() if (v, p) not in ABSENT}
    assert not from_seed & set(OURS_ONLY), "a route is both from the seed and ours only"
    return from_seed | set(OURS_ONLY)


def table_routes() -> set[tuple[str, str]]:
    """Every (verb, template) in the route table the app is built from."""
    return {(verb.upper(), template(pattern))
            for pattern, handler in all_routes() for verb in handler_methods(handler)}


def test_the_hand_kept_lists_are_consistent() -> None:
    seed = set(seed_routes())
    assert set(ABSENT) <= seed and set(RENAMED) <= seed
    assert all(reason.strip() for reason in [*ABSENT.values(), *OURS_ONLY.values()])
    assert not set(ABSENT) & set(RENAMED)


def test_every_seed_route_is_served_or_deliberately_absent() -> None:
    table = table_routes()
    missing = sorted((v, p) for v, p in seed_routes()
                     if (v, p) not in ABSENT and (v, ours(v, p)) not in table)
    assert not missing, f"seed API routes we do not serve (serve them or list in ABSENT): {missing}"


def test_every_route_in_the_table_is_listed_by_hand() -> None:
    table = table_routes()
    unlisted = sorted(table - expected_routes())
    gone = sorted(expected_routes() - table)
    assert not unlisted, f"routes served but not in SEED_API/OURS_ONLY (list them): {unlisted}"
    assert not gone, f"routes listed here that the table no longer has: {gone}"


def probe_path(route: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m.group(1), HEX_ID), route)


def test_a_running_server_answers_and_documents_every_listed_route(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for verb, route in sorted(expected_routes()):
            assert verb.lower() in spec["paths"].get(route, {}), f"{verb} {route} undocumented"
            if route == "/":
                # the one route that answers API clients "no such route", as it always did
                r = anonymous.get("/", headers={"Accept": "text/html"})
                assert r.status_code == 302 and r.headers["Location"] == "/ui/", r.text
                continue
            # without a token: refused, or answered, but never "no such route"
            r = anonymous.request(verb, probe_path(route))
            assert r.status_code != 405, (verb, route, r.text)
            if r.status_code == 404:
                assert r.json() != {"code": 404, "error": "no such route"}, (verb, route)

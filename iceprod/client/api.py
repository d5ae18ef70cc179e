"""The typed iceprod REST client: import everything from here.

Two clients with the same route groups and one request path (`_async.py` is the source,
`_sync.py` is generated from it):

    from iceprod.client.api import AsyncClient, Client, NotFound

    async with AsyncClient("http://127.0.0.1:8080", token) as client:
        ds = await client.datasets.create("demo", jobs_submitted=10, tasks_per_job=3,
                                          group="physics")
        await client.config.put(ds, config)
        print(await client.tasks.counts(ds))

    with Client(url, token) as client:           # the same, blocking
        pilot_id = client.pilots.create(resources={"cpu": 4, "memory": 8})
        task = client.tasks.claim({"cpu": 4, "memory": 8}, pilot_id)   # None when nothing fits
        if task:
            client.tasks.complete(task["task_id"], task["instance_id"], time_used=12.5)

Groups: `datasets`, `config`, `jobs`, `tasks`, `task_stats`, `logs`, `files`, `grids`,
`pilots`, `auth` (login, sub-tokens), `users`, `groups`, `roles`, `auths` (dataset rules);
plus `health()`, `openapi()`, `metrics()`. List routes come three ways: `page(...)` (one
`Page` of `{id: doc}` and `next_after`), `iter(...)` (every document, following the
`X-Next-After` cursor) and `list(...)` (all pages merged into one `{id: doc}`).

Every call goes through `request(method, path, json=None, params=None)`: it retries
connection failures and 429/500/502/503/504 with exponential backoff and jitter, waiting at
least the server's `Retry-After` (see `RetryPolicy`; POST/PATCH calls that may have acted
are not repeated unless the route is idempotent, e.g. the fenced complete/reset). Failures
raise `APIError(code, message)` with the server's message, as a subclass per case:
`Invalid` 400, `Unauthorized` 401, `Forbidden` 403, `NotFound` 404, `Conflict` 409,
`TooLarge` 413, `RateLimited` 429, `ServerError` 5xx, `Unavailable` 503, and
`ConnectionFailed` (code 0) when the server cannot be reached.

This package imports nothing from the server (`iceprod.rest`, `iceprod.server`,
`iceprod.db`): a pilot on a grid node needs only `iceprod.client`.
"""

from __future__ import annotations

from iceprod.client._async import (
    AsyncAudit,
    AsyncAuth,
    AsyncAuths,
    AsyncClient,
    AsyncConfig,
    AsyncDatasets,
    AsyncFiles,
    AsyncGrids,
    AsyncGroups,
    AsyncJobs,
    AsyncLogs,
    AsyncPilots,
    AsyncRoles,
    AsyncTasks,
    AsyncTaskStats,
    AsyncUsers,
)
from iceprod.client._sync import (
    Audit,
    Auth,
    Auths,
    Client,
    Config,
    Datasets,
    Files,
    Grids,
    Groups,
    Jobs,
    Logs,
    Pilots,
    Roles,
    Tasks,
    TaskStats,
    Users,
)
from iceprod.client.errors import (
    APIError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from iceprod.client.models import DEFAULT_TIMEOUT, Doc, Page, Resources
from iceprod.client.retry import NO_RETRY, RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "APIError",
    "AsyncAudit",
    "AsyncAuth",
    "AsyncAuths",
    "AsyncClient",
    "AsyncConfig",
    "AsyncDatasets",
    "AsyncFiles",
    "AsyncGrids",
    "AsyncGroups",
    "AsyncJobs",
    "AsyncLogs",
    "AsyncPilots",
    "AsyncRoles",
    "AsyncTaskStats",
    "AsyncTasks",
    "AsyncUsers",
    "Audit",
    "Auth",
    "Auths",
    "Client",
    "Config",
    "Conflict",
    "ConnectionFailed",
    "Datasets",
    "Doc",
    "Files",
    "Forbidden",
    "Grids",
    "Groups",
    "Invalid",
    "Jobs",
    "Logs",
    "NotFound",
    "Page",
    "Pilots",
    "RateLimited",
    "Resources",
    "RetryPolicy",
    "Roles",
    "ServerError",
    "TaskStats",
    "Tasks",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Users",
    "parse_retry_after",
]

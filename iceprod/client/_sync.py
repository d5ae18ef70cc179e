# Generated from _async.py by `python -m iceprod.client._unasync`: do not edit by hand.
# ruff: noqa: I001, UP028
"""The synchronous iceprod client: `Client` and its route groups.

Generated from `_async.py` (the source of truth for both clients) by
`python -m iceprod.client._unasync`; edit `_async.py` and regenerate.
"""

from __future__ import annotations

import time
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

from iceprod.client.errors import (
    Forbidden,
    Invalid,
    NotFound,
    error_from_exception,
    error_from_response,
)
from iceprod.client.models import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Doc,
    Names,
    Page,
    Params,
    Resources,
    created_id,
    drop_none,
    query_params,
)
from iceprod.client.retry import IDEMPOTENT_METHODS, RetryPolicy, parse_retry_after
from iceprod.client.settings import is_registration_token

log = logging.getLogger(__name__)


class Client:
    """A client for one iceprod server.

    `url` is the server's base URL, `token` a bearer JWT (settable later as `client.token`).
    Calls go through `request()`, which retries per `retry`, and raise `APIError`
    subclasses carrying the server's message. Use it as a context manager, or `close()` it.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout, transport=transport,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        )
        self.datasets = Datasets(self)
        self.config = Config(self)
        self.jobs = Jobs(self)
        self.tasks = Tasks(self)
        self.task_stats = TaskStats(self)
        self.logs = Logs(self)
        self.files = Files(self)
        self.grids = Grids(self)
        self.pilots = Pilots(self)
        self.auth = Auth(self)
        self.users = Users(self)
        self.groups = Groups(self)
        self.roles = Roles(self)
        self.auths = Auths(self)
        self.audit = Audit(self)
        self.maintenance = Maintenance(self)
        self.projects = Projects(self)
        self.usage = Usage(self)
        self.archive = Archive(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- the one request path ------------------------------------------------------------------

    def send(self, method: str, path: str, *, json: Any = None, params: Params = None,
             idempotent: bool | None = None,
             headers: Mapping[str, str] | None = None,
             content: bytes | None = None) -> httpx.Response:
        """Send a request, retrying per the policy; the 2xx response, else raise `APIError`.

        `idempotent` (default: by method) allows retrying when the server may have acted;
        `headers` are added to (or replace) the client's, e.g. another `Authorization`;
        `content` is a raw body (instead of `json`).
        """
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    method, path, json=json, content=content, params=query_params(params),
                    headers={**self._auth_headers(), **(headers or {})},
                )
            except httpx.TransportError as exc:
                failure: Exception = error_from_exception(exc, method, self.url + path)
                delay = self.retry.after_exception(attempt, exc, safe)
            else:
                if response.is_success:
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                failure = error_from_response(response, retry_after)
                delay = self.retry.after_status(attempt, response.status_code, retry_after, safe)
            if delay is None:
                raise failure
            log.info("%s %s failed (%s); retry %d in %.2fs", method, path, failure, attempt + 1,
                     delay)
            time.sleep(delay)
            attempt += 1

    def request(self, method: str, path: str, json: Any = None, params: Params = None,
                *, idempotent: bool | None = None) -> Any:
        """Send a request (see `send`) and answer its decoded JSON body (None when empty)."""
        response = self.send(method, path, json=json, params=params, idempotent=idempotent)
        return response.json() if response.content else None

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- pagination ------------------------------------------------------------------------------

    def page(self, path: str, params: Params = None, *, limit: int | None = None,
             after: str | None = None) -> Page:
        """One page of a list route: `{id: doc}` and the cursor of the next page (or None)."""
        response = self.send(
            "GET", path, params={**(params or {}), "limit": limit, "after": after}
        )
        return Page(response.json(), response.headers.get("X-Next-After") or None)

    def iter_pages(self, path: str, params: Params = None, *,
                   page_size: int | None = None) -> Iterator[Page]:
        """Every page of a list route, following `X-Next-After` cursors."""
        after: str | None = None
        while True:
            page = self.page(path, params, limit=page_size, after=after)
            yield page
            if not page.next_after or page.next_after == after:
                return
            after = page.next_after

    def iter_docs(self, path: str, params: Params = None, *,
                  page_size: int | None = None) -> Iterator[Doc]:
        """Every document of a list route, page after page."""
        for page in self.iter_pages(path, params, page_size=page_size):
            for doc in page.items.values():
                yield doc

    def collect(self, path: str, params: Params = None, *,
                page_size: int | None = None) -> dict[str, Doc]:
        """All pages of a list route merged into one `{id: doc}`."""
        out: dict[str, Doc] = {}
        for page in self.iter_pages(path, params, page_size=page_size):
            out.update(page.items)
        return out

    # -- system ----------------------------------------------------------------------------------

    def health(self) -> Doc:
        """`GET /healthz`: `{status, backend, uptime}`."""
        result: Doc = self.request("GET", "/healthz")
        return result

    def openapi(self) -> Doc:
        """`GET /openapi.json`: the OpenAPI document of the server's routes."""
        result: Doc = self.request("GET", "/openapi.json")
        return result

    def metrics(self) -> str:
        """`GET /metrics`: Prometheus text."""
        return (self.send("GET", "/metrics")).text

    def events(self, *, dataset_id: str | None = None, last_event_id: str | None = None,
               ) -> Iterator[Doc]:
        """`GET /events`: each event's data (`seq`, `type`, `dataset_id`, ..., `status`,
        `prev_status`, `time`) as it happens, resuming after `last_event_id`; ends when the
        server ends the stream. A server without it raises `NotFound`."""
        headers = {**self._auth_headers(), "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        params = {"dataset_id": dataset_id} if dataset_id else None
        timeout = httpx.Timeout(30, read=None)  # a quiet stream still sends heartbeats
        with self.http.stream("GET", "/events", params=params, headers=headers,
                              timeout=timeout) as response:
            if not response.is_success:
                response.read()
                raise error_from_response(response, None)
            data = ""
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    event: Doc = json.loads(data)
                    data = ""
                    yield event


class Group:
    """Base of the route groups: holds the client."""

    def __init__(self, client: Client) -> None:
        self.client = client


class Datasets(Group):
    """`/datasets` and `/dataset_summaries`."""

    def create(self, description: str, jobs_submitted: int, tasks_per_job: int,
               group: str, *, priority: float | None = None, debug: bool | None = None,
               jobs_immutable: bool | None = None,
               max_failures: int | None = None,
               read_groups: Names | None = None,
               write_groups: Names | None = None) -> str:
        """Submit a dataset; answers its `dataset_id`. Its group may read it; groups in
        `write_groups` (your own) may also write it, those in `read_groups` read it."""
        body = drop_none({
            "description": description, "jobs_submitted": jobs_submitted,
            "tasks_submitted": jobs_submitted * tasks_per_job, "tasks_per_job": tasks_per_job,
            "group": group, "priority": priority, "debug": debug,
            "jobs_immutable": jobs_immutable, "max_failures": max_failures,
            "read_groups": list(read_groups) if read_groups else None,
            "write_groups": list(write_groups) if write_groups else None,
        })
        return created_id(self.client.request("POST", "/datasets", body))

    def get(self, dataset_id: str, keys: Names | None = None) -> Doc:
        result: Doc = self.client.request("GET", f"/datasets/{dataset_id}",
                                          params={"keys": keys})
        return result

    def _filters(self, status: str | Names | None, username: str | None,
                 keys: Names | None) -> Doc:
        return {"status": status, "username": username, "keys": keys}

    def page(self, *, status: str | Names | None = None, username: str | None = None,
             keys: Names | None = None, limit: int | None = None,
             after: str | None = None) -> Page:
        """One page of the datasets the caller may read."""
        return self.client.page("/datasets", self._filters(status, username, keys),
                                limit=limit, after=after)

    def iter(self, *, status: str | Names | None = None, username: str | None = None,
             keys: Names | None = None,
             page_size: int | None = None) -> Iterator[Doc]:
        """Every readable dataset (optionally by status and submitter), page after page."""
        for doc in self.client.iter_docs(
            "/datasets", self._filters(status, username, keys), page_size=page_size
        ):
            yield doc

    def list(self, *, status: str | Names | None = None, username: str | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        """All readable datasets as `{dataset_id: dataset}`."""
        return self.client.collect("/datasets", self._filters(status, username, keys))

    def explain(self, dataset_id: str) -> Doc:
        """Why the dataset's tasks are (not) running, per task name and status."""
        result: Doc = self.client.request("GET", f"/datasets/{dataset_id}/explain")
        return result

    def by_number(self, number: int) -> Doc:
        """The dataset with this human number (`dataset`); raises `NotFound`. Any route
        taking a `dataset_id` also takes the number, so `get(str(number))` is the same."""
        return self.get(str(number))

    def set_status(self, dataset_id: str, status: str) -> Doc:
        """processing | suspended | errors | complete (state machine; illegal -> Conflict;
        `archived` only through `POST /archive`).
        Suspending suspends the unfinished tasks, resuming sends suspended ones back to
        waiting; answers `{"tasks_changed": n}`."""
        result = self.client.request("PUT", f"/datasets/{dataset_id}/status",
                                     {"status": status})
        return dict(result or {})

    def preview_status(self, dataset_id: str, status: str) -> Doc:
        """What `set_status` would change, changing nothing: `{"matched", "changed",
        "by_status", "sample"}` over the dataset's tasks (illegal -> Conflict)."""
        result: Doc = self.client.request(
            "PUT", f"/datasets/{dataset_id}/status", {"status": status, "dry_run": True})
        return result

    def set_priority(self, dataset_id: str, priority: float, *,
                     dry_run: bool = False) -> Doc:
        """Set the dataset's priority (0..1); answers `{"changed": 0|1}` (or the preview)."""
        body: Doc = {"priority": priority, **({"dry_run": True} if dry_run else {})}
        result: Doc = self.client.request(
            "PUT", f"/datasets/{dataset_id}/priority", body, idempotent=True)
        return result

    def set_description(self, dataset_id: str, description: str) -> None:
        self.client.request("PUT", f"/datasets/{dataset_id}/description",
                            {"description": description})

    def set_jobs_submitted(self, dataset_id: str, jobs_submitted: int) -> None:
        """Grow the number of jobs (never shrinks; refused when `jobs_immutable`)."""
        self.client.request("PUT", f"/datasets/{dataset_id}/jobs_submitted",
                            {"jobs_submitted": jobs_submitted})

    def ids_by_status(self) -> dict[str, Names]:
        """`{status: [dataset_id, ...]}` over the readable datasets."""
        result: dict[str, Names] = self.client.request(
            "GET", "/dataset_summaries/status")
        return result


class Config(Group):
    """`/config/{dataset_id}`: a dataset's config."""

    def get(self, dataset_id: str) -> Doc:
        result: Doc = self.client.request("GET", f"/config/{dataset_id}")
        return result

    def put(self, dataset_id: str, config: Doc) -> None:
        """Create or replace the config (schema-checked by the server: `Invalid` names the
        field)."""
        self.client.request("PUT", f"/config/{dataset_id}", config)


class Jobs(Group):
    """A dataset's jobs; `create`/`get_by_id`/`update` are internal (system role)."""

    def _path(self, dataset_id: str) -> str:
        return f"/datasets/{dataset_id}/jobs"

    def page(self, dataset_id: str, *, status: str | Names | None = None,
             job_index: int | None = None, keys: Names | None = None,
             limit: int | None = None, after: str | None = None) -> Page:
        params = {"status": status, "job_index": job_index, "keys": keys}
        return self.client.page(self._path(dataset_id), params, limit=limit, after=after)

    def iter(self, dataset_id: str, *, status: str | Names | None = None,
             keys: Names | None = None,
             page_size: int | None = None) -> Iterator[Doc]:
        for doc in self.client.iter_docs(
            self._path(dataset_id), {"status": status, "keys": keys}, page_size=page_size
        ):
            yield doc

    def list(self, dataset_id: str, *, status: str | Names | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        """All jobs of a dataset as `{job_id: job}`."""
        return self.client.collect(self._path(dataset_id), {"status": status, "keys": keys})

    def get(self, dataset_id: str, job_id: str, keys: Names | None = None) -> Doc:
        result: Doc = self.client.request("GET", f"{self._path(dataset_id)}/{job_id}",
                                          params={"keys": keys})
        return result

    def set_status(self, dataset_id: str, job_id: str, status: str) -> None:
        self.client.request("PUT", f"{self._path(dataset_id)}/{job_id}/status",
                            {"status": status})

    def ids_by_status(self, dataset_id: str) -> dict[str, Names]:
        result: dict[str, Names] = self.client.request(
            "GET", f"/datasets/{dataset_id}/job_summaries/status")
        return result

    def bulk_status(self, dataset_id: str, status: str, jobs: Names, *,
                    dry_run: bool = False) -> Doc:
        """Set `status` on the listed jobs the state machine allows (suspending or resuming
        carries to their tasks); answers `{"changed", "tasks_changed"}` (or the preview)."""
        body: Doc = {"jobs": list(jobs), **({"dry_run": True} if dry_run else {})}
        result: Doc = self.client.request(
            "POST", f"/datasets/{dataset_id}/job_actions/bulk_status/{status}", body,
            idempotent=True)
        return result

    def counts(self, dataset_id: str) -> dict[str, int]:
        """`{status: n}` over a dataset's jobs."""
        result: dict[str, int] = self.client.request(
            "GET", f"/datasets/{dataset_id}/job_counts/status")
        return result

    def create(self, dataset_id: str, job_index: int, *,
               status: str | None = None) -> str:
        """Create a job (internal)."""
        body = drop_none({"dataset_id": dataset_id, "job_index": job_index, "status": status})
        return created_id(self.client.request("POST", "/jobs", body))

    def get_by_id(self, job_id: str, keys: Names | None = None) -> Doc:
        """One job by id alone (internal)."""
        result: Doc = self.client.request("GET", f"/jobs/{job_id}", params={"keys": keys})
        return result

    def update(self, job_id: str, **fields: Any) -> Doc:
        """Patch `status` and/or `priority` (internal)."""
        result: Doc = self.client.request("PATCH", f"/jobs/{job_id}", fields,
                                          idempotent=True)
        return result


class Tasks(Group):
    """A dataset's tasks, bulk actions, and the pilot's side: `claim`, `complete`, `reset`,
    `failed` (fenced by the claim's `instance_id`)."""

    def _path(self, dataset_id: str) -> str:
        return f"/datasets/{dataset_id}/tasks"

    @staticmethod
    def _filters(status: str | Names | None, name: str | None, job_id: str | None,
                 pilot_id: str | None, keys: Names | None) -> Doc:
        return {"status": status, "name": name, "job_id": job_id, "pilot_id": pilot_id,
                "keys": keys}

    def page(self, dataset_id: str, *, status: str | Names | None = None,
             name: str | None = None, job_id: str | None = None,
             pilot_id: str | None = None, keys: Names | None = None,
             limit: int | None = None, after: str | None = None) -> Page:
        params = self._filters(status, name, job_id, pilot_id, keys)
        return self.client.page(self._path(dataset_id), params, limit=limit, after=after)

    def iter(self, dataset_id: str, *, status: str | Names | None = None,
             name: str | None = None, job_id: str | None = None,
             pilot_id: str | None = None, keys: Names | None = None,
             page_size: int | None = None) -> Iterator[Doc]:
        params = self._filters(status, name, job_id, pilot_id, keys)
        for doc in self.client.iter_docs(self._path(dataset_id), params,
                                         page_size=page_size):
            yield doc

    def list(self, dataset_id: str, *, status: str | Names | None = None,
             name: str | None = None, job_id: str | None = None,
             pilot_id: str | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        """All matching tasks of a dataset as `{task_id: task}`."""
        params = self._filters(status, name, job_id, pilot_id, keys)
        return self.client.collect(self._path(dataset_id), params)

    def get(self, dataset_id: str, task_id: str, keys: Names | None = None) -> Doc:
        result: Doc = self.client.request("GET", f"{self._path(dataset_id)}/{task_id}",
                                          params={"keys": keys})
        return result

    def set_status(self, dataset_id: str, task_id: str, status: str) -> None:
        self.client.request("PUT", f"{self._path(dataset_id)}/{task_id}/status",
                            {"status": status})

    def ids_by_status(self, dataset_id: str) -> dict[str, Names]:
        result: dict[str, Names] = self.client.request(
            "GET", f"/datasets/{dataset_id}/task_summaries/status")
        return result

    def counts(self, dataset_id: str) -> dict[str, int]:
        """`{status: n}` over a dataset's tasks."""
        result: dict[str, int] = self.client.request(
            "GET", f"/datasets/{dataset_id}/task_counts/status")
        return result

    def counts_by_name(self, dataset_id: str) -> dict[str, dict[str, int]]:
        """`{task_name: {status: n}}` in task-index order."""
        result: dict[str, dict[str, int]] = self.client.request(
            "GET", f"/datasets/{dataset_id}/task_counts/name_status")
        return result

    def bulk_status(self, dataset_id: str, status: str, *, tasks: Names | None = None,
                    statuses: Names | None = None, names: Names | None = None,
                    job_index_min: int | None = None,
                    job_index_max: int | None = None) -> int:
        """Set `status` on the selected tasks: the listed `tasks`, or those matching every
        given filter (`statuses`, `names`, a job-index range). Nothing selected is refused
        (`Invalid`), an unknown name is `NotFound`; tasks the state machine does not allow
        are skipped. Sending tasks back to waiting reopens a dataset in errors. Answers how
        many changed."""
        body = selection_body(tasks, statuses, names, job_index_min, job_index_max)
        result = self.client.request(
            "POST", f"/datasets/{dataset_id}/task_actions/bulk_status/{status}", body,
            idempotent=True)
        return int(result["changed"])

    def preview_bulk_status(self, dataset_id: str, status: str, *,
                            tasks: Names | None = None, statuses: Names | None = None,
                            names: Names | None = None,
                            job_index_min: int | None = None,
                            job_index_max: int | None = None) -> Doc:
        """What `bulk_status` would change, changing nothing: `{"matched", "changed",
        "by_status", "sample"}`."""
        body = selection_body(tasks, statuses, names, job_index_min, job_index_max)
        result: Doc = self.client.request(
            "POST", f"/datasets/{dataset_id}/task_actions/bulk_status/{status}",
            {**body, "dry_run": True}, idempotent=True)
        return result

    def preview_bulk_requirements(self, dataset_id: str, name: str,
                                  requirements: Resources) -> Doc:
        """What `bulk_requirements` would change, changing nothing."""
        result: Doc = self.client.request(
            "PATCH", f"/datasets/{dataset_id}/task_actions/bulk_requirements/{name}",
            {**requirements, "dry_run": True}, idempotent=True)
        return result

    def bulk_requirements(self, dataset_id: str, name: str, requirements: Resources) -> int:
        """Set requirements on every unfinished task named `name`; answers how many changed."""
        result = self.client.request(
            "PATCH", f"/datasets/{dataset_id}/task_actions/bulk_requirements/{name}",
            dict(requirements), idempotent=True)
        return int(result["changed"])

    def stats(self, dataset_id: str) -> dict[str, Doc]:
        """Per task name with completed tasks (IceProd's summary): count, total_hrs,
        avg_hrs, stddev_hrs, min_hrs, max_hrs, total_err_hrs, efficiency."""
        result: dict[str, Doc] = self.client.request(
            "GET", f"/datasets/{dataset_id}/task_stats")
        return result

    def create(self, dataset_id: str, job_id: str, task_index: int, name: str,
               **fields: Any) -> str:
        """Create a task (internal); `fields`: depends, requirements, status, priority, ..."""
        body = {"dataset_id": dataset_id, "job_id": job_id, "task_index": task_index,
                "name": name, **fields}
        return created_id(self.client.request("POST", "/tasks", body))

    def get_by_id(self, task_id: str, keys: Names | None = None) -> Doc:
        """One task by id alone (with its `dataset_id`): for whoever may read its dataset,
        the system role, and a pilot holding it."""
        result: Doc = self.client.request("GET", f"/tasks/{task_id}", params={"keys": keys})
        return result

    def explain(self, task_id: str) -> Doc:
        """Why the task is (not) running: `{task_id, status, summary, blockers}`."""
        result: Doc = self.client.request("GET", f"/tasks/{task_id}/explain")
        return result

    def update(self, task_id: str, **fields: Any) -> Doc:
        """Patch priority, requirements, reason, site, failures (internal); never the
        status (`set_status_by_id`)."""
        result: Doc = self.client.request("PATCH", f"/tasks/{task_id}", fields,
                                          idempotent=True)
        return result

    def set_status_by_id(self, task_id: str, status: str, *,
                         dry_run: bool = False) -> Doc:
        """Set a task's status by id alone (admin, system), through the state machine;
        answers `{"changed": 0|1}` (or the preview)."""
        body: Doc = {"status": status, **({"dry_run": True} if dry_run else {})}
        result: Doc = self.client.request("PUT", f"/tasks/{task_id}/status", body,
                                          idempotent=True)
        return result

    def claim(self, resources: Resources, pilot_id: str) -> Doc | None:
        """Claim the best queued task fitting the free `resources`: the task (with its
        `instance_id` and `lease_expires`), or None when nothing fits."""
        body = {"requirements": dict(resources), "pilot_id": pilot_id}
        try:
            result: Doc = self.client.request("POST", "/task_actions/process", body)
        except NotFound:
            return None
        return result

    def claim_many(self, resources: Resources, pilot_id: str, max_tasks: int, *,
                   wait: float = 0.0) -> Sequence[Doc]:
        """Claim up to `max_tasks` tasks that fit together in the free `resources` (one
        request), waiting up to `wait` seconds (at most 20) for work when none is queued:
        the tasks, possibly none. A server without these options answers `Invalid` (400)."""
        body: Doc = {"requirements": dict(resources), "pilot_id": pilot_id,
                     "max_tasks": max_tasks}
        if wait > 0:
            body["wait"] = wait
        result: Doc = self.client.request("POST", "/task_actions/process", body)
        tasks: Sequence[Doc] = result["tasks"]
        return tasks

    def complete(self, task_id: str, instance_id: str, *, time_used: float | None = None,
                 site: str | None = None, stats: Doc | None = None,
                 log: Mapping[str, str] | None = None,
                 claim: tuple[Resources, int] | None = None) -> Sequence[Doc] | None:
        """Report success (`time_used` in seconds), with the run's `stats` and short logs
        (`{stdout, stderr, stdlog}`, each at most 64 KiB) inline when given. A stale
        `instance_id` raises `Conflict`. With `claim=(resources, max_tasks)` the same
        request claims the holding pilot's next tasks (up to `max_tasks` fitting together
        in `resources`) and answers them, possibly none; without it, None. A server
        without `claim` answers `Invalid` (400)."""
        body = drop_none({"instance_id": instance_id, "time_used": time_used, "site": site,
                          "stats": stats, "log": dict(log) if log else None})
        if claim is not None:
            body["claim"] = {"requirements": dict(claim[0]), "max_tasks": claim[1]}
        # safe to retry even with a claim: once the completion is done, a retry is refused
        # (the task is no longer held) before it could claim again
        result = self.client.request("POST", f"/tasks/{task_id}/task_actions/complete",
                                     body, idempotent=True)
        if claim is None:
            return None
        tasks: Sequence[Doc] = result["tasks"]
        return tasks

    def reset(self, task_id: str, instance_id: str, *, time_used: float | None = None,
              resources: Resources | None = None, site: str | None = None,
              reason: str | None = None) -> Doc:
        """Report a failed run to retry (`resources`: measured use). Answers
        `{status, failures}`: status is `failed` once the retries are used up."""
        return self._report("reset", task_id, instance_id, time_used, resources, site,
                            reason)

    def requeue(self, task_id: str, instance_id: str, *, reason: str,
                time_used: float | None = None, site: str | None = None) -> Doc:
        """Give back a run stopped from outside (this pilot is shutting down): the task goes
        back to waiting without counting a failure. Answers `{status, failures}`."""
        body = drop_none({"instance_id": instance_id, "time_used": time_used, "site": site,
                          "reason": reason, "requeue": True})
        result: Doc = self.client.request(
            "POST", f"/tasks/{task_id}/task_actions/reset", body, idempotent=True)
        return result

    def failed(self, task_id: str, instance_id: str, *, time_used: float | None = None,
               resources: Resources | None = None, site: str | None = None,
               reason: str | None = None) -> Doc:
        """Report a run that must not be retried: the task goes to `failed`."""
        return self._report("failed", task_id, instance_id, time_used, resources, site,
                            reason)

    def _report(self, action: str, task_id: str, instance_id: str,
                time_used: float | None, resources: Resources | None, site: str | None,
                reason: str | None) -> Doc:
        body = drop_none({
            "instance_id": instance_id, "time_used": time_used,
            "resources": dict(resources) if resources is not None else None,
            "site": site, "reason": reason,
        })
        result: Doc = self.client.request(
            "POST", f"/tasks/{task_id}/task_actions/{action}", body, idempotent=True)
        return result

    def queue(self, num_tasks: int | None = None) -> int:
        """Queue up to `num_tasks` ready waiting tasks (internal); answers how many."""
        result = self.client.request("POST", "/task_actions/queue",
                                     drop_none({"num_tasks": num_tasks}))
        return int(result["queued"])


class TaskStats(Group):
    """Per-run stats records of tasks."""

    def _path(self, dataset_id: str, task_id: str) -> str:
        return f"/datasets/{dataset_id}/tasks/{task_id}/task_stats"

    def create(self, task_id: str, dataset_id: str, stats: Doc) -> str:
        """Store a stats record (pilot or internal); answers its id."""
        body = {"dataset_id": dataset_id, "stats": stats}
        return created_id(self.client.request("POST", f"/tasks/{task_id}/task_stats", body))

    def list(self, dataset_id: str, task_id: str,
             keys: Names | None = None) -> dict[str, Doc]:
        """All records of a task as `{task_stat_id: record}`."""
        return self.client.collect(self._path(dataset_id, task_id), {"keys": keys})

    def latest(self, dataset_id: str, task_id: str) -> Doc | None:
        """The newest record of a task, or None."""
        result: dict[str, Doc] = self.client.request(
            "GET", self._path(dataset_id, task_id), params={"last": True})
        return next(iter(result.values()), None)

    def get(self, dataset_id: str, task_id: str, task_stat_id: str) -> Doc:
        result: Doc = self.client.request(
            "GET", f"{self._path(dataset_id, task_id)}/{task_stat_id}")
        return result


class Logs(Group):
    """Named texts (stdout, stderr, stdlog, ...) of tasks."""

    def create(self, task_id: str, name: str, data: str, *,
               dataset_id: str | None = None) -> str:
        """Store a task's log (pilot or internal; `TooLarge` past the server's limit)."""
        body = drop_none({"task_id": task_id, "name": name, "data": data,
                          "dataset_id": dataset_id})
        return created_id(self.client.request("POST", "/logs", body))

    def create_for_dataset(self, dataset_id: str, name: str, data: str, *,
                           task_id: str | None = None) -> str:
        """Attach a log to a dataset (or one of its tasks) with dataset write access."""
        body = drop_none({"task_id": task_id, "name": name, "data": data})
        return created_id(self.client.request("POST", f"/datasets/{dataset_id}/logs", body))

    def get(self, dataset_id: str, log_id: str, keys: Names | None = None) -> Doc:
        result: Doc = self.client.request("GET", f"/datasets/{dataset_id}/logs/{log_id}",
                                          params={"keys": keys})
        return result

    def get_by_id(self, log_id: str, keys: Names | None = None) -> Doc:
        """One log by id alone (internal)."""
        result: Doc = self.client.request("GET", f"/logs/{log_id}", params={"keys": keys})
        return result

    def for_task(self, dataset_id: str, task_id: str, *, num: int | None = None,
                 group: bool = False, order: str = "asc",
                 keys: Names | None = None) -> dict[str, Doc]:
        """A task's logs as `{log_id: log}`: the `num` newest/oldest (`order`), one per name
        when `group`."""
        result: dict[str, Doc] = self.client.request(
            "GET", f"/datasets/{dataset_id}/tasks/{task_id}/logs",
            params={"num": num, "group": group, "order": order, "keys": keys})
        return result


class Files(Group):
    """Input and output files registered for a dataset or a task."""

    def _all(self, path: str, keys: Names | None) -> dict[str, Doc]:
        """Every page of a files list (`{"files": [...]}`) as `{file_id: file}`."""
        out: dict[str, Doc] = {}
        after: str | None = None
        while True:
            response = self.client.send("GET", path, params={"keys": keys,
                                                             "after": after})
            out.update({f["file_id"]: f for f in response.json()["files"]})
            after = response.headers.get("X-Next-After") or None
            if not after:
                return out

    def list(self, dataset_id: str, keys: Names | None = None) -> dict[str, Doc]:
        """A dataset's files as `{file_id: file}` (every page)."""
        return self._all(f"/datasets/{dataset_id}/files", keys)

    def add(self, dataset_id: str, remote: str, *, task_id: str | None = None,
            **fields: Any) -> str:
        """Register a file by URL (`fields`: local, movement, type, transfer, and job_index
        with task_name to name a task by its job and name)."""
        body = drop_none({"filename": remote, "task_id": task_id, **fields})
        return created_id(self.client.request("POST", f"/datasets/{dataset_id}/files",
                                              body))

    def for_task(self, dataset_id: str, task_id: str,
                 keys: Names | None = None) -> dict[str, Doc]:
        return self._all(f"/datasets/{dataset_id}/files/{task_id}", keys)

    def add_for_task(self, dataset_id: str, task_id: str, remote: str,
                     **fields: Any) -> str:
        body = drop_none({"filename": remote, **fields})
        return created_id(self.client.request(
            "POST", f"/datasets/{dataset_id}/files/{task_id}", body))

    def delete_for_task(self, dataset_id: str, task_id: str) -> int:
        """Remove a task's files; answers how many."""
        result = self.client.request("DELETE", f"/datasets/{dataset_id}/files/{task_id}")
        return int(result["deleted"])

    # -- the file store: bytes kept by the server (`iceprod:NAME` remotes) -------------------

    @staticmethod
    def _store_path(dataset_id: str, name: str) -> str:
        return f"/datasets/{dataset_id}/store/{quote(name, safe='/')}"

    def store_list(self, dataset_id: str) -> dict[str, Doc]:
        """The dataset's stored files as `{name: {name, size, modified}}`."""
        result: dict[str, Doc] = self.client.request("GET",
                                                     f"/datasets/{dataset_id}/store")
        return result

    def store_put(self, dataset_id: str, name: str,
                  data: bytes | str | os.PathLike[str]) -> Doc:
        """Store `data` (bytes, or the path of a local file, streamed) as `name`; answers
        `{name, size}`."""
        path = self._store_path(dataset_id, name)
        if isinstance(data, bytes):
            response = self.client.send("PUT", path, content=data, idempotent=True)
        else:
            src = Path(data)
            size = src.stat().st_size
            try:  # a stream cannot be replayed: one attempt
                response = self.client.http.request(
                    "PUT", path, content=_file_chunks(src),
                    headers={**self.client._auth_headers(), "Content-Length": str(size),
                             "Content-Type": "application/octet-stream"},
                )
            except httpx.TransportError as exc:
                raise error_from_exception(exc, "PUT", self.client.url + path) from exc
            if not response.is_success:
                raise error_from_response(response)
        result: Doc = response.json()
        return result

    def store_read(self, dataset_id: str, name: str) -> bytes:
        """A stored file's content, in memory."""
        return (self.client.send("GET", self._store_path(dataset_id, name))).content

    def store_get(self, dataset_id: str, name: str, dest: str | os.PathLike[str]) -> int:
        """Download a stored file to `dest` (streamed; written atomically); answers its
        size. A missing file raises `NotFound`."""
        path = self._store_path(dataset_id, name)
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        size = 0
        try:
            with self.client.http.stream(
                "GET", path, headers=self.client._auth_headers()
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                # local chunked writes; the sync client is generated from this code
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(FILE_CHUNK):
                        f.write(chunk)
                        size += len(chunk)
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise error_from_exception(exc, "GET", self.client.url + path) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def store_delete(self, dataset_id: str, name: str) -> None:
        """Remove a stored file."""
        self.client.request("DELETE", self._store_path(dataset_id, name))


FILE_CHUNK = 1 << 20


def _file_chunks(path: Path) -> Iterator[bytes]:
    """A local file in chunks (plain reads: the sync client is generated from this)."""
    with open(path, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            yield chunk


class Grids(Group):
    """Submit hosts that start pilots."""

    def list(self, *, host: str | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        return self.client.collect("/grids", {"host": host, "keys": keys})

    def create(self, host: str, *, queues: dict[str, str] | None = None,
               version: str | None = None, debug: bool | None = None) -> str:
        body = drop_none({"host": host, "queues": queues, "version": version, "debug": debug})
        return created_id(self.client.request("POST", "/grids", body))

    def get(self, grid_id: str, keys: Names | None = None) -> Doc:
        result: Doc = self.client.request("GET", f"/grids/{grid_id}", params={"keys": keys})
        return result

    def put(self, grid_id: str, host: str, *, queues: dict[str, str] | None = None,
            version: str | None = None, debug: bool | None = None,
            isolation: str | None = None, single_user: str | None = None,
            site: str | None = None,
            max_resources: Resources | None = None) -> Doc:
        """Register or update the grid `grid_id` (an id its manager keeps across restarts);
        `single_user` is always sent (None clears it); `max_resources` is the largest pilot
        it can start (what `explain` compares requirements with). Answers the grid, with
        `drain` when it is to start no new pilots."""
        body = drop_none({"host": host, "queues": queues, "version": version, "debug": debug,
                          "isolation": isolation, "site": site,
                          "max_resources": max_resources})
        result: Doc = self.client.request("PUT", f"/grids/{grid_id}",
                                          {**body, "single_user": single_user})
        return result

    def demand(self) -> Sequence[Doc]:
        """Queued tasks grouped by requirements, largest groups first:
        `[{requirements: {...}, count}]` (needs scope `grid`)."""
        result: Doc = self.client.request("GET", "/task_demand")
        groups: Sequence[Doc] = result["groups"]
        return groups

    def wait_demand(self, after: int | None, wait: float) -> Doc:
        """`GET /task_demand?wait=`: answers `{groups, seq}` once tasks were queued after
        event `after` (a previous answer's `seq`; None: once there is any demand), or
        after `wait` seconds (at most 20)."""
        params: Doc = {"wait": int(min(max(wait, 0), 20))}
        if after is not None:
            params["after"] = after
        result: Doc = self.client.request("GET", "/task_demand", params=params)
        return result


class Pilots(Group):
    """Pilot records: register, heartbeat (renews its tasks' leases), delete."""

    def list(self, *, grid_id: str | None = None, status: str | Names | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        return self.client.collect("/pilots",
                                   {"grid_id": grid_id, "status": status, "keys": keys})

    def create(self, *, resources: Resources | None = None, **fields: Any) -> str:
        """Register a pilot (`fields`: queue_host, queue_version, host, site, version, grid_id,
        grid_queue_id); answers its `pilot_id` (see `register` for its token)."""
        return created_id(self.register(resources=resources, **fields))

    def register(self, *, resources: Resources | None = None, **fields: Any) -> Doc:
        """Register a pilot, as `create`; answers `{result: pilot_id, token, expires}`, the
        token being bound to the new pilot. A client holding a registration token (a pilot
        token naming no pilot, which may do nothing else) switches to that token."""
        body = drop_none({"resources": dict(resources) if resources else None, **fields})
        result: Doc = self.client.request("POST", "/pilots", body)
        if is_registration_token(self.client.token) and isinstance(result.get("token"), str):
            self.client.token = result["token"]
        return result

    def get(self, pilot_id: str, keys: Names | None = None) -> Doc:
        """One pilot, with `tasks`: the ids it holds now."""
        result: Doc = self.client.request("GET", f"/pilots/{pilot_id}",
                                          params={"keys": keys})
        return result

    def heartbeat(self, pilot_id: str, **fields: Any) -> Doc:
        """Renew the leases of the pilot's tasks and update it (`fields`: resources_available,
        resources_claimed, status, ...). Answers the pilot; a task missing from its `tasks` was
        taken away. When the caller's own pilot token is past half its life the answer also
        carries a fresh `token` (and its `expires`) to use instead."""
        result: Doc = self.client.request("PATCH", f"/pilots/{pilot_id}", drop_none(fields),
                                          idempotent=True)
        return result

    def delete(self, pilot_id: str) -> int:
        """Remove the pilot; its tasks go back to waiting. Answers how many were released."""
        result = self.client.request("DELETE", f"/pilots/{pilot_id}")
        return int((result or {}).get("released", 0))


class Auth(Group):
    """Tokens: LDAP login, sub-tokens, and the exchange of an external provider's token."""

    def login(self, username: str, password: str) -> Doc:
        """`POST /ldap`: `{token, username, roles, groups, expires}` for an LDAP username and
        password (`Unauthorized` when wrong, `RateLimited` after repeated failures)."""
        result: Doc = self.client.request(
            "POST", "/ldap", {"username": username, "password": password})
        return result

    def password_login_enabled(self) -> bool:
        """Whether the server takes LDAP passwords: `POST /ldap` with an empty body answers
        400 where it does (nothing is tried, nothing counts against the rate limit) and 404
        where LDAP is not configured."""
        try:
            self.client.request("POST", "/ldap", {})
        except Invalid:
            return True
        except NotFound:
            return False
        return True

    def create_token(self, type: str, *, role: str | None = None, exp: int | None = None,
                     scope: str | None = None, dataset_id: str | None = None,
                     username: str | None = None, pilot_id: str | None = None) -> Doc:
        """`POST /create_token`: a sub-token that never outlives the caller's nor has more
        rights. `type`: temp | user (the caller, optionally one `role` or fewer `scope`s),
        share (read one `dataset_id`), pilot (admin/system; optional `pilot_id`), system
        (admin). Answers `{token, username, roles, groups, scope, pilot_id, expires}`."""
        body = drop_none({"type": type, "role": role, "exp": exp, "scope": scope,
                          "dataset_id": dataset_id, "username": username, "pilot_id": pilot_id})
        result: Doc = self.client.request("POST", "/create_token", body)
        return result

    def exchange(self, username: str, external_token: str) -> Doc:
        """`GET /token/{username}`: trade an external OpenID provider's token for ours."""
        response = self.client.send(
            "GET", f"/token/{username}", headers={"Authorization": f"Bearer {external_token}"})
        result: Doc = response.json()
        return result


class Users(Group):
    """`/users`: accounts with roles and groups (admin; a user may read its own)."""

    def list(self, *, username: str | None = None, group: str | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        """All users as `{user_id: user}`, optionally by username or group."""
        return self.client.collect(
            "/users", {"username": username, "group": group, "keys": keys})

    def by_username(self, username: str) -> Doc:
        """The user with this username; raises `NotFound`."""
        for doc in (self.list(username=username)).values():
            return doc
        raise NotFound(404, f"no user {username!r}")

    def create(self, username: str, *, roles: Names | None = None,
               groups: Names | None = None, email: str | None = None,
               orcid: str | None = None) -> str:
        """Add a user (roles default to user, groups to users); answers its `user_id`."""
        body = drop_none({"username": username, "roles": roles, "groups": groups,
                          "email": email, "orcid": orcid})
        return created_id(self.client.request("POST", "/users", body))

    def get(self, user_id: str) -> Doc:
        result: Doc = self.client.request("GET", f"/users/{user_id}")
        return result

    def update(self, user_id: str, **fields: Any) -> Doc:
        """Set (or clear with None) `email` / `orcid`."""
        result: Doc = self.client.request("PATCH", f"/users/{user_id}", fields,
                                          idempotent=True)
        return result

    def delete(self, user_id: str) -> None:
        """Delete a user and revoke its tokens."""
        self.client.request("DELETE", f"/users/{user_id}")

    def groups(self, user_id: str) -> Names:
        result = self.client.request("GET", f"/users/{user_id}/groups")
        return [str(g) for g in result.get("groups", [])]

    def add_group(self, user_id: str, group: str) -> Names:
        """Add the user to a group; answers its groups."""
        result = self.client.request("POST", f"/users/{user_id}/groups", {"group": group},
                                     idempotent=True)
        return [str(g) for g in result.get("groups", [])]

    def set_groups(self, user_id: str, groups: Names) -> Names:
        """Replace the user's groups (leaving one revokes its tokens)."""
        result = self.client.request("PUT", f"/users/{user_id}/groups", {"groups": groups})
        return [str(g) for g in result.get("groups", [])]

    def set_roles(self, user_id: str, roles: Names) -> Names:
        """Replace the user's roles (losing one revokes its tokens)."""
        result = self.client.request("PUT", f"/users/{user_id}/roles", {"roles": roles})
        return [str(r) for r in result.get("roles", [])]

    def revoke_tokens(self, user_id: str) -> Doc:
        """Revoke every token the user holds now; answers `{not_before}`."""
        result: Doc = self.client.request(
            "POST", f"/users/{user_id}/actions/revoke_tokens", {}, idempotent=True)
        return result


class Groups(Group):
    """`/groups` (admin)."""

    def list(self, *, name: str | None = None,
             keys: Names | None = None) -> dict[str, Doc]:
        """All groups as `{group_id: group}`."""
        return self.client.collect("/groups", {"name": name, "keys": keys})

    def by_name(self, name: str) -> Doc:
        """The group with this name; raises `NotFound`."""
        for doc in (self.list(name=name)).values():
            return doc
        raise NotFound(404, f"no group {name!r}")

    def create(self, name: str, *, description: str | None = None) -> str:
        """Add a group; answers its `group_id` (`Conflict` when the name is taken)."""
        body = drop_none({"name": name, "description": description})
        return created_id(self.client.request("POST", "/groups", body))

    def get(self, group_id: str) -> Doc:
        result: Doc = self.client.request("GET", f"/groups/{group_id}")
        return result

    def delete(self, group_id: str) -> None:
        """Delete a group; its members leave it."""
        self.client.request("DELETE", f"/groups/{group_id}")


class Roles(Group):
    """`/roles`: built-in and custom roles, each a set of scopes."""

    def list(self) -> dict[str, Doc]:
        """`{name: {name, scopes, builtin, description}}`."""
        result: dict[str, Doc] = self.client.request("GET", "/roles")
        return result

    def get(self, name: str) -> Doc:
        result: Doc = self.client.request("GET", f"/roles/{name}")
        return result

    def put(self, name: str, scopes: Names, *, description: str | None = None) -> Doc:
        """Create or replace a custom role (built-in ones are fixed: `Conflict`)."""
        body = drop_none({"scopes": scopes, "description": description})
        result: Doc = self.client.request("PUT", f"/roles/{name}", body)
        return result

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"/roles/{name}")


class Auths(Group):
    """Per-dataset read/write rules: `{read_users, read_groups, write_users, write_groups}`."""

    def get(self, dataset_id: str) -> Doc:
        result: Doc = self.client.request("GET", f"/auths/{dataset_id}")
        return result

    def put(self, dataset_id: str, rules: Doc) -> Doc:
        """Replace the rule lists given (the others are kept); answers all of them."""
        result: Doc = self.client.request("PUT", f"/auths/{dataset_id}", rules)
        return result

    def allowed(self, dataset_id: str, action: str) -> bool:
        """Whether the caller may `read` or `write` the dataset."""
        try:
            self.client.request("GET", f"/auths/{dataset_id}/actions/{action}")
        except Forbidden:
            return False
        return True


class Audit(Group):
    """The audit trail: who changed what, oldest first, a page at a time."""

    def list(self, dataset_id: str | None = None, *, username: str | None = None,
             action: str | None = None, since: str | None = None,
             until: str | None = None, limit: int | None = None,
             after: str | None = None) -> Doc:
        """One page of records (`{"records": [...], "next_after": cursor | None}`): a
        dataset's (for its readers), or everyone's (admin) when `dataset_id` is None."""
        params = drop_none({"username": username, "action": action, "since": since,
                            "until": until, "limit": limit, "after": after})
        path = f"/datasets/{dataset_id}/audit" if dataset_id else "/audit"
        result: Doc = self.client.request("GET", path, params=params)
        return result


def selection_body(tasks: Names | None, statuses: Names | None, names: Names | None,
                   job_index_min: int | None, job_index_max: int | None) -> Doc:
    """A bulk body: the listed `tasks`, else a filter of the given fields."""
    index = drop_none({"min": job_index_min, "max": job_index_max})
    selection = drop_none({"status": list(statuses) if statuses else None,
                           "name": list(names) if names else None,
                           "job_index": index or None})
    body: Doc = {"tasks": list(tasks)} if tasks is not None else {}
    if selection:
        body["filter"] = selection
    return body


class Maintenance(Group):
    """Server-wide maintenance and per-node drain (admin)."""

    def status(self) -> Doc:
        """`{general: {status, message, ...}, nodes: {node: {...}}}`."""
        result: Doc = self.client.request("GET", "/admin/maintenance")
        return result

    def set(self, node: str, on: bool, *, message: str | None = None,
            retry_after: int | None = None) -> Doc:
        """Turn maintenance (`node="all"`) or a node's drain on or off; answers the new
        status."""
        body = drop_none({"message": message, "retry_after": retry_after})
        result: Doc = self.client.request(
            "POST", f"/admin/maintenance/{node}/{'on' if on else 'off'}", body)
        return result


class Projects(Group):
    """`/projects`: members and quotas (admins manage; members read their own)."""

    def list(self) -> dict[str, Doc]:
        """`{name: project}`: all for admins, else the caller's own."""
        return self.client.collect("/projects")

    def get(self, name: str) -> Doc:
        result: Doc = self.client.request("GET", f"/projects/{quote(name)}")
        return result

    def create(self, name: str, *, description: str | None = None,
               users: Names | None = None, groups: Names | None = None,
               quota: Doc | None = None) -> str:
        """Create a project; answers its name (`Conflict` when taken)."""
        body = drop_none({"name": name, "description": description,
                          "users": list(users) if users is not None else None,
                          "groups": list(groups) if groups is not None else None,
                          "quota": quota})
        return created_id(self.client.request("POST", "/projects", body))

    def update(self, name: str, *, description: str | None = None,
               users: Names | None = None, groups: Names | None = None) -> Doc:
        """Change the description or replace the member lists given."""
        body = drop_none({"description": description,
                          "users": list(users) if users is not None else None,
                          "groups": list(groups) if groups is not None else None})
        result: Doc = self.client.request("PUT", f"/projects/{quote(name)}", body)
        return result

    def delete(self, name: str) -> None:
        self.client.request("DELETE", f"/projects/{quote(name)}")

    def quota(self, name: str) -> Doc:
        result: Doc = self.client.request("GET", f"/projects/{quote(name)}/quota")
        return result

    def set_quota(self, name: str, quota: Doc) -> Doc:
        """Set quota fields (`None` removes one); answers the whole quota."""
        result: Doc = self.client.request("PUT", f"/projects/{quote(name)}/quota", quota)
        return result

    def usage(self, name: str) -> Doc:
        """What the project holds against its quota now, and what holds its work back."""
        result: Doc = self.client.request("GET", f"/projects/{quote(name)}/usage")
        return result


class Usage(Group):
    """`/usage`, monthly bills and the billing rate table."""

    def query(self, *, user: str | None = None, group: str | None = None,
              project: str | None = None, site: str | None = None,
              dataset_id: str | None = None, start: str | None = None,
              end: str | None = None, group_by: Names | None = None) -> Doc:
        """Summed usage rows: `{"usage": [...], ...}`."""
        result: Doc = self.client.request("GET", "/usage", params={
            "user": user, "group": group, "project": project, "site": site,
            "dataset_id": dataset_id, "start": start, "end": end, "group_by": group_by})
        return result

    def csv(self, path: str, params: Params = None) -> str:
        """A usage or billing route's answer as CSV text."""
        response = self.client.send("GET", path, params={**(params or {}),
                                                         "format": "csv"})
        return response.text

    def bill(self, kind: str, name: str, year: int, month: int) -> Doc:
        """A user's, group's or project's (`kind`) usage in a month, priced."""
        result: Doc = self.client.request("GET", bill_path(kind, name, year, month))
        return result

    def rates(self) -> Doc:
        result: Doc = self.client.request("GET", "/billing/rates")
        return result

    def set_rates(self, rates: Doc) -> Doc:
        result: Doc = self.client.request("PUT", "/billing/rates", rates)
        return result


def bill_path(kind: str, name: str, year: int, month: int) -> str:
    if kind not in ("user", "group", "project"):
        raise ValueError(f"kind: expected user, group or project, not {kind!r}")
    return f"/{kind}s/{quote(name, safe='')}/billing/{year:04d}/{month:02d}"


class Archive(Group):
    """`POST /archive` (admins)."""

    def run(self, older_than_days: float, *, tag: str | None = None,
            logs: str | None = None, dry_run: bool = False,
            limit: int | None = None) -> Doc:
        """Archive finished datasets (or with `dry_run` say which would go)."""
        body = drop_none({"older_than_days": older_than_days, "tag": tag, "logs": logs,
                          "dry_run": dry_run, "limit": limit})
        result: Doc = self.client.request("POST", "/archive", body)
        return result

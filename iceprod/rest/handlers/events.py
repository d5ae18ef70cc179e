"""Server-sent events: ``GET /events`` streams dataset, job and task state changes to a
client that asks for ``Accept: text/event-stream`` (any other client gets one JSON page of
the events after ``since=``, a poll).

Each event is

    id: <seq>
    event: task | job | dataset | tasks
    data: {"seq", "type", "dataset_id", "job_id", "task_id", "name", "status", "prev_status",
           "time"}

(job and dataset events carry no task fields; job events no ``task_id``/``name``; a
``tasks`` event -- many of a dataset's tasks at once -- carries ``changed`` and ``cause``), in
sequence order, filtered to the datasets the token may read (a share token: its dataset
only), or to one dataset with ``dataset_id=`` (its id or number). A comment line
(``: heartbeat``) goes out when nothing happened for ``heartbeat`` seconds (15). A client
that reconnects with ``Last-Event-ID: <seq>`` gets every event after it from the store's
events log first (when the log was pruned past it, a comment says so), then the live stream.
The stream is the process's ``EventHub``, so events made by any process on the store arrive.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from tornado.iostream import StreamClosedError

from iceprod.common.errors import Invalid, NotFound
from iceprod.core.events import Subscription, public_event
from iceprod.db.auths import allows
from iceprod.db.store import Doc
from iceprod.rest.base import DATASET_REF, APIHandler, requires
from iceprod.rest.openapi import DATASET, HEARTBEAT, SEQ, query
from iceprod.rest.responses import responds

DEFAULT_HEARTBEAT = 15
BACKLOG_BATCH = 500
_SEQ = re.compile(r"[0-9]{1,18}")
_REF = re.compile(DATASET_REF)


class EventsHandler(APIHandler):
    closed = False
    sub: Subscription | None = None

    def on_connection_close(self) -> None:
        self.closed = True
        if self.sub is not None:
            self.sub.put(None)

    @responds("EventPage", media="text/event-stream")
    @query(dataset_id=DATASET, heartbeat=HEARTBEAT, since=SEQ)
    @requires("read:datasets")
    async def get(self) -> None:
        """With `Accept: text/event-stream`, a stream of state changes (see the module
        docstring and the events page): `dataset_id=` filters to one dataset,
        `Last-Event-ID` resumes after an event, `heartbeat=` sets the seconds between
        heartbeat comments. Otherwise one JSON answer, `{"events": [...], "last_event_id"}`:
        the events after `since=` (or `Last-Event-ID`), at most 500 (a poll)."""
        self.readable: dict[str, bool] = {}
        only = await self.only_dataset()
        last = self.last_event_id()
        if "text/event-stream" not in self.request.headers.get("Accept", ""):
            await self.poll(only, last)
            return
        heartbeat = self.int_arg("heartbeat", DEFAULT_HEARTBEAT, minimum=1, maximum=60) \
            or DEFAULT_HEARTBEAT
        hub = self.ctx.events
        self.sub = hub.subscribe()
        self._transforms = []  # never gzip a stream: each event must leave at once
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            await self.send(f"retry: 3000\n: stream from event {hub.cursor}\n\n")
            self.ctx.metrics.inc("iceprod_event_streams_total", help="event streams opened")
            sent = hub.cursor if last is None else await self.backlog(last, only, hub.cursor)
            while not self.closed:
                got = await self.sub.get(heartbeat)
                if got is None:
                    break  # dropped (too far behind) or the server stops: client resumes
                if got is False:
                    await self.send(": heartbeat\n\n")
                    continue
                assert isinstance(got, dict)
                if int(got["seq"]) <= sent:
                    continue
                sent = int(got["seq"])
                if await self.visible(got, only):
                    await self.send(frame(got))
        except StreamClosedError:
            pass
        finally:
            self.sub.close()
        with contextlib.suppress(StreamClosedError):
            self.finish()

    async def only_dataset(self) -> str | None:
        """The dataset the stream is limited to: the query's, else a share token's."""
        ref = self.get_argument("dataset_id", "")
        scope = self.principal.scope or ""
        if not ref and scope.startswith("dataset:"):
            ref = scope.split(":")[1]
        if not ref:
            return None
        if not _REF.fullmatch(ref):
            raise Invalid("dataset_id: expected a 32-hex id or a dataset number",
                          field="dataset_id")
        dataset_id = await self.dataset_ref(ref)
        if await self.db.datasets.find(dataset_id) is None:
            raise NotFound("dataset not found")
        await self.authorize_dataset(dataset_id, "read")
        return dataset_id

    async def poll(self, only: str | None, last: int | None) -> None:
        """The answer to a client that did not ask for a stream: the events after `since`
        (or `Last-Event-ID`) it may read, at most `BACKLOG_BATCH`, as JSON `{"events":
        [...], "last_event_id": seq}` (without either: none, and where the log is now)."""
        since = self.int_arg("since", None, maximum=10**18)
        since = last if since is None else since
        if since is None:
            self.write_json({"events": [], "last_event_id": self.ctx.events.cursor})
            return
        rows = await self.db.events.since(since, BACKLOG_BATCH,
                                          dataset_ids=[only] if only else None)
        seen = [public_event(r) for r in rows if await self.visible(r, only)]
        end = int(rows[-1]["seq"]) if rows else since
        self.write_json({"events": seen, "last_event_id": end})

    def last_event_id(self) -> int | None:
        raw = self.request.headers.get("Last-Event-ID")
        if raw is None or raw.strip() == "":
            return None
        if not _SEQ.fullmatch(raw.strip()):
            raise Invalid("Last-Event-ID: must be an event id (a sequence number)",
                          field="Last-Event-ID")
        return int(raw)

    async def backlog(self, last: int, only: str | None, upto: int) -> int:
        """Send the stored events after ``last`` up to the hub's cursor ``upto`` (what
        the live stream will not repeat); answers the last sequence covered."""
        first = await self.db.events.first_seq()
        if first is not None and first > last + 1:
            await self.send(f": events {last + 1}..{first - 1} were pruned\n\n")
        cursor = last
        while cursor < upto:
            rows = await self.db.events.since(cursor, BACKLOG_BATCH,
                                              dataset_ids=[only] if only else None)
            for row in rows:
                seq = int(row["seq"])
                if seq > upto:
                    return upto
                cursor = seq
                if await self.visible(row, only):
                    await self.send(frame(row))
            if len(rows) < BACKLOG_BATCH:
                break
        return max(cursor, upto)

    async def visible(self, event: Doc, only: str | None) -> bool:
        dataset_id = event.get("dataset_id")
        if not isinstance(dataset_id, str):
            return False
        if only is not None:
            return dataset_id == only
        p = self.principal
        if p.privileged:
            return True
        if dataset_id not in self.readable:
            rules = await self.db.auths.find(dataset_id)
            self.readable[dataset_id] = rules is not None and allows(
                rules, "read", p.username, p.groups)
        return self.readable[dataset_id]

    async def send(self, text: str) -> None:
        self.write(text)
        await self.flush()


def frame(event: Doc) -> str:
    data: dict[str, Any] = public_event(event)
    return f"id: {data['seq']}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n"


routes = [(r"/events", EventsHandler)]

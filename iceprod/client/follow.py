"""Wake-ups for commands that follow something (`status --watch`, `logs --follow`): the
server's `GET /events` stream, read in a thread, wakes the command when its dataset (or
task) changes; against a server without the stream (404), or when it keeps failing, the
command polls every `--interval` seconds as before."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import httpx

from iceprod.client.api import APIError, Client, Doc, NotFound

log = logging.getLogger(__name__)

RECONNECTS = 5  # a stream that keeps breaking is given up for polling
QUIET = 10.0  # with a stream: look anyway after max(this, --interval) quiet seconds


class Changes:
    """Events of one dataset (optionally one task), as wake-ups."""

    def __init__(self, make_client: Callable[[], Client], dataset_id: str,
                 task_id: str | None = None) -> None:
        self.make_client = make_client
        self.dataset_id = dataset_id
        self.task_id = task_id
        self.streaming = True
        self.stopped = False
        self.queue: queue.Queue[Doc | None] = queue.Queue()
        self.client: Client | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        last: str | None = None
        failures = 0
        while not self.stopped and failures < RECONNECTS:
            try:
                self.client = self.make_client()
                for event in self.client.events(dataset_id=self.dataset_id,
                                                last_event_id=last):
                    last = str(event.get("seq"))
                    failures = 0
                    if self.task_id is None or event.get("task_id") in (None, self.task_id):
                        self.queue.put(event)
            except NotFound:
                break  # a server without /events
            except (APIError, OSError, ValueError, httpx.HTTPError) as e:
                log.debug("event stream broke (%s); reconnecting", e)
            finally:
                if self.client is not None:
                    self.client.close()
            failures += 1
            if not self.stopped:
                time.sleep(min(0.2 * 2 ** failures, 5))
        self.streaming = False
        self.queue.put(None)

    def wait(self, interval: float) -> None:
        """Block until something changed (then let a burst of events settle briefly), or
        `interval` seconds when polling, or `max(QUIET, interval)` with a quiet stream."""
        try:
            got = self.queue.get(timeout=max(QUIET, interval) if self.streaming else interval)
        except queue.Empty:
            return
        if got is None and not self.streaming:
            time.sleep(interval)  # the stream just ended: poll from now on
            return
        deadline = time.monotonic() + 0.05
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.queue.get(timeout=left)
            except queue.Empty:
                break

    def close(self) -> None:
        self.stopped = True
        if self.client is not None:
            self.client.close()

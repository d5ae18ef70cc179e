"""Login rate limiting: after ``max_failures`` failed logins for one username within
``window`` seconds, further attempts are refused with 429 and ``Retry-After`` until the
oldest failure leaves the window.

Each attempt counts as a failure while it runs (so a burst of parallel guesses cannot slip
past the limit) and is taken back when it succeeds or when the directory was unreachable.
The counts live in this process: with N REST replicas an attacker gets at most N times the
limit. Usernames are compared case-insensitively.
"""

from __future__ import annotations

import math
import time

from iceprod.common.errors import IceProdError

MAX_TRACKED = 100_000


class TooManyRequests(IceProdError):
    """Too many failed attempts; ``retry_after`` seconds until the next one is allowed."""

    code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoginLimiter:
    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, list[float]] = {}

    @staticmethod
    def key(username: str) -> str:
        return username.strip().casefold()

    def begin(self, username: str) -> float:
        """Start an attempt: refuse it when the limit is reached, else count it as a failure
        until ``succeeded``/``cancel`` takes it back. Answers the attempt's mark."""
        key = self.key(username)
        now = time.monotonic()
        recent = [t for t in self._failures.get(key, []) if t > now - self.window]
        if self.max_failures > 0 and len(recent) >= self.max_failures:
            self._failures[key] = recent
            wait = max(1, math.ceil(recent[0] + self.window - now))
            raise TooManyRequests("too many failed logins; try again later", wait)
        recent.append(now)
        self._remember(key, recent)
        return now

    def succeeded(self, username: str) -> None:
        """A good password clears the username's failures."""
        self._failures.pop(self.key(username), None)

    def cancel(self, username: str, mark: float) -> None:
        """Take back an attempt that says nothing about the password (directory down)."""
        key = self.key(username)
        marks = self._failures.get(key)
        if marks and mark in marks:
            marks.remove(mark)

    def _remember(self, key: str, marks: list[float]) -> None:
        if key not in self._failures and len(self._failures) >= MAX_TRACKED:
            cutoff = time.monotonic() - self.window
            self._failures = {
                k: v for k, v in self._failures.items() if v and v[-1] > cutoff
            }
            # still full (a spray of usernames): forget the longest-tracked tenth
            for old in list(self._failures)[: len(self._failures) - MAX_TRACKED * 9 // 10]:
                del self._failures[old]
        self._failures[key] = marks

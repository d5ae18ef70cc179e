"""When and how long to wait before retrying a request (no I/O here: both clients use it).

A request is retried after a connection failure or a retryable status (429, 500, 502, 503,
504), waiting an exponentially growing, jittered delay, or at least the server's
`Retry-After`. Requests that are not idempotent (POST, PATCH) are retried only when the
server surely did not act on them: the connection was never made, or the answer was 429/503.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request reached the server."""

NOT_RETRYABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)
"""Transport errors that a retry cannot fix."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. `attempts` counts every try (1 disables retries)."""

    attempts: int = 5
    backoff: float = 0.5
    """First delay in seconds; doubles on each retry."""
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    """The longest `Retry-After` honoured; a longer one fails the call at once."""
    statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    unsafe_statuses: frozenset[int] = frozenset({429, 503})
    """Statuses after which a non-idempotent request is retried (the server did not act)."""
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def backoff_delay(self, attempt: int) -> float:
        """Delay before retry number `attempt + 1`: exponential, with jitter in [50%, 100%]."""
        cap = min(self.max_backoff, self.backoff * (2 ** attempt))
        return cap * (0.5 + self.random() / 2)

    def after_status(self, attempt: int, status: int, retry_after: float | None,
                     idempotent: bool) -> float | None:
        """Seconds to wait before retrying a response with `status`, or None to give up."""
        if attempt + 1 >= self.attempts or status not in self.statuses:
            return None
        if not idempotent and status not in self.unsafe_statuses:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # at least what the server asked for, spread by up to 10% so clients don't stampede
            return retry_after * (1 + self.random() / 10)
        return self.backoff_delay(attempt)

    def after_exception(self, attempt: int, exc: Exception, idempotent: bool) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up."""
        if attempt + 1 >= self.attempts or isinstance(exc, NOT_RETRYABLE):
            return None
        if not isinstance(exc, httpx.TransportError):
            return None
        if not idempotent and not isinstance(exc, NOT_SENT):
            return None
        return self.backoff_delay(attempt)


NO_RETRY = RetryPolicy(attempts=1)
"""A policy that never retries."""

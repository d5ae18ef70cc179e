"""Exceptions raised by the iceprod client.

Every failed call raises one `APIError` carrying the HTTP status (`code`) and the server's own
message (`message`, the `error` field of its `{"code": n, "error": "..."}` body). Subclasses
name the cases callers handle differently: `NotFound`, `Conflict`, `Unauthorized`, ...
`ConnectionFailed` (code 0) means the server could not be reached at all.
`UsageError` and `AuthError` are raised before any request: bad input, no usable token.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class APIError(Exception):
    """A call that failed: `code` is the HTTP status (0 when no answer came), `message` the
    server's error text, `method`/`url` the request, `retry_after` the server's hint (s)."""

    code: int = 0

    def __init__(self, code: int, message: str, *, method: str = "", url: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code} {self.message}" if self.code else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class Invalid(APIError):
    """400: the request was malformed; the message names the field."""


class Unauthorized(APIError):
    """401: no token, or an invalid or expired one."""


class Forbidden(APIError):
    """403: the token does not allow this."""


class NotFound(APIError):
    """404: no such document (or route)."""


class Conflict(APIError):
    """409: a conflicting change, e.g. a bad state transition or a stale `instance_id`."""


class TooLarge(APIError):
    """413: the body is larger than the server accepts."""


class RateLimited(APIError):
    """429: too many requests (still failing after the retries)."""


class ServerError(APIError):
    """5xx: the server failed (still failing after the retries)."""


class Unavailable(ServerError):
    """503: the server is in maintenance or overloaded (still, after the retries)."""


class ConnectionFailed(APIError):
    """The server could not be reached or did not answer (code 0)."""


BY_CODE: dict[int, type[APIError]] = {
    400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: TooLarge, 429: RateLimited, 503: Unavailable,
}


def error_class(code: int) -> type[APIError]:
    """The exception class for an HTTP status."""
    if code in BY_CODE:
        return BY_CODE[code]
    return ServerError if code >= 500 else APIError


def server_message(response: httpx.Response) -> str:
    """The `error` of an iceprod error body, else the body text or the reason phrase."""
    text = response.text
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = text.strip()
    if text and len(text) <= 500:
        return text
    return response.reason_phrase or f"HTTP {response.status_code}"


def error_from_response(response: httpx.Response, retry_after: float | None = None) -> APIError:
    """The exception for a non-2xx response."""
    request = response.request
    return error_class(response.status_code)(
        response.status_code, server_message(response), method=request.method,
        url=str(request.url), retry_after=retry_after,
    )


def error_from_exception(exc: httpx.HTTPError, method: str, url: str) -> ConnectionFailed:
    """The exception for a request that got no answer."""
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(0, f"cannot reach {url}: {reason}", method=method, url=url)


class UsageError(Exception):
    """Bad arguments or input, found before anything was sent (the CLI exits 2)."""


class AuthError(Exception):
    """No usable token: missing, expired or malformed (the CLI exits 3)."""

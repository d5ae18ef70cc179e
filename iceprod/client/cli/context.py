"""What every `iceprod` command shares: the exit codes, the `Context` a command runs with
(arguments, printer, a lazily made client) and resolving a DATASET argument."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from iceprod.client import settings
from iceprod.client.api import APIError, Client, Doc, RetryPolicy
from iceprod.client.errors import AuthError, UsageError
from iceprod.client.output import Output

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_UNFINISHED = 0, 1, 2, 3, 4, 5
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_API}  server or API error (including an unreachable server)
  {EXIT_USAGE}  usage or validation error (bad arguments, invalid config, 400 from the server)
  {EXIT_AUTH}  authentication or permission error (no/expired/invalid token, 401, 403)
  {EXIT_NOT_FOUND}  not found (404: no such dataset, task, ...)
  {EXIT_UNFINISHED}  `status --watch` ended without the dataset completing
  130  interrupted
"""
CLI_RETRY = RetryPolicy(attempts=3, max_retry_after=10)
"""People are waiting: give up on an unreachable server after ~1.5 s of backoff, and when
the server asks for more than 10 s (e.g. a login rate limit), say so instead of waiting."""
_HEX = frozenset("0123456789abcdef")


@dataclass
class Context:
    """What a command works with."""

    args: argparse.Namespace
    out: Output
    resolved: settings.Resolved
    _client: Client | None = field(default=None, repr=False)

    def client(self, auth: bool = True) -> Client:
        """The API client; `auth` requires a token."""
        if auth and not self.resolved.token:
            raise AuthError("not logged in: run `iceprod login` or set ICEPROD_TOKEN")
        if self._client is None:
            self._client = Client(self.resolved.url, self.resolved.token,
                                  timeout=self.args.timeout, retry=CLI_RETRY)
        return self._client

    def new_client(self) -> Client:
        """Another client like `client()`'s, for a thread of its own (an event stream)."""
        return Client(self.resolved.url, self.resolved.token, timeout=self.args.timeout,
                      retry=CLI_RETRY)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def dataset(self, ref: str) -> Doc:
        """A dataset by id or by its number (the server resolves either)."""
        ref = ref.strip()
        if not (len(ref) == 32 and set(ref) <= _HEX) and not ref.isdigit():
            raise UsageError(f"DATASET must be a dataset id or number, not {ref!r}")
        return self.client().datasets.get(ref)

    def confirm(self, question: str) -> bool:
        """Ask yes/no on the terminal; `--yes` answers yes, a non-interactive stdin refuses."""
        if getattr(self.args, "yes", False):
            return True
        if not sys.stdin.isatty():
            raise UsageError(f"{question} -- refusing without a terminal; pass --yes")
        answer = input(f"{question} [y/N] ").strip().lower()
        return answer in ("y", "yes")


class Reported(Exception):
    """An API error whose message was already printed; exits with its code."""

    def __init__(self, error: APIError) -> None:
        super().__init__(str(error))
        self.error = error


def describe_token(token: str) -> dict[str, Any]:
    """The token's user, roles, groups and expiry, decoded locally."""
    try:
        return settings.describe_token(settings.token_claims(token))
    except settings.TokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None


def short(text: Any, width: int = 40) -> str:
    """One table cell: one line, at most `width` characters."""
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def span(seconds: float) -> str:
    """A time span for people: `2d 3h`, `4h 5m`, `6m 7s`."""
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"

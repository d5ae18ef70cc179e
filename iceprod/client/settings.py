"""Where the `iceprod` command finds its server URL and token, and how it keeps them.

Precedence: the `--url`/`--token` flags, then `ICEPROD_URL`/`ICEPROD_TOKEN`, then what
`iceprod login` stored under `$XDG_CONFIG_HOME/iceprod/` (default `~/.config/iceprod/`):
`token` (mode 0600) and `url`. Tokens are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


class TokenError(ValueError):
    """A string that is not a JWT we can read."""


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/iceprod`, or `~/.config/iceprod`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "iceprod"


def token_path() -> Path:
    return config_dir() / "token"


def url_path() -> Path:
    return config_dir() / "url"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, text: str) -> None:
    """Write `text` so that only the owner can ever read it (created 0600, not chmod-ed
    after the fact)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save_login(token: str, url: str | None) -> Path:
    """Keep a token (and the server it is for); answers the token file's path."""
    _write_private(token_path(), token)
    if url:
        _write_private(url_path(), url)
    return token_path()


def clear_login() -> bool:
    """Forget the stored token; answers whether there was one."""
    existed = False
    for path in (token_path(), url_path()):
        try:
            path.unlink()
            existed = existed or path == token_path()
        except FileNotFoundError:
            pass
    return existed


@dataclass(frozen=True)
class Resolved:
    """The URL and token a command uses, and where each came from."""

    url: str
    url_source: str
    token: str | None
    token_source: str


def resolve(url_flag: str | None, token_flag: str | None) -> Resolved:
    """Apply the precedence flag > environment > stored login > default."""
    url, url_source = DEFAULT_URL, "default"
    if url_flag:
        url, url_source = url_flag, "--url"
    elif os.environ.get("ICEPROD_URL"):
        url, url_source = os.environ["ICEPROD_URL"], "ICEPROD_URL"
    elif stored := _read(url_path()):
        url, url_source = stored, str(url_path())
    token: str | None = None
    token_source = "none"
    if token_flag:
        token, token_source = token_flag, "--token"
    elif os.environ.get("ICEPROD_TOKEN"):
        token, token_source = os.environ["ICEPROD_TOKEN"], "ICEPROD_TOKEN"
    elif stored := _read(token_path()):
        token, token_source = stored, str(token_path())
    return Resolved(url.rstrip("/"), url_source, token, token_source)


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded locally WITHOUT verifying its signature: only for
    showing who a token claims to be, never for trusting it."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TokenError("not a JWT (expected three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"not a JWT: cannot decode its payload ({exc})") from None
    if not isinstance(claims, dict):
        raise TokenError("not a JWT: its payload is not an object")
    return claims


def is_registration_token(token: str | None) -> bool:
    """A pilot token naming no pilot: it may only register one (`POST /pilots`)."""
    try:
        claims = token_claims(token or "")
    except TokenError:
        return False
    return claims.get("roles") == ["pilot"] and not claims.get("pilot_id")


def describe_token(claims: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """What `whoami` shows: user, roles, groups, scope and expiry of a token's claims."""
    now = time.time() if now is None else now
    exp = claims.get("exp")
    out: dict[str, Any] = {
        "user": claims.get("sub"),
        "roles": list(claims.get("roles", [])),
        "groups": list(claims.get("groups", [])),
        "scope": claims.get("scope"),
        "expires": iso_time(exp) if isinstance(exp, (int, float)) else None,
        "expired": bool(isinstance(exp, (int, float)) and exp <= now),
        "expires_in": int(exp - now) if isinstance(exp, (int, float)) else None,
    }
    return out


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

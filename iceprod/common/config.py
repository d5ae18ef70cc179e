"""Process configuration: one frozen dataclass per process, from ``ICEPROD_*`` environment
variables and command-line flags, passed in (never global). Secrets are masked in repr."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def load_secret(data_dir: str) -> str:
    """``ICEPROD_SECRET``, else the secret kept in the data dir (generated on first use)."""
    env = os.environ.get("ICEPROD_SECRET")
    if env:
        return env
    path = Path(data_dir) / "secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./iceprod-data"
    db_url: str | None = None
    secret: str = field(default="", repr=False)
    lease_seconds: float = 600.0
    max_log_bytes: int = 16 * 1024 * 1024
    max_failures: int = 10
    token_exp: int = 86400

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None,
                 data_dir: str | None = None) -> ServerConfig:
        data_dir = data_dir or os.environ.get("ICEPROD_DATA_DIR") or "./iceprod-data"
        return cls(
            host=host or os.environ.get("ICEPROD_HOST") or "127.0.0.1",
            port=port if port is not None else _env_int("ICEPROD_PORT", 8080),
            data_dir=data_dir,
            db_url=os.environ.get("ICEPROD_DB_URL") or None,
            secret=load_secret(data_dir),
            lease_seconds=_env_float("ICEPROD_LEASE_SECONDS", 600.0),
            max_log_bytes=_env_int("ICEPROD_MAX_LOG_BYTES", 16 * 1024 * 1024),
            max_failures=_env_int("ICEPROD_MAX_FAILURES", 10),
        )

    def masked_db_url(self) -> str:
        if not self.db_url:
            return f"sqlite:{Path(self.data_dir) / 'iceprod.sqlite3'}"
        if "@" in self.db_url:
            scheme, rest = self.db_url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.db_url

"""Process configuration: one frozen dataclass per process, from ``ICEPROD_*`` environment
variables and command-line flags, passed in (never global). Secrets are masked in repr."""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _env_flag(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected 1/0 (true/false), got {raw!r}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _group_weights(raw: str) -> dict[str, float]:
    """``ICEPROD_GROUP_WEIGHTS``: JSON ``{"group": weight}``; groups not named weigh 1."""
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and v >= 0 for v in value.values()
    ):
        raise ValueError("ICEPROD_GROUP_WEIGHTS: expected a JSON object of weights >= 0")
    return {str(k): float(v) for k, v in value.items()}


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(raw: str) -> tuple[Network, ...]:
    """``ICEPROD_TRUSTED_PROXIES``: comma-separated addresses or CIDRs whose forwarding
    headers (``X-Forwarded-For``, ``X-Real-Ip``) name the client; unset trusts no one."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"ICEPROD_TRUSTED_PROXIES: {item!r} is not an address or CIDR"
                             ) from None
    return tuple(networks)


def _env_str(name: str) -> str | None:
    return os.environ.get(name) or None


def _env_json_map(name: str) -> dict[str, str]:
    """A JSON object of strings (``{"ldap-group": "iceprod-group"}``); unset is empty."""
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"{name}: not valid JSON") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{name}: must be a JSON object of strings")
    return value


def resolve_data_dir(data_dir: str | None = None) -> str:
    """``--data-dir``, else ``ICEPROD_DATA_DIR``, else ``./iceprod-data``."""
    return data_dir or os.environ.get("ICEPROD_DATA_DIR") or "./iceprod-data"


class MissingSecret(Exception):
    """The data dir holds no secret and none may be created (``load_secret(create=False)``)."""


def load_secret(data_dir: str, create: bool = True) -> str:
    """``ICEPROD_SECRET``, else the secret kept in the data dir (generated on first use,
    unless ``create`` is false: then ``MissingSecret``)."""
    env = os.environ.get("ICEPROD_SECRET")
    if env:
        return env
    path = Path(data_dir) / "secret"
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise MissingSecret(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _env_positive_int(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value <= 0:
        raise ValueError(f"{name}: must be a positive number of seconds")
    return value


DEFAULT_PILOT_TOKEN_SECONDS = 4 * 3600
"""Pilot tokens live hours, not days: a live pilot renews its token through its heartbeat."""
DEFAULT_LDAP_BIND_DN = "uid={username},ou=People,dc=example,dc=org"
DEFAULT_LDAP_GROUP_FILTER = "(|(memberUid={username})(member={dn}))"


def pilot_token_seconds() -> int:
    """``ICEPROD_PILOT_TOKEN_SECONDS``: how long a pilot's token lives (renewed by its
    heartbeat)."""
    return _env_positive_int("ICEPROD_PILOT_TOKEN_SECONDS", DEFAULT_PILOT_TOKEN_SECONDS)


def _accounts_from_env() -> dict[str, Any]:
    """Token lifetime, LDAP login, login rate limit and external token exchange settings."""
    algorithms = _env_str("ICEPROD_OIDC_ALGORITHMS") or "RS256"
    return {
        "token_exp": _env_int("ICEPROD_TOKEN_EXP", 86400),
        "pilot_token_seconds": pilot_token_seconds(),
        "auth_cache_seconds": _env_float("ICEPROD_AUTH_CACHE_SECONDS", 10.0),
        "ldap_uri": _env_str("ICEPROD_LDAP_URI"),
        "ldap_bind_dn": _env_str("ICEPROD_LDAP_BIND_DN") or DEFAULT_LDAP_BIND_DN,
        "ldap_group_base": _env_str("ICEPROD_LDAP_GROUP_BASE"),
        "ldap_group_filter": _env_str("ICEPROD_LDAP_GROUP_FILTER") or DEFAULT_LDAP_GROUP_FILTER,
        "ldap_group_attr": _env_str("ICEPROD_LDAP_GROUP_ATTR") or "cn",
        "ldap_group_map": _env_json_map("ICEPROD_LDAP_GROUP_MAP"),
        "ldap_timeout": _env_float("ICEPROD_LDAP_TIMEOUT", 5.0),
        "login_max_failures": _env_int("ICEPROD_LOGIN_MAX_FAILURES", 5),
        "login_window_seconds": _env_float("ICEPROD_LOGIN_WINDOW_SECONDS", 300.0),
        "oidc_issuer": _env_str("ICEPROD_OIDC_ISSUER"),
        "oidc_audience": _env_str("ICEPROD_OIDC_AUDIENCE"),
        "oidc_jwks_url": _env_str("ICEPROD_OIDC_JWKS_URL"),
        "oidc_public_key_file": _env_str("ICEPROD_OIDC_PUBLIC_KEY_FILE"),
        "oidc_claim": _env_str("ICEPROD_OIDC_CLAIM") or "email",
        "oidc_algorithms": tuple(a.strip() for a in algorithms.split(",") if a.strip()),
    }


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./iceprod-data"
    db_url: str | None = None
    secret: str = field(default="", repr=False)
    lease_seconds: float = 600.0
    max_log_bytes: int = 16 * 1024 * 1024
    max_file_bytes: int = 256 * 1024 * 1024  # one file in the file store (README "Running work")
    # a DRMAAtic task's zipped working directory (docs/dialects/drmaatic.md)
    max_download_bytes: int = 1024 * 1024 * 1024
    max_failures: int = 10
    token_exp: int = 86400
    scheduler_interval: float = 5.0
    queue_max: int = 10_000
    materialize_buffer: int = 20_000
    materialize_batch: int = 1_000
    priority_refresh: float = 30.0
    group_weights: dict[str, float] = field(default_factory=dict)
    # grids (README "Running work"): the grid config file ("none": no grids; unset: one
    # local grid), seconds between grid manager rounds, and the URL pilots reach us at
    grid_config: str | None = None
    # where the REST API keeps uploaded files (iceprod.rest.filestore): unset is
    # <data_dir>/store; a path (a shared mount for several REST replicas)
    file_store: str | None = None
    grid_interval: float = 10.0
    public_url: str | None = None
    # the archive policy (docs/operators/archive.md): archive finished datasets this many
    # days old (0: off), their logs compressed or dropped, checked every archive_interval s
    archive_after_days: float = 0.0
    archive_logs: str = "compress"
    archive_interval: float = 3600.0
    # events (iceprod.core.events): how often each process reads the store's events log
    # for changes made by other processes (its own are read at once), and how long the log
    # keeps them
    events_poll_interval: float = 0.5
    # a config PUT materializes and queues the dataset's first batch at once (off: the
    # scheduler's round does, as for a server whose tests build jobs and tasks by hand)
    materialize_on_put: bool = True
    # the longest a claim or a demand read may wait for work (a load balancer's idle
    # timeout must be longer); at most 20
    max_wait: float = 20.0
    events_keep_seconds: float = 86400.0
    # the operator account: a local grid without isolation runs only its datasets
    # (README "Isolation"); default: the OS account the server runs as
    operator: str = field(default_factory=lambda: _os_user())
    # accounts and login (README "Accounts and login")
    pilot_token_seconds: int = DEFAULT_PILOT_TOKEN_SECONDS
    auth_cache_seconds: float = 10.0
    ldap_uri: str | None = None
    ldap_bind_dn: str = DEFAULT_LDAP_BIND_DN
    ldap_group_base: str | None = None
    ldap_group_filter: str = DEFAULT_LDAP_GROUP_FILTER
    ldap_group_attr: str = "cn"
    ldap_group_map: dict[str, str] = field(default_factory=dict, compare=False)
    ldap_timeout: float = 5.0
    login_max_failures: int = 5
    login_window_seconds: float = 300.0
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_public_key_file: str | None = None
    oidc_claim: str = "email"
    oidc_algorithms: tuple[str, ...] = ("RS256",)
    # proxies whose X-Forwarded-For / X-Real-Ip name the client (README "Running it")
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None,
                 data_dir: str | None = None, with_secret: bool = True) -> ServerConfig:
        """``with_secret=False`` (a grid manager alone, ``--only grid``): the secret is
        neither read nor created, and the database settings are left out."""
        data_dir = resolve_data_dir(data_dir)
        return cls(
            host=host or os.environ.get("ICEPROD_HOST") or "127.0.0.1",
            port=port if port is not None else _env_int("ICEPROD_PORT", 8080),
            data_dir=data_dir,
            db_url=(os.environ.get("ICEPROD_DB_URL") or None) if with_secret else None,
            secret=load_secret(data_dir) if with_secret else "",
            lease_seconds=_env_float("ICEPROD_LEASE_SECONDS", 600.0),
            max_log_bytes=_env_int("ICEPROD_MAX_LOG_BYTES", 16 * 1024 * 1024),
            max_file_bytes=_env_int("ICEPROD_MAX_FILE_BYTES", 256 * 1024 * 1024),
            max_download_bytes=_env_int("ICEPROD_MAX_DOWNLOAD_BYTES", 1024 * 1024 * 1024),
            max_failures=_env_int("ICEPROD_MAX_FAILURES", 10),
            scheduler_interval=_env_float("ICEPROD_SCHEDULER_INTERVAL", 5.0),
            queue_max=_env_int("ICEPROD_QUEUE_MAX", 10_000),
            materialize_buffer=_env_int("ICEPROD_MATERIALIZE_BUFFER", 20_000),
            materialize_batch=_env_int("ICEPROD_MATERIALIZE_BATCH", 1_000),
            priority_refresh=_env_float("ICEPROD_PRIORITY_REFRESH", 30.0),
            group_weights=_group_weights(os.environ.get("ICEPROD_GROUP_WEIGHTS", "")),
            grid_config=_env_str("ICEPROD_GRID_CONFIG"),
            file_store=_env_str("ICEPROD_FILE_STORE"),
            grid_interval=_env_float("ICEPROD_GRID_INTERVAL", 10.0),
            public_url=_env_str("ICEPROD_URL"),
            archive_after_days=_env_float("ICEPROD_ARCHIVE_AFTER_DAYS", 0.0),
            archive_logs=_archive_logs(os.environ.get("ICEPROD_ARCHIVE_LOGS", "compress")),
            archive_interval=_env_float("ICEPROD_ARCHIVE_INTERVAL", 3600.0),
            events_poll_interval=_env_float("ICEPROD_EVENTS_POLL_INTERVAL", 0.5),
            materialize_on_put=_env_flag("ICEPROD_MATERIALIZE_ON_PUT", True),
            max_wait=min(_env_float("ICEPROD_MAX_WAIT", 20.0), 20.0),
            events_keep_seconds=_env_float("ICEPROD_EVENTS_KEEP_SECONDS", 86400.0),
            operator=_env_str("ICEPROD_OPERATOR") or _os_user(),
            trusted_proxies=trusted_proxies(os.environ.get("ICEPROD_TRUSTED_PROXIES", "")),
            **_accounts_from_env(),
        )

    @property
    def ldap_enabled(self) -> bool:
        return bool(self.ldap_uri)

    @property
    def oidc_enabled(self) -> bool:
        """The token exchange needs an issuer, an audience and a key source."""
        return bool(
            self.oidc_issuer and self.oidc_audience
            and (self.oidc_jwks_url or self.oidc_public_key_file)
        )

    def masked_db_url(self) -> str:
        if not self.db_url:
            return f"sqlite:{Path(self.data_dir) / 'iceprod.sqlite3'}"
        if "@" in self.db_url:
            scheme, rest = self.db_url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.db_url


def _archive_logs(value: str) -> str:
    if value not in ("compress", "drop"):
        raise ValueError(f"ICEPROD_ARCHIVE_LOGS: expected compress or drop, not {value!r}")
    return value


def _os_user() -> str:
    """The OS account this process runs as (``ICEPROD_OPERATOR``'s default)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

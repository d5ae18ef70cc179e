"""LDAP login: a simple bind as the user (its DN built from a template), then, on the same
connection, the user's own entry (canonical ``uid``, ``mail``) and optionally the groups it
belongs to.

Blocking (ldap3's synchronous strategy): call ``authenticate`` in a thread. The username is
escaped for the DN (``escape_rdn``) and for search filters (``escape_filter_chars``), so it
can never change the DN or a filter's structure. Passwords are never logged.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

# ldap3 (last released 2021) imports pyasn1 names that pyasn1 0.6.2+ deprecates at import
# time; nothing we can act on, and the test suite turns warnings into errors.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ldap3(\.|$)")
    from ldap3 import BASE, NONE, SUBTREE, Connection, Server
    from ldap3.core.exceptions import (
        LDAPCertificateError,
        LDAPCommunicationError,
        LDAPConfigurationError,
        LDAPException,
        LDAPInvalidPortError,
        LDAPInvalidServerError,
        LDAPInvalidTlsSpecificationError,
        LDAPMaximumRetriesError,
        LDAPResponseTimeoutError,
        LDAPServerPoolExhaustedError,
        LDAPSSLNotSupportedError,
        LDAPStartTLSError,
    )
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

from iceprod.common.config import ServerConfig

log = logging.getLogger(__name__)

SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4  # partial results are still results
NO_SUCH_OBJECT = 32
# result codes that say the directory, not the password, is the problem
UNAVAILABLE_RESULTS = frozenset({3, 11, 51, 52, 80})
MAX_GROUPS = 1000
# what says the directory (or our configuration of it) is the problem; any other error the
# library raises is about the input (a SASLprep refusal of the password, a username that
# makes no DN, text it cannot encode) and so is a failed login, never an outage
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (
    LDAPCommunicationError, LDAPResponseTimeoutError, LDAPConfigurationError,
    LDAPInvalidServerError, LDAPInvalidPortError, LDAPStartTLSError, LDAPCertificateError,
    LDAPSSLNotSupportedError, LDAPInvalidTlsSpecificationError, LDAPServerPoolExhaustedError,
    LDAPMaximumRetriesError, OSError,
)


class BadCredentials(Exception):
    """Unknown user or wrong password; callers must not tell which."""


class DirectoryUnavailable(Exception):
    """The LDAP server could not be reached or could not answer."""


@dataclass(frozen=True)
class LdapSettings:
    uri: str
    bind_dn: str
    group_base: str | None
    group_filter: str
    group_attr: str
    timeout: float

    @classmethod
    def from_config(cls, config: ServerConfig) -> LdapSettings:
        assert config.ldap_uri
        return cls(config.ldap_uri, config.ldap_bind_dn, config.ldap_group_base,
                   config.ldap_group_filter, config.ldap_group_attr, config.ldap_timeout)


@dataclass(frozen=True)
class LdapIdentity:
    """Who the directory says logged in."""

    username: str
    dn: str
    email: str | None
    groups: tuple[str, ...]


def user_dn(settings: LdapSettings, username: str) -> str:
    return settings.bind_dn.replace("{username}", escape_rdn(username))


def group_filter(settings: LdapSettings, username: str, dn: str) -> str:
    return settings.group_filter.replace(
        "{username}", escape_filter_chars(username)
    ).replace("{dn}", escape_filter_chars(dn))


def authenticate(settings: LdapSettings, username: str, password: str) -> LdapIdentity:
    """Bind as the user and read who it is; raises ``BadCredentials`` or
    ``DirectoryUnavailable``."""
    if not username or not password:
        # an empty password would be an unauthenticated bind, which many servers accept
        raise BadCredentials()
    dn = user_dn(settings, username)
    timeout = max(1, math.ceil(settings.timeout))  # ldap3 packs it as a C integer
    conn = Connection(
        Server(settings.uri, connect_timeout=timeout, get_info=NONE),
        user=dn, password=password, receive_timeout=timeout,
        raise_exceptions=False, read_only=True, auto_referrals=False,
    )
    try:
        _bind(conn)
        canonical, email = _own_entry(conn, dn, username)
        groups = _groups(conn, settings, canonical, dn)
    except UNREACHABLE_ERRORS as e:
        log.warning("LDAP %s unavailable: %s", settings.uri, type(e).__name__)
        raise DirectoryUnavailable() from None
    except (LDAPException, ValueError, TypeError, UnicodeError) as e:
        log.info("LDAP refused the login input: %s", type(e).__name__)
        raise BadCredentials() from None
    finally:
        try:
            conn.unbind()
        except LDAPException:
            pass
    return LdapIdentity(canonical, dn, email, groups)


def _bind(conn: Connection) -> None:
    conn.open()
    if conn.bind():
        return
    code = conn.result.get("result")
    if code in UNAVAILABLE_RESULTS:
        log.warning("LDAP bind refused by the server: %s", conn.result.get("description"))
        raise DirectoryUnavailable()
    raise BadCredentials()


def _check(conn: Connection, what: str) -> bool:
    """Whether the last search found entries; raises when the directory failed."""
    code = conn.result.get("result")
    if code in (SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT):
        return code != NO_SUCH_OBJECT
    log.warning("LDAP %s search failed: %s", what, conn.result.get("description"))
    raise DirectoryUnavailable()


def _entries(conn: Connection) -> list[dict[str, Any]]:
    return [r.get("attributes", {}) for r in conn.response or []
            if r.get("type") == "searchResEntry"]


def _first(values: Any) -> str | None:
    if isinstance(values, list):
        return str(values[0]) if values else None
    return str(values) if values else None


def _own_entry(conn: Connection, dn: str, username: str) -> tuple[str, str | None]:
    """The directory's spelling of the username (so ``Alice`` and ``alice`` are one
    account) and the user's email."""
    conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["uid", "mail"])
    if not _check(conn, "user") or not (entries := _entries(conn)):
        return username, None
    attrs = entries[0]
    uids = attrs.get("uid") or []
    uids = uids if isinstance(uids, list) else [uids]
    canonical = next((str(u) for u in uids if str(u).casefold() == username.casefold()),
                     username)
    return canonical, _first(attrs.get("mail"))


def _groups(conn: Connection, settings: LdapSettings, username: str, dn: str) -> tuple[str, ...]:
    if not settings.group_base:
        return ()
    conn.search(settings.group_base, group_filter(settings, username, dn),
                search_scope=SUBTREE, attributes=[settings.group_attr], size_limit=MAX_GROUPS)
    if not _check(conn, "group"):
        return ()
    names = {name for attrs in _entries(conn) if (name := _first(attrs.get(settings.group_attr)))}
    return tuple(sorted(names))

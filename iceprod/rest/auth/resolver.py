"""Turns a bearer token into a ``Principal``: verifies it, resolves the scopes of the custom
roles it names, and refuses it when its subject's tokens were revoked after it was issued.

Custom roles and revocation times are cached per process for a short TTL
(``ICEPROD_AUTH_CACHE_SECONDS``), so a request costs no store round trip. A change made
through this process takes effect here at once; other REST replicas see it within the TTL.

A token bound to a pilot (``pilot_id``) is only good while that pilot is active (submitted or
running): its status is read on every request, one primary-key lookup that is not cached, so
a pilot marked lost or finished (by its grid manager, the reconciler, itself or an operator),
or deleted, loses its credentials at once on every replica.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Generic, TypeVar

from iceprod.common.errors import NotFound, Unauthorized
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.rest.auth.apikeys import is_api_key, key_claims
from iceprod.rest.auth.tokens import (
    Principal,
    custom_role_names,
    decode_claims,
    principal_from_claims,
)

ACTIVE_PILOT = frozenset({"submitted", "running"})
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MAX_ENTRIES = 10_000


class TTLCache(Generic[K, V]):
    """A small dict whose entries expire; the oldest entries go first when it is full."""

    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[K, tuple[float, V]] = {}

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a fresh entry, else ``(False, None)``."""
        entry = self._data.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._data.pop(key, None)
        if len(self._data) >= self.max_entries:
            for old in list(self._data)[: self.max_entries // 10 or 1]:
                del self._data[old]
        self._data[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: K) -> None:
        self._data.pop(key, None)


class TokenResolver:
    """One per process (held by the ``AppContext``)."""

    def __init__(self, db: Database, secret: str, ttl: float) -> None:
        self.db = db
        self.secret = secret
        self._roles: TTLCache[str, frozenset[str] | None] = TTLCache(ttl)
        self._not_before: TTLCache[str, float | None] = TTLCache(ttl)

    async def principal(self, token: str) -> Principal:
        if is_api_key(token):
            claims = await key_claims(self.db, token)
        else:
            claims = decode_claims(self.secret, token)
        custom = await self.custom_scopes(custom_role_names(claims))
        principal = principal_from_claims(claims, custom)
        not_before = await self.not_before(principal.username)
        if not_before is not None and (principal.iat or 0.0) < not_before:
            raise Unauthorized("token revoked")
        if principal.pilot_id:
            pilot = await self.check_pilot_active(principal.pilot_id)
            principal = replace(principal, pilot=pilot)
        return principal

    async def check_pilot_active(self, pilot_id: str) -> Doc:
        """Refuse the credentials of a pilot that is gone: lost, finished or deleted; answers
        its record (a claim reads it once, not twice)."""
        try:
            doc = await self.db.pilots.get(pilot_id)
        except NotFound:
            raise Unauthorized(f"pilot {pilot_id} does not exist (deleted?): its credentials "
                               "are no longer valid") from None
        status = doc.get("status")
        if status not in ACTIVE_PILOT:
            raise Unauthorized(f"pilot {pilot_id} is {status}: its credentials are no longer "
                               "valid")
        return doc

    async def custom_scopes(self, names: Sequence[str]) -> dict[str, frozenset[str]]:
        """Scopes of the named custom roles that exist (unknown names are left out)."""
        out: dict[str, frozenset[str]] = {}
        missing: list[str] = []
        for name in names:
            hit, scopes = self._roles.lookup(name)
            if not hit:
                missing.append(name)
            elif scopes is not None:
                out[name] = scopes
        if missing:
            found = await self.db.roles.scopes_of(missing)
            for name in missing:
                self._roles.put(name, found.get(name))
            out.update(found)
        return out

    async def not_before(self, username: str) -> float | None:
        hit, value = self._not_before.lookup(username)
        if hit:
            return value
        value = await self.db.revocations.not_before(username)
        self._not_before.put(username, value)
        return value

    def forget_role(self, name: str) -> None:
        self._roles.drop(name)

    def forget_subject(self, username: str) -> None:
        self._not_before.drop(username)

"""Roles are data: this table maps each role to the scopes it grants.

Scopes name what a route needs (``@requires("write:datasets")``). Per-dataset read/write
rules further restrict ``read:datasets``/``write:datasets`` for roles that do not bypass them.
"""

from __future__ import annotations

from collections.abc import Iterable

ALL = "*"

SCOPES = {
    "read:datasets": "read datasets the dataset's rules allow",
    "write:datasets": "change datasets the dataset's rules allow",
    "create:datasets": "submit new datasets",
    "internal": "internal job/task/log routes used by the server's own processes",
    "pilot": "claim tasks and report on the tasks the pilot holds",
    "read:grids": "list grids",
    "write:grids": "register grids",
    "read:pilots": "list pilots",
    "write:pilots": "register and heartbeat pilots (a pilot only its own)",
}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset({ALL}),
    "system": frozenset(SCOPES),
    "user": frozenset(
        {"read:datasets", "write:datasets", "create:datasets", "read:grids", "read:pilots"}
    ),
    "pilot": frozenset({"pilot", "read:pilots", "write:pilots"}),
    "anonymous": frozenset(),
}

BYPASS_RULES = frozenset({"admin", "system"})
ROLES = tuple(ROLE_SCOPES)


def scopes_for(roles: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for role in roles:
        out |= ROLE_SCOPES.get(role, frozenset())
    return frozenset(out)

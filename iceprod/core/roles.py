"""Roles are data: this table maps each role to the scopes it grants.

Scopes name what a route needs (``@requires("write:datasets")``). Per-dataset read/write
rules further restrict ``read:datasets``/``write:datasets`` for roles that do not bypass them.
The built-in roles below are fixed; custom roles (stored, managed through ``/roles``) map a
name to scopes of ``SCOPES`` and are resolved when a token is decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
    "grid": "run a grid: read queued demand (GET /task_demand), register pilots for a grid "
            "(each answered with its bound token), mark them lost or finished, remove them",
    "account": "read one's own user record and groups, and the roles",
    "token": "mint sub-tokens within one's own rights (POST /create_token)",
    "read:accounts": "read users, groups and roles",
    "write:accounts": "manage users, groups and custom roles; revoke tokens",
    "read:audit": "read the whole audit trail (every dataset's and the accounts' records)",
    "maintenance": "read and set server-wide maintenance and per-node drain",
    "facility": "run the facility: projects and their quotas, billing rates, archiving",
    "write:scripts": "create, replace and remove script catalog entries (PUT/DELETE /script)",
}
# only admin manages accounts (a system token must not be able to grant itself admin),
# reads the whole audit trail, switches the facility into maintenance and runs it
ADMIN_ONLY = frozenset({"write:accounts", "read:audit", "maintenance", "facility"})

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset({ALL}),
    "system": frozenset(SCOPES) - ADMIN_ONLY,
    "user": frozenset(
        {"read:datasets", "write:datasets", "create:datasets", "read:grids", "read:pilots",
         "account", "token"}
    ),
    "pilot": frozenset({"pilot", "read:pilots", "write:pilots"}),
    # a grid manager on a submit host: its grids, and the pilots registered for a grid;
    # never tasks, datasets or accounts
    "grid": frozenset({"grid", "read:grids", "write:grids", "read:pilots", "write:pilots"}),
    "anonymous": frozenset(),
}

BYPASS_RULES = frozenset({"admin", "system"})
ROLES = tuple(ROLE_SCOPES)


def scopes_for(
    roles: Iterable[str], custom: Mapping[str, frozenset[str]] | None = None
) -> frozenset[str]:
    """The union of the scopes of built-in roles and of the given custom roles."""
    out: set[str] = set()
    for role in roles:
        builtin = ROLE_SCOPES.get(role)
        out |= builtin if builtin is not None else (custom or {}).get(role, frozenset())
    return frozenset(out)

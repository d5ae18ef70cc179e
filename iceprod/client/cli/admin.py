"""`iceprod admin ...`: users, groups, roles, per-dataset rules and maintenance (admin tokens).

Like the rest of the CLI these commands only parse arguments, call the client and print.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from iceprod.client.api import Doc
from iceprod.client.cli.context import EXIT_CODES, Context, short
from iceprod.client.cli.parsing import Command, common_options
from iceprod.client.errors import UsageError

RULE_FIELDS = ("read_users", "read_groups", "write_users", "write_groups")
ID_CHARS = frozenset("0123456789abcdef")


def _is_id(text: str) -> bool:
    return len(text) == 32 and set(text) <= ID_CHARS


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeated and comma-separated values, flattened."""
    return [v for value in values or [] for v in value.split(",") if v]


def _done(ctx: Context, message: str, data: Any = None) -> int:
    if ctx.args.json:
        ctx.out.json(data if data is not None else {"ok": True})
    else:
        ctx.out.line(message)
    return 0


# -- users -------------------------------------------------------------------------------------


def user_id(ctx: Context, ref: str) -> str:
    """A user's id from its id or username."""
    if _is_id(ref):
        return ref
    return str(ctx.client().users.by_username(ref)["user_id"])


def users_list(ctx: Context) -> int:
    docs = ctx.client().users.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return 0
    ctx.out.table(["user_id", "username", "roles", "groups"],
                  [[u.get("user_id", k), u.get("username"), u.get("roles"), u.get("groups")]
                   for k, u in sorted(docs.items(), key=lambda kv: kv[1].get("username", ""))])
    return 0


def users_show(ctx: Context) -> int:
    doc = ctx.client().users.get(user_id(ctx, ctx.args.user))
    if ctx.args.json:
        ctx.out.json(doc)
    else:
        ctx.out.fields(sorted(doc.items()))
    return 0


def users_add(ctx: Context) -> int:
    a = ctx.args
    new_id = ctx.client().users.create(a.username, roles=_split(a.role) or None,
                                       groups=_split(a.group) or None, email=a.email)
    return _done(ctx, f"created user {a.username} ({new_id})",
                 {"user_id": new_id, "username": a.username})


def users_delete(ctx: Context) -> int:
    uid = user_id(ctx, ctx.args.user)
    ctx.client().users.delete(uid)
    return _done(ctx, f"deleted user {ctx.args.user}", {"user_id": uid, "deleted": True})


def users_set_roles(ctx: Context) -> int:
    uid = user_id(ctx, ctx.args.user)
    roles = _split(ctx.args.roles)
    ctx.client().users.set_roles(uid, roles)
    return _done(ctx, f"roles of {ctx.args.user}: {', '.join(roles) or '-'}",
                 {"user_id": uid, "roles": roles})


def users_set_groups(ctx: Context) -> int:
    uid = user_id(ctx, ctx.args.user)
    groups = _split(ctx.args.groups)
    ctx.client().users.set_groups(uid, groups)
    return _done(ctx, f"groups of {ctx.args.user}: {', '.join(groups) or '-'}",
                 {"user_id": uid, "groups": groups})


def users_add_group(ctx: Context) -> int:
    uid = user_id(ctx, ctx.args.user)
    ctx.client().users.add_group(uid, ctx.args.group)
    return _done(ctx, f"added {ctx.args.user} to {ctx.args.group}",
                 {"user_id": uid, "group": ctx.args.group})


def users_revoke(ctx: Context) -> int:
    uid = user_id(ctx, ctx.args.user)
    result = ctx.client().users.revoke_tokens(uid)
    return _done(ctx, f"revoked the tokens of {ctx.args.user} issued before "
                      f"{result.get('not_before')}", {"user_id": uid, **result})


# -- groups ------------------------------------------------------------------------------------


def group_id(ctx: Context, ref: str) -> str:
    """A group's id from its id or name."""
    if _is_id(ref):
        return ref
    return str(ctx.client().groups.by_name(ref)["group_id"])


def groups_list(ctx: Context) -> int:
    docs = ctx.client().groups.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return 0
    ctx.out.table(["group_id", "name", "description"],
                  [[g.get("group_id", k), g.get("name"), g.get("description")]
                   for k, g in sorted(docs.items(), key=lambda kv: kv[1].get("name", ""))])
    return 0


def groups_show(ctx: Context) -> int:
    doc = ctx.client().groups.get(group_id(ctx, ctx.args.group))
    if ctx.args.json:
        ctx.out.json(doc)
    else:
        ctx.out.fields(sorted(doc.items()))
    return 0


def groups_add(ctx: Context) -> int:
    new_id = ctx.client().groups.create(ctx.args.name, description=ctx.args.description)
    return _done(ctx, f"created group {ctx.args.name} ({new_id})",
                 {"group_id": new_id, "name": ctx.args.name})


def groups_delete(ctx: Context) -> int:
    gid = group_id(ctx, ctx.args.group)
    ctx.client().groups.delete(gid)
    return _done(ctx, f"deleted group {ctx.args.group}", {"group_id": gid, "deleted": True})


# -- roles -------------------------------------------------------------------------------------


def roles_list(ctx: Context) -> int:
    docs = ctx.client().roles.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return 0
    ctx.out.table(["role", "scopes", "description"],
                  [[r.get("name", k), r.get("scopes"), r.get("description")]
                   for k, r in sorted(docs.items())])
    return 0


def roles_show(ctx: Context) -> int:
    doc = ctx.client().roles.get(ctx.args.name)
    if ctx.args.json:
        ctx.out.json(doc)
    else:
        ctx.out.fields(sorted(doc.items()))
    return 0


def roles_set(ctx: Context) -> int:
    doc = ctx.client().roles.put(ctx.args.name, _split(ctx.args.scope),
                                 description=ctx.args.description)
    return _done(ctx, f"role {ctx.args.name}: {', '.join(doc['scopes']) or 'no scopes'}", doc)


def roles_delete(ctx: Context) -> int:
    ctx.client().roles.delete(ctx.args.name)
    return _done(ctx, f"deleted role {ctx.args.name}", {"name": ctx.args.name, "deleted": True})


# -- dataset rules -----------------------------------------------------------------------------


def rules_show(ctx: Context) -> int:
    ds = ctx.dataset(ctx.args.dataset)["dataset_id"]
    rules = ctx.client().auths.get(ds)
    if ctx.args.json:
        ctx.out.json(rules)
    else:
        ctx.out.fields([(k, rules.get(k, [])) for k in RULE_FIELDS])
    return 0


def rules_set(ctx: Context) -> int:
    """Replace the given rule lists; the server keeps the others."""
    given: Doc = {k: _split([v]) for k in RULE_FIELDS if (v := getattr(ctx.args, k)) is not None}
    if not given:
        raise UsageError("give at least one of --read-users, --read-groups, --write-users, "
                         "--write-groups")
    ds = ctx.dataset(ctx.args.dataset)["dataset_id"]
    rules = ctx.client().auths.put(ds, given)
    if ctx.args.json:
        ctx.out.json(rules)
    else:
        ctx.out.fields([(k, rules[k]) for k in RULE_FIELDS])
    return 0


def rules_usage(ctx: Context) -> int:
    raise UsageError("choose an action: iceprod admin rules show|set DATASET")



# -- admin maintenance -------------------------------------------------------------------------


def _show_state(ctx: Context, state: Doc) -> int:
    if ctx.args.json:
        ctx.out.json(state)
        return 0
    g = state.get("general") or {}
    if g.get("status") == "on":
        ctx.out.line(f"maintenance: on since {g.get('since')} by {g.get('by')}: "
                     f"{g.get('message')} (retry after {g.get('retry_after')}s)")
    else:
        ctx.out.line("maintenance: off")
    nodes: dict[str, Any] = state.get("nodes") or {}
    if nodes:
        ctx.out.table(["drained", "since", "by", "message"],
                      [[n, e.get("since"), e.get("by"), short(e.get("message"), 60)]
                       for n, e in sorted(nodes.items())])
    else:
        ctx.out.line("drained: none")
    return 0


def maintenance_status(ctx: Context) -> int:
    return _show_state(ctx, ctx.client().maintenance.status())


def maintenance_set(ctx: Context) -> int:
    a = ctx.args
    node = a.node or "all"
    state = ctx.client().maintenance.set(node, a.admin_action == "on", message=a.message,
                                         retry_after=a.retry_after)
    return _show_state(ctx, state)


def _maintenance_parsers(b: _Parsers) -> None:
    """`iceprod admin maintenance [status] | on [NODE] | off [NODE]` (b: admin's parsers)."""
    kind = b.kind("maintenance", "server-wide maintenance and per-node drain (default: "
                  "status)", maintenance_status)
    b.action(kind, "status", maintenance_status, "show maintenance and drained nodes")
    start = ("start maintenance (no NODE), or drain NODE (a site, pilot host or grid): no new "
             "work there, running tasks finish")
    for action, text in (("on", start), ("off", "end maintenance (no NODE), or bring NODE back")):
        p = b.action(kind, action, maintenance_set, text)
        p.add_argument("node", metavar="NODE", nargs="?",
                       help="a site, pilot host or grid name (default: all, the server)")
        if action == "on":
            p.add_argument("--message", help="shown to users (503 answers) and in explain")
            p.add_argument("--retry-after", type=int, metavar="SECONDS",
                           help="sent as Retry-After with 503 answers (default 600)")
        else:
            p.set_defaults(message=None, retry_after=None)


# -- parser ------------------------------------------------------------------------------------

class _Parsers:
    """Adds `iceprod admin KIND ACTION` parsers, each with the common options."""

    def __init__(self, sub: Any, common: Callable[[bool], argparse.ArgumentParser],
                 epilog: str) -> None:
        self.common = common
        self.epilog = epilog
        admin = sub.add_parser(
            "admin", help="administer users, groups, roles, rules, maintenance, projects, scripts",
            description="Administration (needs an admin token; a user may read its own "
                        "record and dataset rules it can read).",
            parents=[common(False)], epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        self.kinds = admin.add_subparsers(dest="admin_kind", metavar="KIND", required=True)

    def kind(self, name: str, text: str, default: Command) -> Any:
        p = self.kinds.add_parser(name, help=text, description=text, epilog=self.epilog,
                                  parents=[self.common(True)],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=default)
        return p.add_subparsers(dest="admin_action", metavar="ACTION")

    def action(self, parent: Any, name: str, func: Command, text: str) -> Any:
        p = parent.add_parser(name, help=text, description=text, epilog=self.epilog,
                              parents=[self.common(True)],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p


def add_admin_commands(sub: Any, *more: Callable[[Any], None]) -> Any:
    """`iceprod admin users|groups|roles|rules|maintenance ...`; each of ``more`` adds kinds
    of its own with the same parser builder (``_Parsers``), which is answered so other
    command modules can add theirs too (`iceprod admin scripts`)."""
    parsers = _Parsers(sub, common_options, EXIT_CODES)
    _users_parsers(parsers)
    _groups_parsers(parsers)
    _roles_parsers(parsers)
    _rules_parsers(parsers)
    _maintenance_parsers(parsers)
    for add in more:
        add(parsers)
    return parsers


def _user_arg(p: Any) -> Any:
    p.add_argument("user", metavar="USER", help="username or user id")
    return p


def _users_parsers(b: _Parsers) -> None:
    users = b.kind("users", "list and change users (default: list)", users_list)
    b.action(users, "list", users_list, "list users")
    _user_arg(b.action(users, "show", users_show, "show a user"))
    p = b.action(users, "add", users_add, "create a user")
    p.add_argument("username", metavar="USERNAME")
    p.add_argument("--role", action="append", help="role (repeatable or a,b; default user)")
    p.add_argument("--group", action="append", help="group (repeatable or a,b; default users)")
    p.add_argument("--email", help="email, matched by the external token exchange")
    _user_arg(b.action(users, "delete", users_delete, "delete a user (revokes its tokens)"))
    _user_arg(b.action(users, "revoke", users_revoke, "revoke every token a user holds now"))
    p = _user_arg(b.action(users, "set-roles", users_set_roles, "replace a user's roles"))
    p.add_argument("roles", metavar="ROLE", nargs="*", help="roles (none removes all)")
    p = _user_arg(b.action(users, "set-groups", users_set_groups, "replace a user's groups"))
    p.add_argument("groups", metavar="GROUP", nargs="*", help="groups (none removes all)")
    p = _user_arg(b.action(users, "add-group", users_add_group, "add a user to a group"))
    p.add_argument("group", metavar="GROUP", help="group name")


def _groups_parsers(b: _Parsers) -> None:
    groups = b.kind("groups", "list and change groups (default: list)", groups_list)
    b.action(groups, "list", groups_list, "list groups")
    b.action(groups, "show", groups_show, "show a group").add_argument(
        "group", metavar="GROUP", help="group name or id")
    p = b.action(groups, "add", groups_add, "create a group")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    b.action(groups, "delete", groups_delete, "delete a group (its members leave it)"
             ).add_argument("group", metavar="GROUP", help="group name or id")


def _roles_parsers(b: _Parsers) -> None:
    roles = b.kind("roles", "list and change roles (default: list)", roles_list)
    b.action(roles, "list", roles_list, "list roles and their scopes")
    b.action(roles, "show", roles_show, "show a role").add_argument("name", metavar="ROLE")
    p = b.action(roles, "set", roles_set, "create or replace a custom role")
    p.add_argument("name", metavar="ROLE")
    p.add_argument("--scope", action="append", help="scope it grants (repeatable or a,b)")
    p.add_argument("--description")
    b.action(roles, "delete", roles_delete, "delete a custom role").add_argument(
        "name", metavar="ROLE")


def _rules_parsers(b: _Parsers) -> None:
    rules = b.kind("rules", "show and set a dataset's read/write rules", rules_usage)
    p = b.action(rules, "show", rules_show, "show a dataset's rules")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    p = b.action(rules, "set", rules_set,
                 "replace some of a dataset's rule lists (comma-separated; '' empties one)")
    p.add_argument("dataset", metavar="DATASET", help="dataset id or number")
    for key in RULE_FIELDS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="A,B")

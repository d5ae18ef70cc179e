"""`iceprod admin scripts ...` (the script catalog the DRMAAtic and batch dialects run) and
`iceprod apikeys ...` (a user's API keys).

Like the rest of the CLI these commands only parse arguments, call the client and print.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from iceprod.client.cli.context import EXIT_CODES, Context
from iceprod.client.cli.parsing import Formatter, Sub, command, common_options
from iceprod.client.errors import UsageError


def _done(ctx: Context, message: str, data: Any) -> int:
    if ctx.args.json:
        ctx.out.json(data)
    else:
        ctx.out.line(message)
    return 0


# -- the script catalog --------------------------------------------------------------------------


def scripts_list(ctx: Context) -> int:
    client = ctx.client()
    entries: list[dict[str, Any]] = []
    page = 1
    while True:
        doc = client.request("GET", "/script", params={"page": page, "page_size": 1000})
        entries += doc["results"]
        if not doc.get("next"):
            break
        page += 1
    if ctx.args.json:
        ctx.out.json(entries)
        return 0
    ctx.out.table(["name", "command", "parameters", "groups", "max_clock_time"],
                  [[e["name"], e["command"],
                    ", ".join(f"{p['name']}:{p['type']}" for p in e.get("param", [])) or "-",
                    ", ".join(e.get("groups") or []) or "everyone",
                    e.get("max_clock_time") or "-"] for e in entries])
    return 0


def scripts_show(ctx: Context) -> int:
    doc = ctx.client().request("GET", f"/script/{quote(ctx.args.name, safe='')}")
    if ctx.args.json:
        ctx.out.json(doc)
    else:
        ctx.out.fields([(k, json.dumps(v) if isinstance(v, (list, dict)) else v)
                        for k, v in doc.items()])
    return 0


def scripts_put(ctx: Context) -> int:
    path = Path(ctx.args.file)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read a JSON entry ({e})") from None
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: expected a JSON object")
    entry.pop("name", None)
    doc = ctx.client().request("PUT", f"/script/{quote(ctx.args.name, safe='')}", json=entry)
    return _done(ctx, f"stored script {ctx.args.name}", doc)


def scripts_delete(ctx: Context) -> int:
    ctx.client().request("DELETE", f"/script/{quote(ctx.args.name, safe='')}")
    return _done(ctx, f"deleted script {ctx.args.name}", {"name": ctx.args.name,
                                                           "deleted": True})


def scripts_usage(ctx: Context) -> int:
    return scripts_list(ctx)


def add_script_commands(parsers: Any) -> None:
    """`iceprod admin scripts list|show|put|delete` (``parsers``: admin's ``_Parsers``)."""
    kind = parsers.kind("scripts", "the script catalog of the DRMAAtic and batch APIs "
                        "(default: list)", scripts_usage)
    parsers.action(kind, "list", scripts_list, "list catalog entries")
    parsers.action(kind, "show", scripts_show, "show an entry").add_argument(
        "name", metavar="NAME")
    p = parsers.action(kind, "put", scripts_put,
                       "create or replace an entry from a JSON file (admin)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", help="the entry: command, args, param, groups, ...")
    parsers.action(kind, "delete", scripts_delete, "remove an entry (admin)").add_argument(
        "name", metavar="NAME")


# -- API keys ------------------------------------------------------------------------------------


def _user(ctx: Context) -> str:
    """``--user``, else the subject of the token in use (read, not verified: the server
    checks it)."""
    if ctx.args.user:
        return str(ctx.args.user)
    token = ctx.resolved.token or ""
    try:
        payload = token.split(".")[1]
        sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise UsageError("cannot tell whose keys these are from the token: pass --user") \
            from None
    return str(sub)


def apikeys_list(ctx: Context) -> int:
    user = _user(ctx)
    keys = ctx.client().request("GET", f"/users/{quote(user, safe='')}/apikeys")
    if ctx.args.json:
        ctx.out.json(keys)
        return 0
    ctx.out.table(["name", "prefix", "created", "expires", "groups"],
                  [[k["name"], k["prefix"], k["created"], k.get("expires") or "never",
                    ", ".join(k.get("groups") or []) or "-"] for k in keys])
    return 0


def apikeys_create(ctx: Context) -> int:
    user = _user(ctx)
    body: dict[str, Any] = {"name": ctx.args.name}
    if ctx.args.expires_days:
        body["expires_days"] = ctx.args.expires_days
    doc = ctx.client().request("POST", f"/users/{quote(user, safe='')}/apikeys", json=body)
    if ctx.args.json:
        ctx.out.json(doc)
    else:
        ctx.out.line(doc["key"])
    return 0


def apikeys_delete(ctx: Context) -> int:
    user = _user(ctx)
    ctx.client().request("DELETE", f"/users/{quote(user, safe='')}/apikeys/"
                                   f"{quote(ctx.args.name, safe='')}")
    return _done(ctx, f"deleted API key {ctx.args.name}", {"name": ctx.args.name,
                                                            "deleted": True})


def add_apikey_commands(sub: Sub) -> None:
    """`iceprod apikeys list|create|delete`."""
    p = sub.add_parser("apikeys", help="your API keys", description=(
        "Long-lived, named, revocable keys for scripts and the batch API's clients "
        "(sent as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY')."), epilog=EXIT_CODES,
        formatter_class=Formatter, parents=[common_options(False)])
    keys = p.add_subparsers(dest="apikeys_command", metavar="COMMAND", required=True)
    for name, func, text in (("list", apikeys_list, "list your keys (never the keys)"),
                             ("create", apikeys_create, "create a key; prints it once"),
                             ("delete", apikeys_delete, "delete (revoke) a key")):
        c = command(keys, name, func, text)
        if name != "list":
            c.add_argument("name", metavar="NAME")
        c.add_argument("--user", help="whose keys (admin; default: you)")
        if name == "create":
            c.add_argument("--expires-days", type=int, help="expire after this many days")

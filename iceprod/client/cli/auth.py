"""`iceprod login | logout | whoami | token create`: storing, showing and minting tokens."""

from __future__ import annotations

import getpass
import sys

from iceprod.client import settings
from iceprod.client.api import Client
from iceprod.client.cli.context import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_OK,
    Context,
    describe_token,
    span,
)
from iceprod.client.cli.parsing import Formatter, Sub, command, common_options
from iceprod.client.errors import AuthError, UsageError


def cmd_login(ctx: Context) -> int:
    """Store a token: the one given with --token, or one from an LDAP username/password."""
    token = ctx.args.token
    if not token:
        client = ctx.client(auth=False)
        username, password = _credentials(ctx, client)
        token = client.auth.login(username, password)["token"]
    info = describe_token(token)
    if info["expired"]:
        raise AuthError(f"token expired at {info['expires']}")
    explicit_url = ctx.resolved.url_source in ("--url", "ICEPROD_URL")
    path = settings.save_login(token, ctx.resolved.url if explicit_url else None)
    ctx.out.info(f"logged in to {ctx.resolved.url} as {info['user']} "
                 f"(roles: {', '.join(info['roles']) or '-'}; "
                 f"groups: {', '.join(info['groups']) or '-'}); "
                 f"token expires {info['expires']}, stored in {path}")
    return EXIT_OK


def _credentials(ctx: Context, client: Client) -> tuple[str, str]:
    """The username (flag or prompt) and password (stdin with --password-stdin, else a
    prompt). Without a terminal to prompt on, or when the server has no password login,
    a usage error says so before anything is asked."""
    username = ctx.args.username
    if ctx.args.password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        return username, sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password on: pass --username with "
                         "--password-stdin, or --token")
    if not client.auth.password_login_enabled():
        raise UsageError(f"{ctx.resolved.url} has no password login (LDAP is not configured "
                         "there): log in with --token")
    return username or input("Username: ").strip(), getpass.getpass("Password: ")


def cmd_logout(ctx: Context) -> int:
    """Forget the stored token."""
    if settings.clear_login():
        ctx.out.info(f"logged out: removed {settings.token_path()}")
    else:
        ctx.out.info("not logged in")
    return EXIT_OK


def cmd_whoami(ctx: Context) -> int:
    """Show who the token says you are (decoded locally, not verified)."""
    if not ctx.resolved.token:
        raise AuthError("not logged in: run `iceprod login` or set ICEPROD_TOKEN")
    info = {**describe_token(ctx.resolved.token), "url": ctx.resolved.url,
            "token_source": ctx.resolved.token_source}
    if ctx.args.json:
        ctx.out.json(info)
    else:
        expires = info["expires"] or "never"
        if info["expired"]:
            expires += " (EXPIRED)"
        elif info["expires_in"] is not None:
            expires += f" (in {span(info['expires_in'])})"
        ctx.out.fields([
            ("user", info["user"]), ("roles", info["roles"]), ("groups", info["groups"]),
            *([("scope", info["scope"])] if info["scope"] else []),
            ("expires", expires), ("server", info["url"]), ("token from", info["token_source"]),
        ])
    return EXIT_AUTH if info["expired"] else EXIT_OK


def cmd_token_create(ctx: Context) -> int:
    """Mint a sub-token (never outliving yours); prints just the token."""
    a = ctx.args
    dataset_id = ctx.dataset(a.dataset)["dataset_id"] if a.dataset else None
    kind = a.type or ("share" if dataset_id else "user")
    if dataset_id and kind != "share":
        raise UsageError("--dataset makes a share token; drop --type or use --type share")
    result = ctx.client().auth.create_token(
        kind, role=a.role, exp=a.exp, scope=" ".join(a.scope) if a.scope else None,
        dataset_id=dataset_id, username=a.username, pilot_id=a.pilot_id)
    if a.json:
        ctx.out.json(result)
    else:
        ctx.out.line(result["token"])
    return EXIT_OK


def add_login_commands(sub: Sub) -> None:
    p = command(sub, "login", cmd_login, "store a token: from --token, or by LDAP login",
                json_flag=False,
                description="Log in: with --token TOKEN store that token; otherwise ask for "
                            "a username and password and exchange them for a token (POST "
                            "/ldap). The token is kept in $XDG_CONFIG_HOME/iceprod/token "
                            "(mode 0600), and --url/ICEPROD_URL is remembered with it.")
    p.add_argument("--username", help="LDAP username (asked when missing)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from stdin instead of prompting")
    command(sub, "logout", cmd_logout, "forget the stored token", json_flag=False)
    command(sub, "whoami", cmd_whoami, "show the token's user, roles, groups and expiry",
            description="Show who the current token says you are: user, roles, groups, scope "
                        "and expiry (decoded locally, without verifying the signature). Exits "
                        f"{EXIT_AUTH} when there is no token or it has expired.")


def add_token_commands(sub: Sub) -> None:
    token = sub.add_parser("token", help="tokens", description="Mint tokens.",
                           formatter_class=Formatter, epilog=EXIT_CODES,
                           parents=[common_options(False)])
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    p = command(token_sub, "create", cmd_token_create,
                "mint a sub-token (never outliving yours); prints the token",
                description="Mint a token from yours (POST /create_token): its expiry never "
                            "exceeds your token's. With --dataset, a read-only token for that "
                            "one dataset, to share.")
    p.add_argument("--role", help="one of your roles (default: all of them)")
    p.add_argument("--exp", type=int, help="lifetime in seconds (capped at your token's)")
    p.add_argument("--type", choices=["temp", "user", "share", "pilot", "system"],
                   help="user (default): you; temp: you, for an hour by default; share: read "
                        "--dataset; pilot, system: admin/system only")
    p.add_argument("--scope", action="append", help="restrict to this scope (repeatable)")
    p.add_argument("--dataset", help="a read-only share token for this dataset (id or number)")
    p.add_argument("--username", help="subject of a pilot or system token")
    p.add_argument("--pilot-id", help="bind a pilot token to one pilot")

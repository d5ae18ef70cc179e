"""The ``iceprod-server`` command: run the server, or mint a bootstrap token.

    iceprod-server [--host H] [--port P] [--data-dir D] [--only rest|scheduler|grid]
                   [--grid NAME] [--token-file F]
    iceprod-server token [--data-dir D] --user NAME --role ROLE [--group G] [--exp SECONDS]
                         [--pilot-id ID]

``--only grid`` runs a grid manager alone, as a client of the REST API at ``ICEPROD_URL``
with the token in ``--token-file`` (``ICEPROD_TOKEN_FILE``; role ``grid``): it opens no
database and reads no secret; its data dir holds only its pilots' work dirs.

A pilot token minted here without ``--pilot-id`` is a registration token: the pilot registers
with it (``POST /pilots``) and works with the bound token that answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from iceprod.common import logging as iplogging
from iceprod.common.config import (
    MissingSecret,
    ServerConfig,
    load_secret,
    pilot_token_seconds,
    resolve_data_dir,
)
from iceprod.common.errors import Invalid
from iceprod.core.roles import ROLES
from iceprod.core.tokens import create_token


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="iceprod-server",
        description="Run the iceprod server (REST API and scheduler loops). With no "
        "ICEPROD_DB_URL it uses the embedded SQLite store under the data dir.",
    )
    parser.add_argument("--host", default=None, help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (8080; 0 = any free)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory (ICEPROD_DATA_DIR, ./iceprod-data)")
    parser.add_argument("--only", choices=["rest", "scheduler", "grid"], default=None,
                        help="run only one part (default: all)")
    parser.add_argument("--grid", default=None,
                        help="manage only this grid of ICEPROD_GRID_CONFIG (with --only grid)")
    parser.add_argument("--token-file", default=None,
                        help="with --only grid: the file holding the grid manager's token "
                             "(ICEPROD_TOKEN_FILE)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING ...")
    sub = parser.add_subparsers(dest="command")
    tok = sub.add_parser("token", help="print a token signed with the server's secret")
    tok.add_argument("--data-dir", dest="token_data_dir", default=None,
                     help="data directory holding the secret")
    tok.add_argument("--user", required=True, help="the token's subject")
    tok.add_argument("--role", required=True, choices=ROLES, action="append",
                     help="a role (repeatable)")
    tok.add_argument("--group", action="append", default=[], help="a group (repeatable)")
    tok.add_argument("--exp", type=int, default=None,
                     help="lifetime in seconds (86400; a pilot token: "
                          "ICEPROD_PILOT_TOKEN_SECONDS, 14400)")
    tok.add_argument("--pilot-id", default=None,
                     help="bind a pilot token to this registered pilot (valid only while the "
                          "pilot is active); without it a pilot token may only register a "
                          "pilot, which answers a token bound to the new pilot")
    tok.add_argument("--create-secret", action="store_true",
                     help="create the secret when the data dir has none (a new server)")
    return parser.parse_args(argv)


PRIVATE_UMASK = 0o077
"""Everything the server writes (database, secret, file store, local pilots' dirs and logs,
which inherit it) is readable by its own account only: 0600 files in 0700 dirs."""


def main(argv: list[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)
    args = parse(argv)
    if args.command == "token":
        data_dir = resolve_data_dir(args.token_data_dir or args.data_dir)
        exp = args.exp or (pilot_token_seconds() if "pilot" in args.role else 86400)
        try:
            if args.pilot_id and "pilot" not in args.role:
                raise Invalid("--pilot-id: only a pilot token names a pilot")
            secret = load_secret(data_dir, create=args.create_secret)
            print(create_token(secret, args.user, args.role, args.group, exp,
                               pilot_id=args.pilot_id))
        except MissingSecret as e:
            print(f"iceprod-server token: no secret at {e} (is --data-dir the server's data "
                  "dir? --create-secret makes a new one)", file=sys.stderr)
            return 2
        except Invalid as e:
            print(f"iceprod-server token: {e.message}", file=sys.stderr)
            return 2
        return 0
    iplogging.setup(args.log_level)
    grid_only = args.only == "grid"
    config = ServerConfig.from_env(args.host, args.port, args.data_dir,
                                   with_secret=not grid_only)
    token_file = args.token_file or os.environ.get("ICEPROD_TOKEN_FILE") or None
    try:
        if grid_only:
            asyncio.run(_grid_only(config, args.grid, token_file))
        else:
            asyncio.run(_serve(config, args.only, args.grid))
    except Invalid as e:
        print(f"iceprod-server: {e.message}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: ServerConfig, only: str | None, grid: str | None = None) -> None:
    from iceprod.server.daemon import serve

    await serve(config, only, grid)


async def _grid_only(config: ServerConfig, grid: str | None, token_file: str | None) -> None:
    from iceprod.server.daemon import serve_grid

    await serve_grid(config, grid, token_file)


if __name__ == "__main__":
    sys.exit(main())

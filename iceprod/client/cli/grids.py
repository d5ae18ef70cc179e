"""`iceprod grids | pilots`: the grids that run pilots, and the pilots themselves."""

from __future__ import annotations

from iceprod.client.cli.context import EXIT_OK, Context, short
from iceprod.client.cli.parsing import Sub, command


def cmd_grids(ctx: Context) -> int:
    """List grids."""
    docs = ctx.client().grids.list()
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    ctx.out.table(["grid_id", "host", "queues", "version", "last_update", "drain"],
                  [[g["grid_id"], g.get("host"), g.get("queues"), g.get("version"),
                    g.get("last_update"), short(g.get("drain"))] for g in docs.values()])
    return EXIT_OK


def cmd_pilots(ctx: Context) -> int:
    """List pilots."""
    docs = ctx.client().pilots.list(status=ctx.args.status, grid_id=ctx.args.grid)
    if ctx.args.json:
        ctx.out.json(docs)
        return EXIT_OK
    ctx.out.table(["pilot_id", "status", "host", "site", "resources", "tasks", "last_update",
                   "drain"],
                  [[p["pilot_id"], p.get("status"), p.get("host"), p.get("site"),
                    p.get("resources"), len(p.get("tasks") or []), p.get("last_update"),
                    short(p.get("drain"))]
                   for p in docs.values()])
    return EXIT_OK


def add_grid_commands(sub: Sub) -> None:
    command(sub, "grids", cmd_grids, "list grids")
    p = command(sub, "pilots", cmd_pilots, "list pilots")
    p.add_argument("--status", help="only these statuses (a|b)")
    p.add_argument("--grid", help="only pilots of this grid id")

"""The `iceprod-pilot` command.

    iceprod-pilot --url URL --token-file F [--resources cpu=4,memory=8,gpu=0,disk=10,time=12]
                  [--site S] [--work-dir D] [--idle-timeout S] [--heartbeat-interval S]
                  [--sandbox auto|bwrap|none] [--sandbox-bind PATH]... [--pass-env NAME]...
                  [--stage-root PATH]... [--container-runtime NAME]... [--image-dir D] ...

Flags fall back to the environment: `ICEPROD_URL`, `ICEPROD_TOKEN_FILE`, `ICEPROD_SITE`,
`ICEPROD_PILOT_ID` (the id its grid registered it under), `ICEPROD_PILOT_RESOURCES`.
`--resources` also takes a JSON object. The pilot sets its umask to 077: what it writes
(task directories, logs) is its own account's only. Exit code 0 after a normal stop (idle, SIGTERM),
1 when the server refused the pilot or stayed unreachable, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from iceprod.pilot.pilot import Pilot, PilotConfig, default_work_dir
from iceprod.pilot.resources import parse_resources
from iceprod.pilot.sandbox import MODES


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="iceprod-pilot",
                                description="Claim and run iceprod tasks on this node.")
    p.add_argument("--url", default=env("ICEPROD_URL"), help="the iceprod server's URL")
    p.add_argument("--token-file", default=env("ICEPROD_TOKEN_FILE"),
                   help="file holding the pilot's token")
    p.add_argument("--resources", default=env("ICEPROD_PILOT_RESOURCES", ""),
                   help="this pilot's slot, overriding detection: cpu=N,memory=GB,gpu=N,"
                        "disk=GB,time=HOURS (or a JSON object)")
    p.add_argument("--site", default=env("ICEPROD_SITE", ""), help="site name")
    p.add_argument("--os", dest="os_name", default=None,
                   help="os name offered to tasks' os lists (default: from /etc/os-release)")
    p.add_argument("--pilot-id", default=env("ICEPROD_PILOT_ID"),
                   help="the id the grid registered this pilot under")
    p.add_argument("--grid-queue-id", default="", help="the batch system's job id")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where task directories go (default: $TMPDIR/iceprod-pilot-<pid>)")
    p.add_argument("--idle-timeout", type=float, default=300.0,
                   help="exit after this many seconds with nothing to run (300)")
    p.add_argument("--heartbeat-interval", type=float, default=30.0,
                   help="seconds between heartbeats (30)")
    p.add_argument("--claim-interval", type=float, default=10.0,
                   help="longest wait between claims when nothing fits (10)")
    p.add_argument("--monitor-interval", type=float, default=1.0,
                   help="seconds between samples of a running task's use (1)")
    p.add_argument("--drain-grace", type=float, default=20.0,
                   help="on SIGTERM, seconds running tasks get to finish before they are "
                        "given back to the queue, uncounted (20)")
    p.add_argument("--server-timeout", type=float, default=900.0,
                   help="give up after the server is unreachable this long (900)")
    p.add_argument("--max-log-bytes", type=int, default=4 * 1024 * 1024,
                   help="largest log uploaded per task and name; the end is kept (4 MiB)")
    p.add_argument("--keep-task-dirs", action="store_true",
                   help="keep task directories after reporting (debugging)")
    p.add_argument("--sandbox", choices=MODES, default=env("ICEPROD_SANDBOX", "auto"),
                   help="how steps run: bwrap (bubblewrap sandbox), none (directly), or auto "
                        "(bwrap where it works here) (auto)")
    p.add_argument("--sandbox-bind", action="append", default=[], metavar="PATH",
                   help="a path steps may read inside the sandbox (repeatable)")
    p.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="a variable of the pilot's environment passed to steps (repeatable)")
    p.add_argument("--stage-root", action="append", default=[], metavar="PATH",
                   help="a directory file:// and absolute-path staging may use (repeatable; "
                        "none: such staging is refused)")
    p.add_argument("--container-runtime", action="append", default=[], metavar="NAME",
                   help="a container runtime tasks naming an image may use: bwrap, apptainer, "
                        "singularity, podman or docker (repeatable; the first is the default; "
                        "none: tasks naming an image fail)")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="where container images live, by name: unpacked root file systems "
                        "(bwrap, apptainer) or <name>.sif files (apptainer)")
    p.add_argument("--log-level", default=env("ICEPROD_LOG_LEVEL", "INFO"))
    return p


def config_from_args(args: argparse.Namespace) -> PilotConfig:
    if not args.url:
        raise ValueError("--url (or ICEPROD_URL) is required")
    if not args.token_file:
        raise ValueError("--token-file (or ICEPROD_TOKEN_FILE) is required")
    return PilotConfig(
        url=args.url, token_file=Path(args.token_file),
        work_dir=(args.work_dir or default_work_dir()).resolve(),
        resources=parse_resources(args.resources or ""), site=args.site,
        os_name=args.os_name, pilot_id=args.pilot_id or None,
        idle_timeout=args.idle_timeout, heartbeat_interval=args.heartbeat_interval,
        claim_interval=args.claim_interval, monitor_interval=args.monitor_interval,
        server_timeout=args.server_timeout, max_log_bytes=args.max_log_bytes,
        keep_task_dirs=args.keep_task_dirs, grid_queue_id=args.grid_queue_id,
        sandbox=args.sandbox, sandbox_binds=tuple(args.sandbox_bind),
        pass_env=tuple(args.pass_env), stage_roots=tuple(args.stage_root),
        drain_grace=args.drain_grace, container_runtimes=tuple(args.container_runtime),
        image_dir=args.image_dir.resolve() if args.image_dir else None,
    )


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)
    args = parser().parse_args(argv)
    logging.basicConfig(level=str(args.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        pilot = Pilot(config)
    except (ValueError, OSError) as e:
        print(f"iceprod-pilot: {e}", file=sys.stderr)
        return 2
    return asyncio.run(pilot.run())


if __name__ == "__main__":
    sys.exit(main())

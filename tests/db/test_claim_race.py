"""Claims on one SQLite file from separate processes, each with its own connection: every
queued task is handed out exactly once, to the pilot the store records.

The contract tests' concurrent claims (``test_repo_tasks_claim``) run on one store object,
whose SQLite connection serializes them on one worker thread, so they cannot show atomicity
between processes; here the claims really race.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from iceprod.db import Database
from tests.db.builders import queued
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
TASKS = 300
RACERS = 4


async def seed(data_dir: Path, task_ids: list[str]) -> None:
    db = await Database.open(None, str(data_dir))
    try:
        await db.tasks.insert_missing(queued({tid: {} for tid in task_ids}))
    finally:
        await db.close()


async def holdings(data_dir: Path, pilots: list[str]) -> dict[str, list[str]]:
    """pilot -> the tasks the store says it is processing."""
    db = await Database.open(None, str(data_dir))
    try:
        return {pilot: sorted(await db.tasks.held_by(pilot)) for pilot in pilots}
    finally:
        await db.close()


def test_claims_from_separate_processes_hand_each_task_out_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    task_ids = [f"t{i:04d}" for i in range(TASKS)]
    asyncio.run(seed(data_dir, task_ids))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(RACERS)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.db.claim_racer", str(data_dir),
                          str(ready[i]), str(go), f"pilot{i}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(RACERS)
    ]
    try:
        wait_for(lambda: all(r.exists() for r in ready)
                 or any(p.poll() is not None for p in procs), what="every racer ready")
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    claims = {f"pilot{i}": json.loads(out) for i, (out, _) in enumerate(outs)}
    print("claims per racer:", {pilot: len(got) for pilot, got in claims.items()})
    handed = [tid for got in claims.values() for tid in got]
    assert sorted(handed) == task_ids  # every task once: none twice, none lost
    assert sum(1 for got in claims.values() if got) >= 2, f"the racers did not overlap: {claims}"
    held = asyncio.run(holdings(data_dir, list(claims)))
    assert held == {pilot: sorted(got) for pilot, got in claims.items()}

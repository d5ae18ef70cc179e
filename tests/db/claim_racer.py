"""One racer for ``test_claim_race``: a separate process that opens the SQLite store in a data
dir itself (its own connection), says it is ready, waits for the start file, then claims until
nothing fits and prints the ids it was handed as JSON.

Usage: ``python -m tests.db.claim_racer DATA_DIR READY_FILE GO_FILE PILOT_ID``
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from iceprod.db import Database

LEASE = 600.0


async def race(data_dir: str, ready: Path, go: Path, pilot_id: str) -> list[str]:
    db = await Database.open(None, data_dir)
    try:
        ready.touch()
        # start together with the other racers: the claims must overlap to test anything
        while not go.exists():
            await asyncio.sleep(0.001)
        got = []
        while (task := await db.tasks.claim({}, pilot_id, LEASE)) is not None:
            got.append(task["task_id"])
        return got
    finally:
        await db.close()


if __name__ == "__main__":
    data_dir, ready, go, pilot_id = sys.argv[1:]
    print(json.dumps(asyncio.run(race(data_dir, Path(ready), Path(go), pilot_id))))

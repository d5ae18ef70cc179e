"""Response-model benchmark: what building answers from their models costs, in-process.

Every answer is projected onto its response model (``iceprod.rest.responses``): the stored
documents are reduced to the fields the model declares. This measures, on one page of
`--tasks` task documents (each with internal fields to drop):

1. `json.dumps` of the page (what sending it costs anyway);
2. the projection onto ``TaskPage`` (always done);
3. the validation against the model (only with ``ICEPROD_CHECK_RESPONSES``, as in tests).

Prints each time (the median of `--repeat`) and the ratios to `json.dumps` measured in this
run.

    .venv/bin/python bench/responses.py [--tasks 10000] [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iceprod.rest.responses import check, project


def task(i: int) -> dict[str, Any]:
    return {"task_id": f"{i:032x}", "dataset_id": "b" * 32, "job_id": f"{i:032x}",
            "job_index": i, "task_index": 0, "name": "gen", "depends": [],
            "requirements": {"cpu": 1, "memory": 2.0, "os": ["el9"]}, "status": "queued",
            "status_changed": "2026-11-29T00:00:00Z", "priority": 0.5, "failures": 0,
            "evictions": 0, "walltime": 0.0, "walltime_err": 0.0, "walltime_err_n": 0,
            "steps": [{"command": "/bin/true", "args": ["a", "b"]}], "data": [],
            "env": {"A": "1"},
            # internal: dropped by the model
            "instance_id": "e" * 32, "dataset_priority": 0.3}


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1,000 tasks, 3 repeats")
    a = ap.parse_args()
    n, repeat = (1000, 3) if a.quick else (a.tasks, a.repeat)
    page = {f"{i:032x}": task(i) for i in range(n)}
    projected = project(page, "TaskPage")  # compiles the model once
    assert all("instance_id" not in t for t in projected.values())
    dumps = median_ms(lambda: json.dumps(page), repeat)
    proj = median_ms(lambda: project(page, "TaskPage"), repeat)
    valid = median_ms(lambda: check(projected, "TaskPage", "bench"), repeat)
    print(f"page of {n:,} tasks (median of {repeat}):")
    print(f"  json.dumps      {dumps:9.1f} ms")
    print(f"  projection      {proj:9.1f} ms  ({proj / dumps:.2f}x json.dumps, always)")
    print(f"  validation      {valid:9.1f} ms  ({valid / dumps:.1f}x json.dumps, "
          "only with ICEPROD_CHECK_RESPONSES)")
    summary("responses", {"tasks": str(n), "dumps_ms": f"{dumps:.1f}",
                          "projection_ms": f"{proj:.1f}", "validation_ms": f"{valid:.1f}",
                          "projection_over_dumps": f"{proj / dumps:.2f}",
                          "validation_over_dumps": f"{valid / dumps:.1f}"})


if __name__ == "__main__":
    main()

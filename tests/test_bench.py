"""The benchmarks run: each in its quick mode ends with a `summary` line whose figures are
numbers. No timing is asserted (the figures are for people, measured on a busy machine).

The benchmarks start together (each its own servers on free ports) so the whole check costs
about as long as the slowest one."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SUMMARY = re.compile(r"^summary (\w+): (.+)$", re.MULTILINE)

# benchmark -> (arguments, summary figures that must be numbers, lines that must be printed)
RUNS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "latency": (["--quick"], ["complete_s", "first_running_s", "worst_dependent_start_s"],
                [r"submit -> first task processing: +\d+\.\d+ s",
                 r"finish started after process completed: +\d+\.\d+ s",
                 r"submit -> dataset complete: +\d+\.\d+ s"]),
    "claims": (["--quick"], ["rest_per_s_16", "noop_per_s_16", "store_per_s_16",
                             "rest_over_noop_16"],
               [r"REST / no-op at 16 clients: \d+\.\d+"]),
    "e2e": (["--quick"], ["tasks_per_s", "spawn_limit_per_s", "fraction_of_limit",
                          "requests_per_task", "claims_per_s"],
            [r"node spawn limit: [\d,]+ processes/s", r"of the node's spawn limit"]),
    "pilots": (["--quick"], ["tasks_per_s_5", "claim_p99_ms_5", "complete_p99_ms_10"],
               [r"10 pilots, [\d.]+ s: [\d.,]+ tasks/s", r"claim +p50 +[\d,]+ ms +p99"]),
    "scale": (["--quick"], ["setup_s", "materialize_per_s", "queue_per_s", "task_counts_ms",
                            "job_counts_ms", "claims_per_s", "base_claims_per_s",
                            "claim_ratio"],
              [r"20,000 tasks: setup [\d.]+ s", r"claim rate at 20,000 = [\d.]+ of"]),
    "scheduler": (["--tasks", "2000"], ["raw_insert_per_s", "materialize_per_s"], []),
    "archive": (["--quick"], ["archived_per_s", "tasks_before", "tasks_after",
                              "all_counts_ratio", "second_history_growth_ratio"],
                [r"archived \d+ datasets in [\d.]+ s", r"all_counts_ms +[\d.]+ +[\d.]+"]),
    "responses": (["--quick"], ["dumps_ms", "projection_ms", "validation_ms",
                                "projection_over_dumps", "validation_over_dumps"],
                  [r"projection +[\d.]+ ms +\([\d.]+x json.dumps"]),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, str]]]:
    logs = tmp_path_factory.mktemp("bench")
    procs = {}
    for name, (args, _, _) in RUNS.items():
        out = open(logs / f"{name}.out", "w+")  # noqa: SIM115 (closed below)
        procs[name] = (subprocess.Popen([sys.executable, str(BENCH / f"{name}.py"), *args],
                                        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT), out)
    results = {}
    try:
        for name, (proc, out) in procs.items():
            code = proc.wait(timeout=110)
            out.seek(0)
            results[name] = (code, out.read())
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    yield results


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(RUNS))
def test_benchmark_prints_its_figures(name: str,
                                      outputs: dict[str, tuple[int, str]]) -> None:
    code, text = outputs[name]
    assert code == 0, text
    _, numeric, lines = RUNS[name]
    found = SUMMARY.findall(text)
    assert [n for n, _ in found] == [name], text
    assert text.rstrip().splitlines()[-1].startswith(f"summary {name}:"), text
    figures = dict(item.split("=", 1) for item in found[0][1].split("; "))
    for key in numeric:
        assert key in figures, (key, figures)
        assert math.isfinite(float(figures[key])), (key, figures[key])
        assert float(figures[key]) >= 0, (key, figures[key])
    for pattern in lines:
        assert re.search(pattern, text), (pattern, text)


def load_e2e() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_e2e", BENCH / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_spawn_limit_starts_processes_as_the_pilot_does(sandbox: str) -> None:
    """The baseline starts steps through the pilot's own Sandbox.wrap and, with bubblewrap,
    from inside a local pilot's sandbox, as the local grid runs its pilots."""
    if sandbox == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    e2e = load_e2e()
    rate, where = e2e.measure_spawn_limit(20, 4, sandbox)
    assert rate > 0
    if sandbox == "bwrap":
        assert where == "steps sandbox bwrap, inside a local pilot's sandbox"
    else:
        assert where == "steps sandbox none"

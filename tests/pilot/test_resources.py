"""Resource detection and the pilot's bookkeeping of what its tasks hold."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from iceprod.pilot.resources import (
    GB,
    TIME_MARGIN,
    Capacity,
    ResourcePool,
    detect,
    detect_cpu,
    detect_end_time,
    detect_gpus,
    detect_memory,
    detect_os,
    parse_resources,
)


def test_parse_resources_key_value_and_json() -> None:
    assert parse_resources("cpu=4,memory=8.5,gpu=1,disk=10,time=2") == {
        "cpu": 4, "memory": 8.5, "gpu": 1, "disk": 10, "time": 2}
    # what the batch backends write
    assert parse_resources('{"cpu": 2, "memory": 4}') == {"cpu": 2, "memory": 4}
    assert parse_resources("") == {}


@pytest.mark.parametrize("text, error", [
    ("cpu", "expected key=value"),
    ("cores=4", "unknown resource 'cores'"),
    ("memory=lots", "memory must be a number"),
    ("disk=-1", "disk must be >= 0"),
    ("{cpu: 4}", "not valid JSON"),
])
def test_parse_resources_errors_name_the_problem(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_resources(text)


def test_gpus_from_cuda_visible_devices() -> None:
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ("0", "2")
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1a2b"}) == ("GPU-1a2b",)
    for none in ("", "-1", "NoDevFiles"):
        assert detect_gpus({"CUDA_VISIBLE_DEVICES": none}) == ()
    assert detect_gpus({}) == ()


def test_walltime_from_slurm() -> None:
    end = time.time() + 3600
    assert detect_end_time({"SLURM_JOB_END_TIME": str(int(end))}) == int(end)
    assert detect_end_time({"SLURM_JOB_END_TIME": "garbage"}) is None
    assert detect_end_time({}) is None


def test_cgroup_limits_cap_cores_and_memory(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 cores -> 1
    (tmp_path / "memory.max").write_text(str(512 * 1024 * 1024))
    assert detect_cpu(tmp_path) == 1
    assert detect_memory(tmp_path) == pytest.approx(0.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert detect_cpu(tmp_path) == len(os.sched_getaffinity(0))
    assert detect_memory(tmp_path) == pytest.approx(psutil.virtual_memory().total / GB)


def test_os_name_from_os_release(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Rocky Linux"\nID="rocky"\nVERSION_ID="9.3"\n')
    assert detect_os(release) == "rocky_9"
    assert detect_os(tmp_path / "missing")  # falls back to the platform's name


def test_detect_uses_flags_over_the_machine(tmp_path: Path) -> None:
    now = time.time()
    env = {"CUDA_VISIBLE_DEVICES": "3,5,7", "SLURM_JOB_END_TIME": str(int(now + 7200))}
    cap = detect(tmp_path, {"cpu": 3, "memory": 6, "gpu": 2, "time": 1}, env=env, site="here",
                 os_name="testos", now=now)
    assert (cap.cpu, cap.memory, cap.gpus, cap.site, cap.os) == (3, 6, ("3", "5"), "here",
                                                                 "testos")
    assert cap.end_time == pytest.approx(now + 3600)  # the flag is shorter than the slot
    assert cap.disk > 0  # free disk of the work dir
    plain = detect(tmp_path, env={}, os_name="x")
    assert plain.cpu >= 1 and plain.memory > 0 and plain.gpus == () and plain.end_time is None


def test_pool_subtracts_each_task_and_frees_it() -> None:
    pool = ResourcePool(Capacity(cpu=4, memory=8, disk=20, os="testos", site="s"))
    assert pool.offer() == {"cpu": 4, "gpu": 0, "memory": 8, "disk": 20, "os": "testos",
                            "site": "s"}
    pool.allocate("a", {"cpu": 2, "memory": 3, "disk": 5})
    pool.allocate("b", {"memory": 1})  # no cpu named: one core
    assert pool.offer()["cpu"] == 1 and pool.offer()["memory"] == 4
    assert pool.claimed() == {"cpu": 3, "gpu": 0, "memory": 4, "disk": 5}
    with pytest.raises(ValueError, match="does not fit"):
        pool.allocate("c", {"cpu": 2})
    pool.release("a")
    assert pool.free()["cpu"] == 3 and pool.can_claim()


def test_pool_hands_out_distinct_gpus() -> None:
    pool = ResourcePool(Capacity(cpu=8, memory=8, disk=1, gpus=("0", "1", "2")))
    first = pool.allocate("a", {"gpu": 2})
    second = pool.allocate("b", {"gpu": 1})
    assert set(first.gpus) | set(second.gpus) == {"0", "1", "2"}
    assert pool.offer()["gpu"] == 0
    pool.release("a")
    assert sorted(pool.free_gpus()) == sorted(first.gpus)


def test_pool_offers_walltime_left_and_stops_claiming_at_the_end() -> None:
    now = [1000.0]
    pool = ResourcePool(Capacity(cpu=1, memory=1, disk=1, end_time=1000 + TIME_MARGIN + 3600),
                        clock=lambda: now[0])
    assert pool.offer()["time"] == pytest.approx(1.0)
    now[0] += 3600
    assert not pool.can_claim()

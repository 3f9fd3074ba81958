"""`make bench-scaling` works: the summary arithmetic, and the smallest real run
(one worker, two coordinators sharing two partitions, both workloads) against
real processes, whose figures must be consistent (never timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaling import Sample, Setup, Workload, balanced, ideal_tasks_per_s, summarise

ROOT = Path(__file__).resolve().parents[2]


def sample(
    setup: str, *, workers: int, coordinators: int, tasks_per_s: float, **extra: Any
) -> Sample:
    """A made-up sample of the I/O-bound workload (50 ms)."""
    fields: dict[str, Any] = {
        "setup": setup,
        "series": "workers" if coordinators == 1 else "coordinators",
        "workload": "io",
        "workers": workers,
        "coordinators": coordinators,
        "partitions": None,
        "latency_ms": 50.0,
        "lanes": 16 * workers,
        "workflows_submitted": 10,
        "workflows_completed": 10,
        "tasks_completed": 30,
        "window_s": 2.0,
        "window_tasks": int(2 * tasks_per_s),
        "tasks_per_s": tasks_per_s,
        "p50_ms": 300.0,
        "p99_ms": 400.0,
        "workers_busy": workers,
        "busiest_worker_share": 1 / workers,
        "cpu_s": {"coordinator": 1.0, "workers": 0.5},
        "coordinator_roles": ["active"] * coordinators,
    }
    return Sample(**{**fields, **extra})


def test_summary_takes_medians_and_speed_ups_against_the_fewest_workers() -> None:
    samples = [
        sample("1w/1c", workers=1, coordinators=1, tasks_per_s=t) for t in (100, 140, 120)
    ] + [sample("2w/1c", workers=2, coordinators=1, tasks_per_s=t) for t in (200, 180, 300)]
    one, two = summarise(samples, slots=8)
    assert (one["tasks_per_s"], two["tasks_per_s"]) == (120, 200)
    assert one["ideal_tasks_per_s"] == ideal_tasks_per_s(1, 8, 50.0) == 160
    assert one["efficiency"] == pytest.approx(0.75)
    assert (one["speedup"], one["scaling_efficiency"]) == (1, 1)
    assert two["speedup"] == pytest.approx(200 / 120)
    assert two["scaling_efficiency"] == pytest.approx(200 / 120 / 2)
    assert one["cpu_cores"] == {"coordinator": 0.5, "workers": 0.25}
    assert one["coordinator_mode"] == "single"


def test_coordinator_modes_and_balance() -> None:
    standby = sample(
        "4w/2c", workers=4, coordinators=2, tasks_per_s=100, coordinator_roles=["active", "standby"]
    )
    both = sample("4w/2c p8", workers=4, coordinators=2, tasks_per_s=100)
    assert summarise([standby], slots=8)[0]["coordinator_mode"] == "active/standby"
    assert summarise([both], slots=8)[0]["coordinator_mode"] == "active/active"
    setup = Setup("coordinators", 4, 2, 8, (Workload("io", 50.0),))
    halves = [{"role": "active", "owned": [0, 1, 2, 3]}, {"role": "active", "owned": [4, 5, 6, 7]}]
    assert balanced(halves, setup)
    moving = [{"role": "active", "owned": [0, 1, 2, 3]}, {"role": "active", "owned": [4, 5]}]
    assert not balanced(moving, setup), "two partitions are changing hands"
    assert not balanced([{"role": "active", "owned": list(range(8))}], setup)


@pytest.mark.timeout(180)
def test_smallest_scaling_run_reports_consistent_figures(tmp_path: Path) -> None:
    report = tmp_path / "scaling.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--quick", "--workers",
         "--coordinators", "2", "--coordinator-workers", "1", "--partitions", "2",
         "--slots", "4", "--latency-ms", "20", "--warmup", "0.3", "--measure", "1",
         "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Scaling" in done.stdout
    data = json.loads(report.read_text())
    assert data["machine"]["cpu_count"] >= 1
    assert data["settings"]["slots"] == 4
    samples = data["samples"]
    assert [(s["setup"], s["workload"]) for s in samples] == [
        ("1w/2c p2", "io"),
        ("1w/2c p2", "zero"),
    ]
    for s in samples:
        assert s["workflows_completed"] == s["workflows_submitted"] > 0
        assert s["tasks_completed"] == 3 * s["workflows_completed"]
        assert 0 < s["window_tasks"] <= s["tasks_completed"]
        assert s["tasks_per_s"] > 0
        assert 0 < s["p50_ms"] <= s["p99_ms"]
        assert s["workers_busy"] == 1
        assert s["cpu_s"]["coordinator"] > 0
        assert s["cpu_s"]["workers"] > 0
        assert len(s["coordinator_roles"]) == 2, "both coordinator processes answered"
        assert "active" in s["coordinator_roles"]
    assert samples[0]["run_ms"] >= 20, "a task holds its slot at least its latency"
    io, zero = data["summary"]
    assert io["ideal_tasks_per_s"] == 4 * 1000 / 20
    assert 0 < io["efficiency"] <= 1.2
    assert zero["ideal_tasks_per_s"] is None
    assert zero["efficiency"] is None
    assert io["speedup"] == zero["speedup"] == 1, "each is its own baseline"

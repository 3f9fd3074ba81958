"""`make bench` works: quick runs of the harness (W1 and W4) and of the replay
benchmark, against real processes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_streaming_benchmark_reads_every_chunk_live(tmp_path: Path) -> None:
    report = tmp_path / "streaming.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.streaming", "--chunks", "600", "--runs", "1",
         "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=160, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    (run,) = data["runs"]
    assert run["read"] == 600
    assert run["dropped"] == 0
    assert 1 <= run["events"] < 600  # batched
    assert data["median_chunks_per_s"] > 0
    assert "chunks/s" in done.stdout


@pytest.mark.timeout(240)
def test_quick_benchmark_run_reports_w1_and_w4(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--runs", "1", "--only", "w1", "w4",
         "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    figures = {(r["scenario"], r["metric"]): r for r in data["results"]}
    fanout = figures["w1", "tasks_per_s"]
    assert fanout["median"] > 0
    assert fanout["raw_loop"] is not None, "the raw loop ran in the same session"
    assert figures["w4", "coordinator_peak_mb"]["median"] > 0
    # Reported, not judged: an RSS difference over a quick run can be slightly
    # negative (memory returned to the system between the two readings).
    assert math.isfinite(figures["w4", "kb_per_idle_instance"]["median"])
    w4 = data["raw"]["w4"][0]
    assert w4["instances"] == 2 * data["sizes"]["scale_instances"]
    assert w4["workflows_per_s"] > 0
    assert data["environment"]["cpu_count"] >= 1
    assert "W4 scale" in done.stdout


@pytest.mark.timeout(240)
def test_quick_replay_benchmark_reports_rates(tmp_path: Path) -> None:
    report = tmp_path / "replay.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.replay", "--quick", "--no-cli", "--sample", "20",
         "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["cpu_count"] >= 1
    one, many = data["streams"]["one"], data["streams"]["many"]
    assert one["events"] >= 5_000
    assert one["workflows"] == 1
    assert many["events"] >= 5_000
    assert many["source"] == "cluster"
    for shape in ("one", "many"):
        phases = data["summary"][shape]
        for phase in ("read", "decode", "fold", "causality", "verify"):
            assert phases[phase]["events_per_s"] > 0, (shape, phase)
            assert phases[phase]["peak_mb"] > 0, (shape, phase)
    assert data["summary"]["one"]["read+decode"]["events_per_s"] > 0
    assert data["summary"]["many"]["read+decode per workflow"]["events_per_s"] > 0
    assert "Replay speed" in done.stdout


@pytest.mark.timeout(240)
def test_quick_telemetry_benchmark_exports_spans_and_metrics(tmp_path: Path) -> None:
    report = tmp_path / "telemetry.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.telemetry", "--quick", "--rounds", "1", "--only", "w1",
         "--modes", "on", "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    row, cpu = data["summary"]
    assert (row["scenario"], row["metric"]) == ("w1", "tasks_per_s")
    assert (cpu["scenario"], cpu["metric"]) == ("cpu", "ms_per_task")
    assert all(value > 0 for value in cpu["median"].values())
    assert set(row["median"]) == {"off", "on"}
    assert all(value > 0 for value in row["median"].values())
    assert set(row["cost_percent"]) == {"on"}
    assert data["machine"]["cpu_count"] >= 1
    # "On" really exported: the stand-in collector received spans and metrics.
    assert data["collector"]["/v1/traces requests"] >= 1
    assert data["collector"]["/v1/traces bytes"] > 10_000
    assert data["collector"]["/v1/metrics requests"] >= 1

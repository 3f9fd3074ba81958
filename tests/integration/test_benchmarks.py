"""`make bench` works: a quick run of the harness, W1 and W4, against real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    assert figures["w4", "kb_per_idle_instance"]["median"] >= 0
    w4 = data["raw"]["w4"][0]
    assert w4["instances"] == 2 * data["sizes"]["scale_instances"]
    assert w4["workflows_per_s"] > 0
    assert data["environment"]["cpu_count"] >= 1
    assert "W4 scale" in done.stdout

"""`make bench-gateway` works: a quick run against real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_the_gateway_benchmark_reports_both_paths(tmp_path: Path) -> None:
    report = tmp_path / "gateway.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--rounds", "5", "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=160,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["rounds"] == 5
    assert 0 < data["direct_p50_ms"] <= data["direct_p99_ms"]
    assert 0 < data["gateway_p50_ms"] <= data["gateway_p99_ms"]
    assert 0 < data["one_request_p50_ms"] <= data["one_request_p99_ms"]
    assert "the gateway adds" in done.stdout

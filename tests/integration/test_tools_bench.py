"""The tools benchmark runs and reports the overhead of each path."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.helpers import ROOT


def test_tools_benchmark_reports_the_overhead() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tools", "--calls", "50", "--no-save"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for path in ("bare", "registry, in memory", "registry, cluster", "rate limit"):
        assert path in done.stdout
    assert "CPUs" in done.stdout

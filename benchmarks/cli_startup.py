"""How fast the command line starts: ``agenticflow --help`` and a few command
helps, as a user runs them (a new process each time), and the import of
``agenticflow.cli`` alone. Reports the best and the median of N runs; the
target is under 0.3 s for ``--help`` (issue 21). Nothing is asserted: wall
time on a shared machine is a measurement, not a test.

    python -m benchmarks.cli_startup [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    ["--help"],
    ["workflow", "list", "--help"],
    ["submit", "--help"],
    ["cluster", "up", "--help"],
)


def timed(argv: list[str], runs: int) -> dict[str, float]:
    """Best and median wall seconds of ``runs`` runs of ``argv``."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
        took.append(time.perf_counter() - started)
    return {"best_s": round(min(took), 3), "median_s": round(statistics.median(took), 3)}


def main() -> None:
    """Print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    cli = [sys.executable, "-m", "agenticflow"]
    baseline = timed([sys.executable, "-c", "pass"], runs)
    print(json.dumps({"what": "python -c pass", **baseline}))
    imported = timed([sys.executable, "-c", "import agenticflow.cli"], runs)
    print(json.dumps({"what": "import agenticflow.cli", **imported}))
    for args in COMMANDS:
        print(json.dumps({"what": "agenticflow " + " ".join(args), **timed(cli + args, runs)}))


if __name__ == "__main__":
    main()

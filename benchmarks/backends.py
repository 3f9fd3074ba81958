"""``make bench-backends``: W1-W3 and W5 on each backend, side by side.

Runs ``benchmarks.run --only w1 w2 w3 w5 --backend B`` for nats, redis and
memory (each its own report, ``benchmarks/results/backend-<B>.json``), then
prints one table of the medians. ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BACKENDS = ("nats", "redis", "memory")
RESULTS = Path(__file__).resolve().parent / "results"


def report_of(backend: str) -> Path:
    return RESULTS / f"backend-{backend}.json"


def medians(report: dict[str, Any]) -> dict[tuple[str, str], tuple[float, str, bool]]:
    """``(scenario, metric) -> (median, label, higher is better)`` of a report."""
    return {
        (r["scenario"], r["metric"]): (
            statistics.median(r["samples"]),
            str(r.get("label", r["metric"])),
            bool(r.get("higher_is_better", True)),
        )
        for r in report["results"]
        if r["samples"]
    }


def table(reports: dict[str, dict[str, Any]]) -> Table:
    shown = Table(title="AgenticFlow on each backend (medians)")
    shown.add_column("scenario")
    shown.add_column("metric")
    for backend in reports:
        shown.add_column(backend, justify="right")
    figures = {b: medians(r) for b, r in reports.items()}
    keys = sorted({k for f in figures.values() for k in f})
    for key in keys:
        label = next(f[key][1] for f in figures.values() if key in f)
        up = next(f[key][2] for f in figures.values() if key in f)
        cells = [f"{figures[b][key][0]:,.2f}" if key in figures[b] else "-" for b in reports]
        shown.add_row(key[0], f"{label} {'↑' if up else '↓'}", *cells)
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args(argv)
    reports: dict[str, dict[str, Any]] = {}
    for backend in args.backends:
        command = [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--no-raw",
            "--only",
            "w1",
            "w2",
            "w3",
            "w5",
            "--runs",
            str(args.runs),
            "--backend",
            backend,
            "--output",
            str(report_of(backend)),
            *(["--quick"] if args.quick else []),
        ]
        if subprocess.run(command, check=False).returncode != 0:
            print(f"benchmarks on {backend} failed", file=sys.stderr)
            return 1
        reports[backend] = json.loads(report_of(backend).read_text())
    Console().print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

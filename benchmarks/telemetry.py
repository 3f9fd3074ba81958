"""What tracing and metrics cost: ``python -m benchmarks.telemetry`` (``make bench-telemetry``).

Runs W1 (fan-out, tasks/s), W2 (chain, ms per hop), W3 (diamonds,
workflows/s) and W5 (one-task latency) of :mod:`benchmarks.run` on a fresh
local cluster per round, once with telemetry **off** (the default: no
exporter configured, spans and instruments are no-ops) and once **on**:

- every span of the coordinator and the workers recorded (always sampled) and
  exported by OTLP/HTTP in batches to a local stand-in collector
  (:mod:`benchmarks.otlp_sink`, a separate process that reads and drops them);
- every metric recorded, exported by OTLP every second, and served for
  Prometheus on an HTTP port (``AGENTICFLOW_METRICS_PORT=0``; not scraped).

The benchmark client itself is not traced: the figures measure the cluster.
Rounds alternate the order (off then on, on then off, ...) so drift on a
noisy machine hits both. The table gives the median over the rounds and the
cost of "on" against "off"; ``benchmarks/results/telemetry.json`` keeps every
figure, the collector's counts (proof that spans were exported) and the
machine's CPU count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.run import SCENARIOS, Options, run_all

RESULTS = Path(__file__).parent / "results" / "telemetry.json"
SCENARIO_KEYS = ("w1", "w2", "w3", "w5")
DEFAULT_SCENARIOS = ("w1", "w2", "w3")
console = Console()


def telemetry_env(endpoint: str) -> dict[str, str]:
    """The environment that switches tracing and metrics on, exporting to ``endpoint``."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "AGENTICFLOW_METRICS_PORT": "0",
    }


def start_sink() -> tuple[subprocess.Popen[str], str]:
    """Start the stand-in collector; returns it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.otlp_sink"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


async def one_round(mode: str, endpoint: str, options: Options) -> dict[str, dict[str, float]]:
    """Run the scenarios once on a fresh cluster; figures by scenario."""
    env = telemetry_env(endpoint) if mode == "on" else {}
    outcome = await run_all(
        Options(
            quick=options.quick,
            runs=1,
            workers=options.workers,
            concurrency=options.concurrency,
            timeout=options.timeout,
            only=options.only,
            output=options.output,
            log_dir=options.log_dir,
            raw=False,
            env=env,
        )
    )
    return {key: runs[0] for key, runs in outcome.raw.items() if runs}


def summarise(
    figures: dict[str, list[dict[str, dict[str, float]]]],
) -> list[dict[str, Any]]:
    """Median per metric and mode, and the cost of telemetry (positive: slower)."""
    rows = []
    for scenario in SCENARIOS:
        if scenario.key not in figures["off"][0]:
            continue
        for metric in scenario.metrics:
            off = statistics.median(f[scenario.key][metric.key] for f in figures["off"])
            on = statistics.median(f[scenario.key][metric.key] for f in figures["on"])
            cost = (off - on) / off if metric.higher_is_better else (on - off) / off
            rows.append(
                {
                    "scenario": scenario.key,
                    "title": scenario.title,
                    "metric": metric.key,
                    "unit": metric.unit,
                    "off": off,
                    "on": on,
                    "cost_percent": round(100 * cost, 1),
                }
            )
    return rows


def parse_args(argv: Sequence[str] | None) -> tuple[Options, int]:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off + on (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="slots per worker")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIO_KEYS,
        default=list(DEFAULT_SCENARIOS),
        help="scenarios",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report ({RESULTS})")
    parser.add_argument("--log-dir", type=Path, help="keep coordinator and worker logs here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    options = Options(
        quick=args.quick,
        runs=1,
        workers=args.workers,
        concurrency=args.concurrency,
        timeout=args.timeout,
        only=tuple(args.only),
        output=args.output,
        log_dir=args.log_dir,
        raw=False,
    )
    return options, args.rounds


async def measure(options: Options, rounds: int) -> dict[str, Any]:
    """Every round's figures, the summary and the collector's counts."""
    sink, endpoint = start_sink()
    figures: dict[str, list[dict[str, dict[str, float]]]] = {"off": [], "on": []}
    try:
        for index in range(rounds):
            for mode in ("off", "on") if index % 2 == 0 else ("on", "off"):
                console.print(f"[bold]round {index + 1}/{rounds}, telemetry {mode}[/bold]")
                figures[mode].append(await one_round(mode, endpoint, options))
        async with httpx.AsyncClient(timeout=5) as http:
            counts = (await http.get(f"{endpoint}/counts")).json()
    finally:
        sink.terminate()
        sink.wait()
    return {"figures": figures, "summary": summarise(figures), "collector": counts}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and report; returns the exit code."""
    options, rounds = parse_args(argv)
    started = time.perf_counter()
    report = asyncio.run(measure(options, rounds))
    table = Table(
        title=f"Telemetry on vs off ({'quick' if options.quick else 'full'}, median of "
        f"{rounds} rounds; {os.cpu_count()} CPUs, {options.workers} workers)"
    )
    for column in ("scenario", "metric", "off", "on", "cost"):
        table.add_column(column, justify="right" if column in ("off", "on", "cost") else "left")
    for row in report["summary"]:
        table.add_row(
            row["title"],
            f"{row['metric']} ({row['unit']})",
            f"{row['off']:.1f}",
            f"{row['on']:.1f}",
            f"{row['cost_percent']:+.1f}%",
        )
    console.print(table)
    console.print(f"collector received: {report['collector']}")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(
        json.dumps(
            {
                **report,
                "mode": "quick" if options.quick else "full",
                "rounds": rounds,
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "elapsed_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )
    console.print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

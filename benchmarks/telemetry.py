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

and, with ``--modes``, metrics only, traces only, or both with 10% of the
workflows sampled (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, the
usual production setting): see MODES.

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
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.run import FULL, QUICK, SCENARIOS, Metric, Options, Sizes, run_all

RESULTS = Path(__file__).parent / "results" / "telemetry.json"
SCENARIO_KEYS = ("w1", "w2", "w3", "w5")
DEFAULT_SCENARIOS = ("w1", "w2", "w3")
console = Console()

_TASKS: dict[str, Callable[[Sizes], int]] = {
    "w1": lambda s: s.fanout_tasks,
    "w2": lambda s: s.chain_tasks,
    "w3": lambda s: 4 * s.diamonds,
    "w5": lambda s: s.latency_runs,
}
"""Tasks each scenario runs, for its sizes."""

_FIGURES: list[tuple[str, str, Metric]] = [
    *((s.key, s.title, m) for s in SCENARIOS for m in s.metrics),
    ("cpu", "cluster CPU", Metric("ms_per_task", "ms/task", "ms", higher_is_better=False)),
]
"""What is compared: every scenario's metrics, then the cluster's CPU per task
in a round (not a workload; see one_round)."""


MODES = ("off", "metrics", "traces", "on", "sampled")
"""off: nothing exported; metrics: metrics only (OTLP every second and a
Prometheus port); traces: every span exported, no metrics; on: both;
sampled: both, with 10% of the workflows traced (parent-based ratio sampling)."""
DEFAULT_MODES = ("off", "on", "sampled")


def telemetry_env(mode: str, endpoint: str) -> dict[str, str]:
    """The environment of the coordinator and workers for ``mode`` (see MODES)."""
    env: dict[str, str] = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    if mode == "off":
        return {}
    if mode == "metrics":
        return {**env, "OTEL_TRACES_EXPORTER": "none", "AGENTICFLOW_METRICS_PORT": "0"}
    if mode == "traces":
        return {**env, "OTEL_METRICS_EXPORTER": "none"}
    if mode == "sampled":
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    return {**env, "AGENTICFLOW_METRICS_PORT": "0"}


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


async def one_round(env: dict[str, str], options: Options) -> dict[str, dict[str, float]]:
    """Run the scenarios once on a fresh cluster whose processes get ``env``;
    figures by scenario, plus the cluster's CPU per task."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome = await run_all(dataclasses.replace(options, env=env))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {key: runs[0] for key, runs in outcome.raw.items() if runs}
    # CPU of the cluster's processes (nats-server, coordinator, workers: children
    # reaped when the cluster stopped) per task run, start-up included: steadier
    # than throughput on a VM whose speed drifts.
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sizes = QUICK if options.quick else FULL
    tasks = 5 + 50 + sum(_TASKS[key](sizes) for key in options.only)  # + the warm-up
    figures["cpu"] = {"ms_per_task": 1000 * cpu_s / tasks}
    return figures


def summarise(
    figures: dict[str, list[dict[str, dict[str, float]]]],
) -> list[dict[str, Any]]:
    """Median per metric and mode, and each mode's cost against off (positive: slower)."""
    rows = []
    for key, title, metric in _FIGURES:
        if key not in figures["off"][0]:
            continue
        medians = {
            mode: statistics.median(f[key][metric.key] for f in runs)
            for mode, runs in figures.items()
        }
        off = medians["off"]
        costs = {
            mode: round(
                100 * ((off - value) if metric.higher_is_better else (value - off)) / off, 1
            )
            for mode, value in medians.items()
            if mode != "off"
        }
        rows.append(
            {
                "scenario": key,
                "title": title,
                "metric": metric.key,
                "unit": metric.unit,
                "median": medians,
                "cost_percent": costs,
            }
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> tuple[Options, int, tuple[str, ...]]:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode (default 3)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(DEFAULT_MODES),
        help="telemetry modes to compare with off (off is always run)",
    )
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
    modes = ("off", *(m for m in dict.fromkeys(args.modes) if m != "off"))
    return options, args.rounds, modes


async def measure(options: Options, rounds: int, modes: tuple[str, ...]) -> dict[str, Any]:
    """Every round's figures, the summary and the collector's counts."""
    sink, endpoint = start_sink()
    figures: dict[str, list[dict[str, dict[str, float]]]] = {mode: [] for mode in modes}
    try:
        for index in range(rounds):
            for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
                console.print(f"[bold]round {index + 1}/{rounds}, telemetry {mode}[/bold]")
                figures[mode].append(await one_round(telemetry_env(mode, endpoint), options))
        async with httpx.AsyncClient(timeout=5) as http:
            counts = (await http.get(f"{endpoint}/counts")).json()
    finally:
        sink.terminate()
        sink.wait()
    return {"figures": figures, "summary": summarise(figures), "collector": counts}


def report_modes(
    what: str,
    report: dict[str, Any],
    options: Options,
    rounds: int,
    modes: tuple[str, ...],
    *,
    started: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the modes-against-off table and write the JSON report (with the
    machine's CPU count) to ``options.output``."""
    table = Table(
        title=f"{what} against off ({'quick' if options.quick else 'full'}, median of "
        f"{rounds} rounds; {os.cpu_count()} CPUs, {options.workers} workers)"
    )
    table.add_column("scenario")
    table.add_column("metric")
    for mode in modes:
        table.add_column(mode, justify="right")
    for row in report["summary"]:
        cells = [f"{row['median']['off']:.1f}"] + [
            f"{row['median'][mode]:.1f} ({row['cost_percent'][mode]:+.1f}%)" for mode in modes[1:]
        ]
        table.add_row(row["title"], f"{row['metric']} ({row['unit']})", *cells)
    console.print(table)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(
        json.dumps(
            {
                **report,
                "mode": "quick" if options.quick else "full",
                "rounds": rounds,
                **(extra or {}),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and report; returns the exit code."""
    options, rounds, modes = parse_args(argv)
    started = time.perf_counter()
    report = asyncio.run(measure(options, rounds, modes))
    console.print(f"collector received: {report['collector']}")
    report_modes(
        "Telemetry modes",
        report,
        options,
        rounds,
        modes,
        started=started,
        extra={"modes": {mode: telemetry_env(mode, "ENDPOINT") for mode in modes}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

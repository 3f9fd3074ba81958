"""What signing and encryption cost: ``python -m benchmarks.security`` (``make bench-security``).

Runs W1 (fan-out, tasks/s), W3 (diamonds, workflows/s) and, with ``--only``,
W2 and W5 of :mod:`benchmarks.run` on a fresh local cluster per round, with
the coordinator, the workers and the benchmark's client sharing one key
directory (``AGENTICFLOW_SECURITY_DIR``) that turns on:

- **off**: nothing (no key directory);
- **sign**: Ed25519 signatures on every message, checked against the trust
  store on every read (no data keys);
- **encrypt**: AES-256-GCM bodies (no signatures);
- **both**: signed and encrypted, as a zero-trust deployment runs.

Rounds alternate the order of the modes so drift on a noisy machine hits all
of them. The table gives the median over the rounds and each mode's cost
against off; ``benchmarks/results/security.json`` keeps every figure and the
machine's CPU count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from agenticflow.shared.security.seal import DATA_KEYS_FILE, TRUST_FILE, init_keys
from benchmarks.run import Options
from benchmarks.telemetry import SCENARIO_KEYS, one_round, report_modes, summarise

RESULTS = Path(__file__).parent / "results" / "security.json"
MODES = ("off", "sign", "encrypt", "both")
console = Console()


def key_dirs(root: Path) -> dict[str, Path | None]:
    """A key directory per mode (see the module docstring)."""
    dirs: dict[str, Path | None] = {"off": None}
    for mode in MODES[1:]:
        directory = root / mode
        init_keys(
            directory,
            [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")],
        )
        if mode == "sign":
            (directory / DATA_KEYS_FILE).unlink()
        if mode == "encrypt":
            (directory / TRUST_FILE).unlink()
            for key in directory.glob("*.key"):
                key.unlink()
        dirs[mode] = directory
    return dirs


@contextmanager
def security_env(directory: Path | None) -> Iterator[dict[str, str]]:
    """Point this process (the benchmark's client) and the cluster at ``directory``."""
    env = {"AGENTICFLOW_SECURITY_DIR": str(directory)} if directory else {}
    saved = os.environ.pop("AGENTICFLOW_SECURITY_DIR", None)
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.pop("AGENTICFLOW_SECURITY_DIR", None)
        if saved is not None:
            os.environ["AGENTICFLOW_SECURITY_DIR"] = saved


async def measure(options: Options, rounds: int, modes: tuple[str, ...]) -> dict[str, Any]:
    """Every round's figures and the summary."""
    figures: dict[str, list[dict[str, dict[str, float]]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="af-bench-keys-") as root:
        dirs = key_dirs(Path(root))
        for index in range(rounds):
            for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
                console.print(f"[bold]round {index + 1}/{rounds}, security {mode}[/bold]")
                with security_env(dirs[mode]) as env:
                    figures[mode].append(await one_round(env, options))
    return {"figures": figures, "summary": summarise(figures)}


def parse_args(argv: Sequence[str] | None) -> tuple[Options, int, tuple[str, ...]]:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.security", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode (default 3)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["both"])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="slots per worker")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--only", nargs="+", choices=SCENARIO_KEYS, default=["w1", "w3"])
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
    return options, args.rounds, ("off", *(m for m in dict.fromkeys(args.modes) if m != "off"))


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and report; returns the exit code."""
    options, rounds, modes = parse_args(argv)
    started = time.perf_counter()
    report = asyncio.run(measure(options, rounds, modes))
    report_modes("Signing and encryption", report, options, rounds, modes, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

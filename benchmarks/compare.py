"""``make bench-compare BASE=<git rev>``: the working tree against a base, A B A B.

Checks ``BASE`` out in a temporary git worktree, then runs the quick W1, W2,
W3 and W5 (``benchmarks.run --quick --no-raw``) on the base and on the
working tree alternately, ``--rounds`` times each, every run on a fresh
cluster of its own code (the base's from its worktree: ``python -m`` puts the
current directory first on the path, and the cluster's processes get it as
``PYTHONPATH``). For each figure it prints both sides' medians over the rounds
with their range, and the ratio; it exits 1 when a figure is worse than the
base by more than the noise allows: more than the larger of ``--tolerance``
and the relative spread either side showed between its own rounds.

Quote its table in the commit message of any change to the hot path
(coordinator fold and writer, worker runtime, codec, transport, puller, seal).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("w1", "w2", "w3", "w5")

console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass
class Figure:
    """One metric of one scenario, each side's per-round medians."""

    scenario: str
    metric: str
    label: str
    higher_is_better: bool
    base: list[float] = field(default_factory=list)
    head: list[float] = field(default_factory=list)

    @staticmethod
    def _spread(values: list[float]) -> float:
        middle = statistics.median(values)
        return (max(values) - min(values)) / middle if middle else 0.0

    @property
    def ratio(self) -> float:
        """Head's median over base's."""
        base = statistics.median(self.base)
        return statistics.median(self.head) / base if base else float("inf")

    def noise(self, tolerance: float) -> float:
        """The relative change this comparison cannot tell from noise."""
        return max(tolerance, self._spread(self.base), self._spread(self.head))

    def worse(self, tolerance: float) -> bool:
        """Worse than the base by more than the noise."""
        change = self.ratio - 1.0
        return (-change if self.higher_is_better else change) > self.noise(tolerance)


def run_side(cwd: Path, output: Path, runs: int, only: tuple[str, ...]) -> None:
    """One benchmark run of the code in ``cwd``; raises RuntimeError when it fails."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--quick",
        "--no-raw",
        "--runs",
        str(runs),
        "--output",
        str(output),
        "--only",
        *only,
    ]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.run failed in {cwd}:\n{done.stdout[-2000:]}{done.stderr}")


def collect(figures: dict[tuple[str, str], Figure], report: Path, side: str) -> None:
    for result in json.loads(report.read_text())["results"]:
        key = (result["scenario"], result["metric"])
        figure = figures.setdefault(
            key,
            Figure(
                result["scenario"],
                result["metric"],
                str(result.get("label", result["metric"])),
                bool(result.get("higher_is_better", True)),
            ),
        )
        getattr(figure, side).append(statistics.median(result["samples"]))


def table(figures: list[Figure], base: str, tolerance: float) -> Table:
    shown = Table(title=f"working tree against {escape(base)} (medians over rounds, min-max)")
    for column in ("scenario", "metric", "base", "working tree", "ratio", "noise", "verdict"):
        shown.add_column(column, justify="left" if column in ("scenario", "metric") else "right")
    for figure in figures:

        def side(values: list[float]) -> str:
            return f"{statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"

        verdict = "[red]worse[/red]" if figure.worse(tolerance) else "[green]ok[/green]"
        shown.add_row(
            figure.scenario,
            f"{figure.label} {'↑' if figure.higher_is_better else '↓'}",
            side(figure.base),
            side(figure.head),
            f"{figure.ratio:.3f}",
            f"±{figure.noise(tolerance):.0%}",
            verdict,
        )
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("base", help="the git revision to compare with (e.g. HEAD~1, main)")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario per round")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="smallest change called worse (0.05)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", f"{args.base}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        console.print(f"[red]not a revision:[/red] {escape(args.base)}", highlight=False)
        return 2
    commit = resolved.stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="agenticflow-compare-"))
    worktree = scratch / "base"
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(worktree), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        figures: dict[tuple[str, str], Figure] = {}
        only = tuple(args.only)
        for round_ in range(1, args.rounds + 1):
            for side, cwd in (("base", worktree), ("head", ROOT)):
                report = scratch / f"{side}-{round_}.json"
                console.print(f"round {round_}/{args.rounds}: {side}", highlight=False)
                run_side(cwd, report, args.runs, only)
                collect(figures, report, side)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        console.print(f"benchmark failed: {exc}", markup=False, highlight=False)
        return 2
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    compared = [f for f in figures.values() if f.base and f.head]
    console.print(table(compared, f"{args.base} ({commit[:10]})", args.tolerance))
    worse = [f for f in compared if f.worse(args.tolerance)]
    if worse:
        names = ", ".join(f"{f.scenario} {f.label}" for f in worse)
        console.print(f"worse than the base beyond the noise: {names}", highlight=False)
        return 1
    console.print("no figure is worse than the base beyond the noise", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The performance section of the README and the docs, from the benchmarks' JSON:
``python -m benchmarks.report`` (``make bench-report``).

Reads what the benchmarks last wrote to ``benchmarks/results/``:
``latest.json`` (``make bench``: AgenticFlow and the raw JetStream loop, W1-W5),
``peers.json`` (``make bench-peers``: AgenticFlow, Ray, Celery + Redis and
Temporal on W1-W3 in one run) and ``scaling.json`` (``make bench-scaling``).
Any of them may be missing: the section says which, and leaves out the
columns, rows and charts it would have given. No figure is ever filled in.

It rewrites only the text between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` in ``README.md`` and ``docs/guides/performance.md``: a
table of medians (with the min-max where there were several runs), where and
when each figure was measured, and links to the charts it draws with
matplotlib into ``docs/assets/performance/`` (a bar chart for each of W1-W3,
a line chart of throughput against workers).

``--check`` writes nothing: it exits 1 when a page's section differs from what
would be generated, or a chart it links is absent. It does not compare the
PNG bytes (they depend on the matplotlib and FreeType versions), so it runs
without matplotlib.

Exit codes: 0 written (or up to date with ``--check``); 1 ``--check`` found a
stale section or a missing chart; 2 the report cannot be made (no results at
all, unreadable JSON, a page without its markers, matplotlib not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peers.common import WORKLOADS as PEER_WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "docs" / "assets" / "performance"
PAGES = (ROOT / "README.md", ROOT / "docs" / "guides" / "performance.md")
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
LATEST, PEERS, SCALING = "latest.json", "peers.json", "scaling.json"
MAKE = {LATEST: "make bench", PEERS: "make bench-peers", SCALING: "make bench-scaling"}

ROW_METRICS: dict[str, tuple[str, ...]] = {
    "w1": ("tasks_per_s",),
    "w2": ("ms_per_hop",),
    "w3": ("workflows_per_s",),
    "w4": ("seconds", "coordinator_peak_mb", "worker_peak_mb", "kb_per_idle_instance"),
    "w5": ("p50_ms", "p99_ms"),
}
"""The table's rows, in order, and the figures each shows (W3's tasks/s is 4x
its workflows/s, so it is left out)."""
CHARTED = ("w1", "w2", "w3")
PEER_COLUMNS = (
    ("agenticflow-peers", "AgenticFlow (peers run)"),
    ("ray", "Ray"),
    ("celery", "Celery + Redis"),
    ("temporal", "Temporal"),
)
"""peers.json's systems as (column, heading): AgenticFlow's own figures from
that run too, so the peers compare with AgenticFlow measured beside them."""
SCALING_CHART = "scaling-workers.png"
DASH, TIMES = "\N{EN DASH}", "\N{MULTIPLICATION SIGN}"
"""As the hand-written docs print a range and a product."""


class ReportError(Exception):
    """The report cannot be made: no results at all, unreadable JSON, matplotlib missing."""


class MarkerError(ReportError):
    """A page has no (or more than one) ``bench:begin`` / ``bench:end`` pair."""


# Reading -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sources:
    """The benchmarks' JSON reports; None where a file is missing."""

    latest: dict[str, Any] | None
    peers: dict[str, Any] | None
    scaling: dict[str, Any] | None

    @property
    def missing(self) -> list[str]:
        """The file names that were not there."""
        found = {LATEST: self.latest, PEERS: self.peers, SCALING: self.scaling}
        return [name for name, report in found.items() if report is None]


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(report, dict):
        raise ReportError(f"{path}: not a JSON object")
    return report


def load(results: Path) -> Sources:
    """The three reports in ``results``; raises ReportError if none is there or
    one is not JSON."""
    sources = Sources(
        latest=_read(results / LATEST),
        peers=_read(results / PEERS),
        scaling=_read(results / SCALING),
    )
    if len(sources.missing) == 3:
        raise ReportError(
            f"no benchmark results in {results} ({', '.join(sources.missing)}): "
            "run make bench, make bench-peers or make bench-scaling first"
        )
    return sources


# The table (pure) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure over the runs: the median and the range."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Spread:
        """From a report's ``{"samples", "median", "min", "max"}``."""
        return cls(
            median=float(entry["median"]),
            low=float(entry["min"]),
            high=float(entry["max"]),
            runs=len(entry.get("samples") or [entry["median"]]),
        )


@dataclass(frozen=True, slots=True)
class Metric:
    """A figure a row shows."""

    key: str
    label: str
    higher_is_better: bool


@dataclass(slots=True)
class Row:
    """One workload: its figures in each column that measured it."""

    key: str
    title: str
    workload: str
    metrics: tuple[Metric, ...]
    cells: dict[str, tuple[Spread, ...]] = field(default_factory=dict)
    """Column key -> one spread per metric."""


@dataclass(frozen=True, slots=True)
class Chart:
    """A PNG the section links to."""

    file: str
    alt: str


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the section shows; built from the sources alone."""

    columns: tuple[tuple[str, str], ...]
    """(key, heading) of each column with at least one figure."""
    rows: tuple[Row, ...]
    notes: tuple[str, ...]
    scaling: tuple[dict[str, Any], ...]
    """scaling.json's summary rows of the workers series (I/O-bound tasks)."""
    charts: tuple[Chart, ...]


def number(value: float) -> str:
    """Three significant figures or so, with thousands separators."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread_text(spread: Spread) -> str:
    """``median`` or ``median (min-max)`` (an en dash)."""
    text = number(spread.median)
    if spread.runs > 1:
        text += f" ({number(spread.low)}{DASH}{number(spread.high)})"
    return text


def _rows_from_latest(latest: Mapping[str, Any]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    by_key = {(r["scenario"], r["metric"]): r for r in latest.get("results", [])}
    for scenario, wanted in ROW_METRICS.items():
        entries = [by_key[(scenario, m)] for m in wanted if (scenario, m) in by_key]
        if not entries:
            continue
        row = Row(
            key=scenario,
            title=str(entries[0]["title"]),
            workload=str(entries[0]["workload"]),
            metrics=tuple(
                Metric(e["metric"], str(e["label"]), bool(e["higher_is_better"])) for e in entries
            ),
        )
        row.cells["agenticflow"] = tuple(Spread.of(e) for e in entries)
        if all(e.get("raw_loop") for e in entries):
            row.cells["raw"] = tuple(Spread.of(e["raw_loop"]) for e in entries)
        rows[scenario] = row
    return rows


def _add_peers(rows: dict[str, Row], peers: Mapping[str, Any]) -> None:
    sizes = peers.get("sizes", {})
    systems = peers.get("peers", {})
    for workload in PEER_WORKLOADS:
        row = rows.get(workload.key)
        if row is None:
            row = Row(
                key=workload.key,
                title=workload.title,
                workload=workload.describe(
                    int(sizes.get("fanout_tasks", 0)),
                    int(sizes.get("chain_tasks", 0)),
                    int(sizes.get("diamonds", 0)),
                ),
                metrics=(Metric(workload.metric, workload.unit, workload.higher_is_better),),
            )
            rows[workload.key] = row
        if len(row.metrics) != 1 or row.metrics[0].key != workload.metric:
            continue
        for column, _ in PEER_COLUMNS:
            system = systems.get(_peer_key(column), {})
            entry = system.get("results", {}).get(workload.key)
            if system.get("status") == "ran" and entry:
                row.cells[column] = (Spread.of(entry),)


def _peer_key(column: str) -> str:
    """The system's key in peers.json."""
    return column.removesuffix("-peers")


def _date(report: Mapping[str, Any]) -> str:
    stamp = report.get("generated_at")
    return f"run of {str(stamp)[:10]}" if stamp else "date not recorded"


def _runs(count: Any, word: str = "run") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _machine(env: Mapping[str, Any]) -> str:
    parts = [f"{env.get('cpu_count', '?')} CPUs", f"Python {env.get('python', '?')}"]
    if env.get("nats_server"):
        parts.append(f"nats-server {env['nats_server']}")
    return ", ".join(parts)


def _notes(sources: Sources, rows: Mapping[str, Row]) -> list[str]:
    notes: list[str] = []
    latest, peers, scaling = sources.latest, sources.peers, sources.scaling
    if latest is not None:
        cluster = latest.get("cluster", {})
        setup = (
            f"{cluster['workers']} workers {TIMES} {cluster['concurrency_per_worker']} slots; "
            if "workers" in cluster and "concurrency_per_worker" in cluster
            else ""
        )
        raw = any("raw" in row.cells for row in rows.values())
        notes.append(
            f"AgenticFlow{' and the raw JetStream loop' if raw else ''}: "
            f"`{MAKE[LATEST]}` (`{LATEST}`), "
            f"{_date(latest)}, {latest.get('mode', '?')} sizes, {_runs(latest.get('runs', '?'))}; "
            f"{setup}{_machine(latest.get('environment', {}))}."
        )
        if not raw:
            notes.append("The raw JetStream loop was left out of that run (`--no-raw`).")
    if peers is not None:
        notes.append(
            f"AgenticFlow (peers run), Ray, Celery + Redis and Temporal: `{MAKE[PEERS]}` "
            f"(`{PEERS}`), {_date(peers)}, {peers.get('mode', '?')} sizes, "
            f"{_runs(peers.get('runs', '?'))} each, one system at a time; "
            f"{_machine(peers.get('environment', {}))}."
        )
        for column, name in PEER_COLUMNS:
            system = peers.get("peers", {}).get(_peer_key(column))
            if system is None:
                notes.append(f"{name} was not part of that run.")
            elif system.get("status") != "ran":
                notes.append(f"{name} was skipped: {system.get('skipped_because') or 'no reason'}.")
        if latest is not None and _sizes(latest) != _sizes(peers):
            notes.append(
                f"The two runs used different sizes ({latest.get('mode', '?')} and "
                f"{peers.get('mode', '?')}): compare the peers with AgenticFlow (peers run)."
            )
    if scaling is not None:
        notes.append(_scaling_note(scaling))
    for name in sources.missing:
        left_out = {
            LATEST: "AgenticFlow's own run, the raw loop, W4 and W5 are left out",
            PEERS: "the peers' columns are left out",
            SCALING: "the scaling chart is left out",
        }[name]
        notes.append(f"No `{name}` (`{MAKE[name]}`): {left_out}.")
    return notes


def _sizes(report: Mapping[str, Any]) -> tuple[Any, ...]:
    sizes = report.get("sizes", {})
    return tuple(sizes.get(k) for k in ("fanout_tasks", "chain_tasks", "diamonds"))


def _workers_rows(scaling: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [
        r
        for r in scaling.get("summary", [])
        if r.get("series") == "workers" and r.get("workload") == "io"
    ]
    return sorted(rows, key=lambda r: int(r["workers"]))


def _scaling_note(scaling: Mapping[str, Any]) -> str:
    settings = scaling.get("settings", {})
    rows = _workers_rows(scaling)
    head = (
        f"Scaling: `{MAKE[SCALING]}` (`{SCALING}`), date not recorded, "
        f"{scaling.get('mode', '?')}, {_runs(settings.get('rounds', '?'), 'round')}, "
        f"{settings.get('slots', '?')} slots per worker, tasks that wait "
        f"{settings.get('latency_ms', '?')} ms; {_machine(scaling.get('machine', {}))}"
    )
    if not rows:
        return head + "; it has no workers series."
    figures = ", ".join(
        f"{r['workers']} worker{'' if r['workers'] == 1 else 's'} {number(r['tasks_per_s'])}"
        + (f" (ideal {number(r['ideal_tasks_per_s'])})" if r.get("ideal_tasks_per_s") else "")
        for r in rows
    )
    return f"{head}. Tasks/s: {figures}."


def build(sources: Sources) -> Report:
    """The table, notes and charts the sources give (pure: no I/O, no clock)."""
    rows = _rows_from_latest(sources.latest) if sources.latest is not None else {}
    if sources.peers is not None:
        _add_peers(rows, sources.peers)
    ordered = tuple(rows[k] for k in ROW_METRICS if k in rows and rows[k].cells)
    candidates = [
        ("agenticflow", "AgenticFlow"),
        ("raw", "raw JetStream loop"),
        *PEER_COLUMNS,
    ]
    columns = tuple(c for c in candidates if any(c[0] in row.cells for row in ordered))
    scaling = tuple(_workers_rows(sources.scaling)) if sources.scaling is not None else ()
    charts = [
        Chart(f"{row.key}.png", f"{row.title}, {row.workload}: {row.metrics[0].label} by system")
        for row in ordered
        if row.key in CHARTED and len(row.cells) >= 2
    ]
    if scaling:
        charts.append(Chart(SCALING_CHART, "Throughput against the number of workers"))
    notes = _notes(sources, rows)
    if any(row.key in CHARTED and len(row.cells) == 1 for row in ordered):
        notes.append("W1-W3 are charted only where two systems or more were measured.")
    return Report(
        columns=columns,
        rows=ordered,
        notes=tuple(notes),
        scaling=scaling,
        charts=tuple(charts),
    )


def _arrow(metric: Metric) -> str:
    return "↑" if metric.higher_is_better else "↓"


def _heading(row: Row) -> str:
    if len(row.metrics) == 1:
        metric = row.metrics[0]
        return f"{row.title}: {row.workload}, {metric.label} {_arrow(metric)}"
    arrows = {_arrow(m) for m in row.metrics}
    return f"{row.title}: {row.workload}" + (f" (all {arrows.pop()})" if len(arrows) == 1 else "")


def _cell(row: Row, column: str) -> str:
    spreads = row.cells.get(column)
    if spreads is None:
        return ""
    if len(spreads) == 1:
        return spread_text(spreads[0])
    return "; ".join(
        f"{m.label} {spread_text(s)}" for m, s in zip(row.metrics, spreads, strict=True)
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section(report: Report, page: Path, assets: Path) -> str:
    """The Markdown between the markers of ``page``, charts linked relative to it."""
    lines = [
        "<!-- Generated by `make bench-report` (benchmarks/report.py) from "
        "benchmarks/results/*.json: edit the generator, not this text. -->",
        "",
    ]
    if report.rows:
        lines.append("| workload | " + " | ".join(name for _, name in report.columns) + " |")
        lines.append("|---" * (len(report.columns) + 1) + "|")
        lines.extend(
            "| "
            + " | ".join([_escape(_heading(row))] + [_cell(row, k) for k, _ in report.columns])
            + " |"
            for row in report.rows
        )
        lines += [
            "",
            f"Medians, with the range (min{DASH}max) where there were several runs; "
            "↑ higher is better, ↓ lower is better.",
            "",
        ]
    lines.extend(f"- {_escape(note)}" for note in report.notes)
    if report.charts:
        link = Path(os.path.relpath(assets, page.parent)).as_posix()
        lines.append("")
        lines.extend(f"![{chart.alt}]({link}/{chart.file})" for chart in report.charts)
    # A blank line before the end marker, so Markdown does not read it as part of a list.
    return "\n".join(lines) + "\n\n"


def replace_section(text: str, body: str, name: str) -> str:
    """``text`` with what lies between its markers replaced by ``body``; raises
    MarkerError (naming ``name``) unless it has exactly one pair, in order."""
    begins, ends = text.count(BEGIN), text.count(END)
    if begins != 1 or ends != 1 or text.index(BEGIN) > text.index(END):
        raise MarkerError(
            f"{name}: needs one {BEGIN} followed by one {END} "
            f"(found {begins} begin and {ends} end markers)"
        )
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


# Charts --------------------------------------------------------------------

AF_GREEN, AF_LIGHT, RAW_GREY, PEER_BLUE = "#2e7d32", "#81c784", "#9e9e9e", "#1f77b4"
COLOURS = {"agenticflow": AF_GREEN, "agenticflow-peers": AF_LIGHT, "raw": RAW_GREY}


def _matplotlib() -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportError(
            "the charts need matplotlib, which is not installed: "
            "pip install -e '.[bench]' (make install includes it)"
        ) from exc
    matplotlib.use("Agg")


def _bar_chart(report: Report, row: Row, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    columns = [(k, name) for k, name in report.columns if k in row.cells]
    spreads = [row.cells[k][0] for k, _ in columns]
    metric = row.metrics[0]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(
        range(len(columns)),
        [s.median for s in spreads],
        yerr=[[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
        if any(s.runs > 1 for s in spreads)
        else None,
        capsize=3,
        color=[COLOURS.get(k, PEER_BLUE) for k, _ in columns],
    )
    axes.bar_label(bars, labels=[number(s.median) for s in spreads], fontsize=7, padding=2)
    axes.set_xticks(range(len(columns)), [textwrap.fill(n, 14) for _, n in columns], fontsize=8)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,g}"))
    better = "higher" if metric.higher_is_better else "lower"
    axes.set_ylabel(f"{metric.label} ({better} is better)", fontsize=8)
    axes.set_title(f"{row.title}: {row.workload}", fontsize=9)
    axes.margins(y=0.15)
    axes.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def _scaling_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    workers = [int(r["workers"]) for r in rows]
    medians = [float(r["tasks_per_s"]) for r in rows]
    low = [m - float(r.get("tasks_per_s_min", m)) for m, r in zip(medians, rows, strict=True)]
    high = [float(r.get("tasks_per_s_max", m)) - m for m, r in zip(medians, rows, strict=True)]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.errorbar(
        workers, medians, yerr=[low, high], marker="o", capsize=3, color=AF_GREEN, label="measured"
    )
    if all(r.get("ideal_tasks_per_s") for r in rows):
        ideal = [float(r["ideal_tasks_per_s"]) for r in rows]
        axes.plot(workers, ideal, linestyle="--", color=RAW_GREY, label="ideal (every slot busy)")
    axes.set_xticks(workers, [str(w) for w in workers], fontsize=8)
    axes.set_xlabel("workers", fontsize=8)
    axes.set_ylabel("tasks/s (higher is better)", fontsize=8)
    axes.set_title(
        f"Scaling with workers: tasks that wait {rows[0]['latency_ms']:g} ms", fontsize=9
    )
    axes.set_ylim(bottom=0)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def draw(report: Report, assets: Path) -> list[Path]:
    """Draw every chart of ``report`` into ``assets``; raises ReportError without
    matplotlib."""
    _matplotlib()
    assets.mkdir(parents=True, exist_ok=True)
    rows = {row.key: row for row in report.rows}
    drawn: list[Path] = []
    for chart in report.charts:
        path = assets / chart.file
        if chart.file == SCALING_CHART:
            _scaling_chart(report.scaling, path)
        else:
            _bar_chart(report, rows[chart.file.removesuffix(".png")], path)
        drawn.append(path)
    return drawn


# Command line --------------------------------------------------------------


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Rewrite the generated performance section of the README and the docs "
        "(and its charts) from benchmarks/results/*.json.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a section is stale or a linked chart is missing",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON reports ({RESULTS})")
    parser.add_argument("--assets", type=Path, default=ASSETS, help=f"charts go here ({ASSETS})")
    parser.add_argument(
        "--pages", type=Path, nargs="+", default=list(PAGES), help="Markdown files with markers"
    )
    return parser.parse_args(argv)


def run(check: bool, results: Path, assets: Path, pages: Sequence[Path]) -> int:
    """Make (or with ``check``, compare) the sections and charts; returns the exit
    code. Raises ReportError (MarkerError for a page without markers)."""
    sources = load(results)
    report = build(sources)
    updated: dict[Path, tuple[str, str]] = {}
    for page in pages:
        try:
            old = page.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"{_shown(page)}: cannot read it ({exc})") from exc
        updated[page] = (old, replace_section(old, section(report, page, assets), _shown(page)))
    if check:
        stale = [_shown(p) for p, (old, new) in updated.items() if old != new]
        absent = [_shown(assets / c.file) for c in report.charts if not (assets / c.file).exists()]
        for name in stale:
            print(f"stale: {name} (run make bench-report)", file=sys.stderr)
        for name in absent:
            print(f"missing chart: {name} (run make bench-report)", file=sys.stderr)
        if stale or absent:
            return 1
        print(f"up to date: {', '.join(_shown(p) for p in pages)}")
        return 0
    for path in draw(report, assets):
        print(f"drew {_shown(path)}")
    for page, (old, new) in updated.items():
        if new != old:
            page.write_text(new, encoding="utf-8")
            print(f"wrote {_shown(page)}")
        else:
            print(f"unchanged {_shown(page)}")
    for name in sources.missing:
        print(f"missing {name}: run {MAKE[name]} for it", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (see the module docstring)."""
    args = parse_args(argv)
    try:
        return run(args.check, args.results, args.assets, args.pages)
    except ReportError as exc:
        print(f"bench-report: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "BEGIN",
    "DASH",
    "END",
    "Chart",
    "MarkerError",
    "Report",
    "ReportError",
    "Row",
    "Sources",
    "Spread",
    "build",
    "draw",
    "load",
    "main",
    "replace_section",
    "section",
]

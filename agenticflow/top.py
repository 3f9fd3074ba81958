"""``agenticflow top``: a live terminal view of a cluster.

:func:`snapshot` reads what the cluster shows about itself, all through the bus
and nothing from a coordinator directly:

* capability queues: the task consumers of the tasks stream (pending, in
  flight, redelivered, lag = pending + in flight) and the workers serving them
  (the agents registry);
* agent instances and their states (the agents registry, written by every
  worker's heartbeat);
* throughput: tasks/s from the ``tasks_done`` counters in those heartbeats,
  events/s from the events stream's last sequence;
* running workflows with their progress (the workflow snapshots in KV);
* recent failures (``task.failed`` and ``workflow.failed`` events).

Every read is bounded, so a large deployment costs the same as a small one:
at most :data:`WORKFLOW_SCAN` workflow snapshots (the most recently written:
a workflow untouched for longer than the last :data:`WORKFLOW_SCAN` snapshot
writes is not shown), at most :data:`FAILURE_SCAN` failure events, at most
:data:`REGISTRY_SCAN` registry entries. Rates need two snapshots; the first
has none (``None``, shown as a dash).

:func:`build_view` turns the readings into a :class:`ClusterView` without I/O
(tested without a broker); :func:`render` draws one with rich; :func:`run_top`
is the loop behind the command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agenticflow.coordinator.state import TaskStatus, WorkflowState, open_snapshot
from agenticflow.render import _STATE_STYLE, esc, safe, short, when
from agenticflow.shared.bus.base import Bus, stored_ns
from agenticflow.shared.bus.registry import open_entry
from agenticflow.shared.errors import AgenticFlowError, MalformedMessageError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import Event, EventType, TaskFailed, WorkflowFailed
from agenticflow.shared.wire.names import Names

WORKFLOW_SCAN = 500
"""Workflow snapshots read per refresh: the most recently written ones."""
WORKFLOWS_SHOWN = 20
"""Running workflows shown, most recently created first."""
FAILURES_SHOWN = 10
"""Failure events shown, newest first."""
FAILURE_WINDOW_S = 600.0
"""How far back failures are looked for."""
FAILURE_SCAN = 200
"""Failure events read per refresh at most (when more failed in the window,
only the newest are read)."""
REGISTRY_SCAN = 10_000
"""Agents registry entries read per refresh at most."""
BUSY_SHOWN = 15
"""Agent instances shown one per row (those not idle)."""

_FAILURE_TYPES = frozenset({EventType.TASK_FAILED, EventType.WORKFLOW_FAILED})
_NO_RATE = "\u2013"  # an en dash


# The view ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueView:
    """One capability queue: its task consumer and who serves it."""

    queue: str
    consumer: str
    pending: int
    """Stored, not yet delivered (``num_pending``)."""
    in_flight: int
    """Delivered, not yet acknowledged (``num_ack_pending``)."""
    redelivered: int
    """In flight and delivered more than once (``num_redelivered``)."""
    waiting_pulls: int
    """Pull requests waiting for a task (idle capacity)."""
    delivered: int
    """Deliveries so far (the consumer sequence)."""
    workers: int
    """Worker processes serving the queue."""
    instances: int
    """Agent instances those workers host for it."""
    delivered_per_s: float | None = None

    @property
    def lag(self) -> int:
        """Tasks not done yet: pending + in flight."""
        return self.pending + self.in_flight

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {**dataclasses.asdict(self), "lag": self.lag}


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One agent instance on one worker."""

    id: str
    agent: str
    worker: str
    state: str
    since: int
    """When it entered its state (ns since the epoch)."""
    tasks_done: int
    suspending: bool = False


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent across the workers hosting it."""

    agent: str
    capabilities: list[str]
    workers: int
    instances: int
    states: dict[str, int]
    tasks_done: int
    tasks_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class CoordinatorView:
    """One registered coordinator."""

    node: str
    state: str
    workflows_cached: int
    events_folded: int
    heartbeat: int


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """One running workflow and its progress."""

    workflow_id: str
    name: str
    status: str
    done: int
    """Tasks completed or skipped."""
    total: int
    running: int
    failed: int
    """Tasks failed so far (the workflow has not failed: e.g. waiting for a retry)."""
    paused: bool
    waiting_approval: list[str]
    """Tasks waiting for a person."""
    created_at: int
    route: str | None = None


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One ``task.failed`` or ``workflow.failed`` event."""

    seq: int
    timestamp: int
    type: str
    workflow_id: str
    task_id: str | None
    attempt: int | None
    error_type: str
    message: str
    retryable: bool | None
    worker: str = ""


@dataclass(frozen=True, slots=True)
class RateSample:
    """The last heartbeat seen of one registry entry, for its tasks/s."""

    heartbeat: int
    done: int
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Readings:
    """What one refresh read from the cluster (the input of :func:`build_view`)."""

    taken_at: int
    """Wall clock, ns since the epoch."""
    monotonic: int
    """Monotonic clock, ns: rates divide by its differences."""
    consumers: list[dict[str, Any]]
    """Consumer infos of the tasks stream, in the JetStream API's JSON form."""
    registry: list[dict[str, Any]]
    """Agents registry entries (worker and coordinator heartbeats)."""
    events_last_seq: int
    workflows: list[WorkflowState]
    workflows_scanned: int
    failures: list[Event]
    failures_since: int


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything ``agenticflow top`` shows, from one refresh."""

    prefix: str
    taken_at: int
    monotonic: int
    events_last_seq: int
    tasks_per_s: float | None
    events_per_s: float | None
    queues: list[QueueView]
    agents: list[AgentView]
    instances: list[InstanceView]
    coordinators: list[CoordinatorView]
    workflows: list[WorkflowRow]
    """Running workflows shown (at most :data:`WORKFLOWS_SHOWN`)."""
    running_workflows: int
    """Running workflows among the snapshots read."""
    workflows_scanned: int
    failures: list[FailureRow]
    failures_since: int
    samples: dict[str, RateSample] = field(default_factory=dict, repr=False)
    """Per registry entry, the heartbeat the next tasks/s is measured from."""

    @property
    def states(self) -> dict[str, int]:
        """Agent instances in each state."""
        return dict(Counter(i.state for i in self.instances))

    @property
    def lag(self) -> int:
        """Tasks not done yet, over every queue."""
        return sum(q.lag for q in self.queues)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``agenticflow top --once --json``)."""
        return {
            "prefix": self.prefix,
            "taken_at": self.taken_at,
            "throughput": {
                "tasks_per_s": self.tasks_per_s,
                "events_per_s": self.events_per_s,
                "events_last_seq": self.events_last_seq,
            },
            "queues": [q.to_dict() for q in self.queues],
            "lag": self.lag,
            "states": self.states,
            "agents": [dataclasses.asdict(a) for a in self.agents],
            "instances": [dataclasses.asdict(i) for i in self.instances],
            "coordinators": [dataclasses.asdict(c) for c in self.coordinators],
            "workflows": {
                "running": self.running_workflows,
                "scanned": self.workflows_scanned,
                "scan_limit": WORKFLOW_SCAN,
                "shown": [dataclasses.asdict(w) for w in self.workflows],
            },
            "failures": {
                "since": self.failures_since,
                "items": [dataclasses.asdict(f) for f in self.failures],
            },
        }


# Pure logic -------------------------------------------------------------------


def per_second(before: int | None, after: int, elapsed_ns: int) -> float | None:
    """``(after - before)`` per second, or None without a previous value, time
    passed, or when the counter went back (a restart)."""
    if before is None or elapsed_ns <= 0 or after < before:
        return None
    return (after - before) / (elapsed_ns / 1e9)


def advance(previous: RateSample | None, heartbeat: int, done: int) -> RateSample:
    """The sample after a registry entry reported ``done`` tasks at ``heartbeat``.

    The rate is measured between two heartbeats of the entry, not between two
    refreshes: the counters move only when a worker heartbeats, so a refresh
    faster than the heartbeats would otherwise see bursts and zeros. With no
    new heartbeat the previous rate stands.
    """
    if previous is None:
        return RateSample(heartbeat, done)
    if heartbeat == previous.heartbeat:
        return previous
    if heartbeat < previous.heartbeat:
        return RateSample(heartbeat, done)
    return RateSample(
        heartbeat, done, per_second(previous.done, done, heartbeat - previous.heartbeat)
    )


def _workers(entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in entries if e.get("role", "worker") == "worker" and "agents" in e]


def _entry_done(entry: Mapping[str, Any]) -> int:
    return sum(int(a.get("tasks_done") or 0) for a in entry.get("agents") or ())


def _samples(registry: list[dict[str, Any]], previous: ClusterView | None) -> dict[str, RateSample]:
    before = previous.samples if previous else {}
    out: dict[str, RateSample] = {}
    for entry in _workers(registry):
        key = str(entry.get("instance", ""))
        out[key] = advance(before.get(key), int(entry.get("heartbeat") or 0), _entry_done(entry))
    return out


def _queues(
    readings: Readings, names: Names, previous: ClusterView | None, elapsed: int
) -> list[QueueView]:
    serving: dict[str, set[str]] = {}
    hosted: Counter[str] = Counter()
    for entry in _workers(readings.registry):
        for queue in entry.get("capabilities") or ():
            serving.setdefault(str(queue), set()).add(str(entry.get("worker", "")))
            hosted[str(queue)] += len(entry.get("agents") or ())
    before = {q.queue: q.delivered for q in previous.queues} if previous else {}
    out: list[QueueView] = []
    for info in readings.consumers:
        queue = names.task_queue_of(info)
        if queue is None:
            continue  # not a capability's task consumer
        delivered = int((info.get("delivered") or {}).get("consumer_seq") or 0)
        out.append(
            QueueView(
                queue=queue,
                consumer=str(info["name"]),
                pending=int(info.get("num_pending") or 0),
                in_flight=int(info.get("num_ack_pending") or 0),
                redelivered=int(info.get("num_redelivered") or 0),
                waiting_pulls=int(info.get("num_waiting") or 0),
                delivered=delivered,
                workers=len(serving.get(queue, ())),
                instances=hosted[queue],
                delivered_per_s=per_second(before.get(queue), delivered, elapsed),
            )
        )
    return sorted(out, key=lambda q: (-q.lag, q.queue))


def _instances(registry: list[dict[str, Any]]) -> list[InstanceView]:
    return [
        InstanceView(
            id=str(row.get("id", "")),
            agent=str(entry.get("agent", "")),
            worker=str(entry.get("worker", "")),
            state=str(row.get("state", "")),
            since=int(row.get("since") or 0),
            tasks_done=int(row.get("tasks_done") or 0),
            suspending=bool(row.get("suspending")),
        )
        for entry in _workers(registry)
        for row in entry.get("agents") or ()
    ]


def _agents(registry: list[dict[str, Any]], samples: Mapping[str, RateSample]) -> list[AgentView]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in _workers(registry):
        grouped.setdefault(str(entry.get("agent", "")), []).append(entry)
    out = []
    for agent, entries in sorted(grouped.items()):
        rates = [
            s.rate
            for e in entries
            if (s := samples.get(str(e.get("instance", "")))) and s.rate is not None
        ]
        rows = [row for e in entries for row in e.get("agents") or ()]
        out.append(
            AgentView(
                agent=agent,
                capabilities=sorted({str(c) for e in entries for c in e.get("capabilities") or ()}),
                workers=len({e.get("worker") for e in entries}),
                instances=len(rows),
                states=dict(Counter(str(row.get("state", "")) for row in rows)),
                tasks_done=sum(_entry_done(e) for e in entries),
                tasks_per_s=sum(rates) if rates else None,
            )
        )
    return out


def _coordinators(registry: list[dict[str, Any]]) -> list[CoordinatorView]:
    return [
        CoordinatorView(
            node=str(entry.get("coordinator", entry.get("instance", ""))),
            state=str(entry.get("state", "")),
            workflows_cached=int(entry.get("load") or 0),
            events_folded=int(entry.get("events_folded") or 0),
            heartbeat=int(entry.get("heartbeat") or 0),
        )
        for entry in registry
        if entry.get("role") == "coordinator"
    ]


def workflow_row(state: WorkflowState) -> WorkflowRow:
    """A workflow's progress as one row."""
    statuses = Counter(task.status for task in state.tasks.values())
    return WorkflowRow(
        workflow_id=state.workflow_id,
        name=state.name,
        status=state.status.value,
        done=state.completed,
        total=len(state.tasks),
        running=statuses[TaskStatus.RUNNING],
        failed=statuses[TaskStatus.FAILED],
        paused=state.paused,
        waiting_approval=sorted(
            task_id
            for task_id, task in state.tasks.items()
            if task.status == TaskStatus.WAITING_APPROVAL
        ),
        created_at=state.created_at,
        route=state.route,
    )


def failure_row(event: Event) -> FailureRow | None:
    """A failure event as one row (None for any other event)."""
    data = event.data
    error_type, message, retryable, worker = "", "", None, ""
    if isinstance(data, TaskFailed):
        error_type, message = data.error.type, data.error.message
        retryable, worker = data.error.retryable, data.worker
    elif isinstance(data, WorkflowFailed):
        message = data.reason
        if data.error is not None:
            error_type, retryable = data.error.type, data.error.retryable
    else:
        return None
    return FailureRow(
        seq=event.seq or 0,
        timestamp=event.timestamp,
        type=event.type.value,
        workflow_id=event.workflow_id,
        task_id=event.task_id or getattr(data, "task_id", None),
        attempt=event.attempt,
        error_type=error_type,
        message=message,
        retryable=retryable,
        worker=worker,
    )


def build_view(readings: Readings, names: Names, previous: ClusterView | None) -> ClusterView:
    """The view of one refresh; rates come from the difference with ``previous``."""
    elapsed = readings.monotonic - previous.monotonic if previous else 0
    samples = _samples(readings.registry, previous)
    rates = [s.rate for s in samples.values() if s.rate is not None]
    running = sorted(
        (s for s in readings.workflows if not s.is_terminal),
        key=lambda s: (s.created_at, s.workflow_id),
        reverse=True,
    )
    failures = [row for e in readings.failures if (row := failure_row(e)) is not None]
    failures.sort(key=lambda f: (f.seq, f.timestamp), reverse=True)
    return ClusterView(
        prefix=names.prefix,
        taken_at=readings.taken_at,
        monotonic=readings.monotonic,
        events_last_seq=readings.events_last_seq,
        tasks_per_s=sum(rates) if rates else None,
        events_per_s=per_second(
            previous.events_last_seq if previous else None, readings.events_last_seq, elapsed
        ),
        queues=_queues(readings, names, previous, elapsed),
        agents=_agents(readings.registry, samples),
        instances=_instances(readings.registry),
        coordinators=_coordinators(readings.registry),
        workflows=[workflow_row(s) for s in running[:WORKFLOWS_SHOWN]],
        running_workflows=len(running),
        workflows_scanned=readings.workflows_scanned,
        failures=failures[:FAILURES_SHOWN],
        failures_since=readings.failures_since,
        samples=samples,
    )


# Reading the cluster ----------------------------------------------------------


async def _stream_state(bus: Bus, stream: str) -> dict[str, Any]:
    info = await bus.stream_info(stream)
    return dict(info.get("state") or {})


def _kv_stream(bucket: str) -> tuple[str, str]:
    """The stream and subjects behind a KV bucket."""
    return f"KV_{bucket}", f"$KV.{bucket}.>"


async def _registry(bus: Bus) -> list[dict[str, Any]]:
    """Live agents registry entries (one consumer, not one request per key)."""
    bucket = bus.names.agents_bucket
    entries = await bus.kv_entries(bucket, limit=REGISTRY_SCAN)
    infos = (open_entry(bus.seal, bucket, k, v, stored_ns=ns) for k, v, ns in entries)
    return [info for info in infos if info is not None]


async def _workflows(bus: Bus) -> tuple[list[WorkflowState], int]:
    """The most recently written workflow snapshots (at most WORKFLOW_SCAN),
    and how many were read."""
    stream, subject = _kv_stream(bus.names.workflows_bucket)
    state = await _stream_state(bus, stream)
    last, first = int(state.get("last_seq") or 0), int(state.get("first_seq") or 0)
    if last == 0 or int(state.get("messages") or 0) == 0:
        return [], 0
    # With history=1 only each key's latest write is kept, so the last
    # WORKFLOW_SCAN sequences hold the latest snapshots of the keys written last.
    start = max(first, last - WORKFLOW_SCAN + 1, 1)
    msgs = await bus.read_stored(stream, subject, start_seq=start, limit=WORKFLOW_SCAN)
    out = []
    for msg in msgs:
        if not msg.data:
            continue
        workflow_id = msg.subject.removeprefix(f"$KV.{bus.names.workflows_bucket}.")
        try:
            out.append(
                open_snapshot(
                    bus.seal,
                    bus.names.workflows_bucket,
                    workflow_id,
                    msg.data,
                    stored_ns=stored_ns(msg),
                )
            )
        except MalformedMessageError:
            continue  # refused (forged, altered, undecryptable) or unreadable: not shown
    return out, len(msgs)


async def _count_from(
    bus: Bus, subject: str, *, start_ns: int | None = None, start_seq: int | None = None
) -> int:
    """How many events on ``subject`` are stored from ``start_ns`` (a time) or
    ``start_seq`` (a stream sequence) on: an ephemeral consumer is created for
    its ``num_pending`` and deleted, no message is read."""
    return await bus.count_stored(
        bus.names.events_stream, subject, start_seq=start_seq, start_ns=start_ns
    )


async def _newest_start(bus: Bus, subject: str, first_seq: int, last_seq: int) -> int:
    """A stream sequence from which between FAILURES_SHOWN and FAILURE_SCAN
    events on ``subject`` are stored, when more than FAILURE_SCAN are stored
    from ``first_seq`` on. Bisected on the sequence: one sequence further
    holds at most one event fewer, so the range is always hit, in about
    log2(last_seq - first_seq) counts and without reading a message."""
    low, high = first_seq, last_seq + 1  # more than FAILURE_SCAN from low; none from high
    while high - low > 1:
        middle = (low + high) // 2
        count = await _count_from(bus, subject, start_seq=middle)
        if count > FAILURE_SCAN:
            low = middle
        elif count < FAILURES_SHOWN:
            high = middle
        else:
            return middle
    return high


async def _failures(bus: Bus, since_ns: int, events: Mapping[str, Any]) -> list[Event]:
    """The newest failure events stored since ``since_ns``, reading at most
    FAILURE_SCAN of them however many there are (``events``: the events
    stream's state)."""
    subject = bus.names.stored_events_of_type("*.failed")  # task.failed and workflow.failed
    stream = bus.names.events_stream
    if await _count_from(bus, subject, start_ns=since_ns) <= FAILURE_SCAN:
        when_from = dt.datetime.fromtimestamp(since_ns / 1e9, tz=dt.UTC)
        msgs = await bus.read_stored(stream, subject, start_time=when_from, limit=FAILURE_SCAN)
    else:  # a storm: only the newest are read, all within the window
        first, last = int(events.get("first_seq") or 1), int(events.get("last_seq") or 0)
        start = await _newest_start(bus, subject, first, last)
        msgs = await bus.read_stored(stream, subject, start_seq=start, limit=FAILURE_SCAN)
    out = []
    for msg in msgs[-FAILURES_SHOWN:]:
        try:
            event = bus.decode_event(msg, seq=msg.metadata.sequence.stream)
        except MalformedMessageError:
            continue
        if event.type in _FAILURE_TYPES:
            out.append(event)
    return out


async def read_cluster(bus: Bus) -> Readings:
    """Read everything :func:`build_view` needs, concurrently.

    Raises NotFoundError when the deployment's streams do not exist (a wrong
    prefix), TransportError when NATS fails.
    """
    taken_at, monotonic = time.time_ns(), time.monotonic_ns()
    since = taken_at - int(FAILURE_WINDOW_S * 1e9)
    events, consumers = await asyncio.gather(
        _stream_state(bus, bus.names.events_stream), bus.consumer_infos(bus.names.tasks_stream)
    )
    registry, (workflows, scanned), failures = await asyncio.gather(
        _registry(bus), _workflows(bus), _failures(bus, since, events)
    )
    return Readings(
        taken_at=taken_at,
        monotonic=monotonic,
        consumers=consumers,
        registry=registry,
        events_last_seq=int(events.get("last_seq") or 0),
        workflows=workflows,
        workflows_scanned=scanned,
        failures=failures,
        failures_since=since,
    )


async def snapshot(bus: Bus, previous: ClusterView | None = None) -> ClusterView:
    """One view of the cluster; with ``previous`` (the last view) it has rates.

    Raises NotFoundError when the deployment's streams do not exist (a wrong
    prefix), TransportError when NATS fails.
    """
    return build_view(await read_cluster(bus), bus.names, previous)


# Drawing ----------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return _NO_RATE if value is None else f"{value:.1f}"


def _age(ns: int, now: int) -> str:
    if not ns:
        return "-"
    seconds = max(0, (now - ns) // 1_000_000_000)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _styled(state: str, text: str | None = None) -> str:
    style = _STATE_STYLE.get(state, "")
    shown = esc(text if text is not None else state)
    return f"[{style}]{shown}[/{style}]" if style else shown


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column.endswith(("/s", "#")) else "left")
    return table


def _header(view: ClusterView, note: str | None) -> RenderableType:
    text = Text.from_markup(
        f"[bold]agenticflow top[/bold] · prefix [bold]{esc(view.prefix)}[/bold] · "
        f"{when(view.taken_at)} · tasks/s [bold]{_rate(view.tasks_per_s)}[/bold] · "
        f"events/s [bold]{_rate(view.events_per_s)}[/bold] · lag [bold]{view.lag}[/bold] · "
        f"running workflows [bold]{view.running_workflows}[/bold]"
    )
    coordinators = ", ".join(
        esc(f"{c.node} ({c.state}, {c.workflows_cached} cached, {c.events_folded} events folded)")
        for c in view.coordinators
    )
    lines: list[RenderableType] = [
        text,
        Text.from_markup(f"coordinators: {coordinators or '[red]none registered[/red]'}"),
    ]
    if note:
        lines.append(Text(safe(note), style="red"))
    return Group(*lines)


def _queue_table(view: ClusterView) -> Table:
    table = _table("queue", "workers", "instances", "pending", "in flight", "redelivered")
    table.add_column("lag", justify="right")
    table.add_column("deliveries/s", justify="right")
    for q in view.queues:
        workers = str(q.workers)
        if q.workers == 0:
            workers = "[red]0[/red]" if q.lag else "[dim]0[/dim]"
        table.add_row(
            esc(q.queue),
            workers,
            str(q.instances),
            str(q.pending),
            str(q.in_flight),
            f"[yellow]{q.redelivered}[/yellow]" if q.redelivered else "0",
            f"[bold]{q.lag}[/bold]" if q.lag else "0",
            _rate(q.delivered_per_s),
        )
    return table


def _agent_table(view: ClusterView) -> Table:
    table = _table("agent", "workers", "instances", "states", "tasks done")
    table.add_column("tasks/s", justify="right")
    for a in view.agents:
        states = " · ".join(
            _styled(state, f"{count} {state}") for state, count in sorted(a.states.items())
        )
        table.add_row(
            esc(a.agent),
            str(a.workers),
            str(a.instances),
            states,
            str(a.tasks_done),
            _rate(a.tasks_per_s),
        )
    return table


def _busy_table(view: ClusterView) -> Table | None:
    busy = [i for i in view.instances if i.state != "idle" or i.suspending]
    if not busy:
        return None
    table = _table("instance", "state", "for", "tasks done")
    for i in sorted(busy, key=lambda i: i.since)[:BUSY_SHOWN]:
        state = i.state + (" (suspending)" if i.suspending else "")
        table.add_row(
            esc(i.id), _styled(i.state, state), _age(i.since, view.taken_at), str(i.tasks_done)
        )
    if len(busy) > BUSY_SHOWN:
        table.add_row(f"[dim]… {len(busy) - BUSY_SHOWN} more[/dim]", "", "", "")
    return table


def _workflow_table(view: ClusterView) -> Table:
    table = _table("workflow", "name", "progress", "done", "state", "waiting approval", "age")
    for w in view.workflows:
        state = "[yellow]paused[/yellow]" if w.paused else _styled(w.status)
        if w.failed:
            state += f" [red]({w.failed} failed)[/red]"
        table.add_row(
            esc(w.workflow_id),
            esc(w.name),
            ProgressBar(total=max(w.total, 1), completed=w.done, width=20),
            f"{w.done}/{w.total}",
            state,
            _styled("waiting_approval", ", ".join(w.waiting_approval))
            if w.waiting_approval
            else "",
            _age(w.created_at, view.taken_at),
        )
    return table


def _failure_table(view: ClusterView) -> Table:
    table = _table("when", "event", "workflow", "task", "error")
    for f in view.failures:
        task = f"{f.task_id} #{f.attempt}" if f.task_id and f.attempt else (f.task_id or "")
        # A workflow.failed reason already names the task's error.
        task_level = f.error_type and f.type == EventType.TASK_FAILED.value
        error = f"{f.error_type}: {f.message}" if task_level else f.message
        table.add_row(
            when(f.timestamp),
            esc(f.type),
            esc(f.workflow_id),
            esc(task),
            f"[red]{esc(short(error, 90))}[/red]",
        )
    return table


def render(view: ClusterView, *, note: str | None = None) -> RenderableType:
    """The view as rich renderables (``note``: a problem to show at the top)."""
    parts: list[RenderableType] = [_header(view, note)]
    parts.append(Panel(_queue_table(view), title="queues", title_align="left"))
    agents: list[RenderableType] = [_agent_table(view)]
    if (busy := _busy_table(view)) is not None:
        agents.append(busy)
    parts.append(Panel(Group(*agents), title="agents", title_align="left"))
    more = view.running_workflows - len(view.workflows)
    title = "running workflows" + (
        f" (newest {len(view.workflows)} of {view.running_workflows})" if more else ""
    )
    parts.append(
        Panel(
            _workflow_table(view) if view.workflows else Text("none", style="dim"),
            title=title,
            title_align="left",
        )
    )
    window = int(FAILURE_WINDOW_S // 60)
    parts.append(
        Panel(
            _failure_table(view) if view.failures else Text("none", style="dim"),
            title=f"recent failures (last {window} min)",
            title_align="left",
        )
    )
    return Group(*parts)


# The loop ---------------------------------------------------------------------


async def run_top(
    settings: Settings, *, interval: float, once: bool, as_json: bool, console: Console
) -> None:
    """Show the cluster, refreshed every ``interval`` seconds until cancelled
    (Ctrl-C); ``once``: one snapshot (no rates) and return; ``as_json``: the
    view's dict instead of tables (one JSON line per refresh unless ``once``).

    Raises TransportError when NATS is unreachable, NotFoundError when the
    deployment does not exist (also from a later refresh with ``as_json``; the
    live view shows a refresh that fails and tries again at the next one).
    """
    bus = await Bus.connect(settings, name="agenticflow-top")
    try:
        view = await snapshot(bus)
        if once:
            if as_json:
                console.file.write(json.dumps(view.to_dict(), separators=(",", ":")) + "\n")
            else:
                console.print(render(view))
            return
        if as_json:
            await _json_lines(bus, view, interval, console)
            return
        with Live(render(view), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                try:
                    view = await snapshot(bus, view)
                except AgenticFlowError as exc:
                    live.update(render(view, note=f"refresh failed, retrying: {exc}"), refresh=True)
                    continue
                live.update(render(view), refresh=True)
    finally:
        await bus.close()


async def _json_lines(bus: Bus, view: ClusterView, interval: float, console: Console) -> None:
    while True:
        console.file.write(json.dumps(view.to_dict()) + "\n")
        console.file.flush()
        await asyncio.sleep(interval)
        view = await snapshot(bus, view)


__all__ = [
    "AgentView",
    "ClusterView",
    "CoordinatorView",
    "FailureRow",
    "InstanceView",
    "QueueView",
    "RateSample",
    "Readings",
    "WorkflowRow",
    "advance",
    "build_view",
    "failure_row",
    "per_second",
    "read_cluster",
    "render",
    "run_top",
    "snapshot",
    "workflow_row",
]

"""The coordinator's imperative shell around :func:`agenticflow.coordinator.reducer.reduce`.

Loop: fetch a batch of events from the durable ``coordinator`` consumer, fold
each into its workflow's state, execute the resulting commands (publish events
and task messages, arm timers), save changed snapshots to KV by revision
(compare-and-set), and only then ack the batch. A crash anywhere in between
re-delivers the batch; re-folding it issues the same commands with the same
derived message ids, which JetStream deduplicates, and events at or below a
snapshot's ``last_seq`` are skipped.

Timers (retry back-off, task timeouts) are not durable by themselves: when one
fires the shell publishes an event (``task.retry_due``, ``task.timed_out``) and
the decision is made by folding it, so it is in the stream and replayable. On
start the shell re-arms the timers of every running workflow from its snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from opentelemetry.trace import SpanKind

from agenticflow.coordinator import children
from agenticflow.coordinator.admission import (
    CHILD_ID_TAKEN,
    Ignore,
    Refuse,
    Rules,
    admit,
    sender,
)
from agenticflow.coordinator.index import (
    PROGRESS_EVERY_S,
    WorkflowSummary,
    due,
    listed_fields,
    seal_summary,
    summary_of,
)
from agenticflow.coordinator.known import KnownIds
from agenticflow.coordinator.reducer import (
    SHELL_NODE,
    ArmTimer,
    Command,
    Dispatch,
    Emit,
    apply,
    pending_timers,
    task_queue,
)
from agenticflow.coordinator.schedules import Scheduler
from agenticflow.coordinator.state import (
    ACTIVE_TASK,
    TERMINAL_TASK,
    TaskStatus,
    WorkflowState,
    open_snapshot,
)
from agenticflow.shared.bus.base import Bus, ConsumerSpec, Fetching, Message, Outgoing, Pulling
from agenticflow.shared.bus.registry import CoordinatorEntry, open_entry, open_update, seal_entry
from agenticflow.shared.errors import (
    ConfigError,
    MalformedMessageError,
    PayloadTooLargeError,
    StateConflictError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.lifecycle import every, stop_when_closed
from agenticflow.shared.ops.metrics import (
    QUEUE_LAG,
    QUEUE_PENDING,
    Reading,
    events_folded,
    observe,
    tasks_completed,
    tasks_dispatched,
    tasks_failed,
    tasks_retried,
)
from agenticflow.shared.ops.telemetry import context_of, tracer, tracing_enabled
from agenticflow.shared.resilience import backoff_delay
from agenticflow.shared.security.audit import AuditKind
from agenticflow.shared.security.auditor import Auditor
from agenticflow.shared.security.identity import serve_identities
from agenticflow.shared.security.rbac import load_policy
from agenticflow.shared.wire.codec import (
    H_SOURCE,
    TaskMessage,
    parse_uint,
    task_identity,
)
from agenticflow.shared.wire.events import (
    FORBIDDEN,
    NOT_FOLDED,
    Event,
    EventType,
    InterventionRefused,
    InterventionRequested,
    MessageRejected,
    Payload,
    TaskApprovalExpired,
    TaskApprovalRequested,
    TaskAuctionClosed,
    TaskClaimExpired,
    TaskDeadLettered,
    TaskFailed,
    TaskRetryDue,
    TaskTimedOut,
    TaskUnserved,
    TaskWaitElapsed,
    WorkflowCompleted,
    WorkflowRejected,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import ID_RE, task_key, workflow_key
from agenticflow.shared.wire.names import SYSTEM_WORKFLOW, check_partitions, partition_of
from agenticflow.shared.wire.vclock import VectorClock

log = structlog.get_logger("agenticflow.coordinator")

T = TypeVar("T")

_CACHE_SIZE = 10_000
_QUEUES_WAIT_S = 2.0
"""How long a heartbeat waits for the task queues' depths at most (then keeps the last)."""
_ECHOES = frozenset(
    t.value
    for t in (
        EventType.TASK_SCHEDULED,
        EventType.TASK_RETRY_SCHEDULED,
        EventType.WORKFLOW_STARTED,
        EventType.WORKFLOW_RESUMED,
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_REJECTED,
        EventType.WORKFLOW_ABORTED,
        EventType.WORKFLOW_CANCELLED,
        EventType.INTERVENTION_APPLIED,
        EventType.INTERVENTION_REFUSED,
        EventType.TASK_APPROVAL_DECIDED,
        EventType.TASK_AUCTION_OPENED,
        EventType.TASK_AWARDED,
    )
)
"""Event types only the reducer emits and that change nothing when folded back
into the state that emitted them (no handler; their clock is already merged):
a cached workflow skips them without decoding. A workflow loaded from KV still
re-folds them from its stream tail."""
_NOT_FOLDED = frozenset(t.value for t in NOT_FOLDED)
_REOPENING = frozenset({EventType.WORKFLOW_RESUME_REQUESTED, EventType.INTERVENTION_REQUESTED})
_AUDITED = frozenset(
    {
        EventType.INTERVENTION_APPLIED,
        EventType.INTERVENTION_REFUSED,
        EventType.TASK_APPROVAL_DECIDED,
    }
)
"""Decisions the coordinator also appends to its audit chain."""
"""Events a finished workflow still answers: a resume, or an intervention (refused)."""
_FINISHED_KEPT = 100_000
_POISON_KEPT = 100_000
_KV_HEADROOM = 4096
"""Bytes of a KV message kept for its subject and headers (snapshots use the rest)."""
"""Ids of workflows this process saw finish: their later events (our own terminal
event coming back, a late duplicate outcome) are skipped without loading them."""


@dataclass(slots=True)
class _Entry:
    state: WorkflowState
    revision: int
    saved_version: int
    """The state's version in KV."""
    queued_version: int = -1
    """The version last handed to the writer (>= saved_version)."""
    dirty_since: float | None = None
    oversize: bool = False
    """Its snapshot outgrew max_payload while running: it is being aborted."""
    listed: tuple[object, ...] | None = None
    """What its index record shows (None: not written by this process yet)."""
    listed_at: float = 0.0
    """When that record was handed to the writer (monotonic seconds)."""

    def __post_init__(self) -> None:
        self.queued_version = max(self.queued_version, self.saved_version)

    @property
    def dirty(self) -> bool:
        """Changed since its last snapshot was handed to the writer."""
        return self.queued_version != self.state.version


@dataclass(slots=True)
class _Save:
    entry: _Entry
    data: bytes
    version: int
    summary: WorkflowSummary | None = None
    """Its new index record, when what the index shows of it changed."""


@dataclass(slots=True)
class _Job:
    """The second half of a batch: store its commands, write its snapshots, ack it."""

    msgs: list[Message]
    commands: list[Command]
    saves: list[_Save]
    finished: list[str]
    progress: list[tuple[str, WorkflowSummary]] = field(default_factory=list)
    """Index records of running workflows whose count of done tasks moved
    (written after the snapshots, in batch order like everything else)."""


class _PoisonedError(Exception):
    """Decoding, admitting, folding or snapshotting one stored event raised: the
    event is dead-lettered (recorded as rejected, never folded) and the batch
    folded again without it."""

    def __init__(self, seq: int, subject: str, workflow_id: str | None, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.seq, self.subject, self.workflow_id = seq, subject, workflow_id


class _UnsavableError(Exception):
    """Folded states could not be encoded as snapshots (the culprit unknown yet)."""

    def __init__(self, workflows: list[str]) -> None:
        super().__init__(f"states of {', '.join(workflows)} cannot be encoded")
        self.workflows = workflows


class Coordinator:
    """Folds events into workflow state and dispatches ready tasks.

    ``async with Coordinator(bus=..., node_id=...) as coordinator`` starts it;
    ``await coordinator.run()`` serves until :meth:`shutdown`.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        node_id: str,
        batch_size: int = 256,
        fetch_timeout_s: float = 1.0,
        partition: int = 0,
        partitions: int = 1,
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self.partition = partition
        """The workflows this coordinator folds: those hashed to ``partition`` of
        ``partitions`` (:func:`agenticflow.shared.wire.names.partition_of`); all when
        there is one."""
        self.partitions = check_partitions(partitions)
        if not 0 <= partition < partitions:
            raise ConfigError(f"partition {partition} is not one of 0..{partitions - 1}")
        self.names = bus.names
        self.settings: Settings = bus.settings
        self._batch = batch_size
        self._fetch_timeout = fetch_timeout_s
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._known = KnownIds()
        """Workflow ids that may have a snapshot (listed at start or created here)."""
        self._reload = False
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=2)
        self._progress_at = 0.0
        """Folded batches for the writer (None: stop)."""
        self._timers: list[tuple[int, int, ArmTimer]] = []
        self._timer_seq = itertools.count()
        self._timer_wakeup = asyncio.Event()
        self._shell_counters: dict[str, int] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._inbox: deque[Message] = deque()
        self._mail: asyncio.Future[None] | None = None
        """Set while _consume waits for mail: _arrived resolves it."""
        self._puller: Pulling
        self._watcher: Any = None
        self._dlq_sub: Fetching | None = None
        self._stop_issuing: Callable[[], Awaitable[None]] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.events_folded = 0
        self.queues: dict[str, dict[str, int]] = {}
        """Task queues by name: pending, in flight, lag (read every heartbeat)."""
        self._unobserve: list[Callable[[], None]] = []
        self.policy = load_policy(self.settings.policy_file, self.settings.security_dir)
        self.rules = Rules(
            max_clock_entries=self.settings.max_clock_entries,
            claim_timeout_ns=int(self.settings.task_ack_wait_s * 1e9),
            policy=self.policy,
        )
        """What admission checks events against (agenticflow.coordinator.admission)."""
        self._scheduler = Scheduler(
            bus=bus,
            node_id=node_id,
            partition=partition,
            partitions=self.partitions,
            policy=self.policy,
        )  # fires the schedules of this partition
        self._poisoned: OrderedDict[int, None] = OrderedDict()
        """Stream sequences of events dead-lettered because handling them raised (the
        latest _POISON_KEPT; one met again after that is found and recorded again)."""
        self._suspects: set[str] = set()
        """Workflows whose state failed to encode: each of their folds is checked
        (the state must still encode) until one encodes again, to find the event."""
        self.audit = Auditor(bus, node_id)
        """This coordinator's audit chain: interventions, approvals, refusals, rejections."""
        """RBAC: who may steer workflows (None: anyone who can publish the request)."""

    # Lifecycle ----------------------------------------------------------
    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Create topology, recover running workflows, start serving; returns when live."""
        if self.runner is not None:
            return
        await self.bus.ensure_topology()
        # Workers with keys wait for their process identity before they start.
        self._stop_issuing = await serve_identities(self.bus)
        await self.audit.start(role="coordinator", policy=self.policy is not None)
        self._workflows = await self.bus.kv(self.names.workflows_bucket)
        self._index = await self.bus.kv(self.names.workflow_index_bucket)
        self._agents = await self.bus.kv(self.names.agents_bucket)
        await self._read_agents()  # before anything is dispatched (recovery re-issues)
        await self._recover()
        await self._heartbeat()
        self._watcher = await self._agents.watchall()
        consumer = self.names.partition_consumer(self.partition, self.partitions)
        filters = (
            (self.names.event_subjects,)
            if self.partitions == 1
            else tuple(self.names.partition_events(self.partition))
        )
        await self.bus.ensure_consumer(
            self.names.events_stream,
            ConsumerSpec(
                name=consumer,
                filter_subjects=filters,
                ack_wait_s=self.settings.coordinator_ack_wait_s,
                max_ack_pending=-1,
            ),
        )
        self._puller = self.bus.puller(
            stream=self.names.events_stream,
            consumer=consumer,
            on_message=self._arrived,
            credit=lambda: 2 * self._batch - len(self._inbox),
            max_batch=self._batch,
            max_open=1,  # one request at a time: events are folded in stream order
        )
        await self._puller.start()
        self.bus.on_reconnect(self._after_reconnect)
        if self._first:  # cluster-wide duties: one partition's coordinator has them
            self._dlq_sub = await self.bus.fetcher(
                self.names.advisories_stream,
                ConsumerSpec(
                    name=self.names.dead_letter_consumer,
                    filter_subjects=(self.names.max_deliveries_subject,),
                    ack_wait_s=30,
                ),
            )
            self._unobserve = [
                observe(QUEUE_PENDING, functools.partial(self._queue_readings, "pending")),
                observe(QUEUE_LAG, functools.partial(self._queue_readings, "lag")),
            ]
        self.runner = asyncio.create_task(self._serve(), name="coordinator")
        await self._started.wait()
        log.info("coordinator started", node=self.node_id, prefix=self.names.prefix)

    async def run(self) -> None:
        """Serve until :meth:`shutdown` is called or the connection closes for good."""
        await self.start()
        assert self.runner is not None
        await self.runner

    async def shutdown(self) -> None:
        """Stop fetching, finish the batch in hand, stop timers (idempotent)."""
        self._stop.set()
        self._timer_wakeup.set()
        if self.runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
        if self._stop_issuing is not None:
            with contextlib.suppress(Exception):
                await self._stop_issuing()
        await self.audit.close()

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._consume(), name="coordinator-consume")
            group.create_task(self._write_behind(), name="coordinator-writer")
            group.create_task(self._run_timers(), name="coordinator-timers")
            group.create_task(self._watch_agents(), name="coordinator-agents")
            group.create_task(self._scheduler.run(self._stop), name="coordinator-schedules")
            if self._dlq_sub is not None:
                group.create_task(self._dead_letters(), name="coordinator-dead-letters")
            group.create_task(
                stop_when_closed(self.bus.closed, self._stop, who="coordinator"),
                name="coordinator-connection",
            )
            group.create_task(
                every(self.settings.heartbeat_s, self._stop, self._heartbeat, what="heartbeat"),
                name="coordinator-heartbeats",
            )
            self._started.set()
        for unobserve in self._unobserve:
            unobserve()
        with contextlib.suppress(Exception):
            await self._write(self._capture(self._cache.values(), force=True))
        # Release subscriptions here, so that when run() returns the connection
        # drains at once.
        with contextlib.suppress(Exception):
            await self._agents.delete(self._registry_key)
        with contextlib.suppress(Exception):
            await self._watcher.stop()
        with contextlib.suppress(Exception):
            await self._puller.stop()
        self.bus.forget_reconnect(self._after_reconnect)
        if self._dlq_sub is not None:
            with contextlib.suppress(Exception):
                await self._dlq_sub.unsubscribe()

    @property
    def _registry_key(self) -> str:
        return f"{self.node_id}.coordinator"

    @property
    def _first(self) -> bool:
        """Partition 0's coordinator also reads the dead letters and the queue depths."""
        return self.partition == 0

    def _mine(self, workflow_id: str) -> bool:
        """Whether a workflow is in this coordinator's partition."""
        return self.partitions == 1 or partition_of(workflow_id, self.partitions) == self.partition

    async def _heartbeat(self) -> None:
        # Queue depths first: a heartbeat stamped T carries depths read after T.
        now = time.time_ns()
        if self._first:
            # Metrics only: never stop nor hold up the heartbeat, or start(), which
            # sends the first one (a NATS fail-over held this read up for 9.5 s).
            wait = min(self.settings.heartbeat_s, _QUEUES_WAIT_S)
            with contextlib.suppress(Exception):
                self.queues = await asyncio.wait_for(self._read_queues(), timeout=wait)
        info = CoordinatorEntry(
            instance=self._registry_key,
            coordinator=self.node_id,
            agent="coordinator",
            state="active",
            load=len(self._cache),
            heartbeat=now,
            events_folded=self.events_folded,
            partition=self.partition,
            partitions=self.partitions,
        )
        await self._agents.put(
            self._registry_key,
            seal_entry(self.bus.seal, self.names.agents_bucket, self._registry_key, info),
        )

    async def _read_queues(self) -> dict[str, dict[str, int]]:
        """Depth and lag of every task queue, from its consumer's info."""
        queues: dict[str, dict[str, int]] = {}
        for info in await self.bus.consumer_infos(self.names.tasks_stream):
            queue = self.names.task_queue_of(info)
            if queue is None:
                continue
            pending, in_flight = (
                int(info.get("num_pending") or 0),
                int(info.get("num_ack_pending") or 0),
            )
            queues[queue] = {
                "pending": pending,
                "in_flight": in_flight,
                "lag": pending + in_flight,
                "redelivered": int(info.get("num_redelivered") or 0),
            }
        return queues

    def _queue_readings(self, field: str) -> list[Reading]:
        return [(float(q[field]), {"capability": name}) for name, q in self.queues.items()]

    def ready(self) -> str | None:
        """None while serving; otherwise why not."""
        if self._stop.is_set():
            return "stopping"
        return None if self._started.is_set() else "starting"

    def health(self) -> dict[str, Any]:
        """This coordinator's part of its process's health report."""
        running = sum(1 for entry in self._cache.values() if not entry.state.is_terminal)
        return {
            "workflows_cached": len(self._cache),
            "workflows_running": running,
            "events_folded": self.events_folded,
            "timers": len(self._timers),
            "queues": self.queues,
            "stopping": self._stop.is_set(),
        }

    # Recovery -----------------------------------------------------------
    async def _recover(self) -> None:
        # An empty bucket lists no keys; a failure (a timeout in a NATS fail-over)
        # fails the start, retried by our owner: starting with nothing recovered
        # would leave the running workflows' timers unarmed for good.
        keys = [key for key in await self._workflows.keys() if self._mine(key)]
        self._known.update(keys)
        try:
            indexed = set(await self._index.keys())
        except Exception:  # NoKeysError for an empty bucket
            indexed = set()
        unlisted: list[WorkflowState] = []
        recovered = 0
        commands: list[Command] = []
        for key in keys:
            try:
                entry = await self._load(key, commands)
            except MalformedMessageError:
                log.exception("unreadable snapshot skipped", workflow_id=key)
                continue
            if entry is not None and key not in indexed:
                unlisted.append(entry.state)  # saved before the index existed
            if entry is None or entry.state.is_terminal:
                self._cache.pop(key, None)
                continue
            for timer in pending_timers(entry.state):
                self._arm(timer)
            recovered += 1
        # Commands of events folded after the snapshots: re-issued, deduplicated.
        await self._execute(commands)
        for start in range(0, len(unlisted), 64):  # at most 64 puts in flight
            await asyncio.gather(
                *(
                    self._put_summary(state.workflow_id, self._summary(state, state.finished_at))
                    for state in unlisted[start : start + 64]
                )
            )
        if recovered:
            log.info("recovered running workflows", count=recovered)

    # Event loop ---------------------------------------------------------
    def _arrived(self, msg: Message) -> None:
        self._inbox.append(msg)
        waiter = self._mail
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # wakes _consume in one step (no wait_for task)

    def _after_reconnect(self) -> None:
        self._reload = True

    async def _consume(self) -> None:
        while not self._stop.is_set():
            if self._reload:
                # Events in flight to the old connection come back only after
                # ack_wait, behind later events of their workflows, which would
                # then skip them as folded. Re-read every state from KV and the
                # stream instead (between batches, so no save is in flight).
                self._reload = False
                log.info("reconnected: reloading workflow states", cached=len(self._cache))
                await self._jobs.join()
                self._cache.clear()
            await self._flush_due()
            if not self._inbox:
                # Wake for mail, or each fetch interval to flush snapshots and see _stop.
                loop = asyncio.get_running_loop()
                self._mail = waiter = loop.create_future()
                timer = loop.call_later(self._fetch_timeout, _wake, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._mail = None
                continue
            count = min(len(self._inbox), self._batch)
            msgs = [self._inbox.popleft() for _ in range(count)]
            self._puller.kick()
            await self._process(msgs)
        await self._jobs.put(None)  # the writer finishes what was handed over, then stops

    async def _process(self, msgs: list[Message]) -> None:
        """Fold one batch, then hand it to the writer, which stores its
        commands, saves its due snapshots and acks it while the next batch is
        folded.

        Snapshot bytes are taken here, before the next batch changes the
        states, so a snapshot never claims events whose commands are not
        stored yet. A failed batch is retried *in place* until it succeeds:
        once the writer is idle, its touched states are reloaded from KV and
        the same messages re-folded in the same order. Moving on to later
        events first (e.g. by nak-ing this batch) would fold them onto a stale
        snapshot and then skip the redelivered ones as already applied.
        Re-issued commands carry the same message ids and are deduplicated.
        """
        failures = 0
        while True:
            touched: dict[str, _Entry] = {}
            commands: list[Command] = []
            try:
                for msg in msgs:
                    await self._fold(msg, touched, commands)
                saves = self._capture(touched.values(), strict=True)
                break
            except _PoisonedError as poison:
                # Message content, not the bus: dead-letter that event, fold the rest again.
                await self._jobs.join()
                self._forget(touched)
                if poison.workflow_id is not None:
                    self._cache.pop(poison.workflow_id, None)
                await self._dead_letter_event(poison)
            except _UnsavableError as unsavable:
                # Fold again, checking those states after each event to find the culprit.
                await self._jobs.join()
                self._forget(touched)
                if self._suspects.issuperset(unsavable.workflows):
                    log.error("a state cannot be saved and no event is to blame; retrying")
                    failures = await self._pause(failures)
                self._suspects.update(unsavable.workflows)
            except Exception:
                await self._jobs.join()  # nothing in flight for the states we drop
                self._forget(touched)
                if self._stop.is_set():
                    return  # unacked: the next active coordinator gets the batch
                log.exception("batch failed; retrying it in place", size=len(msgs))
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
                failures = await self._pause(failures)
        finished = [wf for wf, entry in touched.items() if entry.state.is_terminal]
        await self._jobs.put(_Job(msgs, commands, saves, finished))

    async def _write_behind(self) -> None:
        """The writer: each batch's commands, its snapshots, then its acks, in
        batch order (a failed step is retried in place)."""
        failed = False
        while True:
            job = await self._jobs.get()
            try:
                if job is None:
                    return
                if failed:
                    continue  # stopping: unacked, the next active coordinator gets them
                try:
                    # Re-issued commands carry the same message ids: deduplicated.
                    await self._until_done(
                        functools.partial(self._execute, job.commands),
                        "batch commands not stored",
                        size=len(job.msgs),
                    )
                    await self._write(job.saves)
                    await asyncio.gather(*(self._put_summary(w, sm) for w, sm in job.progress))
                except StateConflictError:
                    log.exception("lost a snapshot race: another coordinator is active; stopping")
                    self._stop.set()
                    failed = True
                    continue
                except Exception:
                    failed = True  # _write gives up only when the coordinator stops
                    continue
                for msg in job.msgs:
                    with contextlib.suppress(Exception):
                        await msg.ack()
                for workflow_id in job.finished:
                    entry = self._cache.get(workflow_id)
                    if entry is not None and not entry.state.is_terminal:
                        continue  # resumed by a later batch meanwhile
                    self._cache.pop(workflow_id, None)
                    self._shell_counters.pop(workflow_id, None)
                    self._finished[workflow_id] = None
                    while len(self._finished) > _FINISHED_KEPT:
                        self._finished.popitem(last=False)
            finally:
                self._jobs.task_done()

    async def _until_done(self, attempt: Callable[[], Awaitable[T]], what: str, **about: Any) -> T:
        """Run ``attempt`` until it succeeds, backing off between failures (it must
        be idempotent). StateConflictError, and any error once the coordinator
        stops, propagate."""
        failures = 0
        while True:
            try:
                return await attempt()
            except StateConflictError:
                raise
            except Exception:
                if self._stop.is_set():
                    raise
                log.exception(f"{what}; retrying", **about)
                failures = await self._pause(failures)

    async def _pause(self, failures: int) -> int:
        """Back off after one more failure (0.2 s doubling up to 5 s; less if the
        coordinator stops); returns the failures so far."""
        failures += 1
        delay = backoff_delay(failures, initial_s=0.2, backoff=2.0, max_s=5.0, jitter=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        return failures

    async def _flush_due(self) -> None:
        """Hand over snapshots whose interval has passed (between batches)."""
        try:
            saves = self._capture([e for e in self._cache.values() if e.dirty], strict=True)
        except _UnsavableError as unsavable:
            # Drop the states that cannot be saved: the next load of each re-folds
            # its stream tail carefully and dead-letters the event to blame.
            await self._jobs.join()
            self._suspects.update(unsavable.workflows)
            for workflow_id in unsavable.workflows:
                self._cache.pop(workflow_id, None)
            return
        progress = self._progress_due()
        if saves or progress:
            await self._jobs.put(_Job([], [], saves, [], progress))

    def _progress_due(self) -> list[tuple[str, WorkflowSummary]]:
        """Index records held back because only their count of done tasks
        moved (see :func:`agenticflow.coordinator.index.due`), once they are
        :data:`PROGRESS_EVERY_S` old; looked for at most that often."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY_S:
            return []
        self._progress_at = now
        due_now = []
        for entry in self._cache.values():
            state = entry.state
            if entry.listed is None or state.is_terminal:
                continue  # not indexed yet, or its final record is on its way
            listed = listed_fields(state)
            if due(listed, entry.listed, now - entry.listed_at):
                entry.listed, entry.listed_at = listed, now
                due_now.append((state.workflow_id, self._summary(state)))
        return due_now

    async def _decoded(self, msg: Message, commands: list[Command]) -> Event | None:
        """The event to fold of a fetched message; None when there is none (an
        echo, a record, a poison message, which is recorded as rejected)."""
        parsed = self.names.parse_event_subject(msg.subject)
        events_folded.add(parsed[1] if parsed else "?")
        if parsed is not None and (
            parsed[1] in _NOT_FOLDED  # agent moves and tool audit records: not state
            or (parsed[1] in _ECHOES and parsed[0] in self._cache)
        ):
            return None  # (an echo: a decision of the reducer, applied when it was made)
        seq = msg.metadata.sequence.stream
        if seq in self._poisoned:
            return None
        try:
            event = self.bus.decode_event(msg, seq=seq)
        except MalformedMessageError as exc:
            await self._reject(msg, seq, exc, commands)
            return None
        if event.workflow_id == SYSTEM_WORKFLOW:
            return None
        if event.workflow_id in self._finished and not _starts_a_child(event):
            # A finished workflow ignores it (our own terminal event, a late one);
            # a child's start under its id goes on to admission, which refuses it.
            if event.type not in _REOPENING:
                return None
            del self._finished[event.workflow_id]
        return event

    async def _fold(
        self, msg: Message, touched: dict[str, _Entry], commands: list[Command]
    ) -> None:
        event = await self._decoded(msg, commands)
        if event is None:
            return
        seq = msg.metadata.sequence.stream
        entry = touched.get(event.workflow_id)
        if entry is None and not (
            event.type == EventType.WORKFLOW_SUBMITTED
            and event.workflow_id not in self._cache
            and event.workflow_id not in self._known
        ):  # a submission this process has never heard of is certainly new: no KV read
            entry = await self._load(event.workflow_id, commands)
        if entry is not None and seq <= entry.state.last_seq:
            return  # already folded before a restart
        state = entry.state if entry else None
        with self._guard(msg.subject, seq, event.workflow_id):
            verdict = admit(state, event, self.rules)
        if isinstance(verdict, Ignore):
            return
        if isinstance(verdict, Refuse):
            await self._refuse(event, verdict)
            return
        with self._guard(msg.subject, seq, event.workflow_id):
            state, new_commands = apply(state, event, source=self.node_id)
            if state is not None and event.workflow_id in self._suspects:
                state.to_snapshot()
        self.events_folded += 1
        _count(event, state, new_commands)
        if state is None:
            return  # a submission's rejection for a workflow never stored: nothing to keep
        if entry is None:
            self._remember(state, 0, 0)
            self._known.add(event.workflow_id)
            entry = self._cache[event.workflow_id]
        touched[event.workflow_id] = entry
        commands.extend(new_commands)

    @contextlib.contextmanager
    def _guard(self, subject: str, seq: int, workflow_id: str | None) -> Iterator[None]:
        """Whatever raises while admitting or folding one event is that event's fault."""
        try:
            yield
        except Exception as exc:
            log.exception("event could not be folded; dead-lettered", seq=seq, subject=subject)
            raise _PoisonedError(seq, subject, workflow_id, exc) from exc

    async def _audit_decision(self, event: Event) -> None:
        """An intervention applied or refused, or an approval decided, on the audit chain."""
        data = event.data.model_dump(mode="json", exclude={"changes", "output"})
        kind = {
            EventType.INTERVENTION_APPLIED: AuditKind.INTERVENTION_APPLIED,
            EventType.INTERVENTION_REFUSED: AuditKind.INTERVENTION_REFUSED,
        }.get(event.type, AuditKind.APPROVAL_DECIDED)
        await self.audit.note(kind, workflow_id=event.workflow_id, task_id=event.task_id, **data)

    async def _refuse(self, event: Event, refused: Refuse) -> None:
        """Record an event admission refused: audited, then answered once, as
        ``workflow.intervention_refused`` for an intervention (its sender waits
        for a verdict) and as ``message.rejected`` for anything else."""
        who = sender(event)
        log.warning(
            "event refused",
            workflow_id=event.workflow_id,
            event_type=event.type.value,
            seq=event.seq,
            code=refused.code,
            reason=refused.reason,
            sender=who,
        )
        data = event.data
        await self._audit_rejection(event, refused)
        if refused.code == CHILD_ID_TAKEN:
            failed = children.id_taken(event, refused.reason)
            if failed is not None:  # the parent task fails instead of waiting for ever
                outgoing: list[Outgoing] = []
                self._encode_emit(failed, outgoing)
                if outgoing:
                    await self.bus.publish_many(outgoing)
        if isinstance(data, InterventionRequested):
            await self._shell_emit(
                event.workflow_id,
                EventType.INTERVENTION_REFUSED,
                InterventionRefused(
                    request_id=data.request_id,
                    action=data.action,
                    reason=refused.reason,
                    code=refused.code,
                    by=event.signer or data.by,
                    stream_seq=event.seq,
                ),
                key=workflow_key(event.workflow_id, f"intervention:{data.request_id}:refused"),
            )
            return
        if event.type == EventType.MESSAGE_REJECTED:
            return  # never answer a rejection with another one
        subject = self.names.event_subject(event.workflow_id, event.type.value)
        await self._shell_emit(
            event.workflow_id,
            EventType.MESSAGE_REJECTED,
            MessageRejected(
                reason=refused.reason,
                code=refused.code,
                subject=subject,
                stream_seq=event.seq,
                sender=who,
            ),
            key=f"rejected:{self.names.events_stream}:{event.seq}",
        )
        if (
            isinstance(event.data, WorkflowSubmitted)
            and event.data.parent is None
            and event.workflow_id not in self._cache
        ):  # the submitter waits for a verdict (a forged child link gets none: its
            # id is the real child's, which must stay free)
            await self._shell_emit(
                event.workflow_id,
                EventType.WORKFLOW_REJECTED,
                WorkflowRejected(reason=refused.reason, problems=[refused.reason]),
                key=workflow_key(event.workflow_id, "rejected"),
            )

    async def _audit_rejection(self, event: Event, refused: Refuse) -> None:
        """On the audit chain: access denied (RBAC) or a rejected message."""
        data = event.data
        about = (
            {"action": data.action, "request_id": data.request_id}
            if isinstance(data, InterventionRequested)
            else {}
        )
        denied = refused.code == FORBIDDEN
        kind = AuditKind.ACCESS_DENIED if denied else AuditKind.MESSAGE_REJECTED
        await self.audit.note(
            kind,
            workflow_id=event.workflow_id,
            subject=self.names.event_subject(event.workflow_id, event.type.value),
            stream_seq=event.seq,
            code=refused.code,
            reason=refused.reason,
            principal=sender(event),
            **about,
        )

    async def _dead_letter_event(self, poison: _PoisonedError) -> None:
        """Never fold this stored event again (in this process); record why."""
        self._poisoned[poison.seq] = None
        while len(self._poisoned) > _POISON_KEPT:
            self._poisoned.popitem(last=False)
        await self._until_done(
            functools.partial(self._record_poison, poison), "poison not recorded"
        )

    async def _record_poison(self, poison: _PoisonedError) -> None:
        await self._record_rejection(
            subject=self.names.published_subject(poison.subject),
            seq=poison.seq,
            code="poison_message",
            reason=f"handling it raised {poison}",
            sender="",
        )

    async def _reject(
        self, msg: Message, seq: int, exc: MalformedMessageError, commands: list[Command]
    ) -> None:
        """Record a poison event: never applied, never redelivered."""
        subject = self.names.published_subject(msg.subject)
        source = (msg.headers or {}).get(H_SOURCE, "")
        workflow_id, parsed = await self._record_rejection(
            subject=subject,
            seq=seq,
            code=exc.code,
            reason=str(exc),
            sender=source if len(source) <= 128 else source[:128] + "...",
        )
        if (
            parsed is not None
            and parsed[1] == EventType.WORKFLOW_SUBMITTED.value
            and workflow_id != SYSTEM_WORKFLOW
        ):
            entry = await self._load(workflow_id, commands)
            if entry is None:
                await self._shell_emit(
                    workflow_id,
                    EventType.WORKFLOW_REJECTED,
                    WorkflowRejected(
                        reason=f"the submission could not be read: {exc}", problems=[str(exc)]
                    ),
                    key=workflow_key(workflow_id, "rejected"),
                )

    async def _record_rejection(
        self, *, subject: str, seq: int, code: str, reason: str, sender: str
    ) -> tuple[str, tuple[str, str] | None]:
        """Audit and record (``message.rejected``) one stored event refused before
        it could be read or folded; returns its workflow and parsed subject."""
        parsed = self.names.parse_event_subject(subject)
        workflow_id = parsed[0] if parsed and ID_RE.match(parsed[0]) else SYSTEM_WORKFLOW
        log.warning("event rejected", subject=subject, seq=seq, code=code, reason=reason)
        await self.audit.note(
            AuditKind.MESSAGE_REJECTED,
            workflow_id=workflow_id,
            subject=subject,
            stream_seq=seq,
            code=code,
            reason=reason,
        )
        if parsed and parsed[1] == EventType.MESSAGE_REJECTED.value:
            return workflow_id, parsed  # never answer a bad rejection with another one
        await self._shell_emit(
            workflow_id,
            EventType.MESSAGE_REJECTED,
            MessageRejected(
                reason=reason, code=code, subject=subject, stream_seq=seq, sender=sender
            ),
            key=f"rejected:{self.names.events_stream}:{seq}",
        )
        return workflow_id, parsed

    # State --------------------------------------------------------------
    def _remember(self, state: WorkflowState, revision: int, saved_version: int) -> None:
        self._cache[state.workflow_id] = _Entry(state, revision, saved_version)
        self._cache.move_to_end(state.workflow_id)
        while len(self._cache) > _CACHE_SIZE:
            oldest, entry = next(iter(self._cache.items()))
            if entry.saved_version != entry.state.version:
                break  # never evict unsaved state
            self._cache.pop(oldest)

    def _forget(self, touched: dict[str, _Entry]) -> None:
        for workflow_id in touched:
            self._cache.pop(workflow_id, None)

    async def _load(self, workflow_id: str, commands: list[Command]) -> _Entry | None:
        """The workflow's state: cached, or its snapshot plus a re-fold of the events
        stored after it (snapshots are saved lazily; the stream is the truth). The
        re-fold's commands are added to ``commands`` for the caller to execute. A
        stored event whose re-fold raises is dead-lettered and the load starts over
        without it (so a coordinator that starts on poison does not stop)."""
        entry = self._cache.get(workflow_id)
        if entry is not None:
            self._cache.move_to_end(workflow_id)
            return entry
        while True:
            try:
                loaded = await self._read_state(workflow_id)
            except _PoisonedError as poison:
                await self._dead_letter_event(poison)
                continue
            if loaded is None:
                return None
            state, revision, saved_version, refolded = loaded
            commands.extend(refolded)
            self._remember(state, revision, saved_version)
            return self._cache[workflow_id]

    async def _read_state(
        self, workflow_id: str
    ) -> tuple[WorkflowState, int, int, list[Command]] | None:
        """Snapshot + re-folded tail: ``(state, revision, saved version, commands)``;
        raises _PoisonedError naming the stored event whose re-fold raised. A
        snapshot that is refused (not signed by a coordinator, altered, moved,
        an old one put back, undecryptable) or unreadable is not trusted: the
        workflow is rebuilt from all its events."""
        stored = await self.bus.kv_read(self._workflows, workflow_id)
        if stored is None:
            return None
        try:
            state = open_snapshot(
                self.bus.seal,
                self.names.workflows_bucket,
                workflow_id,
                stored.value,
                stored_ns=stored.stored_ns,
            )
        except MalformedMessageError as exc:
            log.error(
                "workflow snapshot refused; rebuilding the workflow from its events",
                workflow_id=workflow_id,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            rebuilt, commands = await self._refold(workflow_id, None)
            if rebuilt is None:
                return None
            return rebuilt, stored.revision, 0, commands
        saved_version = state.version
        _, commands = await self._refold(workflow_id, state)
        return state, stored.revision, saved_version, commands

    async def _refold(
        self, workflow_id: str, state: WorkflowState | None
    ) -> tuple[WorkflowState | None, list[Command]]:
        """Fold the events stored after ``state`` (None: all of them) into it.

        From no state (a refused snapshot), the commands of events whose effects
        the stream already shows are dropped: emitted events that are stored,
        and dispatches of attempts that have since settled. The rest are
        re-issued (deduplicated where JetStream still remembers them)."""
        tail = await self.bus.read_stored(
            self.names.events_stream,
            self.names.workflow_events(workflow_id),
            start_seq=state.last_seq + 1 if state is not None else 1,
        )
        careful = workflow_id in self._suspects
        rebuild = state is None
        seen: set[str] = set()
        commands: list[Command] = []
        for msg in tail:
            seq = msg.metadata.sequence.stream
            if seq in self._poisoned:
                continue
            try:
                event = self.bus.decode_event(msg, seq=seq)
            except MalformedMessageError:
                continue  # the live consumer records it as rejected
            seen.add(event.id)
            with self._guard(msg.subject, seq, workflow_id):
                if isinstance(admit(state, event, self.rules), Ignore | Refuse):
                    continue  # the live consumer records a refusal
                state, new_commands = apply(state, event, source=self.node_id)
                if careful and state is not None:
                    state.to_snapshot()
            commands.extend(new_commands)
        if rebuild and state is not None:
            commands = [c for c in commands if _still_due(c, state, seen)]
        return state, commands

    def _due(self, entry: _Entry, now: float) -> bool:
        """Whether a changed snapshot must be written now (see Settings.snapshot_*)."""
        if not entry.dirty:
            return False
        if entry.revision == 0 or entry.state.is_terminal:
            return True  # a new workflow exists only in this process until saved
        # At least as many changes as the workflow has tasks: writing a snapshot
        # costs O(tasks), so this keeps its cost O(1) per event for big workflows.
        every = max(self.settings.snapshot_every_events, len(entry.state.tasks))
        if entry.state.version - entry.queued_version >= every:
            return True
        if entry.dirty_since is None:
            entry.dirty_since = now
        return now - entry.dirty_since >= self.settings.snapshot_interval_s

    def _capture(
        self, entries: Iterable[_Entry], *, force: bool = False, strict: bool = False
    ) -> list[_Save]:
        """Snapshot bytes of the entries due to be saved, taken now. A state that
        cannot be encoded is left out; with ``strict``, _UnsavableError (naming
        those workflows) is raised instead and no entry is marked as handed over."""
        now = time.monotonic()
        limit = self.bus.max_payload - _KV_HEADROOM
        encoded: list[tuple[_Entry, bytes, str | None]] = []
        unsavable: list[str] = []
        for entry in entries:
            if not (entry.dirty if force else self._due(entry, now)):
                continue
            state = entry.state
            if entry.oversize and not state.is_terminal:
                continue  # its abort is on the way; the stream keeps every event
            try:
                data, left_out = state.snapshot_within(limit)
                data = self.bus.seal.seal_record(
                    self.names.workflows_bucket, state.workflow_id, data
                )
            except Exception:
                log.exception("workflow state cannot be encoded", workflow_id=state.workflow_id)
                unsavable.append(state.workflow_id)
                continue
            self._suspects.discard(state.workflow_id)
            encoded.append((entry, data, left_out))
        if unsavable and strict:
            raise _UnsavableError(unsavable)
        saves = []
        for entry, data, left_out in encoded:
            state = entry.state
            if len(data) > limit:
                entry.oversize = True
                self._abort_oversize(state, len(data), limit)
                continue
            if left_out:
                log.warning(
                    "snapshot trimmed to fit max_payload",
                    workflow_id=state.workflow_id,
                    left_out=left_out,
                )
            listed, now = listed_fields(state), time.monotonic()
            summary = None
            if due(listed, entry.listed, now - entry.listed_at):
                summary = self._summary(state)
                entry.listed, entry.listed_at = listed, now
            saves.append(_Save(entry, data, state.version, summary))
            entry.queued_version = entry.state.version
            entry.dirty_since = None
        return saves

    async def _write(self, saves: list[_Save]) -> None:
        """Write snapshots by compare-and-set, retrying transient failures until
        they succeed or the coordinator stops; raises StateConflictError when
        another writer changed one."""

        async def write(save: _Save) -> None:
            entry, workflow_id = save.entry, save.entry.state.workflow_id
            try:
                entry.revision = await self._until_done(
                    lambda: self.bus.kv_put_cas(
                        self._workflows, workflow_id, save.data, entry.revision
                    ),
                    "snapshot not saved",
                    workflow_id=workflow_id,
                )
            except StateConflictError:
                stored = await self._stored(workflow_id)
                if stored is not None and stored.value == save.data:
                    entry.revision = stored.revision  # ours; its reply was lost
                elif entry.revision != 0:
                    raise
                else:
                    # Created by the coordinator active before us, after we listed
                    # the bucket: drop ours; the next event reloads the stored state.
                    log.warning("workflow exists already; reloading it", workflow_id=workflow_id)
                    if self._cache.get(workflow_id) is entry:
                        self._cache.pop(workflow_id)
                    return
            entry.saved_version = max(entry.saved_version, save.version)

        await asyncio.gather(
            *(write(save) for save in saves),
            *(
                self._put_summary(save.entry.state.workflow_id, save.summary)
                for save in saves
                if save.summary is not None
            ),
        )

    def _summary(self, state: WorkflowState, at_ns: int | None = None) -> WorkflowSummary:
        """The workflow's index summary (see agenticflow.coordinator.index)."""
        return summary_of(state, now_ns=at_ns or time.time_ns())

    async def _put_summary(self, workflow_id: str, summary: WorkflowSummary) -> None:
        """Write an index record (last writer wins: one coordinator owns a
        workflow, and the writer stores a workflow's batches in order); retried
        like snapshots. Written concurrently with the snapshot, so it adds no
        round trip to the batch. Sealed at each attempt: a record signed before
        an outage longer than the replay window and stored after it would be
        refused by every reader (an old value put back), and a finished
        workflow's record is never written again."""
        bucket = self.names.workflow_index_bucket
        await self._until_done(
            lambda: self.bus.call(
                lambda: self._index.put(workflow_id, seal_summary(self.bus.seal, bucket, summary)),
                what="index a workflow",
            ),
            "workflow summary not saved",
            workflow_id=workflow_id,
        )

    def _abort_oversize(self, state: WorkflowState, size: int, limit: int) -> None:
        """A running workflow whose state no longer fits in a KV value: abort it
        (through the same event a person would send) rather than retry for ever."""
        reason = (
            f"its state ({size} bytes compressed) outgrew the largest snapshot NATS "
            f"accepts (max_payload, {limit} bytes usable): keep task results small "
            "(store large data elsewhere and pass references), split the workflow, "
            "or raise max_payload in the server config"
        )
        log.error("workflow state too large; aborting it", workflow_id=state.workflow_id, size=size)
        task = asyncio.create_task(
            self._shell_emit(
                state.workflow_id,
                EventType.INTERVENTION_REQUESTED,
                InterventionRequested(
                    request_id=f"oversize-{state.version}",
                    action="abort",
                    by="coordinator",
                    reason=reason,
                ),
                key=workflow_key(state.workflow_id, "intervention:oversize"),
            ),
            name="abort-oversize",
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stored(self, workflow_id: str) -> Any:
        with contextlib.suppress(Exception):
            return await self.bus.kv_read(self._workflows, workflow_id)
        return None

    # Commands -----------------------------------------------------------
    async def _execute(self, commands: list[Command]) -> None:
        """Publish the batch's events and task messages pipelined, arm its timers.

        A task message too large to publish (its dependencies' results are too
        big together) fails that task for good instead of blocking the batch.
        """
        now = time.time_ns()
        traced = tracing_enabled()
        outgoing: list[Outgoing] = []
        audited: list[Event] = []
        unserved: list[TaskMessage] = []
        too_large: list[tuple[TaskMessage, PayloadTooLargeError]] = []
        for command in commands:
            if isinstance(command, Emit):
                # The reducer stamps the triggering event's time; record when it happened.
                event = command.event.model_copy(update={"timestamp": now})
                if event.type in _AUDITED:
                    audited.append(event)
                self._encode_emit(event, outgoing)
            elif isinstance(command, Dispatch):
                task = command.task
                if self._dispatch_outdated(task):
                    continue
                await self.bus.ensure_task_consumer(task.queue)
                encoded = self._encode_task(task, traced, too_large)
                if encoded is None:
                    continue
                outgoing.append(encoded)
                if not self._served(task.queue) and self._waits_for_worker(task):
                    unserved.append(task)
            else:
                self._arm(command)
        await self.bus.publish_many(outgoing)
        for event in audited:
            await self._audit_decision(event)
        for task in unserved:
            await self._shell_emit(
                task.workflow_id,
                EventType.TASK_UNSERVED,
                TaskUnserved(capability=task.queue),
                key=task_key(task.workflow_id, task.task_id, task.attempt, "unserved"),
                task_id=task.task_id,
                attempt=task.attempt,
            )
        for task, error in too_large:
            log.warning(
                "task message too large; task failed",
                workflow_id=task.workflow_id,
                task_id=task.task_id,
                error=str(error),
            )
            await self._shell_emit(
                task.workflow_id,
                EventType.TASK_FAILED,
                TaskFailed.for_good(
                    type(error).__name__,
                    error.code,
                    f"the task message cannot be published: {error}",
                    worker=self.node_id,
                ),
                key=task_key(task.workflow_id, task.task_id, task.attempt, "failed"),
                task_id=task.task_id,
                attempt=task.attempt,
            )

    def _encode_emit(self, event: Event, outgoing: list[Outgoing]) -> None:
        """Add an emitted event to ``outgoing`` (slimmed when too large; left out,
        never retried for ever, when it cannot be encoded at all)."""
        try:
            encoded = self.bus.encode_event(event)
        except PayloadTooLargeError as too_big:
            # The state keeps the data; the event says where to find it. A child
            # workflow that cannot start fails its parent's task instead.
            log.warning("event too large; stored without its bulky data", error=str(too_big))
            instead = children.too_large(event, too_big) or _slim(event)
        except MalformedMessageError as unencodable:
            log.error(
                "event cannot be encoded; not published",
                workflow_id=event.workflow_id,
                event_type=event.type.value,
                error=str(unencodable),
            )
            return
        else:
            outgoing.append(encoded)
            return
        for attempt in (instead, _shrunk(instead)):
            if attempt is None:
                break
            with contextlib.suppress(PayloadTooLargeError, MalformedMessageError):
                outgoing.append(self.bus.encode_event(attempt))
                return
        log.error(
            "event too large even cut short; not published",
            workflow_id=event.workflow_id,
            event_type=event.type.value,
        )

    async def _shell_emit(
        self,
        workflow_id: str,
        event_type: EventType,
        data: Payload,
        *,
        key: str,
        task_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Publish an event the shell decided on its own (timer, hint, rejection)."""
        entry = self._cache.get(workflow_id)
        base = entry.state.vclock if entry else VectorClock()
        counter = max(self._shell_counters.get(workflow_id, 0), base.get(SHELL_NODE)) + 1
        self._shell_counters[workflow_id] = counter
        event = Event(
            id=key,
            type=event_type,
            workflow_id=workflow_id,
            source=self.node_id,
            timestamp=time.time_ns(),
            vclock=base.merge({SHELL_NODE: counter}),
            data=data,
            task_id=task_id,
            attempt=attempt,
        )
        outgoing: list[Outgoing] = []
        self._encode_emit(event, outgoing)  # never raises for what the event holds
        if outgoing:
            await self.bus.publish_many(outgoing)

    # Timers -------------------------------------------------------------
    def _arm(self, timer: ArmTimer) -> None:
        heapq.heappush(self._timers, (timer.due_ns, next(self._timer_seq), timer))
        self._timer_wakeup.set()

    async def _run_timers(self) -> None:
        while not self._stop.is_set():
            self._timer_wakeup.clear()
            now = time.time_ns()
            while self._timers and self._timers[0][0] <= now:
                _, _, timer = heapq.heappop(self._timers)
                try:
                    await self._fire(timer)
                except Exception:
                    log.exception("timer failed; re-armed", timer=str(timer))
                    self._arm(ArmTimer(**{**_fields(timer), "due_ns": now + 1_000_000_000}))
            delay = (self._timers[0][0] - time.time_ns()) / 1e9 if self._timers else 1.0
            # Wake for a new timer, the next due one, or at least every second to see _stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wakeup.wait(), timeout=min(max(delay, 0.0), 1.0))

    async def _fire(self, timer: ArmTimer) -> None:
        if timer.kind in ("auction", "claim"):
            await self._fire_auction(timer)
            return
        if timer.kind == "approval":
            data: Payload = TaskApprovalExpired(due_ns=timer.due_ns)
            await self._timer_event(
                timer, EventType.TASK_APPROVAL_EXPIRED, data, "approval_expired"
            )
            return
        if timer.kind == "wait":
            # Not deduplicated by a key others could compute and take first (a
            # worker storing an event under it would drop this one); a second
            # firing after a fail-over changes nothing in the fold.
            what = f"wait_elapsed:{timer.due_ns}:{os.urandom(6).hex()}"
            data = TaskWaitElapsed(due_ns=timer.due_ns)
            await self._timer_event(timer, EventType.TASK_WAIT_ELAPSED, data, what, due=False)
            return
        if timer.kind == "retry":
            await self._timer_event(
                timer, EventType.TASK_RETRY_DUE, TaskRetryDue(), "retry_due", due=False
            )
            return
        loaded: list[Command] = []
        entry = await self._load(timer.workflow_id, loaded)
        await self._execute(loaded)
        if entry is None or entry.state.definition is None:
            return
        task = entry.state.tasks.get(timer.task_id)
        if task is None or task.deadline_ns != timer.due_ns or task.attempts != timer.attempt:
            return  # superseded by a heartbeat, an outcome or a later attempt
        spec = entry.state.spec(timer.task_id)
        timeout = entry.state.definition.timeout_of(spec)
        beat = spec.heartbeat_timeout_s
        by_heartbeat = beat is not None and (
            timeout is None or task.started_at is None
            or timer.due_ns < task.started_at + int(timeout * 1e9)
        )  # fmt: skip
        await self._shell_emit(
            timer.workflow_id,
            EventType.TASK_TIMED_OUT,
            TaskTimedOut(
                timeout_s=(beat if by_heartbeat else timeout) or 0.0,
                due_ns=timer.due_ns,
                heartbeat=by_heartbeat,
            ),
            key=task_key(
                timer.workflow_id, timer.task_id, timer.attempt, f"timed_out:{timer.due_ns}"
            ),
            task_id=timer.task_id,
            attempt=timer.attempt,
        )

    async def _timer_event(
        self, timer: ArmTimer, event_type: EventType, data: Payload, what: str, *, due: bool = True
    ) -> None:
        """Store the event a timer fired, keyed by its task attempt (and due time)."""
        key_what = f"{what}:{timer.due_ns}" if due else what
        await self._shell_emit(
            timer.workflow_id,
            event_type,
            data,
            key=task_key(timer.workflow_id, timer.task_id, timer.attempt, key_what),
            task_id=timer.task_id,
            attempt=timer.attempt,
        )

    async def _fire_auction(self, timer: ArmTimer) -> None:
        """An auction's bidding window ended, or its winner's claim expired."""
        wf, task_id, attempt = timer.workflow_id, timer.task_id, timer.attempt
        if timer.kind == "auction":
            await self._shell_emit(
                wf,
                EventType.TASK_AUCTION_CLOSED,
                TaskAuctionClosed(due_ns=timer.due_ns),
                key=task_key(wf, task_id, attempt, "auction_closed"),
                task_id=task_id,
                attempt=attempt,
            )
            return
        loaded: list[Command] = []
        entry = await self._load(wf, loaded)
        await self._execute(loaded)
        task = entry.state.tasks.get(task_id) if entry else None
        auction = task.auction if task else None
        if (
            task is None
            or auction is None
            or task.status != TaskStatus.SCHEDULED
            or auction.claim_due_ns != timer.due_ns
            or auction.direct_to is None
        ):
            return  # started, finished or superseded meanwhile
        # The winner's message must not linger (the stream keeps it for no consumer
        # once the worker is gone); its other unstarted tasks fall back likewise.
        assert entry is not None
        queue = task_queue(entry.state, task.capability)
        await self.bus.purge_subject(
            self.names.direct_stream, self.names.direct_subject(queue, auction.direct_to)
        )
        await self._shell_emit(
            wf,
            EventType.TASK_CLAIM_EXPIRED,
            TaskClaimExpired(
                winner=auction.direct_to,
                claim_timeout_s=auction.claim_timeout_s,
                due_ns=timer.due_ns,
            ),
            key=task_key(wf, task_id, attempt, "claim_expired"),
            task_id=task_id,
            attempt=attempt,
        )

    # Dead letters -------------------------------------------------------
    async def _dead_letters(self) -> None:
        """Turn max-deliveries advisories into ``task.dead_lettered`` events.

        The task message stays in the WorkQueue stream after ``max_deliver``; we
        read it by sequence to know its workflow and task, record the event,
        then delete it so nothing is left to redeliver.
        """
        dlq = self._dlq_sub
        assert dlq is not None
        while not self._stop.is_set():
            try:
                msgs = await dlq.fetch(16, timeout=self._fetch_timeout)
            except TimeoutError:
                continue
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("dead-letter fetch failed", error=str(exc))
                await asyncio.sleep(0.5)  # back off a broken connection
                continue
            for msg in msgs:
                try:
                    await self._dead_letter(msg.data)
                except Exception:
                    log.exception("dead letter not recorded; will retry")
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=2)
                    continue
                await msg.ack()

    async def _dead_letter(self, advisory: bytes) -> None:
        try:
            info = json.loads(advisory)
            seq = parse_uint(str(info["stream_seq"]), "stream_seq")
            deliveries = parse_uint(str(info.get("deliveries", 0)), "deliveries", digits=9)
        except (ValueError, KeyError, TypeError, AttributeError, MalformedMessageError):
            log.warning("unreadable max-deliveries advisory ignored")
            return
        stored = await self.bus.get_stored(self.names.tasks_stream, seq)
        if stored is None:
            return  # already handled (and deleted) by an earlier attempt
        subject, headers = stored
        identity = task_identity(headers)
        capability = self.names.capability_of(subject) or ""
        if identity is None or not ID_RE.match(identity[0]):
            log.warning("dead letter without a task identity", seq=seq, subject=subject)
        else:
            workflow_id, task_id, attempt = identity
            loaded: list[Command] = []
            await self._load(workflow_id, loaded)
            await self._execute(loaded)
            await self._shell_emit(
                workflow_id,
                EventType.TASK_DEAD_LETTERED,
                TaskDeadLettered(
                    reason=(
                        f"the task message was delivered {deliveries} times without an "
                        f"outcome (max_deliver); its workers died or hung"
                    ),
                    deliveries=deliveries,
                    stream_seq=seq,
                    capability=capability,
                ),
                key=task_key(workflow_id, task_id, attempt, "dead_lettered"),
                task_id=task_id,
                attempt=attempt,
            )
        await self.bus.delete_stored(self.names.tasks_stream, seq)

    # Live agents --------------------------------------------------------
    async def _watch_agents(self) -> None:
        watcher = self._watcher
        while not self._stop.is_set():
            try:
                entry = await watcher.updates(timeout=1.0)
            except TimeoutError:
                continue
            except Exception:
                if self._stop.is_set():
                    return
                raise
            if entry is None or not hasattr(entry, "key"):
                continue
            info = open_update(self.bus.seal, entry)
            if info is None:  # deleted, expired, or refused (logged)
                self._live.pop(entry.key, None)
                continue
            self._live[entry.key] = info

    async def _read_agents(self) -> None:
        """Who serves what, read once at start: until the registry watch has
        caught up, a coordinator that just started would take every capability
        for unserved, and record ``task.unserved`` for tasks workers run (after
        a crash, even for tasks that have completed, stored after the
        workflow's end: a re-fold of the stream then merges its clock, which
        the finished workflow's snapshot never does)."""
        bucket = self.names.agents_bucket
        try:
            entries = await self.bus.kv_entries(bucket)
        except Exception:
            log.warning("agent registry not read; the watch will fill it in", exc_info=True)
            return
        for key, value, stored_ns in entries:
            info = open_entry(self.bus.seal, bucket, key, value, stored_ns=stored_ns)
            if info is not None:
                self._live[key] = info

    def _encode_task(
        self,
        task: TaskMessage,
        traced: bool,
        too_large: list[tuple[TaskMessage, PayloadTooLargeError]],
    ) -> Outgoing | None:
        """A task message ready to publish; None (noted in ``too_large``, or
        logged) when it cannot be."""
        # A span when this process traces or the workflow's trace goes on
        # (its context travels in the task message's headers); else none.
        span: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if traced or task.traceparent:
            span = tracer().start_as_current_span(
                f"dispatch {task.task_id}",
                context=context_of(task.traceparent),
                kind=SpanKind.PRODUCER,
                attributes=_task_attributes(task),
            )
        try:
            with span:
                return self.bus.encode_task(task)
        except PayloadTooLargeError as too_big:
            too_large.append((task, too_big))
        except MalformedMessageError as unencodable:
            log.error(
                "task message cannot be encoded; not published",
                workflow_id=task.workflow_id,
                task_id=task.task_id,
                error=str(unencodable),
            )
        return None

    def _dispatch_outdated(self, task: TaskMessage) -> bool:
        """Whether the state folded so far shows that a dispatch's attempt has
        run already, or was superseded, or its workflow ended. That happens
        only to a dispatch re-issued by a fold from an older state (after a
        crash, a lost snapshot): its task message was published before, and
        publishing it again would run the task twice once JetStream's
        duplicate window (``dedupe_window_s``) has passed. Not published."""
        entry = self._cache.get(task.workflow_id)
        if entry is None:
            return False
        state = entry.state
        current = state.tasks.get(task.task_id)
        outdated = state.is_terminal or (
            current is not None
            and (
                current.attempts > task.attempt
                or (
                    current.attempts == task.attempt
                    and (current.status in TERMINAL_TASK or current.status == TaskStatus.RUNNING)
                )
            )
        )
        if outdated:
            log.info(
                "dispatch of an attempt that has run already: not published again",
                workflow_id=task.workflow_id,
                task_id=task.task_id,
                attempt=task.attempt,
            )
        return outdated

    def _waits_for_worker(self, task: TaskMessage) -> bool:
        """Whether the attempt a dispatch is for still waits for a worker in the
        state folded so far. A dispatch re-issued by a re-fold after a crash (or
        whose batch also folded its start) may be of an attempt that has since
        started or settled, or of a workflow that has ended: no hint then."""
        entry = self._cache.get(task.workflow_id)
        if entry is None or entry.state.is_terminal:
            return False
        current = entry.state.tasks.get(task.task_id)
        return (
            current is not None
            and current.status == TaskStatus.SCHEDULED
            and current.attempts == task.attempt
        )

    def _served(self, capability: str) -> bool:
        horizon = time.time_ns() - int(self.settings.agent_ttl_s * 1e9)
        return any(_serves(info, capability, horizon) for info in self._live.values())


def _serves(info: Any, capability: str, horizon: int) -> bool:
    """Whether a registry entry (any shape: whoever may write the bucket wrote it)
    is a live agent serving ``capability``."""
    if not isinstance(info, dict):
        return False
    capabilities, beat = info.get("capabilities"), info.get("heartbeat")
    return (
        isinstance(capabilities, list)
        and capability in capabilities
        and isinstance(beat, int)
        and beat >= horizon
    )


def _still_due(command: Command, state: WorkflowState, stored: set[str]) -> bool:
    """Whether a command of a workflow rebuilt from all its events must be
    re-issued: not an event the stream already holds, not the dispatch of an
    attempt that is no longer the task's live one."""
    if isinstance(command, Emit):
        return command.event.id not in stored
    if isinstance(command, Dispatch):
        task = state.tasks.get(command.task.task_id)
        return (
            task is not None
            and task.attempts == command.task.attempt
            and task.status in ACTIVE_TASK
        )
    return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _count(event: Event, state: WorkflowState | None, commands: list[Command]) -> None:
    """Count an outcome folded and the task messages it sends (metrics)."""
    if state is None:
        return
    if event.type in _OUTCOMES and event.task_id in state.tasks:
        counter = tasks_completed if event.type == EventType.TASK_COMPLETED else tasks_failed
        counter.add(state.tasks[event.task_id].capability)
    for command in commands:
        if isinstance(command, Dispatch):
            task = state.tasks.get(command.task.task_id)
            tasks_dispatched.add(command.task.capability)
            if task is not None and command.task.attempt - task.attempt_base > 1:
                tasks_retried.add(command.task.capability)


_OUTCOMES = frozenset({EventType.TASK_COMPLETED, EventType.TASK_FAILED})


def _task_attributes(task: TaskMessage) -> dict[str, Any]:
    # Few attributes: each costs ~8 µs to record and export on a 2-core VM, at
    # every dispatch. The task id is in the span's name; the worker's span has more.
    return {"workflow.id": task.workflow_id, "task.attempt": task.attempt}


def _slim(event: Event) -> Event:
    """The event without the data that made it too large to publish."""
    data = event.data
    if isinstance(data, WorkflowCompleted):
        note = "omitted: too large for one message; see the sink tasks' task.completed events"
        data = data.model_copy(update={"output": dict.fromkeys(data.output, note)})
    elif isinstance(data, TaskApprovalRequested):
        data = data.model_copy(update={"data": {"omitted": "too large for one message"}})
    return event.model_copy(update={"data": data})


_CUT_TEXT = 2048
_CUT_ITEMS = 64


def _shrunk(event: Event) -> Event | None:
    """The event with every text cut to 2 KiB and every list and map to 64 items
    (None if its payload is not valid so cut): the last resort before dropping
    an event too large to publish, such as a failure repeating a huge message."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > _CUT_TEXT:
            return f"{value[:_CUT_TEXT]}... ({len(value)} characters, cut)"
        if isinstance(value, list):
            return [cut(v) for v in value[:_CUT_ITEMS]]
        if isinstance(value, dict):
            return {k: cut(v) for k, v in list(value.items())[:_CUT_ITEMS]}
        return value

    try:
        data = type(event.data).model_validate(cut(event.data.model_dump(mode="python")))
    except ValueError:
        return None
    return event.model_copy(update={"data": data})


def _fields(timer: ArmTimer) -> dict[str, Any]:
    return {
        "kind": timer.kind,
        "workflow_id": timer.workflow_id,
        "task_id": timer.task_id,
        "attempt": timer.attempt,
        "due_ns": timer.due_ns,
    }


def _starts_a_child(event: Event) -> bool:
    """Whether ``event`` is a parent's start of a child workflow."""
    return isinstance(event.data, WorkflowSubmitted) and event.data.parent is not None


__all__ = ["Coordinator"]

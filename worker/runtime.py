"""The worker runtime: pull tasks, run agent handlers, publish outcomes.

For every capability of the loaded app the worker binds to the capability's
shared durable pull consumer (pulling continuously, see
:meth:`agenticflow.shared.bus.base.Bus.puller`); concurrency is bounded for the whole process
(``--concurrency``): a capability asks only for free slots, and
``max_ack_pending`` on the consumer is the cluster-wide backpressure. For
each task it publishes ``task.started``, runs the handler (sending
``in_progress()`` while it runs so JetStream does not redeliver a live task),
publishes ``task.completed`` or ``task.failed``,
and acks only after that event is stored. Errors decide delivery:

- a decodable task always ends in an outcome event, then ``ack()``;
- an undecodable task is recorded (``message.rejected``, plus a non-retryable
  ``task.failed`` when its headers name the task) and ``term()``-ed;
- if the outcome cannot be stored, ``nak(delay)``: the task comes back.

Outcome event ids are derived (``wf:task:attempt:completed``), so a task that
is redelivered after its outcome was stored is absorbed by the dedupe window
and by the reducer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from opentelemetry.trace import SpanKind

from agenticflow.shared.bus.base import Bus, Message, Pulling, watched_ns
from agenticflow.shared.bus.registry import AgentInstanceInfo, WorkerEntry, seal_entry
from agenticflow.shared.errors import (
    AgenticFlowError,
    ForgedMessageError,
    MalformedMessageError,
    NonRetryableError,
    PayloadTooLargeError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
)
from agenticflow.shared.ops.health import WEAK_SANDBOX_WARNING
from agenticflow.shared.ops.lifecycle import every, stop_when_closed
from agenticflow.shared.ops.metrics import AGENT_INSTANCES, CIRCUIT_BREAKERS, Reading, observe
from agenticflow.shared.ops.metrics import enabled as metrics_enabled
from agenticflow.shared.ops.metrics import task_duration as task_duration_metric
from agenticflow.shared.ops.metrics import task_queue_wait as task_queue_wait_metric
from agenticflow.shared.ops.telemetry import extract, tracer, tracing_enabled
from agenticflow.shared.security.audit import AuditKind
from agenticflow.shared.security.auditor import Auditor
from agenticflow.shared.security.identity import take_process_identity
from agenticflow.shared.security.rbac import load_policy
from agenticflow.shared.wire.codec import TaskMessage, pack, task_clock, task_identity, unpack
from agenticflow.shared.wire.events import (
    AgentStateChanged,
    Event,
    EventType,
    InterventionApplied,
    MessageRejected,
    Payload,
    TaskApprovalRequested,
    TaskCompleted,
    TaskEffectRecorded,
    TaskFailed,
    TaskHeartbeat,
    TaskOutput,
    TaskStarted,
    TaskToolCalled,
    WorkflowAborted,
)
from agenticflow.shared.wire.ids import ID_RE, task_key
from agenticflow.shared.wire.names import SYSTEM_WORKFLOW, queue_of, versioned_queue
from agenticflow.shared.wire.vclock import COORDINATOR_NODE, ClockBook, VectorClock
from agenticflow.worker.app import AgentApp, AgentSpec, Service
from agenticflow.worker.bidding import AgentLoad, Bidder
from agenticflow.worker.context import ApprovalPending, Feedback, TaskContext
from agenticflow.worker.effects import Effects, error_info
from agenticflow.worker.fsm import AgentFSM, AgentState, Trigger
from agenticflow.worker.llm import task_llm
from agenticflow.worker.memory import AgentMemory
from agenticflow.worker.streaming import OutputStream
from agenticflow.worker.tools import breaker_states, live_pools, task_toolbox

Settlement = Literal["ack", "nak", "term"]
"""How a delivered task message is settled (see ``Worker._handle``)."""
NAK_DELAY_S = 2.0
"""How long a task whose outcome could not be stored waits before it comes again."""

log = structlog.get_logger("agenticflow.worker")

_CLOCKS_KEPT = 10_000
_CONTROLLERS = ("client", "admin", "coordinator")
"""Roles whose signature an agent control entry (suspend/resume) must carry."""
_ABORTED_KEPT = 10_000

Pending = Coroutine[Any, Any, Any]
"""An event on the wire, awaited once stored (see :meth:`Bus.send_event`)."""


@dataclass(slots=True)
class AgentInstance:
    """One instance of an agent in this worker: runs one task at a time."""

    id: str
    agent: str
    fsm: AgentFSM
    tasks_done: int = 0
    since: int = 0
    """When it entered its state (ns since the epoch)."""
    suspend_wanted: bool = False
    """Suspended while processing: it suspends when its task ends."""
    moves: int = 0

    @property
    def state(self) -> str:
        """Its state machine's state."""
        return self.fsm.state.value


def _record_duration(task: TaskMessage, started: float, outcome: str) -> None:
    if metrics_enabled():
        task_duration_metric.record(
            time.perf_counter() - started, {"capability": task.capability, "outcome": outcome}
        )


async def _nothing() -> None:
    """An already-stored publication (the event was not sent)."""


@dataclass(slots=True, eq=False)
class _Running:
    """A handler running on this worker, for abort and live feedback."""

    ctx: TaskContext
    handler: asyncio.Task[Any] | None = None
    aborted: str | None = None
    stopped_before: str | None = None
    """Its workflow was stopped (terminated or cancelled) before its
    ``task.started`` was sent: the coordinator had cancelled the task already."""


class Worker:
    """Hosts the agents of one app and serves their capabilities.

    ``async with Worker(bus=..., app=..., node_id=...)`` starts it; ``run()``
    serves until :meth:`shutdown`.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        app: AgentApp,
        node_id: str,
        concurrency: int = 8,
        shutdown_grace_s: float = 10.0,
        route: str | None = None,
    ) -> None:
        self.bus = bus
        self.app = app
        self.node_id = node_id
        self.names = bus.names
        self.settings = bus.settings
        self.policy = load_policy(self.settings.policy_file, self.settings.security_dir)
        self.audit = Auditor(bus, node_id)
        """This worker's audit chain: tool calls and denials, rejected task messages."""
        """RBAC: what each agent's tool calls may do (None: only the agents' own grants)."""
        self.concurrency = concurrency
        self.route = route
        """Serve only the tasks sent to this route (a fork or rerun with a fixed app)."""
        self._queue_capability = _served_queues(app, route)
        """Every queue it pulls, with its capability: the shared ones, and those
        of the versions its agents serve (``summarize@2``; not on a route)."""
        self._grace = shutdown_grace_s
        self._in_hand = 0
        self._scarce = False
        self._waiting: dict[str, None] = {}
        """Queues refused a slot, longest waiting first (when slots are scarce)."""
        """Task messages delivered to this process and not finished yet."""
        self._clocks = ClockBook(node_id, keep=_CLOCKS_KEPT)
        self._running: set[asyncio.Task[Any]] = set()
        self._held: dict[int, tuple[Message, float]] = {}
        """Deliveries whose handler runs, by id, with their last sign of life."""
        now = time.time_ns()
        self.instances: dict[str, list[AgentInstance]] = {
            agent.name: [
                AgentInstance(
                    id=f"{node_id}.{agent.name}.{i}",
                    agent=agent.name,
                    fsm=AgentFSM(f"{node_id}.{agent.name}.{i}"),
                    since=now,
                )
                for i in range(agent.instances or concurrency)
            ]
            for agent in app.agents
        }
        self._by_id = {i.id: i for pool in self.instances.values() for i in pool}
        self._live: dict[str, set[_Running]] = {}
        """Handlers running now, by workflow (abort cancels them, feedback reaches them)."""
        self._aborted: OrderedDict[str, str] = OrderedDict()
        """Workflows recently aborted (terminated) or cancelled, with the reason:
        their tasks do not start."""
        self._idle = {name: list(pool) for name, pool in self.instances.items()}
        self._agent_in_hand = dict.fromkeys(self.instances, 0)
        self._freed = {name: asyncio.Event() for name in self.instances}
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._pullers: dict[str, Pulling] = {}
        self._unobserve: list[Callable[[], None]] = []
        self.started_at = time.time_ns()
        self.tasks_done = 0

    # Lifecycle ----------------------------------------------------------
    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Bind consumers, register agents, start pulling; returns when live."""
        if self._runner is not None:
            return
        await self._start_services()
        await self.bus.ensure_topology()
        # With keys: sign as this process from here on (issued by a coordinator).
        await take_process_identity(
            self.bus, self.node_id, timeout=self.settings.identity_timeout_s
        )
        self._registry = await self.bus.kv(self.names.agents_bucket)
        await self.audit.start(role="worker", policy=self.policy is not None)
        # Each capability asks for at most its fair share of the slots at once, so
        # an idle capability's open request never holds every slot. With more
        # capabilities than slots they take turns (see _credit), and requests
        # expire sooner to pass the slots on.
        queues = self._queue_capability
        share = max(1, min(64, self.concurrency // len(queues)))
        self._scarce = self.concurrency < len(queues)
        expires = 0.5 if self._scarce else 5.0
        for queue, capability in queues.items():
            consumer = await self.bus.ensure_task_consumer(queue)
            self._pullers[queue] = self.bus.puller(
                stream=self.names.tasks_stream,
                consumer=consumer,
                on_message=functools.partial(
                    self._deliver, self.app.for_capability(capability).name
                ),
                credit=functools.partial(self._credit, queue),
                max_batch=share,
                expires_s=expires,
            )
        self._control = await self.bus.kv(self.names.control_bucket)
        self._subs = [
            await self.bus.subscribe(
                self.names.event_subject("*", event_type.value), self._on_intervention
            )
            for event_type in (EventType.WORKFLOW_ABORTED, EventType.INTERVENTION_APPLIED)
        ]
        self.bidder = Bidder(
            bus=self.bus,
            node_id=self.node_id,
            queues=self._queue_capability,
            agent_of=lambda capability: self.app.for_capability(capability).name,
            bid_of=lambda agent: next(a.bid for a in self.app.agents if a.name == agent),
            load_of=self._load,
            deliver=self._deliver,
            stopping=self._stop.is_set,
            tick=self._tick,
        )
        await self.bidder.start()
        await self._heartbeat()
        self._unobserve = [
            observe(AGENT_INSTANCES, self._instance_readings),
            observe(CIRCUIT_BREAKERS, self._breaker_readings),
        ]
        self._runner = asyncio.create_task(self._serve(), name="worker")
        await self._started.wait()
        log.info(
            "worker started",
            node=self.node_id,
            app=self.app.name,
            capabilities=self.app.capabilities,
            concurrency=self.concurrency,
        )
        if self.settings.allow_weak_sandbox:
            log.warning(WEAK_SANDBOX_WARNING, node=self.node_id)

    async def _start_services(self) -> None:
        """Start the app's services (MCP servers: their tools are listed here);
        if one fails, close those started and raise."""
        started: list[Service] = []
        for service in self.app.services:
            try:
                await service.start(self.app)
            except BaseException:
                for done in reversed(started):
                    with contextlib.suppress(Exception):
                        await done.close()
                raise
            started.append(service)

    async def run(self) -> None:
        """Serve until :meth:`shutdown` or until the connection closes for good."""
        await self.start()
        assert self._runner is not None
        await self._runner

    async def shutdown(self) -> None:
        """Stop pulling, let running tasks finish within the grace period, then
        cancel the rest (JetStream redelivers them); deregister (idempotent)."""
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _serve(self) -> None:
        # Until the end, past _stop: tasks draining within the grace are kept alive too.
        keeper = asyncio.create_task(self._keep_held_alive(), name="keep-alive")
        try:
            for puller in self._pullers.values():
                await puller.start()
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    every(self.settings.heartbeat_s, self._stop, self._heartbeat, what="heartbeat"),
                    name="heartbeats",
                )
                group.create_task(
                    stop_when_closed(self.bus.closed, self._stop, who="worker"), name="connection"
                )
                group.create_task(self._follow_control(), name="control")
                self._started.set()
            await self._stop_pulling()
            await self._drain_running()
        finally:
            keeper.cancel()
            for unobserve in self._unobserve:
                unobserve()
            await self._stop_pulling()
            for sub in getattr(self, "_subs", []):
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if hasattr(self, "bidder"):
                await self.bidder.stop()
            await self._deregister()
            for service in reversed(self.app.services):
                try:
                    await service.close()
                except Exception as exc:
                    log.warning("a service did not close", service=repr(service), error=repr(exc))
            await self.audit.close()
            if self.route is not None:  # a private route's queues end with their worker
                for queue in self._queue_capability:
                    with contextlib.suppress(AgenticFlowError):
                        await self.bus.delete_consumer(
                            self.names.tasks_stream, self.names.task_consumer(queue)
                        )

    async def _drain_running(self) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=self._grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled tasks at shutdown; JetStream will redeliver", count=len(pending))
            await asyncio.wait(pending)

    # Health and metrics -------------------------------------------------
    def ready(self) -> str | None:
        """None while serving; otherwise why not (see :mod:`agenticflow.shared.ops.health`)."""
        if self._stop.is_set():
            return "stopping"
        if not self._started.is_set():
            return "starting"
        return None

    def health(self) -> dict[str, Any]:
        """This worker's part of its process's health report."""
        breakers = breaker_states(self.bus)
        return {
            "app": self.app.name,
            "route": self.route,
            "capabilities": sorted(self._queue_capability),
            "versions": {a.name: a.version for a in self.app.agents if a.version is not None},
            "concurrency": self.concurrency,
            "in_hand": self._in_hand,
            "tasks_done": self.tasks_done,
            "instances": dict(Counter(i.state for i in self._by_id.values())),
            "agents": {
                name: dict(Counter(i.state for i in pool)) for name, pool in self.instances.items()
            },
            "breakers": breakers,
            "open_breakers": sorted(k for k, state in breakers.items() if state != "closed"),
            "pools": [pool.metrics() for pool in live_pools()],
            "stopping": self._stop.is_set(),
        }

    def _instance_readings(self) -> list[Reading]:
        counts = Counter((i.agent, i.state) for i in self._by_id.values())
        return [
            (float(n), {"agent": agent, "state": state}) for (agent, state), n in counts.items()
        ]

    def _breaker_readings(self) -> list[Reading]:
        return [
            (1.0, {"breaker": key, "state": state})
            for key, state in breaker_states(self.bus).items()
        ]

    # Registry -----------------------------------------------------------
    def _registry_key(self, agent: AgentSpec) -> str:
        return f"{self.node_id}.{agent.name}"

    async def _heartbeat(self) -> None:
        now = time.time_ns()
        # The supervisor steers new work away from agents whose tools' breakers are open.
        tripped = {k for k, v in breaker_states(self.bus).items() if v != "closed"}
        for agent in self.app.agents:
            pool = self.instances[agent.name]
            open_breakers = sorted(tripped & {t.key for t in agent.tools.tools})
            hosted, idle = len(pool), len(self._idle[agent.name])
            suspended = sum(1 for i in pool if i.fsm.state == AgentState.SUSPENDED)
            load = hosted - idle - suspended  # instances busy with a task
            info = WorkerEntry(
                instance=self._registry_key(agent),
                worker=self.node_id,
                agent=agent.name,
                app=self.app.name,
                capabilities=[
                    q for q, c in self._queue_capability.items() if c in agent.capabilities
                ],
                version=agent.version,
                description=agent.description,
                open_breakers=open_breakers,
                route=self.route,
                state="suspended" if suspended == hosted else "processing" if load else "idle",
                load=load,
                instances=hosted,
                idle=idle,
                suspended=suspended,
                agents=[
                    AgentInstanceInfo(
                        id=i.id,
                        state=i.state,
                        since=i.since,
                        tasks_done=i.tasks_done,
                        suspending=i.suspend_wanted,
                    )
                    for i in pool
                ],
                concurrency=self.concurrency,
                heartbeat=now,
                started=self.started_at,
                host=socket.gethostname(),
                pid=os.getpid(),
            )
            key = self._registry_key(agent)
            await self._registry.put(
                key, seal_entry(self.bus.seal, self.names.agents_bucket, key, info)
            )

    async def _deregister(self) -> None:
        for agent in self.app.agents:
            with contextlib.suppress(Exception):
                await self._registry.delete(self._registry_key(agent))

    # Pulling ------------------------------------------------------------
    def _credit(self, queue: str) -> int:
        """How many more task messages ``queue``'s puller may ask for.

        When slots are scarcer than queues, a queue refused a slot waits its
        turn, and a free slot goes to the one that has waited longest.
        """
        owed = {q: p.owed for q, p in self._pullers.items() if q != queue}
        others = sum(owed.values())
        agent = self.app.for_capability(self._queue_capability[queue])
        siblings = sum(  # the agent's other queues
            n for q, n in owed.items() if self._queue_capability[q] in agent.capabilities
        )
        free = min(
            self.concurrency - self._in_hand - others,
            self._usable(agent.name) - self._agent_in_hand[agent.name] - siblings,
        )
        if not self._scarce:
            return free
        while self._waiting:
            first = next(iter(self._waiting))
            if first == queue or self._pullers[first].owed == 0:
                break
            del self._waiting[first]  # it got a request open meanwhile
        first = next(iter(self._waiting), queue)
        if free <= 0 or first != queue:
            self._waiting[queue] = None
            if free > 0:
                self._pullers[first].kick()
            return 0
        self._waiting.pop(queue, None)
        return free

    def _load(self, agent: str) -> AgentLoad:
        """``agent``'s load here, for its bids in auctions."""
        busy = self._agent_in_hand[agent]
        return AgentLoad(self.node_id, agent, instances=self._usable(agent), busy=busy)

    def _usable(self, agent: str) -> int:
        """Instances of ``agent`` that may take a task (not suspended or suspending)."""
        return sum(
            1
            for i in self.instances[agent]
            if i.fsm.state != AgentState.SUSPENDED and not i.suspend_wanted
        )

    def _deliver(self, agent: str, msg: Message) -> None:
        if self._stop.is_set():
            # Delivered while stopping: hand it back at once rather than after ack_wait.
            self._spawn(msg.nak())
            return
        self._in_hand += 1
        self._agent_in_hand[agent] += 1
        self._spawn(self._handle(msg, agent))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work, name="task")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _stop_pulling(self) -> None:
        for puller in self._pullers.values():
            await puller.stop()

    # Handling -----------------------------------------------------------
    def _tick(self, workflow_id: str, incoming: VectorClock) -> VectorClock:
        """Merge what we act on, then increment our own entry (DESIGN section 7)."""
        return self._clocks.tick(workflow_id, incoming)

    def _event(self, task: TaskMessage, event_type: EventType, data: Payload, what: str) -> Event:
        """An event about ``task``, its clock ticked now (so clocks follow call order)."""
        return Event(
            id=task_key(task.workflow_id, task.task_id, task.attempt, what),
            type=event_type,
            workflow_id=task.workflow_id,
            source=self.node_id,
            timestamp=time.time_ns(),
            vclock=self._tick(task.workflow_id, task.vclock),
            data=data,
            task_id=task.task_id,
            attempt=task.attempt,
        )

    async def _store_output(self, task: TaskMessage, output: TaskOutput) -> None:
        """One ``task.output`` event of the attempt (id by its index: a retried
        publication is deduplicated)."""
        await self._emit(task, EventType.TASK_OUTPUT, output, f"output:{output.index}")

    async def _tool_called(self, task: TaskMessage, record: TaskToolCalled, what: str) -> None:
        """A tool call's record: an event on the workflow, and one on the audit chain."""
        await self._emit(task, EventType.TASK_TOOL_CALLED, record, what)
        await self.audit.note(
            AuditKind.TOOL_DENIED if record.outcome == "denied" else AuditKind.TOOL_CALLED,
            workflow_id=task.workflow_id,
            task_id=task.task_id,
            attempt=task.attempt,
            tool=record.tool,
            agent=record.agent,
            outcome=record.outcome,
            params_hash=record.params_hash,
            result_hash=record.result_hash,
            error=record.error.message if record.error else None,
        )

    async def _emit(
        self,
        task: TaskMessage,
        event_type: EventType,
        data: Payload,
        what: str,
    ) -> None:
        await self.bus.publish_event(self._event(task, event_type, data, what))

    async def _handle(self, msg: Message, agent: str) -> None:
        """Handle one delivery; it ends in exactly one settlement, applied here:
        ``ack`` (the outcome is stored), ``nak`` (it could not be: the task comes
        back after :data:`NAK_DELAY_S`) or ``term`` (a poison message, recorded).
        A cancelled handling (shutdown) settles nothing: the task is redelivered
        after its ack wait."""
        try:
            await self._settle_delivery(msg, await self._outcome(msg))
        finally:
            self._in_hand -= 1
            self._agent_in_hand[agent] -= 1
            for puller in self._pullers.values():
                puller.kick()

    async def _outcome(self, msg: Message) -> Settlement:
        try:
            task = self._admitted(self.bus.decode_task(msg))
        except MalformedMessageError as exc:
            await self._reject(msg, exc)
            return "term"
        try:
            await self._run_task(msg, task)
        except AgenticFlowError as exc:
            # The outcome could not be stored: let the bus bring the task back.
            log.warning("outcome not stored; task will be redelivered", error=str(exc))
            return "nak"
        self.tasks_done += 1
        return "ack"

    @staticmethod
    async def _settle_delivery(msg: Message, settlement: Settlement) -> None:
        try:
            if settlement == "ack":
                await msg.ack()
            elif settlement == "nak":
                await msg.nak(delay=NAK_DELAY_S)
            else:
                await msg.term()
        except Exception as exc:  # any backend's failure: the bus redelivers it after its ack wait
            log.warning("delivery not settled", settlement=settlement, error=str(exc))

    async def _run_task(self, msg: Message, task: TaskMessage) -> None:
        agent = self.app.for_capability(task.capability)
        if metrics_enabled():
            with contextlib.suppress(Exception):  # a message without JetStream metadata
                stored = msg.metadata.timestamp.timestamp()
                task_queue_wait_metric.record(
                    max(0.0, time.time() - stored), {"capability": task.capability}
                )
        instance = await self._take_instance(agent.name)
        # A span when this process traces, or the task message continues a trace
        # (its events then carry it on); else none (a no-op span costs ~10 us).
        span: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if tracing_enabled() or (msg.headers and "traceparent" in msg.headers):
            span = tracer().start_as_current_span(
                f"task {task.capability}",
                context=extract(msg.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "workflow.id": task.workflow_id,
                    "task.id": task.task_id,
                    "task.attempt": task.attempt,
                    "agent.instance": instance.id,  # <worker>.<agent>.<n>
                },
            )  # handler, tool calls and the events published meanwhile join it
        try:
            with span:
                # Every line logged from here on says which task it is about (the
                # binding lives in this asyncio task's own context, gone with it).
                structlog.contextvars.bind_contextvars(
                    workflow_id=task.workflow_id,
                    task_id=task.task_id,
                    attempt=task.attempt,
                    agent=agent.name,
                    instance=instance.id,
                )
                await self._run_on(instance, agent, msg, task)
        finally:
            await self._give_back(instance)

    async def _run_on(
        self, instance: AgentInstance, agent: AgentSpec, msg: Message, task: TaskMessage
    ) -> None:
        # Agent transitions and task.started are stored while the handler runs
        # (one round trip off the critical path).
        pending: list[Pending] = [await self._move(instance, Trigger.TASK_ASSIGNED, task)]
        started_event = self._event(
            task,
            EventType.TASK_STARTED,
            TaskStarted(worker=self.node_id, agent=agent.name, instance=instance.id),
            "started",
        )
        started_pub = await self.bus.send_event(started_event)
        effects = Effects(
            key_prefix=f"{task.workflow_id}:{task.task_id}",
            worker=self.node_id,
            publish=functools.partial(self._record_effect, task),
            recorded=task.recorded,
            replay=task.replay,
        )
        output = OutputStream(
            functools.partial(self._store_output, task),
            buffer=self.settings.stream_buffer,
            block_s=self.settings.stream_block_s,
            flush_s=self.settings.stream_flush_s,
            capability=task.capability,
        )
        ctx = TaskContext(
            workflow_id=task.workflow_id,
            task_id=task.task_id,
            attempt=task.attempt,
            capability=task.capability,
            params=task.params,
            inputs=task.inputs,
            input=task.workflow_input,
            agent=agent.name,
            worker=self.node_id,
            timeout_s=task.timeout_s,
            log=log,  # the task's fields are bound as context variables (_run_task)
            effects=effects,
            tools=task_toolbox(
                self.bus,
                agent.tools,
                task,
                agent=agent.name,
                instance=instance.id,
                worker=self.node_id,
                effects=effects,
                publish=functools.partial(self._tool_called, task),
                security=self.policy.context(f"agent:{agent.name}") if self.policy else None,
                allow_weak_sandbox=self.settings.allow_weak_sandbox,
            ),
            instance=instance.id,
            memory=AgentMemory(self.bus, agent.name),
            output=output,
            llm=task_llm(
                self.bus,
                self.settings,
                task,
                effects=effects,
                stream=output.put,
                worker=self.node_id,
                fallback=self.app.llm_endpoints.get(agent.name),
            ),
            feedback=Feedback(task.feedback),
            approval=task.approval,
            approvals=list(task.approvals),
        )
        # Registered in the same step as task.started is sent: a cancel seen after
        # this reaches the handler (ctx.cancelled); one seen before stops it.
        running = _Running(ctx, stopped_before=self._aborted.get(task.workflow_id))
        self._live.setdefault(task.workflow_id, set()).add(running)
        held = id(msg)
        self._held[held] = (msg, time.monotonic())  # kept alive by _keep_held_alive
        beats = asyncio.create_task(self._heartbeats(task)) if task.heartbeat_s else None
        try:
            outcome, asked = await self._attempt(agent, ctx, task, running)
            # Every streamed chunk is stored before the outcome (readers stop
            # there), while the delivery is still kept alive.
            await output.close()
        except BaseException:
            output.abort()
            started_pub.close()  # cancelled (shutdown): JetStream redelivers the task
            for waiting in pending:
                waiting.close()
            self._settle(instance, Trigger.TASK_FAILED, Trigger.ERROR_RESOLVED)
            raise
        finally:
            self._held.pop(held, None)
            if beats is not None:
                beats.cancel()
            self._forget(task.workflow_id, running)
        # Pipelined behind task.started (same connection, so normally stored in
        # that order; if task.started needed a retry it may land after the
        # outcome, which the reducer ignores for a finished attempt).
        try:
            outcome_pub = await self.bus.send_event(self._event(task, *outcome))
        except PayloadTooLargeError as exc:
            what = "approval request" if asked else "result"
            failed = TaskFailed.for_good(
                type(exc).__name__,
                exc.code,
                f"the task's {what} is too large to store: {exc}",
                worker=self.node_id,
                agent=agent.name,
                instance=instance.id,
            )
            asked, outcome = None, (EventType.TASK_FAILED, failed, "failed")
            outcome_pub = await self.bus.send_event(self._event(task, *outcome))
        triggers: tuple[Trigger, ...]
        if asked is not None:
            triggers = (Trigger.APPROVAL_REQUIRED, Trigger.APPROVAL_DEFERRED)
        elif outcome[0] == EventType.TASK_COMPLETED:
            triggers = (Trigger.TASK_COMPLETED,)
        else:
            triggers = (Trigger.TASK_FAILED, Trigger.ERROR_RESOLVED)
        pending.extend([await self._move(instance, trigger, task) for trigger in triggers])
        await asyncio.gather(started_pub, outcome_pub, *pending)
        if asked is None:
            for hook in self.app.outcome_hooks:
                await hook(ctx, outcome[2])

    async def _attempt(
        self, agent: AgentSpec, ctx: TaskContext, task: TaskMessage, running: _Running
    ) -> tuple[tuple[EventType, Payload, str], ApprovalPending | None]:
        """Run the handler; its outcome event, and the approval it asked for."""
        started = time.perf_counter()
        try:
            result = await self._invoke_cancellable(agent, ctx, task, running)
            pack(result)  # fail here, as the task's error, if the result is not msgpack-able
        except ApprovalPending as request:
            _record_duration(task, started, "approval_requested")
            asked = TaskApprovalRequested(
                reason=request.reason,
                data=request.data,
                index=request.index,
                timeout_s=request.timeout_s,
                on_timeout=request.on_timeout,
                worker=self.node_id,
                instance=ctx.instance,
            )
            what = f"approval_requested:{request.index}"
            return (EventType.TASK_APPROVAL_REQUESTED, asked, what), request
        except Exception as exc:
            ctx.log.info("task failed", error=str(exc), error_type=type(exc).__name__)
            _record_duration(task, started, "failed")
            failed = TaskFailed(
                error=error_info(exc),
                worker=self.node_id,
                agent=agent.name,
                duration_ms=(time.perf_counter() - started) * 1000,
                instance=ctx.instance,
            )
            return (EventType.TASK_FAILED, failed, "failed"), None
        _record_duration(task, started, "completed")
        completed = TaskCompleted(
            result=result,
            worker=self.node_id,
            agent=agent.name,
            duration_ms=(time.perf_counter() - started) * 1000,
            instance=ctx.instance,
        )
        return (EventType.TASK_COMPLETED, completed, "completed"), None

    async def _invoke_cancellable(
        self, agent: AgentSpec, ctx: TaskContext, task: TaskMessage, running: _Running
    ) -> Any:
        """Run the handler as its own task, so an abort can cancel just it."""
        reason = running.stopped_before or running.aborted
        if reason is not None:
            raise TaskCancelledError(f"the workflow was stopped ({reason})")
        handler = asyncio.create_task(self._invoke(agent, ctx, task.timeout_s))
        running.handler = handler
        try:
            return await handler
        except asyncio.CancelledError:
            if running.aborted is None:
                handler.cancel()  # we are being cancelled (shutdown)
                raise
            raise TaskCancelledError(f"the workflow was stopped ({running.aborted})") from None

    def _forget(self, workflow_id: str, running: _Running) -> None:
        live = self._live.get(workflow_id)
        if live is not None:
            live.discard(running)
            if not live:
                del self._live[workflow_id]

    # Agent state machines ----------------------------------------------
    async def _move(
        self, instance: AgentInstance, trigger: Trigger, task: TaskMessage | None = None
    ) -> Pending:
        """Make a transition and put its ``agent.state_changed`` event on the wire;
        returns the publication to await."""
        move = instance.fsm.fire(trigger)
        instance.since = time.time_ns()
        instance.moves += 1
        if task is not None and not self.settings.agent_task_events:
            return _nothing()
        workflow_id = task.workflow_id if task else SYSTEM_WORKFLOW
        event = Event(
            id=f"agent:{instance.id}:{self.started_at}:{instance.moves}",
            type=EventType.AGENT_STATE_CHANGED,
            workflow_id=workflow_id,
            source=self.node_id,
            timestamp=instance.since,
            vclock=self._tick(workflow_id, task.vclock if task else VectorClock()),
            data=AgentStateChanged(
                instance=instance.id,
                agent=instance.agent,
                worker=self.node_id,
                from_state=move.from_state.value,
                to_state=move.to_state.value,
                trigger=trigger.value,
                task_id=task.task_id if task else None,
            ),
            task_id=task.task_id if task else None,
            attempt=task.attempt if task else None,
        )
        return await self.bus.send_event(event)

    def _settle(self, instance: AgentInstance, *triggers: Trigger) -> None:
        """Transitions that are not published (the process is going down)."""
        for trigger in triggers:
            if instance.fsm.can(trigger):
                instance.fsm.fire(trigger)

    async def _follow_control(self) -> None:
        """Apply ``agenticflow agent suspend|resume`` to our instances as they come."""
        watcher = await self._control.watch(f"{self.node_id}.>", inactive_threshold=5.0)
        try:
            while not self._stop.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)
                except TimeoutError:
                    continue
                except Exception as exc:  # the connection is down: updates resume after it
                    log.debug("control watch interrupted", error=str(exc))
                    continue
                if entry is None or entry.key not in self._by_id:
                    continue
                wanted = self._control_says(entry)
                if wanted is None:
                    continue
                with contextlib.suppress(AgenticFlowError):
                    await self._set_suspended(self._by_id[entry.key], suspended=wanted)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _control_says(self, entry: Any) -> bool | None:
        """Whether a control entry asks for its instance suspended; None when it
        is refused (with keys: unsigned, signed by a worker, altered, moved, an
        old command put back) and changes nothing. A deletion resumes, but not
        with keys (a deletion cannot be signed; resuming is a signed put)."""
        if entry.value is None or entry.operation is not None:
            if self.bus.seal.trust is not None:
                log.warning("unsigned control deletion ignored", instance=entry.key)
                return None
            return False
        try:
            plain, _ = self.bus.seal.open_record(
                self.names.control_bucket,
                entry.key,
                entry.value,
                roles=_CONTROLLERS,
                stored_ns=watched_ns(entry),
            )
            info = unpack(plain)
        except MalformedMessageError as exc:
            log.warning("control entry refused", instance=entry.key, error=str(exc))
            return None
        return bool(isinstance(info, dict) and info.get("suspended"))

    async def _set_suspended(self, instance: AgentInstance, *, suspended: bool) -> None:
        pool = self._idle[instance.agent]
        if suspended:
            if instance.fsm.state == AgentState.SUSPENDED or instance.suspend_wanted:
                return
            if instance not in pool:  # busy: it suspends when its task ends
                instance.suspend_wanted = True
                await self._heartbeat()
                return
            pool.remove(instance)
            await (await self._move(instance, Trigger.SUSPEND))
        else:
            instance.suspend_wanted = False
            if instance.fsm.state != AgentState.SUSPENDED:
                await self._heartbeat()
                return
            await (await self._move(instance, Trigger.RESUME))
            pool.append(instance)
            self._freed[instance.agent].set()
            for puller in self._pullers.values():
                puller.kick()
        log.info("agent instance " + instance.state, instance=instance.id)
        await self._heartbeat()

    async def _on_intervention(self, msg: Message) -> None:
        """Terminate (``workflow.aborted``), cancel and feedback reach the handlers
        running here."""
        try:
            event = self.bus.decode_event(msg)
        except MalformedMessageError:
            return
        running = list(self._live.get(event.workflow_id, ()))
        data = event.data
        if isinstance(data, WorkflowAborted):
            self._stop_starting(event.workflow_id, data.reason)
            for run in running:
                run.aborted = data.reason
                if run.handler is not None:
                    run.handler.cancel()
            if running:
                log.info(
                    "aborted handlers cancelled", workflow_id=event.workflow_id, count=len(running)
                )
        elif isinstance(data, InterventionApplied) and data.action == "feedback":
            for run in running:
                run.ctx.feedback.add(data.text)
        elif isinstance(data, InterventionApplied) and data.action == "cancel":
            # Cooperative: handlers registered here see ctx.cancelled (their
            # task.started went out first: the task may well be running for the
            # coordinator); tasks of the workflow taken after this (already
            # cancelled by the coordinator) do not start.
            why = f"cancelled by {data.by or 'someone'}"
            self._stop_starting(event.workflow_id, why)
            for run in running:
                run.ctx.cancellation.set(why)

    def _stop_starting(self, workflow_id: str, reason: str) -> None:
        """Tasks of the workflow taken from now on do not start."""
        self._aborted[workflow_id] = reason
        while len(self._aborted) > _ABORTED_KEPT:
            self._aborted.popitem(last=False)

    async def _record_effect(self, task: TaskMessage, data: TaskEffectRecorded, call: int) -> None:
        await self._emit(task, EventType.TASK_EFFECT_RECORDED, data, f"effect:{call}")

    async def _take_instance(self, agent: str) -> AgentInstance:
        """An idle instance of ``agent`` (pulls are sized so one is normally free)."""
        pool = self._idle[agent]
        while not pool:
            self._freed[agent].clear()
            await self._freed[agent].wait()
        return pool.pop()

    async def _give_back(self, instance: AgentInstance) -> None:
        instance.tasks_done += 1
        if instance.fsm.state != AgentState.IDLE:
            self._settle(instance, Trigger.TASK_FAILED, Trigger.ERROR_RESOLVED)
        if instance.suspend_wanted:
            instance.suspend_wanted = False
            with contextlib.suppress(AgenticFlowError):
                await (await self._move(instance, Trigger.SUSPEND))
            with contextlib.suppress(Exception):
                await self._heartbeat()
            return
        self._idle[instance.agent].append(instance)
        self._freed[instance.agent].set()

    async def _invoke(self, agent: AgentSpec, ctx: TaskContext, timeout_s: float | None) -> Any:
        async def call() -> Any:
            if agent.is_async:
                return await agent.handler(ctx)
            return await asyncio.to_thread(agent.handler, ctx)

        try:
            async with asyncio.timeout(timeout_s):
                return await call()
        except TimeoutError as exc:
            if isinstance(exc, TaskError):
                raise
            raise TaskTimeoutError(f"the handler ran longer than {timeout_s:g}s") from exc

    async def _keep_held_alive(self) -> None:
        """One loop for every delivery in hand (not a timer task per task):
        ``in_progress()`` on each held for a third of the ack wait since its
        last sign of life, so JetStream does not redeliver it while its handler
        runs. Checked four times per period: the first sign comes at most
        5/12 of the ack wait after the delivery."""
        ack_every = max(self.settings.task_ack_wait_s / 3, 0.5)
        while True:
            await asyncio.sleep(ack_every / 4)  # a periodic keep-alive, not a wait on an effect
            now = time.monotonic()
            due = [(key, msg) for key, (msg, at) in self._held.items() if now - at >= ack_every]
            for key, msg in due:
                if key in self._held:
                    self._held[key] = (msg, now)
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _heartbeats(self, task: TaskMessage) -> None:
        """While the handler runs: ``task.heartbeat`` events every
        ``heartbeat_s`` of a task that asks for them."""
        beat_every = task.heartbeat_s or float("inf")
        beats = 0
        while True:
            await asyncio.sleep(beat_every)  # a periodic heartbeat, not a wait on an effect
            beats += 1
            with contextlib.suppress(Exception):
                await self._emit(
                    task,
                    EventType.TASK_HEARTBEAT,
                    TaskHeartbeat(worker=self.node_id),
                    f"heartbeat:{beats}",
                )

    def _admitted(self, task: TaskMessage) -> TaskMessage:
        """The task, if a coordinator could have dispatched it; raises
        MalformedMessageError. (With keys, the seal already checked that a
        coordinator signed it; without, anyone on the bus may publish tasks,
        and this refuses at least what no coordinator sends.)"""
        limit = self.bus.settings.max_clock_entries
        if len(task.vclock) > limit:
            raise MalformedMessageError(
                f"task's vector clock has {len(task.vclock)} entries, more than {limit}"
            )
        if not task.vclock.get(COORDINATOR_NODE):
            raise ForgedMessageError(
                "task was not dispatched by a coordinator: its clock has no coordinator entry"
            )
        return task

    async def _reject(self, msg: Message, exc: MalformedMessageError) -> None:
        """A poison task: record it, fail its task if we can name it, terminate it.

        A forged task (not signed by a coordinator we trust) fails nothing: its
        headers name a task, but nobody we trust said so."""
        seq = msg.metadata.sequence.stream
        identity = task_identity(msg.headers)
        workflow_id = identity[0] if identity and ID_RE.match(identity[0]) else SYSTEM_WORKFLOW
        log.warning("malformed task rejected", subject=msg.subject, seq=seq, reason=str(exc))
        await self.audit.note(
            AuditKind.MESSAGE_REJECTED,
            workflow_id=workflow_id,
            subject=msg.subject,
            stream_seq=seq,
            code=exc.code,
            reason=str(exc),
        )
        # The dispatch's clock from the headers (readable even when the body is
        # not), so the failure follows the dispatch. Nobody vouches for it, so it
        # is not kept for this worker's later events (an oversized one not used).
        dispatched = task_clock(msg.headers)
        if len(dispatched) > self.bus.settings.max_clock_entries:
            dispatched = VectorClock()
        clock = self._tick(workflow_id, VectorClock()).merge(dispatched)
        await self.bus.publish_event(
            Event(
                id=f"rejected:{self.names.tasks_stream}:{seq}",
                type=EventType.MESSAGE_REJECTED,
                workflow_id=workflow_id,
                source=self.node_id,
                timestamp=time.time_ns(),
                vclock=clock,
                data=MessageRejected(
                    reason=str(exc), code=exc.code, subject=msg.subject, stream_seq=seq
                ),
            )
        )
        if identity and workflow_id != SYSTEM_WORKFLOW and not isinstance(exc, ForgedMessageError):
            _, task_id, attempt = identity
            with contextlib.suppress(Exception):
                await self.bus.publish_event(
                    Event(
                        id=task_key(workflow_id, task_id, attempt, "failed"),
                        type=EventType.TASK_FAILED,
                        workflow_id=workflow_id,
                        source=self.node_id,
                        timestamp=time.time_ns(),
                        vclock=self._tick(workflow_id, VectorClock()).merge(clock),
                        data=TaskFailed.for_good(
                            type(exc).__name__,
                            exc.code,
                            f"the task message could not be read: {exc}",
                            worker=self.node_id,
                        ),
                        task_id=task_id,
                        attempt=attempt,
                    )
                )


def _served_queues(app: AgentApp, route: str | None) -> dict[str, str]:
    """Every queue a worker of ``app`` pulls, with its capability: each
    capability's shared queue (on ``route`` if any), then, off a route, the
    queues of its agent's version and the versions it is compatible with."""
    served = {queue_of(c, route): c for c in app.capabilities}
    if route is not None:
        return served
    for agent in app.agents:
        for version in (agent.version, *agent.compatible) if agent.version else ():
            for capability in agent.capabilities:
                served[versioned_queue(capability, version)] = capability
    return served


__all__ = ["AgentInstance", "NonRetryableError", "Worker", "error_info"]

"""Immutable events: everything that happens to a workflow.

An :class:`Event` is an envelope (id, type, workflow, task, attempt, source
node, timestamp in nanoseconds, vector clock) around a typed payload. Each
event type has exactly one payload model, registered in :data:`PAYLOADS`;
incoming payloads tolerate unknown fields so rolling upgrades work.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from agenticflow.shared.graph.hierarchy import ParentLink
from agenticflow.shared.graph.workflow import TaskSpec, WorkflowDefinition
from agenticflow.shared.wire.ids import ID_RE
from agenticflow.shared.wire.vclock import VectorClock

MAX_APPROVAL_WAIT_S = 30 * 86400
"""Longest an approval may wait (a gate's ``timeout_s``, a handler's request)."""
MAX_APPROVALS = 10_000
"""Most ``ctx.request_approval`` calls one task may make."""

SCHEMA_VERSION = 1
"""Version of task messages, and the first version of every event payload
(payloads changed since have their own in :mod:`agenticflow.shared.wire.schemas`)."""


class EventType(enum.StrEnum):
    """Every event type; the value is the last part of the event subject."""

    WORKFLOW_SUBMITTED = "workflow.submitted"
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_REJECTED = "workflow.rejected"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    TASK_SCHEDULED = "task.scheduled"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_RETRY_SCHEDULED = "task.retry_scheduled"
    TASK_RETRY_DUE = "task.retry_due"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_UNSERVED = "task.unserved"
    TASK_DEAD_LETTERED = "task.dead_lettered"
    TASK_HEARTBEAT = "task.heartbeat"
    TASK_EFFECT_RECORDED = "task.effect_recorded"
    WORKFLOW_RESUME_REQUESTED = "workflow.resume_requested"
    WORKFLOW_RESUMED = "workflow.resumed"
    TASK_APPROVAL_REQUESTED = "task.approval_requested"
    TASK_APPROVAL_EXPIRED = "task.approval_expired"
    TASK_APPROVAL_DECIDED = "task.approval_decided"
    TASK_TOOL_CALLED = "task.tool_called"
    TASK_AUCTION_OPENED = "task.auction_opened"
    TASK_BID = "task.bid"
    TASK_AUCTION_CLOSED = "task.auction_closed"
    TASK_AWARDED = "task.awarded"
    TASK_CLAIM_EXPIRED = "task.claim_expired"
    INTERVENTION_REQUESTED = "workflow.intervention_requested"
    INTERVENTION_APPLIED = "workflow.intervention_applied"
    INTERVENTION_REFUSED = "workflow.intervention_refused"
    WORKFLOW_ABORTED = "workflow.aborted"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    AGENT_STATE_CHANGED = "agent.state_changed"
    MESSAGE_REJECTED = "message.rejected"
    TASK_OUTPUT = "task.output"
    TASK_WAIT_ELAPSED = "task.wait_elapsed"


NOT_FOLDED = frozenset(
    {EventType.AGENT_STATE_CHANGED, EventType.TASK_TOOL_CALLED, EventType.TASK_OUTPUT}
)
"""Event types that record what happened without changing workflow state: the
coordinator neither folds them nor merges their clocks (so it skips them
without decoding), and replay does the same."""


class Payload(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ErrorInfo(BaseModel):
    """A failure as it travels on the bus."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str
    message: str
    code: str = "task_error"
    retryable: bool = True


class RecordedEffect(BaseModel):
    """One side effect (tool or LLM call) as a task attempt recorded it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    call: int
    """Index of the call within the attempt (0, 1, ...): the same code makes
    the same calls in the same order."""
    name: str
    params_hash: str
    result: Any = None
    error: ErrorInfo | None = None
    stored: bool = True
    """False when the result could not be recorded (too large, not msgpack-able)."""


class Origin(BaseModel):
    """Where a workflow comes from when it re-runs another one."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str
    """``fork`` (reuses results up to a point) or ``rerun`` (serves recorded effects)."""
    workflow_id: str
    at_seq: int | None = None
    """For a fork: the source's stream sequence its reused results come from."""


class WorkflowSubmitted(Payload):
    """A client asked for a workflow to run."""

    definition: WorkflowDefinition
    input: dict[str, Any] = Field(default_factory=dict)
    submitted_by: str = ""
    origin: Origin | None = None
    reuse: dict[str, Any] = Field(default_factory=dict)
    """Results to take as completed instead of running the task (a fork)."""
    recorded: dict[str, dict[int, list[RecordedEffect]]] = Field(default_factory=dict)
    """Side effects to serve from a recording, by task and attempt (a rerun)."""
    replay: bool = False
    """Serve side effects from ``recorded`` only: a call not in it fails the task."""
    route: str | None = None
    """Send the tasks to the workers serving this route only (``worker --route``)."""
    traceparent: str | None = None
    """The W3C trace context of the submission: every span of the workflow joins it."""
    parent: ParentLink | None = None
    """Set for a child workflow: the parent's task whose outcome this workflow's is."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Agent versions its tasks are pinned to, by capability (see
    :func:`~agenticflow.shared.wire.names.versioned_queue`): the latest live
    ones when it was submitted, unless the submitter chose."""


class WorkflowStarted(Payload):
    """The coordinator accepted the workflow."""

    tasks: int


class WorkflowRejected(Payload):
    """The coordinator refused the workflow; ``problems`` says why."""

    reason: str
    problems: list[str] = Field(default_factory=list)


class WorkflowCompleted(Payload):
    """Every task completed; ``output`` holds the results of the sink tasks."""

    output: dict[str, Any] = Field(default_factory=dict)


class WorkflowFailed(Payload):
    """A task failed for good."""

    reason: str
    task_id: str | None = None
    error: ErrorInfo | None = None


class TaskScheduled(Payload):
    """A task message was dispatched to its capability's queue."""

    capability: str


class TaskStarted(Payload):
    """A worker began running the task
    (schema version 2, see :mod:`agenticflow.shared.wire.schemas`)."""

    worker: str
    agent: str
    instance: str
    """The agent instance running the attempt (``worker.agent.N``)."""


class TaskCompleted(Payload):
    """A worker finished the task."""

    result: Any = None
    worker: str = ""
    agent: str = ""
    duration_ms: float = 0.0
    instance: str = ""
    """The agent instance that ran the attempt; it is idle again (see :func:`agent_moves`)."""


class TaskFailed(Payload):
    """A worker's attempt failed."""

    error: ErrorInfo
    worker: str = ""
    agent: str = ""
    duration_ms: float = 0.0
    instance: str = ""
    """The agent instance that ran the attempt (empty when no handler ran, e.g. a
    timeout); it went through ``error`` back to idle (see :func:`agent_moves`)."""

    @classmethod
    def for_good(
        cls,
        error_type: str,
        code: str,
        message: str,
        *,
        worker: str,
        agent: str = "",
        instance: str = "",
    ) -> TaskFailed:
        """A failure that no retry can fix (unreadable task, oversized message...)."""
        return cls(
            error=ErrorInfo(type=error_type, message=message, code=code, retryable=False),
            worker=worker,
            agent=agent,
            instance=instance,
        )


class TaskRetryScheduled(Payload):
    """The coordinator will dispatch the next attempt at ``due_ns``."""

    next_attempt: int
    delay_s: float
    due_ns: int


class TaskRetryDue(Payload):
    """A retry timer fired."""


class TaskTimedOut(Payload):
    """An attempt outlived its timeout, or its heartbeats stopped."""

    timeout_s: float
    due_ns: int = 0
    """The deadline this timer was armed for; a later heartbeat supersedes it."""
    heartbeat: bool = False
    """True when the heartbeats stopped (the worker vanished)."""


class TaskHeartbeat(Payload):
    """The worker running the attempt is alive."""

    worker: str = ""


class TaskEffectRecorded(Payload):
    """A handler made a side effect (tool or LLM call); its result, for replay."""

    effect: RecordedEffect
    key: str
    """Idempotency key: workflow, task, call index and name (attempt-independent)."""
    replayed: bool = False
    """Served from a recording instead of calling the outside world."""
    worker: str = ""


class TaskUnserved(Payload):
    """No live worker serves the task's capability: it waits in the queue."""

    capability: str


class TaskDeadLettered(Payload):
    """A task message was delivered ``max_deliver`` times without an outcome."""

    reason: str
    deliveries: int = 0
    stream_seq: int | None = None
    capability: str = ""


class WorkflowResumeRequested(Payload):
    """Someone asked to re-run a failed workflow, keeping completed results."""

    from_task: str | None = None
    """Also re-run this task and everything downstream of it."""
    requested_by: str = ""


class WorkflowResumed(Payload):
    """The coordinator re-opened the workflow; ``tasks`` will run again."""

    tasks: list[str] = Field(default_factory=list)


class MessageRejected(Payload):
    """A message on the bus was refused (poison): never retried, never applied."""

    reason: str
    code: str
    subject: str
    stream_seq: int | None = None
    sender: str = ""
    """Who sent the refused message: its signer (secure mode), else its ``AF-Source``."""


class ApprovalDecision(BaseModel):
    """A person's answer to an approval request, as the handler receives it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    approved: bool
    comment: str = ""
    by: str = ""
    """Who decided (``timeout`` when the wait expired and its policy decided)."""
    timed_out: bool = False

    @property
    def decision(self) -> str:
        """``approve`` or ``reject``."""
        return "approve" if self.approved else "reject"


class TaskApprovalRequested(Payload):
    """A task waits for a person: a gate in the workflow or a handler's request.

    The attempt that asked has ended (no worker slot is held); once decided,
    the task runs again and its handler gets the decision.
    """

    reason: str
    data: Any = None
    gate: bool = False
    """True for the workflow file's ``approval:`` gate (asked before the task runs)."""
    index: int = Field(default=0, ge=0, le=MAX_APPROVALS)
    """Which ``ctx.request_approval`` call of the handler asked (0, 1, ...)."""
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_APPROVAL_WAIT_S)
    on_timeout: str = "reject"
    worker: str = ""
    instance: str = ""
    """The agent instance whose handler asked; it is idle again (see :func:`agent_moves`)."""


class TaskWaitElapsed(Payload):
    """A ``wait:`` node's time came (the coordinator's timer fired): a timer
    wait completes, a signal wait times out."""

    due_ns: int


class TaskApprovalExpired(Payload):
    """An approval wait outlived its timeout (the coordinator's timer fired)."""

    due_ns: int


class TaskApprovalDecided(Payload):
    """An approval request was answered (by a person, or by its timeout policy)."""

    index: int = 0
    decision: ApprovalDecision


class TaskToolCalled(Payload):
    """The audit record of one tool call through an agent's registry."""

    tool: str
    agent: str
    instance: str = ""
    call: int
    """Index of the call within the task (attempt-independent with the key)."""
    key: str
    """Idempotency key passed to the tool and used to cache its result."""
    params_hash: str
    result_hash: str | None = None
    outcome: str
    """``ok``, ``cached`` (served from the idempotency cache), ``error``,
    ``invalid`` (params failed validation), ``denied`` (permission), ``open``
    (circuit breaker), ``rate_limited``, ``timeout`` or ``unknown`` (no such tool)."""
    error: ErrorInfo | None = None
    duration_ms: float = 0.0
    worker: str = ""


class Modification(BaseModel):
    """A change to tasks that have not started: validated like a new DAG."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    add: list[TaskSpec] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    replace: list[TaskSpec] = Field(default_factory=list)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """New params by task id (merged over the old ones)."""


INTERVENTIONS = (
    "pause",
    "resume",
    "cancel",
    "terminate",
    "abort",
    "modify",
    "feedback",
    "approve",
    "reject",
    "signal",
)
"""What a person may ask of a running workflow. ``cancel`` is cooperative (no new
task; running ones finish or see ``ctx.cancelled``), ``terminate`` ends it now;
``abort`` is terminate's older name."""
FORBIDDEN = "forbidden"
"""Code of an intervention refused because its sender's roles do not allow it."""


REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
"""What a request id may be: it becomes part of message ids (headers)."""


class InterventionRequested(Payload):
    """Someone steers a running workflow (the coordinator applies or refuses it)."""

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    action: str = Field(max_length=32)
    """One of :data:`INTERVENTIONS`."""
    by: str = ""
    reason: str = ""
    """Why (cancel, terminate, abort), or the comment (approve, reject)."""
    text: str = ""
    """The feedback."""
    task_id: str | None = None
    """The task an approval decides."""
    changes: Modification | None = None
    signal: str | None = Field(default=None, max_length=64)
    """The signal's name (action ``signal``)."""
    data: Any = None
    """The signal's data: the result of the ``wait:`` node it completes."""


class InterventionApplied(Payload):
    """The coordinator applied an intervention; workers react to cancel and feedback
    (and to ``workflow.aborted``)."""

    request_id: str
    action: str
    by: str = ""
    summary: str = ""
    text: str = ""
    """The feedback (action ``feedback``)."""
    feedback: list[str] = Field(default_factory=list)
    """All feedback so far (action ``feedback``)."""


class InterventionRefused(Payload):
    """The coordinator refused an intervention and changed nothing."""

    request_id: str
    action: str
    reason: str
    code: str
    by: str = ""
    stream_seq: int | None = None
    """The refused request's stream sequence, when admission refused it (replay
    skips that request, not every request with its id)."""


class WorkflowAborted(Payload):
    """Someone terminated (aborted) the workflow: unfinished tasks are cancelled."""

    reason: str
    by: str = ""
    cancelled: list[str] = Field(default_factory=list)


class WorkflowCancelled(Payload):
    """A cancelled workflow ended once no task ran any more: ``cancelled`` lists
    the tasks that never finished; ``completed`` those whose results were kept."""

    reason: str
    by: str = ""
    cancelled: list[str] = Field(default_factory=list)
    completed: list[str] = Field(default_factory=list)


class TaskAuctionOpened(Payload):
    """An ``allocation: auction`` task is announced: agents serving ``queue`` may bid
    until ``due_ns`` (see :mod:`agenticflow.coordinator.auction`)."""

    capability: str
    queue: str
    window_s: float
    due_ns: int
    claim_timeout_s: float
    params: dict[str, Any] = Field(default_factory=dict)


class TaskBid(Payload):
    """A worker's bid for an auctioned task: lower is better."""

    worker: str
    agent: str
    value: float


class TaskAuctionClosed(Payload):
    """The bidding window of an auction ended (the coordinator's timer fired)."""

    due_ns: int


class TaskAwarded(Payload):
    """The auction's outcome: the winner (lowest bid; ties go to the lowest worker id),
    or none, and then the task goes to the shared queue."""

    winner: str | None = None
    agent: str | None = None
    value: float | None = None
    bids: int = 0


class TaskClaimExpired(Payload):
    """The winner did not start the task within the claim timeout: it goes to the
    shared queue."""

    winner: str
    claim_timeout_s: float
    due_ns: int


OUTPUT_KINDS = ("token", "progress", "log", "artifact")
"""What a streamed chunk is: ``token`` (a piece of text being made, shown
inline), ``progress`` (how far the task got), ``log`` (a line for people),
``artifact`` (a result part: text, a dict or bytes)."""


class OutputChunk(BaseModel):
    """One piece of a task's streamed output (``ctx.stream``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["token", "progress", "log", "artifact"] = "token"
    data: str | bytes | dict[str, Any] | list[Any] | int | float | bool | None = None
    at_ns: int = Field(default=0, ge=0, le=2**63 - 1)
    """When the handler made it (the worker's clock)."""


class TaskOutput(Payload):
    """Output a running task streamed (``ctx.stream``), in order: the chunks
    made since the previous ``task.output`` of the attempt. Not folded into
    the workflow's state; read by ``handle.stream()``, ``watch --stream`` and
    ``replay``."""

    index: int = Field(ge=0)
    """0, 1, 2... per attempt: the order of this attempt's ``task.output`` events."""
    chunks: list[OutputChunk] = Field(default_factory=list, max_length=10_000)
    dropped: int = Field(default=0, ge=0)
    """Chunks the handler made that were dropped since the previous event
    (the bus did not take them within ``Settings.stream_block_s``)."""
    last: bool = False
    """The attempt's last output event (it ended)."""


class AgentStateChanged(Payload):
    """An agent instance moved in its state machine (see :mod:`agenticflow.worker.fsm`)."""

    instance: str
    agent: str
    worker: str
    from_state: str
    to_state: str
    trigger: str
    task_id: str | None = None


PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.WORKFLOW_SUBMITTED: WorkflowSubmitted,
    EventType.WORKFLOW_STARTED: WorkflowStarted,
    EventType.WORKFLOW_REJECTED: WorkflowRejected,
    EventType.WORKFLOW_COMPLETED: WorkflowCompleted,
    EventType.WORKFLOW_FAILED: WorkflowFailed,
    EventType.TASK_SCHEDULED: TaskScheduled,
    EventType.TASK_STARTED: TaskStarted,
    EventType.TASK_COMPLETED: TaskCompleted,
    EventType.TASK_FAILED: TaskFailed,
    EventType.TASK_RETRY_SCHEDULED: TaskRetryScheduled,
    EventType.TASK_RETRY_DUE: TaskRetryDue,
    EventType.TASK_TIMED_OUT: TaskTimedOut,
    EventType.TASK_UNSERVED: TaskUnserved,
    EventType.TASK_DEAD_LETTERED: TaskDeadLettered,
    EventType.TASK_HEARTBEAT: TaskHeartbeat,
    EventType.TASK_EFFECT_RECORDED: TaskEffectRecorded,
    EventType.WORKFLOW_RESUME_REQUESTED: WorkflowResumeRequested,
    EventType.WORKFLOW_RESUMED: WorkflowResumed,
    EventType.TASK_APPROVAL_REQUESTED: TaskApprovalRequested,
    EventType.TASK_APPROVAL_EXPIRED: TaskApprovalExpired,
    EventType.TASK_WAIT_ELAPSED: TaskWaitElapsed,
    EventType.TASK_APPROVAL_DECIDED: TaskApprovalDecided,
    EventType.TASK_TOOL_CALLED: TaskToolCalled,
    EventType.INTERVENTION_REQUESTED: InterventionRequested,
    EventType.INTERVENTION_APPLIED: InterventionApplied,
    EventType.INTERVENTION_REFUSED: InterventionRefused,
    EventType.WORKFLOW_ABORTED: WorkflowAborted,
    EventType.WORKFLOW_CANCELLED: WorkflowCancelled,
    EventType.AGENT_STATE_CHANGED: AgentStateChanged,
    EventType.TASK_OUTPUT: TaskOutput,
    EventType.MESSAGE_REJECTED: MessageRejected,
    EventType.TASK_AUCTION_OPENED: TaskAuctionOpened,
    EventType.TASK_BID: TaskBid,
    EventType.TASK_AUCTION_CLOSED: TaskAuctionClosed,
    EventType.TASK_AWARDED: TaskAwarded,
    EventType.TASK_CLAIM_EXPIRED: TaskClaimExpired,
}


class Event(BaseModel):
    """One immutable event of one workflow."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    type: EventType
    workflow_id: str
    source: str
    timestamp: int = Field(ge=0, le=2**63 - 1)
    """Nanoseconds since the epoch, on the publishing node."""
    vclock: VectorClock
    data: SerializeAsAny[Payload]
    task_id: str | None = None
    attempt: int | None = None
    migrated_from: int | None = None
    """The payload's schema version as stored, when reading it from the stream
    migrated it to the current version (see :mod:`agenticflow.shared.wire.schemas`)."""
    seq: int | None = None
    """Stream sequence, known once the event was read from the stream."""
    stored_ns: int | None = Field(default=None, exclude=True)
    """When JetStream stored it (server time), known when signatures are checked."""
    signer: str | None = Field(default=None, exclude=True)
    """The principal whose key signed it, when signatures are checked."""
    signer_role: str | None = Field(default=None, exclude=True)
    """That principal's role (``coordinator``, ``worker``, ``client``, ``admin``)."""

    @field_validator("workflow_id")
    @classmethod
    def _check_workflow_id(cls, value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError("workflow id must be 1-64 letters, digits, '_' or '-'")
        return value


_OUTCOME_MOVES: dict[EventType, tuple[tuple[str, str, str], ...]] = {
    EventType.TASK_STARTED: (("idle", "processing", "task_assigned"),),
    EventType.TASK_COMPLETED: (("processing", "idle", "task_completed"),),
    EventType.TASK_FAILED: (
        ("processing", "error", "task_failed"),
        ("error", "idle", "error_resolved"),
    ),
    EventType.TASK_APPROVAL_REQUESTED: (
        ("processing", "waiting_approval", "approval_required"),
        ("waiting_approval", "idle", "approval_deferred"),
    ),
}


def agent_moves(events: Iterable[Event], *, interleaved: bool = False) -> list[Event]:
    """Every move of the agent instances in ``events``, in order: the stored
    ``agent.state_changed`` events (suspend and resume, and the per-task moves
    when ``Settings.agent_task_events`` is on) and the per-task moves the task
    events imply, which are not stored separately by default: ``task.started``
    names the instance that went ``idle -> processing``; ``task.completed``,
    ``task.failed`` and ``task.approval_requested`` the one that went back to
    idle (through ``error`` or ``waiting_approval``).

    A derived move has the time, clock and sequence of the event it comes
    from and an id ending in ``:derived:<n>``. A task event that names no
    instance (a timeout, a failure no handler made), or whose attempt has its
    moves stored, implies none. ``interleaved``: all of ``events`` with the
    derived moves after the event each comes from."""
    events = list(events)
    stored = {
        (e.workflow_id, e.task_id, e.attempt)
        for e in events
        if e.type == EventType.AGENT_STATE_CHANGED and e.task_id is not None
    }
    moves: list[Event] = []
    for event in events:
        implied = _OUTCOME_MOVES.get(event.type, ())
        instance = getattr(event.data, "instance", "") if implied else ""
        if interleaved or event.type == EventType.AGENT_STATE_CHANGED:
            moves.append(event)
        if not instance or (event.workflow_id, event.task_id, event.attempt) in stored:
            continue
        for n, (from_state, to_state, trigger) in enumerate(implied):
            data = AgentStateChanged(
                instance=instance,
                agent=getattr(event.data, "agent", "") or instance.rsplit(".", 2)[-2:][0],
                worker=getattr(event.data, "worker", ""),
                from_state=from_state,
                to_state=to_state,
                trigger=trigger,
                task_id=event.task_id,
            )
            moves.append(
                event.model_copy(
                    update={
                        "id": f"{event.id}:derived:{n}",
                        "type": EventType.AGENT_STATE_CHANGED,
                        "data": data,
                    }
                )
            )
    return moves


__all__ = [
    "FORBIDDEN",
    "INTERVENTIONS",
    "MAX_APPROVALS",
    "MAX_APPROVAL_WAIT_S",
    "NOT_FOLDED",
    "OUTPUT_KINDS",
    "PAYLOADS",
    "SCHEMA_VERSION",
    "AgentStateChanged",
    "ApprovalDecision",
    "ErrorInfo",
    "Event",
    "EventType",
    "InterventionApplied",
    "InterventionRefused",
    "InterventionRequested",
    "MessageRejected",
    "Modification",
    "Origin",
    "OutputChunk",
    "Payload",
    "RecordedEffect",
    "TaskApprovalDecided",
    "TaskApprovalExpired",
    "TaskApprovalRequested",
    "TaskAuctionClosed",
    "TaskAuctionOpened",
    "TaskAwarded",
    "TaskBid",
    "TaskClaimExpired",
    "TaskCompleted",
    "TaskDeadLettered",
    "TaskEffectRecorded",
    "TaskFailed",
    "TaskHeartbeat",
    "TaskOutput",
    "TaskRetryDue",
    "TaskRetryScheduled",
    "TaskScheduled",
    "TaskStarted",
    "TaskTimedOut",
    "TaskToolCalled",
    "TaskUnserved",
    "TaskWaitElapsed",
    "WorkflowAborted",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowRejected",
    "WorkflowResumeRequested",
    "WorkflowResumed",
    "WorkflowStarted",
    "WorkflowSubmitted",
    "agent_moves",
]

"""The coordinator's functional core: ``(state, event) -> (state, commands)``.

No I/O, no clock reads, no randomness: every time it uses comes from the event
it folds, so the same events always give the same state. The shell
(:mod:`agenticflow.coordinator.service`) executes the commands, and replay and crash
recovery are this same function over the stored stream.

For speed the reducer updates the state object it is given in place (copying a
10,000-task state on every event would make a workflow O(n^2)); callers that
need the old state keep a copy (``state.model_copy(deep=True)``).

Outcomes are applied at most once: an outcome for a task that is already
terminal, or a failure of an attempt that is no longer current, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from agenticflow.coordinator import children
from agenticflow.coordinator.admission import (
    ADMISSION_CODES,
    REPLAY_RULES,
    Ignore,
    Refuse,
    Rules,
    admit,
)
from agenticflow.coordinator.auction import AuctionState, Bid, accepts, best
from agenticflow.coordinator.state import (
    ACTIVE_TASK,
    COORDINATOR_NODE,
    DONE_TASK,
    MAX_KEPT_SIGNALS,
    TERMINAL_TASK,
    KeptSignal,
    PendingApproval,
    TaskState,
    TaskStatus,
    WorkflowState,
    WorkflowStatus,
)
from agenticflow.shared.graph.dag import graph_problems, sinks
from agenticflow.shared.graph.workflow import MAX_WAIT_S, TaskSpec, WorkflowDefinition
from agenticflow.shared.wire.codec import TaskMessage, pack
from agenticflow.shared.wire.events import (
    NOT_FOLDED,
    ApprovalDecision,
    ErrorInfo,
    Event,
    EventType,
    InterventionApplied,
    InterventionRefused,
    InterventionRequested,
    MessageRejected,
    Modification,
    Payload,
    TaskApprovalDecided,
    TaskApprovalExpired,
    TaskApprovalRequested,
    TaskAuctionClosed,
    TaskAuctionOpened,
    TaskAwarded,
    TaskBid,
    TaskClaimExpired,
    TaskCompleted,
    TaskDeadLettered,
    TaskFailed,
    TaskRetryScheduled,
    TaskScheduled,
    TaskStarted,
    TaskTimedOut,
    TaskUnserved,
    TaskWaitElapsed,
    WorkflowAborted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowResumed,
    WorkflowResumeRequested,
    WorkflowStarted,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import ID_RE, task_key, workflow_key
from agenticflow.shared.wire.names import ROUTE_RE, VERSION_RE, queue_of
from agenticflow.shared.wire.vclock import VectorClock

SHELL_NODE = "coord-shell"
"""Vector clock entry of events the shell emits on its own (timers, hints)."""

TIMEOUT_GRACE_NS = 2_000_000_000
"""How long after a task's own timeout the coordinator declares it timed out."""

MAX_SIGNAL_BYTES = 64 * 1024
"""Largest signal data (packed): it becomes a task result in the workflow's state."""
MAX_KEPT_SIGNAL_BYTES = 1024 * 1024
"""Most data a workflow keeps in signals for nodes not ready yet."""

_CANCELLED_CODES = frozenset({"task_cancelled", "child_workflow_cancelled"})
"""Error codes of an attempt that stopped because its workflow was cancelled."""
_WHILE_CANCELLING = frozenset({"cancel", "terminate", "abort", "feedback"})
"""What a workflow being cancelled still accepts (nothing that would start a task)."""


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish this event (its ``Nats-Msg-Id`` is derived)."""

    event: Event


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Publish this task message on its capability's queue."""

    task: TaskMessage


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Fire ``kind`` for this attempt at ``due_ns`` (the shell emits the event)."""

    kind: Literal["retry", "timeout", "approval", "auction", "claim", "wait"]
    workflow_id: str
    task_id: str
    attempt: int
    due_ns: int


Command = Emit | Dispatch | ArmTimer


class _Folder:
    """One fold step: the state, the triggering event and the commands so far."""

    def __init__(self, state: WorkflowState, event: Event, source: str) -> None:
        self.state = state
        self.event = event
        self.source = source
        self.commands: list[Command] = []

    def emit(
        self,
        event_type: EventType,
        data: Payload,
        *,
        key: str,
        task_id: str | None = None,
        attempt: int | None = None,
    ) -> VectorClock:
        state = self.state
        state.vclock = state.vclock.increment(COORDINATOR_NODE)
        self.commands.append(
            Emit(
                Event(
                    id=key,
                    type=event_type,
                    workflow_id=state.workflow_id,
                    source=self.source,
                    timestamp=self.event.timestamp,
                    vclock=state.vclock,
                    data=data,
                    task_id=task_id,
                    attempt=attempt,
                )
            )
        )
        return state.vclock

    def changed(self) -> None:
        self.state.version += 1

    # Decisions ----------------------------------------------------------
    def schedule(self, task_id: str, attempt: int) -> None:
        state = self.state
        spec = state.spec(task_id)
        task = state.tasks[task_id]
        if state.cancelling:  # (its task was cancelled with the workflow's)
            task.status, task.finished_at = TaskStatus.CANCELLED, self.event.timestamp
            return
        if state.paused:  # held: resuming the workflow dispatches it
            task.status = TaskStatus.PENDING
            task.deadline_ns = task.retry_due_ns = None
            task.note = "held: the workflow is paused"
            return
        if spec.approval is not None and spec.approval.required and task.gate is None:
            self.ask_gate(task_id, attempt)
            return
        auction = task.auction
        if spec.allocation == "auction" and (auction is None or auction.attempt != attempt):
            self.open_auction(task_id, attempt)
            return
        task.status = TaskStatus.SCHEDULED
        task.attempts = attempt
        task.scheduled_at = self.event.timestamp
        task.started_at = task.finished_at = task.deadline_ns = task.retry_due_ns = None
        task.worker = task.agent = task.instance = task.note = None
        task.claimed_by = task.alive_ns = None
        clock = self.emit(
            EventType.TASK_SCHEDULED,
            TaskScheduled(capability=spec.capability),
            key=task_key(state.workflow_id, task_id, attempt, "scheduled"),
            task_id=task_id,
            attempt=attempt,
        )
        task.dispatch_coord = clock.get(COORDINATOR_NODE)
        if spec.wait is not None:  # the coordinator waits itself, no worker
            self.start_wait(task_id, attempt)
            return
        if spec.workflow is not None:  # a child workflow runs it, not a worker
            submission = children.start(
                state,
                task_id,
                attempt,
                clock,
                timestamp=self.event.timestamp,
                source=self.source,
                nonce=self.event.seq or self.event.timestamp,
            )
            self.commands.append(Emit(submission))
            return
        self.commands.append(Dispatch(self.message(task_id, attempt, clock)))

    def start_wait(self, task_id: str, attempt: int) -> None:
        """A ``wait:`` node became ready: take a kept signal, or arm its timer."""
        state, task, wait = self.state, self.state.tasks[task_id], self.state.spec(task_id).wait
        assert wait is not None
        task.status, task.started_at = TaskStatus.WAITING, self.event.timestamp
        if wait.signal is not None:
            for index, kept in enumerate(state.signals):
                if kept.name == wait.signal and kept.task in (None, task_id):
                    del state.signals[index]
                    self.complete_wait(task_id, kept.data)
                    return
        # The server's time of the event that made it ready, not the sender's
        # claim (a worker's completion stamped 1970 would end a 2 h wait at once).
        event = self.event
        ready = event.stored_ns if event.stored_ns is not None else event.timestamp
        due = wait.due_ns(ready)
        longest = ready + int(MAX_WAIT_S * 1e9)
        task.deadline_ns = None if due is None else _capped(max(min(due, longest), 0))
        task.note = f"waiting {wait.describe()}"
        if task.deadline_ns is not None:
            self.commands.append(
                ArmTimer("wait", state.workflow_id, task_id, attempt, task.deadline_ns)
            )

    def complete_wait(self, task_id: str, result: Any) -> None:
        """A ``wait:`` node is done: it completes with ``result`` (stored as a
        ``task.completed`` from the coordinator, for readers)."""
        state, task = self.state, self.state.tasks[task_id]
        task.status, task.result, task.error = TaskStatus.COMPLETED, result, None
        task.finished_at, task.deadline_ns, task.note = self.event.timestamp, None, None
        self.emit(
            EventType.TASK_COMPLETED,
            TaskCompleted(result=result),
            key=task_key(state.workflow_id, task_id, task.attempts, "completed"),
            task_id=task_id,
            attempt=task.attempts,
        )
        self.changed()
        self.finish_task(task_id)

    def message(self, task_id: str, attempt: int, clock: VectorClock) -> TaskMessage:
        """The task message of one attempt (to its winner when it was auctioned)."""
        state, spec, task = self.state, self.state.spec(task_id), self.state.tasks[task_id]
        assert state.definition is not None
        return TaskMessage(
            workflow_id=state.workflow_id,
            task_id=task_id,
            attempt=attempt,
            capability=spec.capability,
            params=spec.params,
            inputs={dep: state.tasks[dep].result for dep in spec.depends_on},
            workflow_input=state.input,
            timeout_s=state.definition.timeout_of(spec),
            heartbeat_s=spec.heartbeat_timeout_s / 3 if spec.heartbeat_timeout_s else None,
            vclock=clock,
            source=self.source,
            route=state.route,
            recorded=state.recorded.get(task_id, {}).get(attempt, []),
            replay=state.replay,
            approval=task.gate,
            approvals=list(task.approvals),
            feedback=list(state.feedback),
            traceparent=state.traceparent,
            direct=_direct_to(task, attempt),
            version=state.versions.get(spec.capability),
        )

    def open_auction(self, task_id: str, attempt: int) -> None:
        """Announce an auctioned task to its capability's agents; bids until the timer."""
        state, spec, task = self.state, self.state.spec(task_id), self.state.tasks[task_id]
        policy, now = spec.auction_policy, self.event.timestamp
        task.status, task.attempts, task.scheduled_at = TaskStatus.AUCTION, attempt, now
        task.started_at = task.finished_at = task.deadline_ns = task.retry_due_ns = None
        task.worker = task.agent = task.instance = None
        task.auction = AuctionState(
            attempt=attempt,
            opened_at=now,
            due_ns=_capped(now + int(policy.window_s * 1e9)),
            claim_timeout_s=policy.claim_timeout_s,
        )
        task.note = f"auction: bids until {policy.window_s:g}s after the call"
        queue = task_queue(state, spec.capability)
        self.emit(
            EventType.TASK_AUCTION_OPENED,
            TaskAuctionOpened(
                capability=spec.capability,
                queue=queue,
                window_s=policy.window_s,
                due_ns=task.auction.due_ns,
                claim_timeout_s=policy.claim_timeout_s,
                params=spec.params,
            ),
            key=task_key(state.workflow_id, task_id, attempt, "auction_opened"),
            task_id=task_id,
            attempt=attempt,
        )
        self.commands.append(
            ArmTimer("auction", state.workflow_id, task_id, attempt, task.auction.due_ns)
        )

    def ask_gate(self, task_id: str, attempt: int) -> None:
        """The task's approval gate: wait for a person before dispatching it."""
        state, spec = self.state, self.state.spec(task_id)
        gate = spec.approval
        assert gate is not None
        reason = gate.reason or f"approve task {task_id!r} ({spec.capability}) before it runs"
        data = {
            "params": spec.params,
            "inputs": {d: state.tasks[d].result for d in spec.depends_on},
        }
        self.emit(
            EventType.TASK_APPROVAL_REQUESTED,
            TaskApprovalRequested(
                reason=reason,
                data=data,
                gate=True,
                timeout_s=gate.timeout_s,
                on_timeout=gate.on_timeout,
            ),
            key=task_key(state.workflow_id, task_id, attempt, "approval_requested:gate"),
            task_id=task_id,
            attempt=attempt,
        )
        self.wait_for_approval(
            task_id,
            PendingApproval(
                reason=reason,
                data=data,
                gate=True,
                requested_at=self.event.timestamp,
                due_ns=_due(self.event.timestamp, gate.timeout_s),
                on_timeout=gate.on_timeout,
            ),
        )

    def wait_for_approval(self, task_id: str, waiting: PendingApproval) -> None:
        task = self.state.tasks[task_id]
        if self.state.cancelling:  # nobody will be asked: the workflow is being cancelled
            task.status, task.finished_at = TaskStatus.CANCELLED, self.event.timestamp
            self.end_cancelled()
            return
        task.status = TaskStatus.WAITING_APPROVAL
        task.waiting = waiting
        task.deadline_ns = task.retry_due_ns = None
        task.note = f"waiting for approval: {waiting.reason}"
        if waiting.due_ns is not None:
            self.commands.append(
                ArmTimer("approval", self.state.workflow_id, task_id, task.attempts, waiting.due_ns)
            )

    def decide(self, task_id: str, decision: ApprovalDecision) -> None:
        """Apply a decision to the task's pending approval; the task runs again
        (a rejected gate fails it instead)."""
        state, task = self.state, self.state.tasks[task_id]
        waiting = task.waiting
        assert waiting is not None
        task.waiting, task.note = None, None
        self.emit(
            EventType.TASK_APPROVAL_DECIDED,
            TaskApprovalDecided(index=waiting.index, decision=decision),
            key=task_key(
                state.workflow_id,
                task_id,
                task.attempts,
                "approval_decided:gate" if waiting.gate else f"approval_decided:{waiting.index}",
            ),
            task_id=task_id,
            attempt=task.attempts,
        )
        self.changed()
        if not waiting.gate:
            task.approvals.append(decision)
            task.attempt_base += 1  # waiting for a person is not a retry
            self.schedule(task_id, task.attempts + 1)
            return
        task.gate = decision
        if decision.approved:
            self.schedule(task_id, task.attempts + 1)
            return
        who = "its timeout" if decision.timed_out else (decision.by or "someone")
        comment = f": {decision.comment}" if decision.comment else ""
        self.fail_task_for_good(
            task_id,
            ErrorInfo(
                type="ApprovalRejectedError",
                message=f"approval rejected by {who}{comment}",
                code="approval_rejected",
                retryable=False,
            ),
        )

    def end_cancelled(self) -> None:
        """A cancelled workflow ends once none of its tasks runs any more."""
        state = self.state
        if any(t.status == TaskStatus.RUNNING for t in state.tasks.values()):
            return
        now = self.event.timestamp
        for task in state.tasks.values():
            if task.status not in TERMINAL_TASK:
                task.status, task.finished_at = TaskStatus.CANCELLED, now
                task.waiting, task.deadline_ns, task.retry_due_ns = None, None, None
        state.status = WorkflowStatus.CANCELLED
        state.finished_at = now
        done = [tid for tid, t in state.tasks.items() if t.status == TaskStatus.COMPLETED]
        if state.definition is not None:
            state.output = {
                tid: state.tasks[tid].result
                for tid in sinks(state.definition)
                if state.tasks[tid].status == TaskStatus.COMPLETED
            }
        self.emit(
            EventType.WORKFLOW_CANCELLED,
            WorkflowCancelled(
                reason=state.reason or "cancelled",
                by=state.cancelled_by or "",
                cancelled=[t for t, v in state.tasks.items() if v.status == TaskStatus.CANCELLED],
                completed=done,
            ),
            key=workflow_key(state.workflow_id, "cancelled"),
        )

    def fail_task_for_good(self, task_id: str, error: ErrorInfo) -> None:
        task = self.state.tasks[task_id]
        task.status = TaskStatus.FAILED
        task.error = error
        task.finished_at = self.event.timestamp
        self.fail_workflow(task_id, error)

    def finish_task(self, task_id: str) -> None:
        """A task is done (completed or skipped): release its dependents."""
        state = self.state
        state.completed += 1
        if state.cancelling:
            self.end_cancelled()
            return
        for dependent in state.dependents(task_id):
            child = state.tasks[dependent]
            child.remaining_deps -= 1
            if child.remaining_deps == 0 and child.status == TaskStatus.PENDING:
                self.schedule(dependent, child.attempts + 1)
        if state.completed == len(state.tasks):
            self.complete_workflow()

    def complete_workflow(self) -> None:
        state = self.state
        assert state.definition is not None
        state.status = WorkflowStatus.COMPLETED
        state.finished_at = self.event.timestamp
        state.output = {task_id: state.tasks[task_id].result for task_id in sinks(state.definition)}
        self.emit(
            EventType.WORKFLOW_COMPLETED,
            WorkflowCompleted(output=state.output),
            key=workflow_key(state.workflow_id, "completed"),
        )

    def fail_workflow(self, task_id: str, error: ErrorInfo) -> None:
        state = self.state
        if state.cancelling:  # the failure is the task's; the workflow ends cancelled
            if error.code in _CANCELLED_CODES:
                state.tasks[task_id].status = TaskStatus.CANCELLED
            self.end_cancelled()
            return
        state.status = WorkflowStatus.FAILED
        state.finished_at = self.event.timestamp
        state.failed_task = task_id
        state.reason = f"task {task_id!r} failed: {error.type}: {error.message}"
        for other in state.tasks.values():
            if other.status not in TERMINAL_TASK:
                other.status = TaskStatus.CANCELLED
                other.finished_at = self.event.timestamp
        self.emit(
            EventType.WORKFLOW_FAILED,
            WorkflowFailed(reason=state.reason, task_id=task_id, error=error),
            key=workflow_key(state.workflow_id, "failed"),
        )

    def task_failed(self, task_id: str, attempt: int, error: ErrorInfo) -> None:
        state = self.state
        assert state.definition is not None
        spec = state.spec(task_id)
        task = state.tasks[task_id]
        policy = state.definition.retry_of(spec)
        task.error = error
        retryable = error.retryable and error.type not in policy.non_retryable
        tries = attempt - task.attempt_base
        if retryable and tries < policy.max_attempts and not state.cancelling:
            delay = policy.delay_s(tries)
            due = _capped(_sent_at(self.event) + int(delay * 1e9))
            task.status = TaskStatus.RETRY_WAIT
            task.retry_due_ns = due
            task.deadline_ns = None
            self.emit(
                EventType.TASK_RETRY_SCHEDULED,
                TaskRetryScheduled(next_attempt=attempt + 1, delay_s=delay, due_ns=due),
                key=task_key(state.workflow_id, task_id, attempt, "retry_scheduled"),
                task_id=task_id,
                attempt=attempt,
            )
            self.commands.append(ArmTimer("retry", state.workflow_id, task_id, attempt, due))
            return
        task.status = TaskStatus.FAILED
        task.finished_at = self.event.timestamp
        if not retryable:
            why = "not retryable"
        else:
            why = f"gave up after {tries} attempt{'s' if tries > 1 else ''}"
        error = error.model_copy(update={"message": f"{error.message} ({why})"})
        task.error = error
        self.fail_workflow(task_id, error)


def reduce(
    state: WorkflowState | None,
    event: Event,
    *,
    source: str = COORDINATOR_NODE,
    rules: Rules = REPLAY_RULES,
) -> tuple[WorkflowState | None, list[Command]]:
    """Admit, then fold, one event: what replay and tests run. An event that
    admission ignores or refuses (see :mod:`agenticflow.coordinator.admission`) changes
    nothing and issues no command. The coordinator calls :func:`admit` itself
    (it records refusals), then :func:`apply`."""
    if isinstance(admit(state, event, rules), Ignore | Refuse):
        return state, []
    return apply(state, event, source=source)


def apply(
    state: WorkflowState | None, event: Event, *, source: str = COORDINATOR_NODE
) -> tuple[WorkflowState | None, list[Command]]:
    """Fold one admitted event; returns the new state and the commands to execute
    (see :func:`_reduce`), with what its child workflows and its parent must be
    told (see :mod:`agenticflow.coordinator.children`)."""
    state, commands = _reduce(state, event, source=source)
    if state is not None and (state.parent is not None or state.children):
        emitted = [command.event for command in commands if isinstance(command, Emit)]
        told = children.follow_up(state, event, emitted, state.vclock.get(COORDINATOR_NODE))
        commands.extend(Emit(e) for e in told)
    return state, commands


def _reduce(
    state: WorkflowState | None, event: Event, *, source: str = COORDINATOR_NODE
) -> tuple[WorkflowState | None, list[Command]]:
    """Fold one event; returns the new state and the commands to execute.

    ``source`` is the node id stamped on emitted events (it does not affect
    state). Every event's clock is merged and ``last_seq`` advanced; events
    that do not apply (duplicates, stale attempts, events of an unknown
    workflow) change nothing else, do not bump ``version`` and issue no
    commands.
    """
    if event.type in NOT_FOLDED:
        return state, []  # a record for people (agent moves, tool audit), not state
    if state is None:
        return _start(event, source)
    if event.seq is not None:
        state.last_seq = max(state.last_seq, event.seq)
    state.vclock = state.vclock.merge(event.vclock)
    folder = _Folder(state, event, source)
    if event.type == EventType.WORKFLOW_RESUME_REQUESTED:
        _on_resume(folder)
        return state, folder.commands
    if event.type == EventType.INTERVENTION_REQUESTED:
        _on_intervention(folder)
        return state, folder.commands
    if state.status != WorkflowStatus.RUNNING or event.task_id not in state.tasks:
        return state, []
    task = state.tasks[event.task_id]
    handler = _TASK_HANDLERS.get(event.type)
    if handler is not None:
        handler(folder, event.task_id, task)
    return state, folder.commands


def _start(event: Event, source: str) -> tuple[WorkflowState | None, list[Command]]:
    if event.type == EventType.WORKFLOW_REJECTED and isinstance(event.data, WorkflowRejected):
        # A submission the coordinator could not even decode: record the rejection.
        state = WorkflowState(
            workflow_id=event.workflow_id,
            status=WorkflowStatus.REJECTED,
            reason=event.data.reason,
            problems=event.data.problems,
            vclock=event.vclock,
            created_at=event.timestamp,
            finished_at=event.timestamp,
            last_seq=event.seq or 0,
            version=1,
        )
        return state, []
    if event.type != EventType.WORKFLOW_SUBMITTED or not isinstance(event.data, WorkflowSubmitted):
        return None, []
    submitted = event.data
    definition = submitted.definition
    state = WorkflowState(
        workflow_id=event.workflow_id,
        definition=definition,
        input={**definition.input, **submitted.input},
        vclock=event.vclock,
        created_at=event.timestamp,
        last_seq=event.seq or 0,
        version=1,
        origin=submitted.origin,
        route=submitted.route,
        versions=submitted.versions,
        recorded=submitted.recorded,
        replay=submitted.replay,
        traceparent=submitted.traceparent,
        parent=submitted.parent,
    )
    folder = _Folder(state, event, source)
    problems = graph_problems(definition) or _reuse_problems(submitted)
    if problems:
        state.status = WorkflowStatus.REJECTED
        state.finished_at = event.timestamp
        state.problems = problems
        state.reason = "invalid workflow graph: " + "; ".join(problems)
        folder.emit(
            EventType.WORKFLOW_REJECTED,
            WorkflowRejected(reason=state.reason, problems=problems),
            key=workflow_key(state.workflow_id, "rejected"),
        )
        return state, folder.commands
    state.tasks = {
        spec.id: TaskState(capability=spec.capability, remaining_deps=len(spec.depends_on))
        for spec in definition.tasks
    }
    folder.emit(
        EventType.WORKFLOW_STARTED,
        WorkflowStarted(tasks=len(definition.tasks)),
        key=workflow_key(state.workflow_id, "started"),
    )
    if submitted.reuse:
        _reuse(folder, submitted)
    for spec in definition.tasks:
        if not spec.depends_on and state.tasks[spec.id].status == TaskStatus.PENDING:
            folder.schedule(spec.id, 1)
    return state, folder.commands


def _reuse_problems(submitted: WorkflowSubmitted) -> list[str]:
    """A fork may reuse results only of its own tasks, each with its dependencies'."""
    specs = {spec.id: spec for spec in submitted.definition.tasks}
    problems = [
        f"reused task {task_id!r} is not in the workflow"
        for task_id in submitted.reuse
        if task_id not in specs
    ]
    for task_id in submitted.reuse:
        missing = (
            [dep for dep in specs[task_id].depends_on if dep not in submitted.reuse]
            if task_id in specs
            else []
        )
        if missing:
            problems.append(
                f"reused task {task_id!r} depends on {', '.join(map(repr, missing))}, "
                "which would run again: reuse those too or none"
            )
    if submitted.route is not None and not ROUTE_RE.match(submitted.route):
        problems.append(f"route {submitted.route!r} must be 1-32 letters, digits, '_' or '-'")
    problems += [
        f"version {version!r} of capability {capability!r} must be 1-16 letters, digits, '_' or '-'"
        for capability, version in submitted.versions.items()
        if not VERSION_RE.match(version) or not ID_RE.match(capability)
    ]
    return problems


def task_queue(state: WorkflowState, capability: str) -> str:
    """The queue a task of ``capability`` travels on in this workflow."""
    return queue_of(capability, state.route, state.versions.get(capability))


def _reuse(folder: _Folder, submitted: WorkflowSubmitted) -> None:
    """Take a fork's reused results as completed; their dependents become ready."""
    state = folder.state
    origin = submitted.origin
    note = f"reused from {origin.workflow_id}" if origin else "reused"
    if origin and origin.at_seq is not None:
        note += f" (up to seq {origin.at_seq})"
    for task_id, result in submitted.reuse.items():
        task = state.tasks[task_id]
        task.status, task.result, task.note = TaskStatus.COMPLETED, result, note
        task.finished_at = folder.event.timestamp
    for spec in state.definition.tasks if state.definition else ():
        if spec.id in submitted.reuse:
            folder.finish_task(spec.id)


def _on_resume(folder: _Folder) -> None:
    """Re-open a failed workflow (or re-run a finished one from a task)."""
    state, event = folder.state, folder.event
    data = event.data
    if not isinstance(data, WorkflowResumeRequested) or state.definition is None:
        return
    from_task = data.from_task
    if from_task is not None and from_task not in state.tasks:
        return
    if state.status not in (WorkflowStatus.FAILED, WorkflowStatus.COMPLETED) or (
        state.status == WorkflowStatus.COMPLETED and from_task is None
    ):
        return
    rerun = {task_id for task_id, task in state.tasks.items() if task.status not in DONE_TASK}
    if from_task is not None:
        stack = [from_task]
        while stack:
            current = stack.pop()
            if current not in rerun or current == from_task:
                rerun.add(current)
                stack.extend(state.dependents(current))
    for task_id in rerun:
        task = state.tasks[task_id]
        if task.status in DONE_TASK:
            state.completed -= 1
        if task.gate is not None and not task.gate.approved:
            task.gate = None  # a rejected gate is asked again, never run past
        task.status = TaskStatus.PENDING
        task.attempt_base = task.attempts
        task.result = task.error = task.note = None
        task.started_at = task.finished_at = task.deadline_ns = task.retry_due_ns = None
    for task_id in rerun:
        spec = state.spec(task_id)
        state.tasks[task_id].remaining_deps = sum(
            1 for dep in spec.depends_on if state.tasks[dep].status not in DONE_TASK
        )
    state.status = WorkflowStatus.RUNNING
    state.reason = state.failed_task = state.finished_at = None
    state.output = {}
    state.resumes += 1
    folder.changed()
    ordered = [spec.id for spec in state.definition.tasks if spec.id in rerun]
    folder.emit(
        EventType.WORKFLOW_RESUMED,
        WorkflowResumed(tasks=ordered),
        key=workflow_key(state.workflow_id, f"resumed:{state.resumes}"),
    )
    for task_id in ordered:
        task = state.tasks[task_id]
        if task.remaining_deps == 0:
            folder.schedule(task_id, task.attempts + 1)


def _on_dead_lettered(folder: _Folder, task_id: str, task: TaskState) -> None:
    event, state = folder.event, folder.state
    data = event.data
    if (
        task.status not in ACTIVE_TASK
        or event.attempt != task.attempts
        or not isinstance(data, TaskDeadLettered)
    ):
        return
    folder.changed()
    if not state.spec(task_id).optional:
        error = ErrorInfo(
            type="DeadLetteredError", message=data.reason, code="dead_lettered", retryable=False
        )
        task.status = TaskStatus.FAILED
        task.error = error
        task.finished_at = event.timestamp
        folder.fail_workflow(task_id, error)
        return
    task.status = TaskStatus.SKIPPED
    task.note = f"skipped (optional): {data.reason}"
    task.finished_at = event.timestamp
    task.deadline_ns = None
    folder.finish_task(task_id)


def _on_started(folder: _Folder, task_id: str, task: TaskState) -> None:
    event, data = folder.event, folder.event.data
    if event.attempt != task.attempts or not isinstance(data, TaskStarted):
        return
    if task.status == TaskStatus.RUNNING:
        if event.signer is None or event.signer == task.claimed_by:
            return  # the same principal again (or no signatures: the first runner stays)
        # Redelivered to another principal (admission checked the claimant was silent).
        task.worker, task.agent, task.instance = data.worker, data.agent, data.instance
        task.claimed_by, task.alive_ns = event.signer, event.stored_ns
        folder.changed()
        return
    if task.status != TaskStatus.SCHEDULED:
        return
    task.status = TaskStatus.RUNNING
    task.started_at = _sent_at(event)
    task.worker, task.agent, task.note = data.worker, data.agent, None
    task.instance = data.instance
    task.claimed_by, task.alive_ns = event.signer, event.stored_ns
    _arm_deadline(folder, task_id, task)
    folder.changed()


def _arm_deadline(folder: _Folder, task_id: str, task: TaskState) -> None:
    """Deadline of a running attempt: its next heartbeat, capped by its timeout."""
    state, now = folder.state, _sent_at(folder.event)
    assert state.definition is not None
    spec = state.spec(task_id)
    deadlines = []
    timeout = state.definition.timeout_of(spec)
    if timeout is not None and task.started_at is not None:
        deadlines.append(task.started_at + int(timeout * 1e9) + TIMEOUT_GRACE_NS)
    if spec.heartbeat_timeout_s is not None:
        deadlines.append(now + int(spec.heartbeat_timeout_s * 1e9))
    if deadlines:
        task.deadline_ns = _capped(min(deadlines))
        folder.commands.append(
            ArmTimer("timeout", state.workflow_id, task_id, task.attempts, task.deadline_ns)
        )


def _on_heartbeat(folder: _Folder, task_id: str, task: TaskState) -> None:
    if task.status != TaskStatus.RUNNING or folder.event.attempt != task.attempts:
        return
    if folder.event.signer == task.claimed_by and folder.event.stored_ns is not None:
        task.alive_ns = folder.event.stored_ns
    if folder.state.spec(task_id).heartbeat_timeout_s is None:
        return
    _arm_deadline(folder, task_id, task)
    folder.changed()


def _on_completed(folder: _Folder, task_id: str, task: TaskState) -> None:
    # A success from any attempt since the last resume counts, once: the first to
    # arrive wins. Attempts from before a resume were given up on and are stale.
    event = folder.event
    if task.status in TERMINAL_TASK or task.status == TaskStatus.PENDING:
        return
    if event.attempt is not None and event.attempt <= task.attempt_base:
        return
    if not isinstance(event.data, TaskCompleted):
        return
    task.status = TaskStatus.COMPLETED
    task.result = event.data.result
    task.error = None
    task.finished_at = event.timestamp
    task.deadline_ns = task.retry_due_ns = None
    task.worker = event.data.worker or task.worker
    task.agent = event.data.agent or task.agent
    if task.started_at is None:
        task.started_at = event.timestamp
    folder.changed()
    folder.finish_task(task_id)


def _on_failed(folder: _Folder, task_id: str, task: TaskState) -> None:
    event = folder.event
    if (
        task.status not in ACTIVE_TASK
        or event.attempt != task.attempts
        or not isinstance(event.data, TaskFailed)
    ):
        return
    task.worker = event.data.worker or task.worker
    task.agent = event.data.agent or task.agent
    folder.changed()
    folder.task_failed(task_id, task.attempts, event.data.error)


def _on_timed_out(folder: _Folder, task_id: str, task: TaskState) -> None:
    event, data = folder.event, folder.event.data
    if task.status not in ACTIVE_TASK or event.attempt != task.attempts:
        return
    if not isinstance(data, TaskTimedOut):
        return
    if data.due_ns and (task.deadline_ns is None or data.due_ns < task.deadline_ns):
        return  # a heartbeat moved the deadline after this timer was armed
    if data.heartbeat:
        message = f"no heartbeat or outcome for {data.timeout_s:g}s: the worker vanished"
    else:
        message = f"no outcome within the task's timeout of {data.timeout_s:g}s"
    folder.changed()
    folder.task_failed(
        task_id,
        task.attempts,
        ErrorInfo(type="TaskTimeoutError", message=message, code="task_timeout", retryable=True),
    )


def _on_retry_due(folder: _Folder, task_id: str, task: TaskState) -> None:
    if task.status != TaskStatus.RETRY_WAIT or folder.event.attempt != task.attempts:
        return
    folder.changed()
    folder.schedule(task_id, task.attempts + 1)


def _on_wait_elapsed(folder: _Folder, task_id: str, task: TaskState) -> None:
    """A ``wait:`` node's time came: a timer completes, a signal wait times out."""
    event, data = folder.event, folder.event.data
    if (
        task.status != TaskStatus.WAITING
        or event.attempt != task.attempts
        or not isinstance(data, TaskWaitElapsed)
        or data.due_ns != task.deadline_ns
    ):
        return  # superseded: a signal came, or the workflow moved on
    wait = folder.state.spec(task_id).wait
    if wait is None:
        return
    folder.changed()
    if wait.signal is None:
        at = datetime.fromtimestamp(data.due_ns / 1e9, UTC).isoformat()
        folder.complete_wait(task_id, {"waited_until": at})
        return
    if wait.on_timeout == "continue":
        folder.complete_wait(task_id, None)
        return
    error = ErrorInfo(
        type="SignalTimeoutError",
        message=f"no signal {wait.signal!r} came within {wait.timeout_s or 0:g}s",
        code="signal_timeout",
        retryable=False,
    )
    task.deadline_ns = task.note = None
    folder.emit(
        EventType.TASK_FAILED,
        TaskFailed(error=error),
        key=task_key(folder.state.workflow_id, task_id, task.attempts, "failed"),
        task_id=task_id,
        attempt=task.attempts,
    )
    folder.task_failed(task_id, task.attempts, error)


def _on_unserved(folder: _Folder, task_id: str, task: TaskState) -> None:
    event = folder.event
    if task.status != TaskStatus.SCHEDULED or event.attempt != task.attempts:
        return
    capability = event.data.capability if isinstance(event.data, TaskUnserved) else "?"
    task.note = (
        f"no live worker serves capability {capability!r}; "
        "the task waits in its queue until one starts"
    )
    folder.changed()


def _due(now: int, timeout_s: float | None) -> int | None:
    return None if timeout_s is None else _capped(now + int(timeout_s * 1e9))


_LATEST_NS = 2**63 - 1
"""No deadline past this (the largest timestamp an event may carry)."""


def _capped(due_ns: int) -> int:
    return min(due_ns, _LATEST_NS)


def _sent_at(event: Event) -> int:
    """When a worker's event happened, for the deadlines it sets: its own
    timestamp, but never later than the server stored it (a runner cannot put
    its timeout or its approval's expiry off by claiming a time to come)."""
    if event.stored_ns is None:
        return event.timestamp
    return min(event.timestamp, event.stored_ns)


def _on_approval_requested(folder: _Folder, task_id: str, task: TaskState) -> None:
    """A handler asked for approval (``ctx.request_approval``): its attempt ended."""
    event, data = folder.event, folder.event.data
    if (
        task.status not in ACTIVE_TASK
        or event.attempt != task.attempts
        or not isinstance(data, TaskApprovalRequested)
        or data.gate
        or data.index != len(task.approvals)
    ):
        return  # a gate's own request coming back, a stale attempt, or a replayed index
    folder.changed()
    folder.wait_for_approval(
        task_id,
        PendingApproval(
            reason=data.reason,
            data=data.data,
            index=data.index,
            requested_at=event.timestamp,
            due_ns=_due(_sent_at(event), data.timeout_s),
            on_timeout=data.on_timeout,
        ),
    )


def _on_approval_expired(folder: _Folder, task_id: str, task: TaskState) -> None:
    data = folder.event.data
    waiting = task.waiting
    if (
        task.status != TaskStatus.WAITING_APPROVAL
        or waiting is None
        or not isinstance(data, TaskApprovalExpired)
        or waiting.due_ns != data.due_ns
    ):
        return
    if waiting.on_timeout == "fail":
        task.waiting = None
        folder.changed()
        waited = (data.due_ns - waiting.requested_at) / 1e9
        folder.fail_task_for_good(
            task_id,
            ErrorInfo(
                type="ApprovalTimeoutError",
                message=f"nobody decided the approval within {waited:g}s: {waiting.reason}",
                code="approval_timeout",
                retryable=False,
            ),
        )
        return
    folder.decide(
        task_id,
        ApprovalDecision(approved=waiting.on_timeout == "approve", by="timeout", timed_out=True),
    )


class _RefusedError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _on_intervention(folder: _Folder) -> None:
    """Apply a person's intervention, or refuse it with a reason (changing nothing)."""
    state, data = folder.state, folder.event.data
    if not isinstance(data, InterventionRequested):
        return
    key = f"intervention:{data.request_id}"
    try:
        summary, extra = _apply(folder, data)
    except _RefusedError as refused:
        folder.changed()
        folder.emit(
            EventType.INTERVENTION_REFUSED,
            InterventionRefused(
                request_id=data.request_id,
                action=data.action,
                reason=refused.reason,
                code=refused.code,
                by=data.by,
            ),
            key=workflow_key(state.workflow_id, f"{key}:refused"),
        )
        return
    state.interventions += 1
    folder.changed()
    folder.emit(
        EventType.INTERVENTION_APPLIED,
        InterventionApplied(
            request_id=data.request_id, action=data.action, by=data.by, summary=summary, **extra
        ),
        key=workflow_key(state.workflow_id, f"{key}:applied"),
    )
    if data.action in ("abort", "terminate"):
        return
    if data.action == "cancel":
        folder.end_cancelled()  # at once when nothing runs
        return
    if data.action in ("resume", "modify"):
        _dispatch_ready(folder)
    if state.status == WorkflowStatus.RUNNING and state.completed == len(state.tasks):
        folder.complete_workflow()  # a modification removed the last tasks left


_Outcome = tuple[str, dict[str, Any]]


def _apply(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state = folder.state
    if state.status != WorkflowStatus.RUNNING:
        raise _RefusedError(
            "workflow_finished",
            f"workflow {state.workflow_id!r} is {state.status.value}; "
            "interventions apply to running workflows only",
        )
    action = _ACTIONS.get(data.action)
    if action is None:
        raise _RefusedError("invalid", f"unknown intervention {data.action!r}")
    if state.cancelling and data.action not in _WHILE_CANCELLING:
        raise _RefusedError(
            "cancelling",
            f"workflow {state.workflow_id!r} is being cancelled: it accepts only "
            "terminate and feedback",
        )
    return action(folder, data)


def _pause(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state = folder.state
    if state.paused:
        raise _RefusedError("already_paused", f"workflow {state.workflow_id!r} is already paused")
    state.paused = True
    running = sum(1 for t in state.tasks.values() if t.status in ACTIVE_TASK)
    return f"paused: no new task is dispatched; {running} running or queued finish", {}


def _resume_paused(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state = folder.state
    if not state.paused:
        raise _RefusedError("not_paused", f"workflow {state.workflow_id!r} is not paused")
    state.paused = False
    held = sum(
        1 for t in state.tasks.values() if t.status == TaskStatus.PENDING and not t.remaining_deps
    )
    return f"resumed: {held} held task{'s' if held != 1 else ''} dispatched", {}


def _dispatch_ready(folder: _Folder) -> None:
    state = folder.state
    if state.paused or state.definition is None:
        return
    for spec in state.definition.tasks:
        task = state.tasks[spec.id]
        if task.status == TaskStatus.PENDING and task.remaining_deps == 0:
            folder.schedule(spec.id, task.attempts + 1)


def _abort(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state, now = folder.state, folder.event.timestamp
    cancelled = [tid for tid, t in state.tasks.items() if t.status not in TERMINAL_TASK]
    for task_id in cancelled:
        task = state.tasks[task_id]
        task.status, task.finished_at, task.waiting = TaskStatus.CANCELLED, now, None
        task.deadline_ns = task.retry_due_ns = None
    state.status = WorkflowStatus.ABORTED
    state.finished_at = now
    who = data.by or "someone"
    verb = "terminated" if data.action == "terminate" else "aborted"
    state.reason = f"{verb} by {who}" + (f": {data.reason}" if data.reason else "")
    folder.emit(
        EventType.WORKFLOW_ABORTED,
        WorkflowAborted(reason=state.reason, by=data.by, cancelled=cancelled),
        key=workflow_key(state.workflow_id, "aborted"),
    )
    return f"{verb}; {len(cancelled)} unfinished task(s) cancelled", {}


def _cancel(folder: _Folder, data: InterventionRequested) -> _Outcome:
    """Cooperative cancel: tasks not running are cancelled now (a queued message
    that a worker still picks up is not run, or its outcome is ignored); running
    ones finish or stop on ``ctx.cancelled``; see :meth:`_Folder.end_cancelled`."""
    state, now = folder.state, folder.event.timestamp
    if state.cancelling:
        raise _RefusedError(
            "already_cancelling", f"workflow {state.workflow_id!r} is already being cancelled"
        )
    state.cancelling, state.cancelled_by, state.paused = True, data.by, False
    who = data.by or "someone"
    state.reason = f"cancelled by {who}" + (f": {data.reason}" if data.reason else "")
    cancelled = [
        tid
        for tid, t in state.tasks.items()
        if t.status not in TERMINAL_TASK and t.status != TaskStatus.RUNNING
    ]
    for task_id in cancelled:
        task = state.tasks[task_id]
        task.status, task.finished_at, task.waiting = TaskStatus.CANCELLED, now, None
        task.deadline_ns = task.retry_due_ns = None
    running = sum(1 for t in state.tasks.values() if t.status == TaskStatus.RUNNING)
    summary = f"cancelling: {len(cancelled)} task(s) not started cancelled"
    if running:
        summary += f"; waiting for {running} running task(s) to finish or stop"
    return summary, {}


def _feedback(folder: _Folder, data: InterventionRequested) -> _Outcome:
    text = data.text.strip()
    if not text:
        raise _RefusedError("invalid", "feedback text is empty")
    folder.state.feedback.append(text)
    return "feedback sent to running and later tasks", {
        "text": text,
        "feedback": list(folder.state.feedback),
    }


def _decision(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state = folder.state
    task_id = data.task_id
    if not task_id:
        raise _RefusedError("invalid", f"{data.action} needs the task waiting for approval")
    task = state.tasks.get(task_id)
    if task is None:
        raise _RefusedError(
            "unknown_task", f"workflow {state.workflow_id!r} has no task {task_id!r}"
        )
    if task.status != TaskStatus.WAITING_APPROVAL or task.waiting is None:
        raise _RefusedError(
            "not_waiting",
            f"task {task_id!r} is {task.status.value}, not waiting for approval",
        )
    approved = data.action == "approve"
    folder.decide(task_id, ApprovalDecision(approved=approved, comment=data.reason, by=data.by))
    return f"task {task_id!r} {'approved' if approved else 'rejected'}", {}


def _signal(folder: _Folder, data: InterventionRequested) -> _Outcome:
    """A signal: completes the ``wait:`` nodes waiting for it, or is kept for
    the first one to become ready (refused when no unfinished node waits for it)."""
    state = folder.state
    name = data.signal
    if not name or not ID_RE.match(name):
        raise _RefusedError("invalid", "a signal needs a name of 1-64 letters, digits, '_' or '-'")
    assert state.definition is not None
    if len(pack(data.data)) > MAX_SIGNAL_BYTES:
        raise _RefusedError(
            "too_large", f"a signal's data may take {MAX_SIGNAL_BYTES // 1024} KiB at most"
        )
    expecting = [
        spec.id
        for spec in state.definition.tasks
        if spec.wait is not None
        and spec.wait.signal == name
        and state.tasks[spec.id].status not in TERMINAL_TASK
        and data.task_id in (None, spec.id)
    ]
    if not expecting:
        awaited = sorted(
            {
                f"{spec.wait.signal!r}"
                for spec in state.definition.tasks
                if spec.wait is not None
                and spec.wait.signal is not None
                and state.tasks[spec.id].status not in TERMINAL_TASK
            }
        )
        target = f" in task {data.task_id!r}" if data.task_id else ""
        raise _RefusedError(
            "no_waiting_task",
            f"no unfinished task of workflow {state.workflow_id!r} waits for signal {name!r}"
            + target
            + (f" (it waits for {', '.join(awaited)})" if awaited else ""),
        )
    waiting = [tid for tid in expecting if state.tasks[tid].status == TaskStatus.WAITING]
    if waiting:
        for task_id in waiting:
            folder.complete_wait(task_id, data.data)
        return f"signal {name!r} completed task(s) {', '.join(waiting)}", {}
    kept_bytes = sum(len(pack(kept.data)) for kept in state.signals)
    if len(state.signals) >= MAX_KEPT_SIGNALS or kept_bytes > MAX_KEPT_SIGNAL_BYTES:
        raise _RefusedError(
            "too_many_signals",
            f"workflow {state.workflow_id!r} keeps {MAX_KEPT_SIGNALS} signals for tasks "
            "not ready yet already",
        )
    state.signals.append(
        KeptSignal(
            name=name, data=data.data, by=data.by, at=folder.event.timestamp, task=data.task_id
        )
    )
    return f"signal {name!r} kept for task(s) {', '.join(expecting)} (not ready yet)", {}


def _modify(folder: _Folder, data: InterventionRequested) -> _Outcome:
    state = folder.state
    changes = data.changes
    if changes is None or not (changes.add or changes.remove or changes.replace or changes.params):
        raise _RefusedError("invalid_modification", "the modification changes nothing")
    assert state.definition is not None
    new_definition, touched = _modified(state, changes)
    for task_id in changes.remove:
        del state.tasks[task_id]
    state.definition = new_definition
    state.reset_indexes()
    for task_id in touched:
        old = state.tasks.get(task_id)
        state.tasks[task_id] = TaskState(
            capability=state.spec(task_id).capability, gate=old.gate if old else None
        )
    for task_id in touched:
        state.tasks[task_id].remaining_deps = sum(
            1 for dep in state.spec(task_id).depends_on if state.tasks[dep].status not in DONE_TASK
        )
    parts = [
        f"{what} {', '.join(ids)}"
        for what, ids in (
            ("added", [t.id for t in changes.add]),
            ("removed", changes.remove),
            ("replaced", [t.id for t in changes.replace]),
            ("changed params of", list(changes.params)),
        )
        if ids
    ]
    return "; ".join(parts), {}


def _modified(state: WorkflowState, changes: Modification) -> tuple[WorkflowDefinition, list[str]]:
    """The definition after ``changes`` and the tasks whose specs changed;
    raises _RefusedError when a change touches a started task or breaks the graph."""
    assert state.definition is not None
    problems: list[str] = []

    def not_started(task_id: str, what: str) -> bool:
        task = state.tasks.get(task_id)
        if task is None:
            problems.append(f"cannot {what} task {task_id!r}: the workflow has no such task")
            return False
        if task.status != TaskStatus.PENDING or task.attempts:
            problems.append(f"cannot {what} task {task_id!r}: it has started ({task.status.value})")
            return False
        return True

    removed = {t for t in changes.remove if not_started(t, "remove")}
    replaced = {spec.id: spec for spec in changes.replace if not_started(spec.id, "replace")}
    params = {t: p for t, p in changes.params.items() if not_started(t, "change params of")}
    problems.extend(
        f"cannot add task {spec.id!r}: the workflow has one already"
        for spec in changes.add
        if spec.id in state.tasks
    )
    overlap = removed & (set(replaced) | set(params))
    problems.extend(f"task {t!r} is both removed and changed" for t in sorted(overlap))
    if problems:
        raise _RefusedError("invalid_modification", "; ".join(problems))
    tasks: list[TaskSpec] = []
    for old in state.definition.tasks:
        if old.id in removed:
            continue
        spec = replaced.get(old.id, old)
        if spec.id in params:
            spec = spec.model_copy(update={"params": {**spec.params, **params[spec.id]}})
        tasks.append(spec)
    tasks.extend(changes.add)
    try:
        definition = WorkflowDefinition.model_validate(
            {**state.definition.model_dump(), "tasks": [t.model_dump() for t in tasks]}
        )
    except ValidationError as exc:
        raise _RefusedError(
            "invalid_modification", f"the modified workflow is invalid: {exc}"
        ) from exc
    graph = graph_problems(definition)
    if graph:
        raise _RefusedError(
            "invalid_modification", "the modified graph is invalid: " + "; ".join(graph)
        )
    touched = [*replaced, *params, *(t.id for t in changes.add)]
    return definition, list(dict.fromkeys(touched))


_ACTIONS = {
    "pause": _pause,
    "resume": _resume_paused,
    "cancel": _cancel,
    "terminate": _abort,
    "abort": _abort,
    "feedback": _feedback,
    "approve": _decision,
    "reject": _decision,
    "modify": _modify,
    "signal": _signal,
}


def _on_bid(folder: _Folder, task_id: str, task: TaskState) -> None:
    """Record a bid of the open auction (late, stale and repeated bids change nothing)."""
    event, data = folder.event, folder.event.data
    if task.status != TaskStatus.AUCTION or not isinstance(data, TaskBid):
        return
    bid = Bid(worker=data.worker, agent=data.agent, value=data.value, at=event.timestamp)
    if not accepts(task.auction, event.attempt, bid):
        return
    assert task.auction is not None
    task.auction.bids.append(bid)
    folder.changed()


def _on_auction_closed(folder: _Folder, task_id: str, task: TaskState) -> None:
    """The bidding window ended: award the task to the best bid, or to the shared queue."""
    auction, state = task.auction, folder.state
    if (
        task.status != TaskStatus.AUCTION
        or auction is None
        or folder.event.attempt != auction.attempt
        or not isinstance(folder.event.data, TaskAuctionClosed)
    ):
        return
    folder.changed()
    auction.closed = True
    if state.paused:  # held; resuming the workflow auctions a new attempt
        folder.schedule(task_id, auction.attempt)
        return
    winner = auction.winner = best(auction.bids)
    folder.emit(
        EventType.TASK_AWARDED,
        TaskAwarded(
            winner=winner.worker if winner else None,
            agent=winner.agent if winner else None,
            value=winner.value if winner else None,
            bids=len(auction.bids),
        ),
        key=task_key(state.workflow_id, task_id, auction.attempt, "awarded"),
        task_id=task_id,
        attempt=auction.attempt,
    )
    folder.schedule(task_id, auction.attempt)
    if winner is not None:  # (dispatched: a pause was handled above)
        auction.claim_due_ns = _capped(folder.event.timestamp + int(auction.claim_timeout_s * 1e9))
        task.note = f"awarded to {winner.worker} (bid {winner.value:g})"
        folder.commands.append(
            ArmTimer("claim", state.workflow_id, task_id, auction.attempt, auction.claim_due_ns)
        )


def _on_claim_expired(folder: _Folder, task_id: str, task: TaskState) -> None:
    """The winner did not start the task in time: send the same attempt to the shared
    queue (if the winner starts it after all, the first outcome counts, once)."""
    auction, data = task.auction, folder.event.data
    if (
        task.status != TaskStatus.SCHEDULED
        or auction is None
        or auction.direct_to is None
        or folder.event.attempt != auction.attempt
        or not isinstance(data, TaskClaimExpired)
        or data.due_ns != auction.claim_due_ns
    ):
        return
    folder.changed()
    auction.fell_back, auction.claim_due_ns = True, None
    task.note = f"{data.winner} did not start it within {data.claim_timeout_s:g}s: shared queue"
    message = folder.message(task_id, auction.attempt, folder.state.vclock)
    folder.commands.append(Dispatch(message))


def _direct_to(task: TaskState, attempt: int) -> str | None:
    """The worker an attempt's message goes to directly (None: the shared queue)."""
    auction = task.auction
    return auction.direct_to if auction is not None and auction.attempt == attempt else None


_TASK_HANDLERS = {
    EventType.TASK_BID: _on_bid,
    EventType.TASK_AUCTION_CLOSED: _on_auction_closed,
    EventType.TASK_CLAIM_EXPIRED: _on_claim_expired,
    EventType.TASK_APPROVAL_REQUESTED: _on_approval_requested,
    EventType.TASK_APPROVAL_EXPIRED: _on_approval_expired,
    EventType.TASK_STARTED: _on_started,
    EventType.TASK_COMPLETED: _on_completed,
    EventType.TASK_FAILED: _on_failed,
    EventType.TASK_TIMED_OUT: _on_timed_out,
    EventType.TASK_RETRY_DUE: _on_retry_due,
    EventType.TASK_UNSERVED: _on_unserved,
    EventType.TASK_DEAD_LETTERED: _on_dead_lettered,
    EventType.TASK_HEARTBEAT: _on_heartbeat,
    EventType.TASK_WAIT_ELAPSED: _on_wait_elapsed,
}


def fold(events: list[Event], *, source: str = COORDINATOR_NODE) -> WorkflowState | None:
    """Fold a workflow's whole event history (replay), through the same admission.

    What the coordinator refused by its configuration is skipped as it was: an
    intervention refused by policy (a refusal with code ``forbidden``) and every
    event it recorded as ``message.rejected`` (by stream sequence). The policy
    and limits are not part of the history; their verdicts are."""
    forbidden: set[str] = set()
    refused: set[int] = set()
    for e in events:
        data = e.data
        if e.signer_role not in (None, "coordinator"):
            continue  # only the coordinator's records of its refusals count
        if isinstance(data, InterventionRefused) and data.code in ADMISSION_CODES:
            if data.stream_seq is None:
                forbidden.add(data.request_id)  # recorded before refusals named the request
            elif e.seq is None or data.stream_seq < e.seq:
                refused.add(data.stream_seq)
        elif (
            isinstance(data, MessageRejected)
            and data.stream_seq is not None
            and (e.seq is None or data.stream_seq < e.seq)
            and e.id.startswith("rejected:")
            and f".evt.{e.workflow_id}." in data.subject
        ):
            refused.add(data.stream_seq)
    state: WorkflowState | None = None
    for event in events:
        if event.type in NOT_FOLDED or (event.seq is not None and event.seq in refused):
            continue
        if isinstance(event.data, InterventionRequested) and event.data.request_id in forbidden:
            continue
        state, _ = reduce(state, event, source=source)
    return state


def pending_timers(state: WorkflowState) -> list[ArmTimer]:
    """Timers a recovering shell must re-arm for this state."""
    timers: list[ArmTimer] = []
    if state.status != WorkflowStatus.RUNNING:
        return timers
    for task_id, task in state.tasks.items():
        if task.status == TaskStatus.RETRY_WAIT and task.retry_due_ns is not None:
            timers.append(
                ArmTimer("retry", state.workflow_id, task_id, task.attempts, task.retry_due_ns)
            )
        elif task.status == TaskStatus.RUNNING and task.deadline_ns is not None:
            timers.append(
                ArmTimer("timeout", state.workflow_id, task_id, task.attempts, task.deadline_ns)
            )
        elif (
            task.status == TaskStatus.WAITING_APPROVAL
            and task.waiting is not None
            and task.waiting.due_ns is not None
        ):
            timers.append(
                ArmTimer("approval", state.workflow_id, task_id, task.attempts, task.waiting.due_ns)
            )
        elif task.status == TaskStatus.WAITING and task.deadline_ns is not None:
            timers.append(
                ArmTimer("wait", state.workflow_id, task_id, task.attempts, task.deadline_ns)
            )
        elif task.status == TaskStatus.AUCTION and task.auction is not None:
            timers.append(
                ArmTimer("auction", state.workflow_id, task_id, task.attempts, task.auction.due_ns)
            )
        elif (
            task.status == TaskStatus.SCHEDULED
            and task.auction is not None
            and task.auction.claim_due_ns is not None
        ):
            due = task.auction.claim_due_ns
            timers.append(ArmTimer("claim", state.workflow_id, task_id, task.attempts, due))
    return timers


__all__ = [
    "COORDINATOR_NODE",
    "SHELL_NODE",
    "ArmTimer",
    "Command",
    "Dispatch",
    "Emit",
    "apply",
    "fold",
    "pending_timers",
    "reduce",
]

"""Child workflows: the reducer's decisions about a task that is a workflow.

Pure functions (no I/O, no clock reads) called by :mod:`agenticflow.coordinator.reducer`;
they return the events to publish, which the shell stores like any other
command, before it acks the event that caused them and before it saves the
snapshot. That is what makes the hierarchy exactly-once across crashes:

* **start**: when a ``workflow:`` task is ready, the parent publishes the
  child's ``workflow.submitted`` on the child's own subject, with a derived
  workflow id (:func:`agenticflow.shared.graph.hierarchy.child_workflow_id`) and the derived
  ``Nats-Msg-Id`` ``<child>:submitted``. A re-fold after a crash issues the
  same message (deduplicated) and a late duplicate is ignored by the child's
  reducer (the workflow exists).
* **outcome**: when the child reaches a terminal state, the fold that got it
  there also publishes the parent task's ``task.completed`` (the child's
  output) or ``task.failed`` (its reason), with a derived id of its own
  (``<parent>:<task>:<attempt>:child_completed``, never a worker's, so a
  report can take no worker outcome's place). If the coordinator dies before
  that is stored, the child's last event is redelivered and re-folded,
  issuing it again; the parent's reducer applies one outcome per attempt and
  ignores the rest.
* **interventions**: a parent that fails or is aborted aborts its running
  children; pausing, resuming or cancelling it pauses, resumes or cancels them
  (a paused parent starts no child: its tasks are held; a cancelled one waits
  for its cancelled children to end).

Clocks: the child's submission carries the parent's clock at dispatch, and
the outcome reported to the parent is that clock advanced in an entry named
after the child, so it dominates the task's ``task.scheduled`` in the parent's
history. A relayed intervention advances an entry named after the parent.
Neither touches the ``coord`` entry of the other workflow, whose own counter
must advance in its own stream.
"""

from __future__ import annotations

from collections.abc import Callable

from agenticflow.coordinator.state import ACTIVE_TASK, TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.errors import PayloadTooLargeError
from agenticflow.shared.graph.hierarchy import ParentLink, child_workflow_id
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    InterventionApplied,
    InterventionRequested,
    Payload,
    TaskCompleted,
    TaskFailed,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.vclock import VectorClock

CHILD_AGENT = "workflow"
"""The ``agent`` named in the outcome a child reports to its parent."""

_TERMINAL = frozenset(
    {
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_ABORTED,
        EventType.WORKFLOW_CANCELLED,
        EventType.WORKFLOW_REJECTED,
    }
)
_ENDING = frozenset({EventType.WORKFLOW_FAILED, EventType.WORKFLOW_ABORTED})
_RELAYED = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
"""Interventions a parent passes on to its running children (and how they read)."""
_FAILURES = {
    WorkflowStatus.FAILED: ("ChildWorkflowFailedError", "child_workflow_failed"),
    WorkflowStatus.ABORTED: ("ChildWorkflowAbortedError", "child_workflow_aborted"),
    WorkflowStatus.CANCELLED: ("ChildWorkflowCancelledError", "child_workflow_cancelled"),
    WorkflowStatus.REJECTED: ("ChildWorkflowRejectedError", "child_workflow_rejected"),
}


def start(
    state: WorkflowState,
    task_id: str,
    attempt: int,
    clock: VectorClock,
    *,
    timestamp: int,
    source: str,
    nonce: int = 0,
) -> Event:
    """Mark the task as running its child; returns the child's submission.

    The child's input is the parent's workflow input, then the task's params,
    then ``inputs``: the results of the task's dependencies by task id.
    """
    spec = state.spec(task_id)
    assert spec.workflow is not None
    child_id = child_workflow_id(state.workflow_id, task_id, attempt)
    task = state.tasks[task_id]
    task.status = TaskStatus.RUNNING
    task.started_at = timestamp
    task.child = child_id
    state.children[task_id] = child_id
    inputs = {dep: state.tasks[dep].result for dep in spec.depends_on}
    return Event(
        # Not the id a client's submission of that workflow id has: one taken
        # first must not swallow this start as a duplicate (the start is then
        # refused, and the task fails: see id_taken). The nonce, the stream
        # sequence of the event that made the task ready, is the same on replay.
        id=workflow_key(child_id, f"child_submitted:{nonce}"),
        type=EventType.WORKFLOW_SUBMITTED,
        workflow_id=child_id,
        source=source,
        timestamp=timestamp,
        vclock=clock,
        data=WorkflowSubmitted(
            definition=spec.workflow,
            input={**state.input, **spec.params, "inputs": inputs},
            submitted_by=state.workflow_id,
            route=state.route,
            versions=state.versions,
            traceparent=state.traceparent,
            parent=ParentLink(
                workflow_id=state.workflow_id,
                task_id=task_id,
                attempt=attempt,
                vclock=clock,
                retryable=spec.retry is not None,
            ),
        ),
    )


def follow_up(
    state: WorkflowState, event: Event, emitted: list[Event], counter: int
) -> list[Event]:
    """Events for the parent and the children after folding ``event`` into
    ``state`` (which emitted ``emitted``); ``counter`` advances the clock entry
    of relayed interventions (strictly increasing over the parent's folds)."""
    if event.task_id is not None and event.task_id in state.children:
        task = state.tasks.get(event.task_id)
        if task is None or task.status not in ACTIVE_TASK:
            del state.children[event.task_id]  # its outcome arrived (or it was retried)
    out: list[Event] = []
    for own in emitted:
        if own.workflow_id != state.workflow_id:
            continue
        if own.type in _TERMINAL and state.parent is not None:
            out.append(_report(state, own.timestamp))
        if own.type in _ENDING and state.children:
            why = "failed" if own.type == EventType.WORKFLOW_FAILED else "was aborted"
            out.extend(_relay(state, "abort", f"its parent {why}: {state.reason}", own, counter))
            state.children.clear()
        elif (
            own.type == EventType.INTERVENTION_APPLIED
            and isinstance(own.data, InterventionApplied)
            and own.data.action in _RELAYED
            and state.children
        ):
            verb = _RELAYED[own.data.action]
            reason = f"its parent was {verb} by {own.data.by or 'someone'}"
            out.extend(_relay(state, own.data.action, reason, own, counter))
    return out


def _report(state: WorkflowState, timestamp: int) -> Event:
    """The parent task's outcome: this (child) workflow's output or failure."""
    link = state.parent
    assert link is not None
    data: Payload
    if state.status == WorkflowStatus.COMPLETED:
        event_type, what = EventType.TASK_COMPLETED, "child_completed"
        elapsed = ((state.finished_at or timestamp) - state.created_at) / 1e6
        data = TaskCompleted(
            result=dict(state.output), agent=CHILD_AGENT, duration_ms=max(elapsed, 0.0)
        )
    else:
        event_type, what = EventType.TASK_FAILED, "child_failed"
        error_type, code = _FAILURES.get(state.status, _FAILURES[WorkflowStatus.FAILED])
        data = TaskFailed(
            error=ErrorInfo(
                type=error_type,
                message=f"child workflow {state.workflow_id} {state.status.value}: {state.reason}",
                code=code,
                retryable=link.retryable and state.status == WorkflowStatus.FAILED,
            ),
            agent=CHILD_AGENT,
        )
    return Event(
        id=task_key(link.workflow_id, link.task_id, link.attempt, what),
        type=event_type,
        workflow_id=link.workflow_id,
        source=state.workflow_id,
        timestamp=timestamp,
        # Its own entry, advanced by a resume of the child: dominates the task's dispatch.
        vclock=link.vclock.merge({state.workflow_id: state.resumes + 1}),
        data=data,
        task_id=link.task_id,
        attempt=link.attempt,
    )


def _relay(
    state: WorkflowState, action: str, reason: str, cause: Event, counter: int
) -> list[Event]:
    """The intervention ``action`` sent to every running child."""
    request_id = f"parent-{action}-{counter}"
    return [
        Event(
            id=workflow_key(child_id, f"intervention:{request_id}"),
            type=EventType.INTERVENTION_REQUESTED,
            workflow_id=child_id,
            source=state.workflow_id,
            timestamp=cause.timestamp,
            vclock=VectorClock({state.workflow_id: counter}),
            data=InterventionRequested(
                request_id=request_id, action=action, by="coordinator", reason=reason
            ),
        )
        for child_id in state.children.values()
    ]


def too_large(event: Event, error: PayloadTooLargeError) -> Event | None:
    """For a child's submission too large to publish (its input is too big):
    the parent task's failure instead. None for any other event."""
    return _parent_fails(
        event,
        lambda _link: TaskFailed.for_good(
            type(error).__name__,
            error.code,
            f"the child workflow {event.workflow_id} cannot be started: {error}",
            worker="",
            agent=CHILD_AGENT,
        ),
    )


def id_taken(event: Event, reason: str) -> Event | None:
    """For a child's start refused because another workflow took its id: the
    parent task's failure (retried if the task has a retry policy: the next
    attempt's child has another id). None for any other event."""
    return _parent_fails(
        event,
        lambda link: TaskFailed(
            error=ErrorInfo(
                type="ChildWorkflowIdTakenError",
                message=f"the child workflow cannot start: {reason}",
                code="child_id_taken",
                retryable=link.retryable,
            ),
            agent=CHILD_AGENT,
        ),
    )


def _parent_fails(event: Event, failure: Callable[[ParentLink], TaskFailed]) -> Event | None:
    """The parent task's failure, told by the child that could not start."""
    data = event.data
    if not isinstance(data, WorkflowSubmitted) or data.parent is None:
        return None
    link = data.parent
    return Event(
        id=task_key(link.workflow_id, link.task_id, link.attempt, "child_failed"),
        type=EventType.TASK_FAILED,
        workflow_id=link.workflow_id,
        source=event.workflow_id,
        timestamp=event.timestamp,
        vclock=link.vclock.merge({event.workflow_id: 1}),
        data=failure(link),
        task_id=link.task_id,
        attempt=link.attempt,
    )


__all__ = ["CHILD_AGENT", "follow_up", "id_taken", "start", "too_large"]

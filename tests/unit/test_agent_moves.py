"""The agent moves the task events imply (they are not stored separately)."""

from __future__ import annotations

from typing import Any

from agenticflow.shared.wire.events import (
    AgentStateChanged,
    ErrorInfo,
    Event,
    EventType,
    Payload,
    TaskApprovalRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskTimedOut,
    agent_moves,
)
from agenticflow.shared.wire.vclock import VectorClock

INSTANCE = "w-1.writer.3"


def event(seq: int, kind: EventType, data: Payload, attempt: int = 1, **extra: Any) -> Event:
    return Event(
        id=f"e{seq}",
        type=kind,
        workflow_id="wf",
        source="w-1",
        timestamp=seq,
        vclock=VectorClock({"w-1": seq}),
        data=data,
        task_id="t",
        attempt=attempt,
        seq=seq,
        **extra,
    )


def moves(events: list[Event]) -> list[tuple[str, str, str, str]]:
    found = []
    for e in agent_moves(events):
        assert isinstance(e.data, AgentStateChanged)
        found.append((e.data.instance, e.data.from_state, e.data.to_state, e.data.trigger))
    return found


def test_each_outcome_implies_its_way_back_to_idle() -> None:
    started = TaskStarted(worker="w-1", agent="writer", instance=INSTANCE)
    failed = TaskFailed(error=ErrorInfo(type="X", message="m"), worker="w-1", instance=INSTANCE)
    asked = TaskApprovalRequested(reason="ok?", worker="w-1", instance=INSTANCE)
    done = TaskCompleted(result=1, worker="w-1", agent="writer", instance=INSTANCE)
    events = [
        event(1, EventType.TASK_STARTED, started),
        event(2, EventType.TASK_FAILED, failed),
        event(3, EventType.TASK_STARTED, started, attempt=2),
        event(4, EventType.TASK_APPROVAL_REQUESTED, asked, attempt=2),
        event(5, EventType.TASK_STARTED, started, attempt=3),
        event(6, EventType.TASK_COMPLETED, done, attempt=3),
    ]
    assert moves(events) == [
        (INSTANCE, "idle", "processing", "task_assigned"),
        (INSTANCE, "processing", "error", "task_failed"),
        (INSTANCE, "error", "idle", "error_resolved"),
        (INSTANCE, "idle", "processing", "task_assigned"),
        (INSTANCE, "processing", "waiting_approval", "approval_required"),
        (INSTANCE, "waiting_approval", "idle", "approval_deferred"),
        (INSTANCE, "idle", "processing", "task_assigned"),
        (INSTANCE, "processing", "idle", "task_completed"),
    ]
    derived = agent_moves(events)
    assert [e.seq for e in derived] == [1, 2, 2, 3, 4, 4, 5, 6]
    assert len({e.id for e in derived}) == len(derived)
    assert {e.data.agent for e in derived} == {"writer"}  # type: ignore[attr-defined]
    mixed = agent_moves(events, interleaved=True)
    assert [e.seq for e in mixed] == [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6]
    assert [e for e in mixed if e.type != EventType.AGENT_STATE_CHANGED] == events


def test_no_instance_no_move_and_stored_moves_are_not_doubled() -> None:
    # A timeout, or an outcome of a worker from before outcomes named the instance.
    old = TaskCompleted(result=1, worker="w-1", agent="writer")
    timed_out = TaskTimedOut(timeout_s=1.0)
    assert moves([event(1, EventType.TASK_COMPLETED, old)]) == []
    assert moves([event(1, EventType.TASK_TIMED_OUT, timed_out)]) == []
    stored = event(
        2,
        EventType.AGENT_STATE_CHANGED,
        AgentStateChanged(
            instance=INSTANCE,
            agent="writer",
            worker="w-1",
            from_state="processing",
            to_state="idle",
            trigger="task_completed",
            task_id="t",
        ),
    )
    done = TaskCompleted(result=1, worker="w-1", agent="writer", instance=INSTANCE)
    assert agent_moves([event(1, EventType.TASK_COMPLETED, done), stored]) == [stored]

"""The agent instance state machine: legal moves only, each one reported."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow.shared.errors import IllegalTransitionError
from agenticflow.worker.fsm import TRANSITIONS, AgentFSM, AgentState, Trigger


def test_a_task_moves_idle_processing_idle() -> None:
    fsm = AgentFSM("w.a.0")
    moves = [fsm.fire(Trigger.TASK_ASSIGNED), fsm.fire(Trigger.TASK_COMPLETED)]
    assert [(m.from_state, m.to_state) for m in moves] == [
        (AgentState.IDLE, AgentState.PROCESSING),
        (AgentState.PROCESSING, AgentState.IDLE),
    ]


def test_a_failure_passes_through_error_back_to_idle() -> None:
    fsm = AgentFSM("w.a.0")
    fsm.fire(Trigger.TASK_ASSIGNED)
    assert fsm.fire(Trigger.TASK_FAILED).to_state == AgentState.ERROR
    assert fsm.fire(Trigger.ERROR_RESOLVED).to_state == AgentState.IDLE


def test_approval_required_then_granted_or_deferred() -> None:
    fsm = AgentFSM("w.a.0")
    fsm.fire(Trigger.TASK_ASSIGNED)
    fsm.fire(Trigger.APPROVAL_REQUIRED)
    assert fsm.state == AgentState.WAITING_APPROVAL
    assert fsm.fire(Trigger.APPROVAL_GRANTED).to_state == AgentState.PROCESSING
    fsm.fire(Trigger.APPROVAL_REQUIRED)
    assert fsm.fire(Trigger.APPROVAL_DEFERRED).to_state == AgentState.IDLE


@pytest.mark.parametrize("state", [s for s in AgentState if s != AgentState.SUSPENDED])
def test_suspend_from_any_state_and_resume_to_idle(state: AgentState) -> None:
    fsm = AgentFSM("w.a.0", state)
    assert fsm.fire(Trigger.SUSPEND).to_state == AgentState.SUSPENDED
    assert fsm.fire(Trigger.RESUME).to_state == AgentState.IDLE


def test_an_illegal_move_raises_and_changes_nothing() -> None:
    fsm = AgentFSM("w.a.0")
    with pytest.raises(IllegalTransitionError, match="cannot 'task_completed' while 'idle'"):
        fsm.fire(Trigger.TASK_COMPLETED)
    assert fsm.state == AgentState.IDLE
    fsm.fire(Trigger.SUSPEND)
    with pytest.raises(IllegalTransitionError, match="allowed: resume"):
        fsm.fire(Trigger.TASK_ASSIGNED)


@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_any_sequence_follows_the_table_exactly(triggers: list[Trigger]) -> None:
    fsm = AgentFSM("w.a.0")
    for trigger in triggers:
        before = fsm.state
        expected = TRANSITIONS.get((before, trigger))
        assert fsm.can(trigger) == (expected is not None)
        if expected is None:
            with pytest.raises(IllegalTransitionError):
                fsm.fire(trigger)
            assert fsm.state == before
        else:
            move = fsm.fire(trigger)
            assert (move.from_state, move.to_state, move.trigger) == (before, expected, trigger)

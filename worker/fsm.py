"""The state machine of one agent instance.

::

    idle ──task_assigned──▶ processing ──task_completed──▶ idle
                             │  ▲    └──task_failed──▶ error ──error_resolved──▶ idle
          approval_required  ▼  │ approval_granted
                        waiting_approval ──approval_deferred──▶ idle
    any state ──suspend──▶ suspended ──resume──▶ idle

``approval_deferred`` is ours, not the seed's: a task waiting for a person
holds no worker slot, so once its request is recorded the instance is free
again; the task runs later (on any instance) with the decision.

The machine is pure: :meth:`AgentFSM.fire` returns the :class:`Transition` it
made (the worker publishes it as ``agent.state_changed``) or raises
:class:`~agenticflow.shared.errors.IllegalTransitionError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agenticflow.shared.errors import IllegalTransitionError


class AgentState(enum.StrEnum):
    """Where an agent instance is."""

    IDLE = "idle"
    PROCESSING = "processing"
    WAITING_APPROVAL = "waiting_approval"
    ERROR = "error"
    SUSPENDED = "suspended"


class Trigger(enum.StrEnum):
    """What moves an agent instance."""

    TASK_ASSIGNED = "task_assigned"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_DEFERRED = "approval_deferred"
    ERROR_RESOLVED = "error_resolved"
    SUSPEND = "suspend"
    RESUME = "resume"


S, T = AgentState, Trigger

TRANSITIONS: dict[tuple[AgentState, Trigger], AgentState] = {
    (S.IDLE, T.TASK_ASSIGNED): S.PROCESSING,
    (S.PROCESSING, T.TASK_COMPLETED): S.IDLE,
    (S.PROCESSING, T.TASK_FAILED): S.ERROR,
    (S.PROCESSING, T.APPROVAL_REQUIRED): S.WAITING_APPROVAL,
    (S.WAITING_APPROVAL, T.APPROVAL_GRANTED): S.PROCESSING,
    (S.WAITING_APPROVAL, T.APPROVAL_DEFERRED): S.IDLE,
    (S.ERROR, T.ERROR_RESOLVED): S.IDLE,
    (S.SUSPENDED, T.RESUME): S.IDLE,
    **{(state, T.SUSPEND): S.SUSPENDED for state in AgentState if state != S.SUSPENDED},
}
"""Every legal move: (from, trigger) -> to."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the machine."""

    from_state: AgentState
    to_state: AgentState
    trigger: Trigger


class AgentFSM:
    """The state of one agent instance, changed only through legal transitions."""

    def __init__(self, instance: str, state: AgentState = AgentState.IDLE) -> None:
        self.instance = instance
        self.state = state

    def can(self, trigger: Trigger) -> bool:
        """Whether ``trigger`` is legal now."""
        return (self.state, trigger) in TRANSITIONS

    def fire(self, trigger: Trigger) -> Transition:
        """Make the move; raises IllegalTransitionError naming state and trigger."""
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            allowed = sorted(t.value for (s, t) in TRANSITIONS if s == self.state)
            raise IllegalTransitionError(
                f"agent instance {self.instance!r} cannot {trigger.value!r} while "
                f"{self.state.value!r} (allowed: {', '.join(allowed)})"
            )
        move = Transition(self.state, target, trigger)
        self.state = target
        return move

    def __repr__(self) -> str:
        return f"AgentFSM({self.instance!r}, {self.state.value!r})"


__all__ = ["TRANSITIONS", "AgentFSM", "AgentState", "Transition", "Trigger"]

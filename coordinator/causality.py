"""Causality checks over a workflow's recorded events (DESIGN section 7).

Pure functions over the event list, used by the demo, the tests and replay.
"""

from __future__ import annotations

from agenticflow.coordinator.reducer import COORDINATOR_NODE, SHELL_NODE
from agenticflow.shared.wire.events import (
    FORBIDDEN,
    Event,
    EventType,
    InterventionRefused,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.vclock import Ordering

_SHELL_TYPES = frozenset(
    {
        EventType.TASK_RETRY_DUE,
        EventType.TASK_TIMED_OUT,
        EventType.TASK_UNSERVED,
        EventType.MESSAGE_REJECTED,
        EventType.TASK_AUCTION_CLOSED,
        EventType.TASK_CLAIM_EXPIRED,
        EventType.TASK_WAIT_ELAPSED,
    }
)
_OUTCOMES = frozenset({EventType.TASK_STARTED, EventType.TASK_COMPLETED, EventType.TASK_FAILED})


UNREADABLE = "unreadable:"
"""Id prefix of the ``message.rejected`` stand-in for a stored event that could
not be read (see :meth:`agenticflow.coordinator.client.Client.events`): no one published
it, so it has no clock to check."""


def clock_owner(event: Event) -> str:
    """The vector clock entry the publisher of ``event`` incremented."""
    if event.source in event.vclock:
        return event.source
    if event.type in _SHELL_TYPES or (
        isinstance(event.data, InterventionRefused) and event.data.code == FORBIDDEN
    ):  # the shell refuses by policy, before the reducer sees the request
        return SHELL_NODE
    return COORDINATOR_NODE


def causality_violations(events: list[Event]) -> list[str]:
    """Every causality rule the recorded events break (empty when all hold).

    Checks that each worker outcome dominates its ``task.scheduled``, that each
    dispatch dominates the completions of the task's dependencies, and that no
    node's own counter goes backwards in stream order.
    """
    problems: list[str] = []
    deps: dict[str, tuple[str, ...]] = {}
    for event in events:
        if isinstance(event.data, WorkflowSubmitted):
            deps = {task.id: task.depends_on for task in event.data.definition.tasks}
            break
    scheduled: dict[tuple[str, int], Event] = {}
    completed: dict[str, Event] = {}
    last: dict[str, tuple[int, Event]] = {}
    for event in (e for e in events if not e.id.startswith(UNREADABLE)):
        owner = clock_owner(event)
        counter = event.vclock.get(owner)
        if owner in last and counter <= last[owner][0]:
            problems.append(
                f"seq {event.seq} {event.type.value}: {owner}'s counter {counter} does not "
                f"advance past {last[owner][0]} (seq {last[owner][1].seq})"
            )
        last[owner] = (counter, event)
        key = (event.task_id or "", event.attempt or 0)
        if event.type == EventType.TASK_SCHEDULED:
            scheduled[key] = event
            for dep in deps.get(key[0], ()):
                done = completed.get(dep)
                if done is None:
                    problems.append(
                        f"seq {event.seq}: {key[0]} dispatched before dependency {dep} completed"
                    )
                elif event.vclock.compare(done.vclock) != Ordering.AFTER:
                    problems.append(
                        f"seq {event.seq}: dispatch of {key[0]} does not dominate the "
                        f"completion of {dep} (seq {done.seq})"
                    )
        elif event.type in _OUTCOMES:
            cause = scheduled.get(key)
            if cause is None:
                problems.append(f"seq {event.seq}: {event.type.value} of {key} was never scheduled")
            elif event.vclock.compare(cause.vclock) != Ordering.AFTER:
                problems.append(
                    f"seq {event.seq}: {event.type.value} of {key} does not dominate its "
                    f"task.scheduled (seq {cause.seq})"
                )
            if event.type == EventType.TASK_COMPLETED:
                completed.setdefault(key[0], event)
    return problems


__all__ = ["UNREADABLE", "causality_violations", "clock_owner"]

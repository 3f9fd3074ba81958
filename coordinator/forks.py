"""Forks and re-executions of a recorded workflow, and how two runs compare.

Pure functions over event lists (read by :meth:`agenticflow.coordinator.client.Client.events`):
:func:`recorded_effects` collects what a run's side effects returned, for
``agenticflow rerun``; :func:`first_divergence` names the first event where
two runs differ, for ``agenticflow diff``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agenticflow.coordinator.replay import first_difference
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    RecordedEffect,
    TaskEffectRecorded,
    WorkflowSubmitted,
)

IGNORED = frozenset(
    {
        EventType.TASK_HEARTBEAT,  # how often depends on how long a task took
        EventType.TASK_UNSERVED,  # whether a worker was up at that moment
        EventType.TASK_RETRY_DUE,  # follows task.retry_scheduled
    }
)
"""Event types that say when things happened, not what happened."""

VOLATILE = frozenset(
    {"worker", "agent", "instance", "duration_ms", "due_ns", "submitted_by", "replayed", "key"}
)
"""Payload fields that differ between two runs doing the same thing."""

_SUBMISSION_FIELDS = ("definition", "input")

_OUTCOMES = {
    EventType.TASK_COMPLETED: "task.outcome",
    EventType.TASK_FAILED: "task.outcome",
    EventType.WORKFLOW_COMPLETED: "workflow.outcome",
    EventType.WORKFLOW_FAILED: "workflow.outcome",
    EventType.WORKFLOW_REJECTED: "workflow.outcome",
}
"""Outcomes are matched with each other, so a diff says "failed here, completed there"."""


def recorded_effects(events: list[Event]) -> dict[str, dict[int, list[RecordedEffect]]]:
    """Every recorded side effect, by task and attempt, in call order (the first
    record of a call wins if it was recorded twice)."""
    found: dict[str, dict[int, dict[int, RecordedEffect]]] = {}
    for event in events:
        if not isinstance(event.data, TaskEffectRecorded) or event.task_id is None:
            continue
        calls = found.setdefault(event.task_id, {}).setdefault(event.attempt or 1, {})
        calls.setdefault(event.data.effect.call, event.data.effect)
    return {
        task_id: {attempt: [calls[i] for i in sorted(calls)] for attempt, calls in by.items()}
        for task_id, by in found.items()
    }


def reused_tasks(events: list[Event]) -> set[str]:
    """Tasks a fork took from its source instead of running them."""
    for event in events:
        if isinstance(event.data, WorkflowSubmitted):
            return set(event.data.reuse)
    return set()


Key = tuple[str, str | None, int | None, int]
"""(event type, task, attempt, occurrence): what an event is, whatever run it is in."""


def comparable(event: Event) -> dict[str, Any]:
    """The part of an event that two runs doing the same thing share."""
    data = event.data.model_dump(mode="json")
    if event.type == EventType.WORKFLOW_SUBMITTED:
        data = {name: data[name] for name in _SUBMISSION_FIELDS}
    stripped: dict[str, Any] = _strip(data)
    return stripped


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _keyed(events: list[Event], skip: set[str]) -> dict[Key, tuple[int, Event]]:
    seen: dict[tuple[str, str | None, int | None, int | None], int] = {}
    out: dict[Key, tuple[int, Event]] = {}
    for position, event in enumerate(events):
        if event.type in IGNORED or (event.task_id is not None and event.task_id in skip):
            continue
        call = event.data.effect.call if isinstance(event.data, TaskEffectRecorded) else None
        kind = _OUTCOMES.get(event.type, event.type.value)
        base = (kind, event.task_id, event.attempt, call)
        seen[base] = seen.get(base, -1) + 1
        occurrence = seen[base] if call is None else call
        out[(kind, event.task_id, event.attempt, occurrence)] = (position, event)
    return out


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where two runs first differ: the event on each side (None: missing there)."""

    left: Event | None
    right: Event | None
    why: str


def first_divergence(left: list[Event], right: list[Event]) -> Divergence | None:
    """The first event, in the order of either run, where the two runs differ;
    None when they did the same things.

    Events are matched by type, task, attempt and occurrence (stream order
    between concurrent tasks is not part of what a run did); timing events
    (:data:`IGNORED`) and fields (:data:`VOLATILE`) are left out, and so are
    the tasks either run reused from another instead of running them.
    """
    skip = reused_tasks(left) | reused_tasks(right)
    lefts, rights = _keyed(left, skip), _keyed(right, skip)
    found: list[tuple[int, Divergence]] = []
    for key, (position, event) in lefts.items():
        other = rights.get(key)
        if other is None:
            found.append((position, Divergence(event, None, "only in the first run")))
            continue
        why = (
            f"the first run has {event.type.value}, the second {other[1].type.value}"
            if event.type != other[1].type
            else first_difference(
                comparable(event), comparable(other[1]), sides=("first run", "second run")
            )
        )
        if why:
            found.append((min(position, other[0]), Divergence(event, other[1], why)))
    for key, (position, event) in rights.items():
        if key not in lefts:
            found.append((position, Divergence(None, event, "only in the second run")))
    return min(found, key=lambda item: item[0])[1] if found else None


__all__ = [
    "IGNORED",
    "VOLATILE",
    "Divergence",
    "comparable",
    "first_divergence",
    "recorded_effects",
    "reused_tasks",
]

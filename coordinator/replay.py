"""Replay a workflow from its recorded events: verify and time travel.

Pure functions over the event list (read from the stream by
:meth:`agenticflow.coordinator.client.Client.events`): the coordinator's own reducer
re-folds them, so what replay shows is what the coordinator decided.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from agenticflow.coordinator.causality import UNREADABLE, causality_violations
from agenticflow.coordinator.reducer import fold
from agenticflow.coordinator.state import WorkflowState
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    MessageRejected,
    TaskCompleted,
    TaskFailed,
)

BOOKKEEPING = {"version", "last_seq"}
"""Snapshot fields that are the live shell's bookkeeping, not workflow state."""


def state_until(events: list[Event], *, seq: int | None = None, at_ns: int | None = None) -> (
    WorkflowState | None
):  # fmt: skip
    """The workflow's state after the events up to stream sequence ``seq`` or up
    to time ``at_ns`` (both inclusive); None if it had not been submitted yet."""
    return fold(events_until(events, seq=seq, at_ns=at_ns))


def events_until(events: list[Event], *, seq: int | None = None, at_ns: int | None = None) -> (
    list[Event]
):  # fmt: skip
    """The events up to stream sequence ``seq`` or up to time ``at_ns`` (inclusive)."""
    return [
        e
        for e in events
        if (seq is None or (e.seq or 0) <= seq) and (at_ns is None or e.timestamp <= at_ns)
    ]


def parse_until(text: str) -> tuple[int | None, int | None]:
    """``--until``: a stream sequence (``1234``) or an ISO 8601 time
    (``2026-11-24T17:02:03.5Z``); returns ``(seq, at_ns)``. Raises ConfigError."""
    if text.isdigit():
        return int(text), None
    return None, int(
        _parse_time(text, "--until", "neither a stream sequence nor an ISO 8601 time").timestamp()
        * 1e9
    )


def _parse_time(text: str, option: str, expected: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} is {expected}") from exc
    if moment.tzinfo is None:
        raise ConfigError(f"{option} {text!r} needs a time zone (e.g. a trailing Z for UTC)")
    return moment


_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now_ns: int) -> datetime:
    """``--since``: an ISO 8601 time with a zone, or a span back from now
    (``90s``, ``15m``, ``2h``, ``1d``). Raises ConfigError."""
    ago = _AGO.match(text.strip())
    if ago:
        seconds = float(ago.group(1)) * _UNIT_S[ago.group(2)]
        try:
            return datetime.fromtimestamp(now_ns / 1e9 - seconds, tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise ConfigError(f"--since {text!r} reaches back too far") from exc
    return _parse_time(text, "--since", "neither an ISO 8601 time nor a span like 15m, 2h or 1d")


def first_difference(
    left: Any, right: Any, path: str = "", *, sides: tuple[str, str] = ("stream", "snapshot")
) -> str | None:
    """Where two plain structures (dicts, lists, scalars) first differ, or None;
    ``sides`` name the two in the message."""
    if isinstance(left, dict) and isinstance(right, dict):
        return _dict_difference(left, right, path, sides)
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        pairs = enumerate(zip(left, right, strict=True))
        found = (first_difference(a, b, f"{path}[{i}]", sides=sides) for i, (a, b) in pairs)
        return next((f for f in found if f), None)
    if left != right:
        return f"{path}: the {sides[0]} gives {left!r}, the {sides[1]} holds {right!r}"
    return None


def _dict_difference(
    left: dict[Any, Any], right: dict[Any, Any], path: str, sides: tuple[str, str]
) -> str | None:
    for key in sorted(set(left) | set(right), key=str):
        where = f"{path}.{key}" if path else str(key)
        if key not in left or key not in right:
            return f"{where}: only in the {sides[0] if key in left else sides[1]}"
        found = first_difference(left[key], right[key], where, sides=sides)
        if found:
            return found
    return None


def verify(events: list[Event], snapshot: WorkflowState | None) -> list[str]:
    """Every problem found (empty when all holds): the snapshot against a
    re-fold of the events it covers (snapshots are saved lazily, so later
    events are not held against it), then the causality rules."""
    problems: list[str] = []
    if snapshot is not None:
        refolded = state_until(events, seq=snapshot.last_seq)
        if refolded is None:
            problems.append(
                f"the snapshot covers up to seq {snapshot.last_seq}, but the stream holds "
                "no submission up to there"
            )
        else:
            found = first_difference(
                refolded.model_dump(mode="json", exclude=BOOKKEEPING),
                snapshot.model_dump(mode="json", exclude=BOOKKEEPING),
            )
            if found:
                problems.append(
                    f"the snapshot (up to seq {snapshot.last_seq}) is not a re-fold of the "
                    f"stream: {found}"
                )
    problems.extend(causality_violations(events))
    return problems


def reading_problems(events: list[Event], *, first_seq: int, deleted: list[int]) -> list[str]:
    """What replay could not read, each naming its stream sequence: unreadable
    events (skipped), a history whose beginning is gone, and messages deleted
    from the stream between the workflow's events. ``first_seq`` and
    ``deleted`` describe the stream (:meth:`agenticflow.shared.bus.transport.Bus.stream_holes`)."""
    problems = [
        f"seq {e.seq}: unreadable event, skipped: {e.data.reason}"
        for e in events
        if e.id.startswith(UNREADABLE) and isinstance(e.data, MessageRejected)
    ]
    readable = [e for e in events if not e.id.startswith(UNREADABLE)]
    if readable and readable[0].type not in (
        EventType.WORKFLOW_SUBMITTED,
        EventType.WORKFLOW_REJECTED,
    ):
        problems.append(
            f"seq {readable[0].seq}: the history starts with {readable[0].type.value}, not "
            f"workflow.submitted: its earlier events are gone (the stream starts at seq "
            f"{first_seq} now; older messages expired or were purged)"
        )
    seqs = [e.seq for e in events if e.seq is not None]
    if seqs:
        inside = [seq for seq in deleted if seqs[0] < seq < seqs[-1]]
        if inside:
            shown = ", ".join(map(str, inside[:10])) + (" ..." if len(inside) > 10 else "")
            problems.append(
                f"seq {shown}: deleted from the stream between this workflow's events; "
                "any of them that were its own are missing from this replay"
            )
    return problems


def duration_ms(event: Event) -> float | None:
    """How long the attempt took, for an outcome event."""
    if isinstance(event.data, TaskCompleted | TaskFailed) and event.type in (
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
    ):
        return event.data.duration_ms
    return None


__all__ = [
    "BOOKKEEPING",
    "UNREADABLE",
    "duration_ms",
    "events_until",
    "first_difference",
    "parse_since",
    "parse_until",
    "reading_problems",
    "state_until",
    "verify",
]

"""A replayed workflow in other tools' formats: JSON, Mermaid, Chrome trace.

Pure functions over the event list and the state re-folded from it:

- :func:`to_json`: the events and the reconstructed state;
- :func:`to_mermaid`: the DAG with each task's final state (GitHub renders it);
- :func:`to_chrome_trace`: one span per task attempt, a process row per
  worker and a thread row per agent, loadable in https://ui.perfetto.dev or
  chrome://tracing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agenticflow.coordinator.state import WorkflowState
from agenticflow.shared.wire.events import Event, EventType, TaskStarted

FORMATS = ("text", "json", "mermaid", "chrome-trace")

_OUTCOMES = {
    EventType.TASK_COMPLETED: "completed",
    EventType.TASK_FAILED: "failed",
    EventType.TASK_TIMED_OUT: "timed out",
}


def event_dict(event: Event) -> dict[str, Any]:
    """One event as plain JSON data (``agenticflow events --json`` prints these)."""
    return {
        "seq": event.seq,
        "id": event.id,
        "type": event.type.value,
        "workflow_id": event.workflow_id,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "source": event.source,
        "timestamp": event.timestamp,
        "vclock": event.vclock.to_dict(),
        "data": event.data.model_dump(mode="json"),
    }


def to_json(events: list[Event], state: WorkflowState | None) -> dict[str, Any]:
    """The events and the state they fold into (None before the submission)."""
    return {
        "events": [event_dict(event) for event in events],
        "state": state.public_view() if state is not None else None,
    }


_STYLES = {
    "completed": "fill:#d4edda,stroke:#28a745",
    "failed": "fill:#f8d7da,stroke:#dc3545",
    "cancelled": "fill:#eeeeee,stroke:#999999,stroke-dasharray:4",
    "skipped": "fill:#eeeeee,stroke:#999999,stroke-dasharray:4",
    "running": "fill:#d1ecf1,stroke:#17a2b8",
    "scheduled": "fill:#fff3cd,stroke:#ffc107",
    "retry_wait": "fill:#fff3cd,stroke:#fd7e14",
    "pending": "fill:#ffffff,stroke:#999999",
}


def _label(text: str) -> str:
    """Mermaid label text: quotes and angle brackets as entities."""
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def to_mermaid(state: WorkflowState) -> str:
    """``flowchart LR`` of the workflow's tasks, each styled by its state."""
    lines = ["flowchart LR"]
    ids = {task_id: f"t{i}" for i, task_id in enumerate(state.tasks)}
    for task_id, task in state.tasks.items():
        status = task.status.value
        detail = f"{task.capability} · {status}"
        if task.attempts > 1:
            detail += f" · {task.attempts} attempts"
        if task.note and task.note.startswith("reused"):
            detail += " · reused"
        lines.append(f'    {ids[task_id]}["<b>{_label(task_id)}</b><br/>{_label(detail)}"]')
    if state.definition is not None:
        for spec in state.definition.tasks:
            lines.extend(f"    {ids[dep]} --> {ids[spec.id]}" for dep in spec.depends_on)
    used = sorted({task.status.value for task in state.tasks.values()})
    lines.extend(f"    classDef {status} {_STYLES.get(status, '')}" for status in used)
    for status in used:
        members = [ids[t] for t, task in state.tasks.items() if task.status.value == status]
        lines.append(f"    class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class AttemptSpan:
    """One task attempt as it ran: queued at ``scheduled_ns`` (if known),
    started by ``worker`` at ``start_ns``, ended at ``end_ns`` (None: no
    outcome recorded yet) with ``outcome``."""

    task: str
    attempt: int
    worker: str
    agent: str
    instance: str
    start_ns: int
    end_ns: int | None
    outcome: str
    """``completed``, ``failed``, ``timed out`` or ``unfinished``."""
    scheduled_ns: int | None
    start: Event
    end: Event | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the gateway's ``/workflows/ID/timeline``)."""
        return {
            "task": self.task,
            "attempt": self.attempt,
            "worker": self.worker,
            "agent": self.agent,
            "instance": self.instance,
            "scheduled_ns": self.scheduled_ns,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "outcome": self.outcome,
        }


def attempt_spans(events: list[Event]) -> list[AttemptSpan]:
    """Every task attempt that started, from ``task.started`` to its first
    outcome, in order of start."""
    scheduled: dict[tuple[str, int], Event] = {}
    started: dict[tuple[str, int], Event] = {}
    ended: dict[tuple[str, int], Event] = {}
    for event in events:
        key = (event.task_id or "", event.attempt or 0)
        if event.type == EventType.TASK_SCHEDULED:
            scheduled.setdefault(key, event)
        elif event.type == EventType.TASK_STARTED:
            started.setdefault(key, event)
        elif event.type in _OUTCOMES:
            ended.setdefault(key, event)
    spans = []
    for key, start in started.items():
        assert isinstance(start.data, TaskStarted)
        outcome = ended.get(key)
        queued = scheduled.get(key)
        spans.append(
            AttemptSpan(
                task=key[0],
                attempt=key[1],
                worker=start.data.worker,
                agent=start.data.agent,
                instance=start.data.instance,
                start_ns=start.timestamp,
                end_ns=outcome.timestamp if outcome else None,
                outcome=_OUTCOMES[outcome.type] if outcome else "unfinished",
                scheduled_ns=queued.timestamp if queued else None,
                start=start,
                end=outcome,
            )
        )
    spans.sort(key=lambda span: span.start_ns)
    return spans


def to_chrome_trace(events: list[Event]) -> dict[str, Any]:
    """Chrome Trace Event Format: an ``X`` span per task attempt (started to its
    outcome) on its worker (process) and agent (thread); a ``queue`` span from
    dispatch to start; instants for the workflow's own events. Times are in
    microseconds from the first event."""
    if not events:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    origin = min(e.timestamp for e in events)
    last = max(e.timestamp for e in events)
    rows: dict[str, int] = {"coordinator": 1}
    threads: dict[tuple[int, str], int] = {}

    def us(ns: int) -> float:
        return (ns - origin) / 1000

    def thread(pid: int, name: str) -> int:
        return threads.setdefault((pid, name), len(threads) + 1)

    trace: list[dict[str, Any]] = [
        {
            "name": event.type.value,
            "ph": "i",
            "s": "p",
            "ts": us(event.timestamp),
            "pid": 1,
            "tid": thread(1, "workflow"),
            "args": {"seq": event.seq, "source": event.source},
        }
        for event in events
        if event.type.value.startswith("workflow.")
    ]
    for span in attempt_spans(events):
        pid = rows.setdefault(span.worker, len(rows) + 1)
        end_ns = span.end_ns if span.end_ns is not None else last
        trace.append(
            {
                "name": f"{span.task} #{span.attempt}",
                "cat": "task",
                "ph": "X",
                "ts": us(span.start_ns),
                "dur": max(0.0, (end_ns - span.start_ns) / 1000),
                "pid": pid,
                "tid": thread(pid, span.agent),
                "args": {
                    "workflow_id": span.start.workflow_id,
                    "task_id": span.task,
                    "attempt": span.attempt,
                    "outcome": span.outcome,
                    "instance": span.instance,
                    "vclock": (span.end or span.start).vclock.encode(),
                },
            }
        )
        if span.scheduled_ns is not None:
            trace.append(
                {
                    "name": f"{span.task} #{span.attempt} queued",
                    "cat": "queue",
                    "ph": "X",
                    "ts": us(span.scheduled_ns),
                    "dur": max(0.0, (span.start_ns - span.scheduled_ns) / 1000),
                    "pid": 1,
                    "tid": thread(1, "queue wait"),
                    "args": {"task_id": span.task, "attempt": span.attempt},
                }
            )
    names = [
        {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}
        for name, pid in rows.items()
    ]
    names += [
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
        for (pid, name), tid in threads.items()
    ]
    return {"traceEvents": names + trace, "displayTimeUnit": "ms"}


def render(fmt: str, events: list[Event], state: WorkflowState | None) -> str:
    """The export in format ``fmt`` (one of :data:`FORMATS` but ``text``)."""
    if fmt == "json":
        return json.dumps(to_json(events, state), default=str, ensure_ascii=False, indent=2)
    if fmt == "chrome-trace":
        return json.dumps(to_chrome_trace(events), default=str)
    if fmt == "mermaid":
        if state is None:
            return "flowchart LR\n"
        return to_mermaid(state)
    raise ValueError(f"unknown export format {fmt!r}")


__all__ = ["FORMATS", "event_dict", "render", "to_chrome_trace", "to_json", "to_mermaid"]

"""Reading a workflow's streamed output (``ctx.stream``): from its start, then
live, until the workflow ends (see :meth:`Client.stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from agenticflow.shared.bus.base import Bus, Message
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.wire.events import OUTPUT_KINDS, EventType, TaskOutput

DROPPED = "dropped"
"""The kind of the chunk that says how many chunks were dropped at this point
(its ``data`` is the count)."""

ENDS = frozenset(
    {
        EventType.WORKFLOW_COMPLETED.value,
        EventType.WORKFLOW_FAILED.value,
        EventType.WORKFLOW_CANCELLED.value,
        EventType.WORKFLOW_ABORTED.value,
        EventType.WORKFLOW_REJECTED.value,
    }
)
"""Event types after which a workflow streams nothing more."""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a task's streamed output, as a reader gets it."""

    task_id: str
    attempt: int
    kind: str
    """``token``, ``progress``, ``log``, ``artifact``, or ``dropped`` (``data``
    is then how many chunks the handler made here that were not stored)."""
    data: Any
    at_ns: int
    """When the handler made it (the worker's clock; the event's for ``dropped``)."""
    seq: int
    """Stream sequence of the ``task.output`` event that carried it."""
    worker: str

    @property
    def text(self) -> str:
        """The chunk as text: itself if text, decoded bytes, else its repr."""
        if isinstance(self.data, str):
            return self.data
        if isinstance(self.data, bytes):
            return self.data.decode(errors="replace")
        return repr(self.data)


async def read_output(
    bus: Bus,
    workflow_id: str,
    *,
    task: str | None = None,
    kinds: Collection[str] | None = None,
) -> AsyncIterator[StreamChunk]:
    """Every chunk the workflow's tasks streamed, in order: what is stored,
    then what comes, until the workflow ends (or, with ``task``, until that
    task completes). With keys, only chunks a worker signed count, and only
    a coordinator's events end it. A workflow resumed after it ended: the
    reader stops at its first end (the resumed run's chunks are in
    ``events()``)."""
    wanted = set(kinds) if kinds is not None else None
    unknown = (wanted or set()) - {*OUTPUT_KINDS, DROPPED}
    if unknown:
        raise ValueError(
            f"unknown kind {sorted(unknown)[0]!r}: one of {', '.join((*OUTPUT_KINDS, DROPPED))}"
        )
    names = bus.names
    subject = names.workflow_events(workflow_id)
    tail = bus.tail(names.events_stream, subject)
    try:
        async for msg in tail:
            for chunk in _chunks(bus, msg, workflow_id, task, wanted):
                if chunk is None:
                    return
                yield chunk
    finally:
        await tail.aclose()


def _chunks(  # noqa: PLR0911 - one return per kind of event reads best
    bus: Bus, msg: Message, workflow_id: str, task: str | None, wanted: set[str] | None
) -> list[StreamChunk | None]:
    """The chunks one stored event carries; ``None`` last when the stream ends there."""
    parsed = bus.names.parse_event_subject(msg.subject)
    if parsed is None or parsed[0] != workflow_id:
        return []
    kind = parsed[1]
    if kind not in (*ENDS, EventType.TASK_OUTPUT.value, EventType.TASK_COMPLETED.value):
        return []
    seq = msg.metadata.sequence.stream
    try:
        event = bus.decode_event(msg, seq=seq)
    except MalformedMessageError:
        return []  # forged, altered or unreadable: never shown, never an end
    if kind in ENDS:
        # Only the coordinator ends a workflow (with keys: one it signed).
        return [None] if not bus.seal.active or event.signer_role == "coordinator" else []
    if task is not None and event.task_id != task:
        return []
    if event.type == EventType.TASK_COMPLETED:
        return [None] if task is not None and _trusted(bus, event.signer_role) else []
    data = event.data
    if not isinstance(data, TaskOutput) or not _trusted(bus, event.signer_role):
        return []
    out: list[StreamChunk | None] = []
    task_id, attempt = event.task_id or "", event.attempt or 0
    if data.dropped and (wanted is None or DROPPED in wanted):
        out.append(
            StreamChunk(task_id, attempt, DROPPED, data.dropped, event.timestamp, seq, event.source)
        )
    out.extend(
        StreamChunk(task_id, attempt, chunk.kind, chunk.data, chunk.at_ns, seq, event.source)
        for chunk in data.chunks
        if wanted is None or chunk.kind in wanted
    )
    return out


def _trusted(bus: Bus, role: str | None) -> bool:
    """With keys, what a worker (or a coordinator) signed; without, anything."""
    return not bus.seal.active or role in ("worker", "coordinator")


__all__ = ["DROPPED", "ENDS", "StreamChunk", "read_output"]

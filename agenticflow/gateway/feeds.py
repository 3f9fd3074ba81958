"""One SSE or WebSocket client's feed: a workflow's events or its streamed
output, from the start (or from where the client was) and then live, held in
a bounded queue.

A reader task takes frames from the bus into the client's queue
(``AGENTICFLOW_GATEWAY_CLIENT_QUEUE`` frames); the client's sender takes them
out as fast as the client reads. While the queue is full the reader waits
(the bus keeps what follows: the reader pulls no more than it has room for),
but at most ``AGENTICFLOW_GATEWAY_CLIENT_BLOCK_S``: a client that took nothing
for that long is too slow. Then the reader stops (its bus subscription is
released) and the client gets an ``overflow`` frame naming the last frame it
was sent, and the connection closes: it reconnects with ``Last-Event-ID`` (SSE) or ``?after=`` and
misses nothing, since both feeds are read from the stored log. So a slow
client costs at most its queue, never the gateway's memory, and never slows
anyone else. Overflows are counted (metric
``agenticflow.gateway.client_overflows``). A client that disconnects cancels
its reader, which releases the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

import structlog

from agenticflow.client import Client
from agenticflow.coordinator.streams import ENDS, StreamChunk
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.ops.metrics import Tally
from agenticflow.shared.wire.events import Event

log = structlog.get_logger("agenticflow.gateway")

client_overflows = Tally(
    "agenticflow.gateway.client_overflows",
    "feed",
    unit="{client}",
    description="SSE/WebSocket clients disconnected because their queue was full",
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One message to a client: ``kind`` is ``event``, ``chunk``, ``end``,
    ``overflow`` or ``error``; ``id`` is where a client resumes after it."""

    kind: str
    data: Any
    id: str | None = None


class Position:
    """Where a feed resumes: ``SEQ`` (events) or ``SEQ.N`` (chunk N of the
    event at stream sequence SEQ). Raises ValueError for anything else."""

    def __init__(self, text: str | None) -> None:
        self.seq, self.n = -1, -1
        if text:
            seq, _, n = text.partition(".")
            if not seq.isdigit() or (n and not n.isdigit()) or len(text) > 40:
                raise ValueError(f"{text!r} is not a feed position (SEQ or SEQ.N)")
            self.seq, self.n = int(seq), int(n) if n else -1

    def passed(self, seq: int, n: int = -1) -> bool:
        """Whether the frame at ``(seq, n)`` was delivered before."""
        return (seq, n) <= (self.seq, self.n)


def event_frame(event: Event) -> Frame:
    """An event as a client gets it (bytes in it as base64)."""
    data = {
        "seq": event.seq,
        "id": event.id,
        "type": event.type.value,
        "workflow_id": event.workflow_id,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "source": event.source,
        "timestamp": event.timestamp,
        "vclock": event.vclock.to_dict(),
        "data": event.data.model_dump(),
    }
    return Frame("event", data, str(event.seq))


def chunk_frame(chunk: StreamChunk, n: int) -> Frame:
    """A streamed chunk as a client gets it (bytes as base64, flagged)."""
    data = {
        "task_id": chunk.task_id,
        "attempt": chunk.attempt,
        "kind": chunk.kind,
        "data": chunk.data,
        "at_ns": chunk.at_ns,
        "seq": chunk.seq,
        "worker": chunk.worker,
    }
    if isinstance(chunk.data, bytes):
        data["encoding"] = "base64"
    return Frame("chunk", data, f"{chunk.seq}.{n}")


async def events_after(
    client: Client, workflow_id: str, after: Position
) -> AsyncGenerator[Frame, None]:
    """The workflow's events after ``after``, stored then live, until its
    first end (``workflow.completed``, ``failed``...; with keys, a
    coordinator's)."""
    bus = client.bus
    names = bus.names
    tail = bus.tail(names.events_stream, names.workflow_events(workflow_id))
    try:
        async for msg in tail:
            seq = msg.metadata.sequence.stream
            try:
                event = bus.decode_event(msg, seq=seq)
            except MalformedMessageError:
                continue  # forged, altered or unreadable: never shown
            if event.workflow_id != workflow_id:
                continue
            if not after.passed(seq):
                yield event_frame(event)
            trusted = not bus.seal.active or event.signer_role == "coordinator"
            if event.type.value in ENDS and trusted:
                return
    finally:
        await tail.aclose()


async def chunks_after(
    client: Client,
    workflow_id: str,
    after: Position,
    *,
    task: str | None,
    kinds: Collection[str] | None,
) -> AsyncGenerator[Frame, None]:
    """What the workflow's tasks stream (see :meth:`WorkflowHandle.stream`)
    after ``after``; N counts the chunks of one event that pass ``kinds``, so
    resume with the same ``task`` and ``kinds``."""
    seq, n = -1, -1
    stream = client.handle(workflow_id).stream(task=task, kinds=kinds)
    async with contextlib.aclosing(cast(AsyncGenerator[StreamChunk, None], stream)):
        async for chunk in stream:
            seq, n = chunk.seq, (n + 1 if chunk.seq == seq else 0)
            if not after.passed(seq, n):
                yield chunk_frame(chunk, n)


_WAKE = Frame("wake", None)


class Feed:
    """A client's bounded queue of frames, filled by a reader task it owns
    (``async with Feed(...) as feed: async for frame in feed.frames(): ...``)."""

    def __init__(
        self,
        source: AsyncGenerator[Frame, None],
        *,
        room: int,
        block_s: float,
        name: str,
        on_overflow: Callable[[], None] | None = None,
        on_released: Callable[[], None] | None = None,
    ) -> None:
        self._source = source
        self._block_s = block_s
        self._on_overflow = on_overflow
        self._on_released = on_released
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=room)
        self._name = name
        self._reader: asyncio.Task[None] | None = None
        self._finished = False
        self._error: Exception | None = None
        self.overflowed = False
        self.sent: str | None = None
        """The id of the last frame taken out for the client."""

    async def __aenter__(self) -> Feed:
        self._reader = asyncio.create_task(self._read(), name=f"gateway feed {self._name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        source = self._source
        try:
            async for frame in source:
                if self._queue.full():
                    try:
                        async with asyncio.timeout(self._block_s):
                            await self._queue.put(frame)
                    except TimeoutError:
                        self.overflowed = True
                        client_overflows.add(self._name)
                        if self._on_overflow is not None:
                            self._on_overflow()
                        return
                else:
                    self._queue.put_nowait(frame)
        except Exception as exc:  # the bus failed: the client is told, then closed
            log.warning("gateway feed failed", feed=self._name, error=str(exc))
            self._error = exc
        finally:
            self._finished = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_WAKE)
            with contextlib.suppress(Exception):
                await source.aclose()  # the bus subscription goes with it
            if self._on_released is not None:
                self._on_released()

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """The frames in order; last, ``end`` (the workflow ended), ``overflow``
        (the client was too slow: resume after ``resume_after``) or ``error``."""
        while True:
            if self.overflowed:
                yield Frame(
                    "overflow",
                    {
                        "message": "this client read too slowly and was disconnected: "
                        "reconnect with Last-Event-ID or ?after= to resume",
                        "resume_after": self.sent,
                    },
                )
                return
            if self._finished and self._queue.empty():
                if self._error is not None:
                    yield Frame("error", {"message": "the cluster could not be read"})
                else:
                    yield Frame("end", {"resume_after": self.sent})
                return
            frame = await self._queue.get()
            if frame is _WAKE:
                continue
            self.sent = frame.id
            yield frame


__all__ = [
    "Feed",
    "Frame",
    "Position",
    "chunk_frame",
    "chunks_after",
    "client_overflows",
    "event_frame",
    "events_after",
]

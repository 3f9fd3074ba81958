"""Streamed output of a running task: ``await ctx.stream("tok", kind="token")``.

The handler puts chunks into a bounded buffer; one writer per attempt stores
them, in order, as ``task.output`` events on the workflow's events log (so a
late reader and ``replay`` see them as well as a live one), batching what
accumulated within ``Settings.stream_flush_s`` into one event (at most
:data:`BATCH_CHUNKS` chunks or :data:`BATCH_BYTES` bytes).

Backpressure: when the buffer holds ``Settings.stream_buffer`` chunks (the bus
is slower than the handler), ``ctx.stream`` waits for room at most
``Settings.stream_block_s`` seconds, then drops the chunk and returns False.
Drops are counted, reported in the next ``task.output`` event (``dropped``)
and in the ``agenticflow.stream.chunks_dropped`` metric. A reader never slows
the handler: readers read the stored events, at their own pace.

The worker closes the stream before it stores the attempt's outcome, so every
chunk precedes the outcome in the log; the last event says ``last``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from agenticflow.shared.errors import PayloadTooLargeError
from agenticflow.shared.ops.metrics import chunks_dropped, chunks_streamed
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.shared.wire.events import OUTPUT_KINDS, OutputChunk, TaskOutput

log = structlog.get_logger("agenticflow.stream")

BATCH_CHUNKS = 256
"""Most chunks in one ``task.output`` event."""
BATCH_BYTES = 64 << 10
"""Most chunk bytes in one ``task.output`` event (fewer when one chunk is larger)."""
MAX_CHUNK_BYTES = 256 << 10
"""Largest chunk ``ctx.stream`` takes (store larger artifacts elsewhere and stream a link)."""

Publish = Callable[[TaskOutput], Awaitable[None]]


def chunk_size(data: Any) -> int:
    """Bytes a chunk's data takes on the wire (about)."""
    if isinstance(data, str):
        return len(data.encode())
    if isinstance(data, bytes | bytearray):
        return len(data)
    return len(pack(data))  # raises MalformedMessageError for what msgpack cannot hold


class OutputStream:
    """One attempt's streamed output (see the module's docstring)."""

    def __init__(
        self,
        publish: Publish,
        *,
        buffer: int = 1000,
        block_s: float = 1.0,
        flush_s: float = 0.05,
        capability: str = "",
    ) -> None:
        self._publish = publish
        self._buffer = buffer
        self._block_s = block_s
        self._flush_s = flush_s
        self._capability = capability
        self._pending: deque[tuple[OutputChunk, int]] = deque()
        self._pending_bytes = 0
        self._dropped = 0
        """Dropped since the last event was made."""
        self.dropped = 0
        """Dropped in all."""
        self.stored = 0
        """Chunks stored in all."""
        self._index = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._writer: asyncio.Task[None] | None = None

    async def put(self, data: Any, kind: str = "token") -> bool:
        """Queue one chunk; False when it was dropped (no room within the
        block time). Raises ValueError for an unknown kind, TypeError for
        unsupported data, PayloadTooLargeError for a chunk over :data:`MAX_CHUNK_BYTES`,
        RuntimeError once the attempt has ended."""
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(OUTPUT_KINDS)}, not {kind!r}")
        if not isinstance(data, _DATA):
            raise TypeError(
                "a chunk is text, bytes, a dict, a list, a number, a bool or None, "
                f"not {type(data).__name__}"
            )
        if self._closed:
            raise RuntimeError("the task's output is closed: its attempt has ended")
        if isinstance(data, dict | list):
            # Taken as it is now: packed and unpacked, so a later change by the
            # handler can neither alter the chunk nor outgrow the size checked.
            data = unpack(pack(data))
        size = chunk_size(data)
        if size > MAX_CHUNK_BYTES:
            raise PayloadTooLargeError(
                f"a streamed chunk of {size} bytes is over the {MAX_CHUNK_BYTES} allowed"
            )
        if len(self._pending) >= self._buffer:
            self._room.clear()
            try:
                async with asyncio.timeout(self._block_s):
                    while len(self._pending) >= self._buffer:
                        self._room.clear()
                        await self._room.wait()
            except TimeoutError:
                self._dropped += 1
                self.dropped += 1
                chunks_dropped.add(self._capability)
                self._arrived.set()  # the next event reports it
                return False
            if self._closed:
                raise RuntimeError("the task's output is closed: its attempt has ended")
        chunk = OutputChunk.model_construct(kind=kind, data=data, at_ns=time.time_ns())  # type: ignore[arg-type]
        self._pending.append((chunk, size))
        self._pending_bytes += size
        self._arrived.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="task-output")
        return True

    async def close(self) -> None:
        """Store what is left, with the attempt's last ``task.output`` (only
        if anything was streamed); returns once it is stored."""
        if self._closed:
            return
        self._closed = True
        self._arrived.set()
        self._room.set()  # a put waiting for room sees the stream closed
        if self._writer is not None:
            await self._writer

    def abort(self) -> None:
        """Stop at once (the worker is going down; the task comes back)."""
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self) -> None:
        while True:
            # (Drops alone wait for the next chunk or the end to be reported.)
            while not (self._pending or self._closed):
                self._arrived.clear()
                await self._arrived.wait()
            if not self._closed and not self._batch_full():
                # Let a burst accumulate into one event (a batching window).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_s):
                        while not self._closed and not self._batch_full():
                            self._arrived.clear()
                            await self._arrived.wait()
            chunks = self._take()
            last = self._closed and not self._pending
            if chunks or self._dropped or last:
                await self._store(chunks, last=last)
            if last:
                return

    def _batch_full(self) -> bool:
        return len(self._pending) >= BATCH_CHUNKS or self._pending_bytes >= BATCH_BYTES

    def _take(self) -> list[OutputChunk]:
        chunks: list[OutputChunk] = []
        taken = 0
        while self._pending and len(chunks) < BATCH_CHUNKS:
            chunk, size = self._pending[0]
            if chunks and taken + size > BATCH_BYTES:
                break
            self._pending.popleft()
            self._pending_bytes -= size
            taken += size
            chunks.append(chunk)
        if len(self._pending) < self._buffer:
            self._room.set()
        return chunks

    async def _store(self, chunks: list[OutputChunk], *, last: bool) -> None:
        dropped = self._dropped
        output = TaskOutput.model_construct(
            index=self._index, chunks=chunks, dropped=dropped, last=last
        )
        self._index += 1
        self._dropped = 0
        try:
            await self._publish(output)
        except Exception as exc:  # streaming is best effort: the task goes on
            # Reported with the next event: these chunks and the drops this one carried.
            self._dropped += dropped + len(chunks)
            self.dropped += len(chunks)
            chunks_dropped.add(self._capability, len(chunks))
            log.warning("streamed output not stored", error=str(exc), chunks=len(chunks))
            return
        self.stored += len(chunks)
        chunks_streamed.add(self._capability, len(chunks))


_DATA = (str, bytes, dict, list, int, float, bool, type(None))


__all__ = ["BATCH_BYTES", "BATCH_CHUNKS", "MAX_CHUNK_BYTES", "OutputStream", "chunk_size"]

"""Watch a consumer's acks as they happen (core NATS copies of ``$JS.ACK`` replies)."""

from __future__ import annotations

import asyncio
from typing import Any

from agenticflow.shared.bus.base import Bus


class AckWatch:
    """Every ack, nak or term sent for one capability's task consumer.

    Ack subjects are ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream_seq>...``;
    the body is ``+ACK``, ``-NAK``, ``+WPI`` (in progress) or ``+TERM``.
    """

    def __init__(self, bus: Bus, capability: str) -> None:
        self.bus = bus
        self.subject = f"$JS.ACK.{bus.names.tasks_stream}.{bus.names.task_consumer(capability)}.>"
        self._queue: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()
        self._sub: Any = None

    async def start(self) -> AckWatch:
        async def on_msg(msg: Any) -> None:
            tokens = msg.subject.split(".")
            kind = (msg.data or b"+ACK").split(b" ", 1)[0].decode()
            await self._queue.put((kind, int(tokens[4]), int(tokens[5])))

        self._sub = await self.bus.subscribe(self.subject, on_msg)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def next(self, kind: str, *, min_delivered: int = 1, timeout: float = 30) -> int:
        """Wait for a reply of ``kind`` (e.g. ``+TERM``); returns its stream sequence."""

        async def wait() -> int:
            while True:
                got, delivered, seq = await self._queue.get()
                if got == kind and delivered >= min_delivered:
                    return seq

        return await asyncio.wait_for(wait(), timeout)

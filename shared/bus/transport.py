"""Connecting to the bus: the backend ``Settings`` select, behind one seam.

``async with connected(settings, name=...) as bus`` (or :meth:`Bus.connect`)
returns the :class:`~agenticflow.shared.bus.base.Bus` of the backend that
``AGENTICFLOW_BACKEND`` / ``AGENTICFLOW_URL`` name: ``nats`` (the default,
:mod:`agenticflow.shared.bus.nats_backend`) or ``memory``
(:mod:`agenticflow.shared.bus.memory_backend`). Everything here is
backend-neutral; only the backend modules import a client library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agenticflow.shared.bus.base import (
    Bus,
    ConsumerSpec,
    KeyValue,
    KVEntry,
    KVWatcher,
    Message,
    Outgoing,
    StoredValue,
    Subscription,
    stored_ns,
    watched_ns,
)
from agenticflow.shared.ops.config import Settings


@asynccontextmanager
async def connected(settings: Settings, *, name: str, role: str = "client") -> AsyncIterator[Bus]:
    """``async with connected(settings, name=...) as bus``: connect, then drain on exit."""
    bus = await Bus.connect(settings, name=name, role=role)
    try:
        yield bus
    finally:
        await bus.close()


__all__ = [
    "Bus",
    "ConsumerSpec",
    "KVEntry",
    "KVWatcher",
    "KeyValue",
    "Message",
    "Outgoing",
    "StoredValue",
    "Subscription",
    "connected",
    "stored_ns",
    "watched_ns",
]

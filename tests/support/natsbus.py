"""NATS-specific tests reach the client (``bus.js``, ``bus.nc``, ``bus.api``):
these helpers give them a :class:`NatsBus` rather than the backend-neutral
:class:`Bus` the package's code sees."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agenticflow.shared.bus.base import Bus
from agenticflow.shared.bus.nats_backend import NatsBus
from agenticflow.shared.ops.config import Settings


def nats_of(bus: Bus) -> NatsBus:
    """``bus`` as the NATS backend it is (fails the test otherwise)."""
    assert isinstance(bus, NatsBus), f"a NATS bus was expected, not {type(bus).__name__}"
    return bus


async def connect(settings: Settings, *, name: str, role: str = "client") -> NatsBus:
    """:meth:`Bus.connect` for a test that needs the NATS backend."""
    return nats_of(await Bus.connect(settings, name=name, role=role))


@asynccontextmanager
async def connected(
    settings: Settings, *, name: str, role: str = "client"
) -> AsyncIterator[NatsBus]:
    """``async with connected(settings, name=...) as bus`` with a :class:`NatsBus`."""
    bus = await connect(settings, name=name, role=role)
    try:
        yield bus
    finally:
        await bus.close()

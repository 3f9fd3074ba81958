"""The bus contract's fixtures: one :class:`Bus` per backend, each test on its
own subject prefix (and, for ``memory``, its own in-process server)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agenticflow.shared.bus.base import Bus
from agenticflow.shared.ops.config import Settings

BACKENDS = ("memory", "nats", "redis")
ACK_WAIT_S = 0.3
"""The task consumers' ack_wait: short, so redelivery tests take a moment."""
MAX_DELIVER = 2

_runs = itertools.count()

Connect = Callable[..., Awaitable[Bus]]


def contract_settings(backend: str, request: pytest.FixtureRequest, **more: Any) -> Settings:
    """Settings for one test: a fresh prefix; a fresh server URL for ``memory``."""
    unique = f"bc{os.getpid()}x{next(_runs)}"
    fields: dict[str, Any] = {
        "prefix": unique,
        "task_ack_wait_s": ACK_WAIT_S,
        "task_max_deliver": MAX_DELIVER,
        "topology_wait_s": 0.3,
        **more,
    }
    if backend == "memory":
        return Settings(backend="memory", url=f"memory://{unique}", **fields)
    if backend == "redis":
        redis = request.getfixturevalue("redis_server")
        return Settings(backend="redis", url=redis.url, **fields)
    pytest.importorskip(
        "agenticflow.shared.bus.nats_backend", reason="NatsBus (the nats backend) is not there yet"
    )
    server = request.getfixturevalue("nats_server")
    return Settings(nats_url=server.url, **fields)


@pytest.fixture(params=BACKENDS)
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """``await connect(**settings)``: a bus of this test's backend, closed (and a
    memory server dropped) at the end. Buses connected with the same
    ``url``/``prefix`` share their streams."""
    backend: str = request.param
    opened: list[Bus] = []

    async def open_bus(settings: Settings | None = None, **more: Any) -> Bus:
        bus = await Bus.connect(
            settings or contract_settings(backend, request, **more), name=f"t{len(opened)}"
        )
        opened.append(bus)
        return bus

    yield open_bus
    for bus in reversed(opened):
        await bus.close()
    if backend == "memory":
        from agenticflow.shared.bus.memory_backend import MemoryServer

        for bus in opened:
            MemoryServer.discard(bus.settings.bus_url)


@pytest.fixture
async def any_bus(connect: Connect) -> Bus:
    """A bus of each backend with the topology created."""
    bus = await connect()
    await bus.ensure_topology()
    return bus

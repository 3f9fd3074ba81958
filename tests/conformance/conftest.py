"""The bus contract's fixtures: one :class:`Bus` per backend, each test on its
own subject prefix (and, for ``memory``, its own in-process server)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class RedisServer:
    """A redis-server this session started."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free local port, without persistence, for the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `make` installs it (Debian: redis-server)")
    data: Path = tmp_path_factory.mktemp("redis")
    port = _free_port()
    process = subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(data)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10.0
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)  # polling the server's start, bounded by the deadline
        yield RedisServer(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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

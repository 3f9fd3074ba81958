"""Unit-test an agent app without a server: a whole cluster in one process.

::

    import agenticflow.testing

    async def test_support_flow() -> None:
        async with agenticflow.testing.cluster(app, workers=2) as client:
            result = await client.run(workflow)
            assert result["reply"] == "..."

:func:`cluster` runs a coordinator and workers in the running event loop, on
the in-process ``memory`` backend (:mod:`agenticflow.shared.bus.memory_backend`:
JetStream's semantics, redelivery, dedupe and compare-and-set included), and
yields a :class:`~agenticflow.client.Client` connected to it. Nothing is
mocked: the handlers, the coordinator's fold, retries, approvals and the
events are the ones a deployed cluster runs.

Time can be fast-forwarded: with ``clock=True`` (or a :class:`Clock` of
your own) every clock the framework reads (``time.time``, ``time.time_ns``,
``time.monotonic`` and so the event loop's timers) moves only when the test
says, so a task timeout, a retry's backoff, an approval deadline or a
breaker's recovery is reached with ``await clock.advance(60)`` instead of
waiting a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from agenticflow.client import Client
from agenticflow.coordinator.partitions import PartitionedCoordinators
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.bus.registry import wait_registered
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings
from agenticflow.worker.app import AgentApp
from agenticflow.worker.runtime import Worker

FAST_SETTINGS: dict[str, Any] = {
    "heartbeat_s": 0.5,
    "snapshot_interval_s": 0.05,
    "topology_wait_s": 5.0,
}
"""Settings a test cluster runs with unless told otherwise: heartbeats and
snapshots often enough that nothing waits on them."""


class Clock:
    """Time that moves only when told (see the module docstring).

    While installed (by :func:`cluster`, or ``with clock:``), ``time.time()``,
    ``time.time_ns()``, ``time.monotonic()`` and ``time.monotonic_ns()`` read
    the real clocks plus :attr:`offset`, which :meth:`advance` increases.
    Real time still passes too, so a test that never advances behaves as
    without a clock."""

    _PATCHED = ("time", "time_ns", "monotonic", "monotonic_ns")

    def __init__(self) -> None:
        self.offset = 0.0
        """Seconds added to every clock."""
        self._saved: dict[str, Callable[[], Any]] = {}

    def __enter__(self) -> Clock:
        if self._saved:
            raise ConfigError("this clock is installed already")
        self._saved = {name: getattr(time, name) for name in self._PATCHED}
        real_time, real_time_ns = self._saved["time"], self._saved["time_ns"]
        real_mono, real_mono_ns = self._saved["monotonic"], self._saved["monotonic_ns"]
        time.time = lambda: real_time() + self.offset
        time.time_ns = lambda: real_time_ns() + int(self.offset * 1e9)
        time.monotonic = lambda: real_mono() + self.offset
        time.monotonic_ns = lambda: real_mono_ns() + int(self.offset * 1e9)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, real in self._saved.items():
            setattr(time, name, real)
        self._saved = {}

    async def advance(self, seconds: float, *, step: float = 0.5) -> None:
        """Move every clock ``seconds`` forward, ``step`` at a time, letting
        what became due run after each step: timers of the event loop fire,
        deadlines read by the framework pass, and heartbeats and leases are
        renewed on the way as they would be in real time."""
        if seconds < 0 or step <= 0:
            raise ValueError("time only moves forward")
        left = seconds
        while True:
            moved = min(step, left)
            self.offset += moved
            left -= moved
            for _ in range(_YIELDS):  # what is due now runs on the loop's next iterations
                await asyncio.sleep(0)
            if left <= 0:
                return


_YIELDS = 50
"""Event loop iterations given to what a step made due."""


class TestCluster:
    """What :func:`cluster` runs (also usable without the context manager:
    ``client = await TestCluster(app).start()`` ... ``await .stop()``)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: AgentApp,
        *,
        workers: int = 1,
        concurrency: int = 8,
        settings: dict[str, Any] | None = None,
        clock: Clock | None = None,
        url: str | None = None,
    ) -> None:
        """``url``: the bus to run on (default: a new in-process ``memory://``
        server, dropped on stop); a ``nats://`` or ``redis://`` URL runs the
        same in-process services on that server, e.g. to check an app on the
        backend it will be deployed on."""
        if workers < 1:
            raise ConfigError("a test cluster needs at least one worker")
        self.app = app
        self.workers = workers
        self.concurrency = concurrency
        self.clock = clock
        name = f"testing-{os.getpid()}-{os.urandom(4).hex()}"
        fields = {**FAST_SETTINGS, **(settings or {})}
        fields.setdefault("prefix", "af")
        self._own_server = url is None
        try:
            self.settings = Settings(url=url or f"memory://{name}", **fields)
        except ValueError as exc:
            raise ConfigError(f"invalid test cluster settings: {exc}") from exc
        self.client: Client | None = None
        self._buses: list[Bus] = []
        self._services: list[PartitionedCoordinators | Worker] = []
        self._runs: list[asyncio.Task[None]] = []

    async def _bus(self, name: str, role: str) -> Bus:
        bus = await Bus.connect(self.settings, name=name, role=role)
        self._buses.append(bus)
        return bus

    async def start(self, *, timeout: float = 30.0) -> Client:
        """Start the coordinator and workers; returns a connected client once
        every worker has registered."""
        bus = await self._bus("testing-coordinator", "coordinator")
        await bus.ensure_topology()
        self._start(PartitionedCoordinators(bus=bus, node_id="coord-test"))
        for n in range(self.workers):
            worker_bus = await self._bus(f"testing-worker-{n}", "worker")
            self._start(
                Worker(
                    bus=worker_bus,
                    app=self.app,
                    node_id=f"w-test{n}",
                    concurrency=self.concurrency,
                    shutdown_grace_s=1.0,
                )
            )
        await wait_registered(
            bus,
            lambda seen: len(seen.workers) >= self.workers and bool(seen.coordinators),
            timeout=timeout,
            check=self._check_running,
        )
        client_bus = await self._bus("testing-client", "client")
        self.client = Client(bus=client_bus, node_id="client-test", _owns_bus=True)
        return self.client

    def _start(self, service: PartitionedCoordinators | Worker) -> None:
        self._services.append(service)
        self._runs.append(asyncio.create_task(service.run(), name=f"testing-{service.node_id}"))

    def _check_running(self) -> None:
        for run in self._runs:
            if run.done() and not run.cancelled() and run.exception() is not None:
                raise ConfigError(f"{run.get_name()} failed to start: {run.exception()!r}")

    async def stop(self) -> None:
        """Stop everything and drop the in-process server (idempotent)."""
        from agenticflow.shared.bus.memory_backend import MemoryServer

        for service in reversed(self._services):
            with contextlib.suppress(Exception):
                await service.shutdown()
        for run in self._runs:
            if not run.done():
                run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        for bus in reversed(self._buses):
            with contextlib.suppress(Exception):
                await bus.close()
        self._services, self._runs, self._buses = [], [], []
        if self._own_server:
            MemoryServer.discard(self.settings.bus_url)


@asynccontextmanager
async def cluster(
    app: AgentApp,
    *,
    workers: int = 1,
    concurrency: int = 8,
    settings: dict[str, Any] | None = None,
    clock: bool | Clock = False,
    timeout: float = 30.0,
    url: str | None = None,
) -> AsyncIterator[Client]:
    """``async with cluster(app, workers=2) as client``: a coordinator and
    ``workers`` workers of ``app`` in this process, on the memory backend.

    ``settings`` are :class:`~agenticflow.shared.ops.config.Settings` fields
    (e.g. ``{"task_max_deliver": 2}``). ``clock``: a :class:`Clock` to
    install for the block (``clock = Clock()``, ``cluster(app, clock=clock)``,
    then ``await clock.advance(30)``), or True for one the test does not
    reach. ``url``: run on that bus instead (see :class:`TestCluster`).
    Raises ConfigError."""
    chosen = Clock() if clock is True else clock or None
    test_cluster = TestCluster(
        app, workers=workers, concurrency=concurrency, settings=settings, clock=chosen, url=url
    )
    with chosen if chosen is not None else contextlib.nullcontext():
        try:
            yield await test_cluster.start(timeout=timeout)
        finally:
            await test_cluster.stop()


__all__ = ["FAST_SETTINGS", "Clock", "TestCluster", "cluster"]

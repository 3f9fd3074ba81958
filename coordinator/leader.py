"""Active/standby coordinators: serve only while holding the lease."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from agenticflow.coordinator.lease import Lease
from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.transport import Bus

log = structlog.get_logger("agenticflow.leader")


class LeaderElected:
    """Runs a :class:`Coordinator` whenever this node holds the lease.

    ``run()`` waits as a standby, serves while active, steps down if the lease
    is lost (and waits again), and returns after :meth:`shutdown`, releasing
    the lease so a standby takes over at once.
    """

    def __init__(self, *, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        self.lease = Lease(bus=bus, node_id=node_id)
        self.active: Coordinator | None = None
        self.terms = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Serve until :meth:`shutdown`."""
        await self.bus.ensure_topology()
        while not self._stop.is_set():
            log.info("standing by for the coordinator lease", node=self.node_id)
            if not await self.lease.acquire(self._stop):
                break
            self.terms += 1
            await self._serve_term()
        await self.lease.release()

    async def _serve_term(self) -> None:
        coordinator = Coordinator(bus=self.bus, node_id=self.node_id)
        self.active = coordinator
        keeper = asyncio.create_task(self.lease.keep(self._stop), name="lease-keeper")
        try:
            try:
                await coordinator.start()
            except Exception:
                # Typically NATS without a stream leader for a moment (a server
                # died): give the lease back and stand by again rather than end
                # the process, which would leave the cluster with no coordinator.
                log.exception("coordinator did not start; standing by again", node=self.node_id)
                with contextlib.suppress(Exception):
                    await self.lease.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=1.0)
                return
            assert coordinator.runner is not None
            waiters = {
                asyncio.create_task(self._stop.wait()),
                asyncio.create_task(self.lease.lost.wait()),
                coordinator.runner,
            }
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters - {coordinator.runner}:
                waiter.cancel()
        finally:
            await coordinator.shutdown()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.active = None
        if self.lease.lost.is_set():
            log.warning("lost the lease; this coordinator is a standby again", node=self.node_id)

    def ready(self) -> str | None:
        """None while active and serving, or standing by; otherwise why not."""
        if self._stop.is_set():
            return "stopping"
        return self.active.ready() if self.active is not None else None

    def health(self) -> dict[str, Any]:
        """The role (``active`` or ``standby``), the terms served, and the
        active coordinator's own report."""
        report: dict[str, Any] = {
            "role": "active" if self.active is not None else "standby",
            "terms": self.terms,
        }
        if self.active is not None:
            report.update(self.active.health())
        return report

    async def shutdown(self) -> None:
        """Stop serving and give the lease up (idempotent)."""
        self._stop.set()


__all__ = ["LeaderElected"]

"""Leadership by a lease in KV: exactly one coordinator is active.

The lease is one key in the ``<prefix>_leases`` bucket, whose entries expire
after ``lease_ttl_s``. A coordinator acquires it with ``create`` (which fails
while another holds it), renews it every third of the TTL with an update by
revision (compare-and-set), and gives it up on a clean shutdown. A renewal
that loses the compare-and-set means leadership is lost, and so does going
without a successful renewal until a margin before the server could expire the
lease: the coordinator stops serving at once, before anyone else can take it.
A standby retries ``create`` every second, so it takes over within about one
TTL of the leader's death (immediately after a clean shutdown).

The revision of the lease is a fencing token; snapshot writes are also
compare-and-set, so a deposed leader cannot overwrite the new leader's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from agenticflow.shared.bus.base import Bus, KeyValue
from agenticflow.shared.errors import NotFoundError, StateConflictError, TransportError

log = structlog.get_logger("agenticflow.lease")

LEASE_KEY = "coordinator"


class Lease:
    """One coordinator's hold on the leadership lease."""

    def __init__(self, *, bus: Bus, node_id: str, key: str = LEASE_KEY) -> None:
        self.bus = bus
        self.node_id = node_id
        self.key = key
        self.ttl_s = bus.settings.lease_ttl_s
        self.revision = 0
        self.lost = asyncio.Event()
        self._store: KeyValue | None = None
        self._renewed_at = 0.0

    async def _kv(self) -> KeyValue:
        if self._store is None:
            self._store = await self.bus.kv(self.bus.names.leases_bucket, ttl=float(self.ttl_s))
        return self._store

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this node now holds it."""
        store = await self._kv()
        sent = time.monotonic()
        try:
            self.revision = int(await store.create(self.key, self.node_id.encode()))
        except StateConflictError:
            return False
        except (TimeoutError, TransportError) as exc:
            log.warning("lease acquire failed", error=str(exc) or type(exc).__name__)
            return False
        self._renewed_at = sent
        self.lost.clear()
        log.info("lease acquired: this coordinator is active", node=self.node_id)
        return True

    async def acquire(self, stop: asyncio.Event, *, poll_s: float = 1.0) -> bool:
        """Wait until this node holds the lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await self.try_acquire():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_s)
        return False

    async def holder(self) -> str | None:
        """Node id of the current holder, or None."""
        store = await self._kv()
        try:
            entry = await store.get(self.key)
        except (TimeoutError, TransportError, NotFoundError):
            return None
        return entry.value.decode() if entry.value else None

    @property
    def margin_s(self) -> float:
        """How long before the lease could expire on the server its holder stops."""
        return max(1.0, self.ttl_s / 5)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until ``stop`` is set or the lease is lost (then set ``lost``).

        The server expires the lease ``ttl_s`` after the last renewal it stored,
        which was sent no earlier than ``_renewed_at``; so the holder gives up
        ``margin_s`` before ``_renewed_at + ttl_s`` unless a renewal got through,
        and a standby can never take over while this holder still serves."""
        store = await self._kv()
        interval = self.ttl_s / 3
        next_at = self._renewed_at + interval
        while True:
            deadline = self._renewed_at + self.ttl_s - self.margin_s
            now = time.monotonic()
            if now >= deadline:
                log.error("lease not renewed in time; stepping down", key=self.key)
                self.lost.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, min(next_at, deadline) - now))
            if stop.is_set():
                return
            sent = time.monotonic()
            if sent >= deadline:
                continue  # reported at the top
            try:
                renewal = store.update(self.key, self.node_id.encode(), last=self.revision)
                self.revision = int(await asyncio.wait_for(renewal, timeout=deadline - sent))
                self._renewed_at, next_at = sent, sent + interval
            except StateConflictError:
                log.error("lease taken by another coordinator; stepping down", key=self.key)
                self.lost.set()
                return
            except (TimeoutError, TransportError) as exc:
                # The bus is down or slow: retry soon; we hold the lease until the deadline.
                log.warning("lease renewal failed", key=self.key, error=str(exc) or "timeout")
                next_at = time.monotonic() + min(0.5, interval)

    async def release(self) -> None:
        """Give the lease up so a standby takes over at once (best effort)."""
        if self.lost.is_set() or not self.revision:
            return
        store = await self._kv()
        with contextlib.suppress(TransportError, TimeoutError):
            await store.delete(self.key, last=self.revision)
        self.revision = 0


__all__ = ["LEASE_KEY", "Lease"]

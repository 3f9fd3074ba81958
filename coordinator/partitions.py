"""Several active coordinators: the workflows are split into partitions.

The events stream stores each event under its workflow's partition (a NATS
subject transform with ``partition(n, 1)``, see :mod:`agenticflow.shared.wire.names`), and each
partition has its own durable consumer. A partition is owned through a lease
in KV (``coordinator.p<k>`` in ``<prefix>_leases``, :class:`Lease`); its owner
runs a :class:`Coordinator` for it alone. So the control plane is as many
processes as there are coordinators, and no two fold the same workflow.

Balance: every coordinator process announces itself in the same bucket
(``members.<node>``, expiring unless renewed) and aims to own its fair share,
``ceil(partitions / members)``. A coordinator under its share takes free
partitions (trying them in an order of its own, so two newcomers rarely
race); one over its share hands the extra ones back (its coordinator stops
cleanly, saves its snapshots, and gives up the lease at once). When a process
dies its leases expire after ``lease_ttl_s`` and its membership with them: the
survivors' shares grow and they take its partitions over.

A partition changing hands loses nothing: the new owner loads each workflow
from its snapshot and re-folds the events stored after it (the stream is the
truth), and the snapshot writes are compare-and-set, so a deposed owner that
has not noticed yet cannot overwrite the new one's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from agenticflow.coordinator.leader import LeaderElected
from agenticflow.coordinator.lease import LEASE_KEY, Lease
from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.errors import TransportError

log = structlog.get_logger("agenticflow.partitions")

MEMBER_PREFIX = "members."


def lease_key(partition: int) -> str:
    """The lease of one partition."""
    return f"{LEASE_KEY}.p{partition}"


def fair_share(partitions: int, members: int) -> int:
    """How many partitions each of ``members`` coordinators aims to own."""
    return math.ceil(partitions / max(members, 1))


def preference(node_id: str, partitions: int) -> list[int]:
    """The order in which a node tries free partitions: a rotation of its own."""
    start = zlib.crc32(node_id.encode()) % partitions
    return [(start + i) % partitions for i in range(partitions)]


@dataclass(slots=True)
class _Term:
    """One partition this process owns."""

    partition: int
    lease: Lease
    coordinator: Coordinator
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    keeper: asyncio.Task[None] | None = None

    @property
    def over(self) -> bool:
        """Its lease is lost, or its coordinator stopped by itself."""
        runner = self.coordinator.runner
        return self.lease.lost.is_set() or (runner is not None and runner.done())


class PartitionedCoordinators:
    """A coordinator process: with one partition, active or standby
    (:class:`LeaderElected`); with several, the owner of its share of them.

    ``run()`` serves until :meth:`shutdown`, then stops every partition's
    coordinator and hands its leases back so the others take over at once.
    """

    def __init__(self, *, bus: Bus, node_id: str, poll_s: float = 1.0) -> None:
        self.bus = bus
        self.node_id = node_id
        self.poll_s = poll_s
        self.partitions = 0
        """The events stream's partition count (known once ``run()`` started)."""
        self.owned: dict[int, _Term] = {}
        self.members: list[str] = []
        self.taken = 0
        """Partitions taken over since the start (a restart's recovery included)."""
        self.single: LeaderElected | None = None
        self._stop = asyncio.Event()
        self._store: Any = None
        self._announced = 0.0

    # Serving ------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`shutdown`."""
        await self.bus.ensure_topology()
        configured = self.bus.settings.partitions
        self.partitions = await self.bus.event_partitions() or configured
        if self.partitions != configured:
            log.warning(
                "the events stream was created with another partition count; using it",
                stream_partitions=self.partitions,
                configured=configured,
            )
        if self.partitions == 1:
            self.single = LeaderElected(bus=self.bus, node_id=self.node_id)
            if self._stop.is_set():
                return
            await self.single.run()
            return
        self._store = await self.bus.kv(
            self.bus.names.leases_bucket, ttl=float(self.bus.settings.lease_ttl_s)
        )
        log.info("coordinator partitions", node=self.node_id, partitions=self.partitions)
        try:
            while not self._stop.is_set():
                try:
                    await self._balance()
                except (TimeoutError, TransportError) as exc:
                    log.warning("partition balance skipped", error=str(exc) or type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.poll_s)
        finally:
            await asyncio.gather(*(self._end(term) for term in list(self.owned.values())))
            with contextlib.suppress(Exception):
                await self._store.delete(MEMBER_PREFIX + self.node_id)

    async def _balance(self) -> None:
        for term in [t for t in self.owned.values() if t.over]:
            log.warning("partition lost; handing it over", partition=term.partition)
            await self._end(term)
        await self._announce()
        self.members = await self._members()
        share = fair_share(self.partitions, len(self.members))
        # Over the share (a coordinator joined): hand back the last taken first.
        for partition in sorted(self.owned, reverse=True)[: max(len(self.owned) - share, 0)]:
            log.info("handing a partition over", partition=partition, share=share)
            await self._end(self.owned[partition])
        for partition in preference(self.node_id, self.partitions):
            if len(self.owned) >= share or self._stop.is_set():
                break
            if partition not in self.owned:
                await self._take(partition)

    async def _announce(self) -> None:
        interval = self.bus.settings.lease_ttl_s / 3
        if time.monotonic() - self._announced >= interval:
            await self._store.put(MEMBER_PREFIX + self.node_id, b"")
            self._announced = time.monotonic()

    async def _members(self) -> list[str]:
        keys = await self._store.keys()
        found = {k[len(MEMBER_PREFIX) :] for k in keys if k.startswith(MEMBER_PREFIX)}
        return sorted(found | {self.node_id})

    async def _take(self, partition: int) -> None:
        lease = Lease(bus=self.bus, node_id=self.node_id, key=lease_key(partition))
        if not await lease.try_acquire():
            return
        coordinator = Coordinator(
            bus=self.bus,
            node_id=f"{self.node_id}-p{partition}",
            partition=partition,
            partitions=self.partitions,
        )
        term = _Term(partition, lease, coordinator)
        term.keeper = asyncio.create_task(self._keep(term), name=f"lease-p{partition}")
        self.owned[partition] = term
        try:
            await coordinator.start()
        except Exception:
            log.exception("partition coordinator did not start", partition=partition)
            await self._end(term)
            return
        if term.lease.lost.is_set():  # while it started (it serves nothing: _keep stopped it)
            log.warning("partition lost while its coordinator started", partition=partition)
            await self._end(term)
            return
        self.taken += 1
        log.info("partition taken", partition=partition, node=self.node_id)

    async def _keep(self, term: _Term) -> None:
        """Renew a partition's lease; once it is lost, stop its coordinator at
        once. Not left to the balance loop, which a slow start of another
        partition can hold up for many seconds (a NATS fail-over): the lease's
        new owner would fold the partition meanwhile too, and each would refuse
        what the other dispatched."""
        await term.lease.keep(term.stop)
        if term.lease.lost.is_set():
            log.warning("partition lost; its coordinator stops", partition=term.partition)
            try:
                await term.coordinator.shutdown()
            except Exception:  # _end stops it again
                log.exception("partition coordinator did not stop", partition=term.partition)

    async def _end(self, term: _Term) -> None:
        """Stop a partition's coordinator, then give its lease back."""
        self.owned.pop(term.partition, None)
        term.stop.set()
        try:
            if term.keeper is not None:  # stopping the coordinator itself if the lease is lost
                with contextlib.suppress(asyncio.CancelledError):
                    await term.keeper
            await term.coordinator.shutdown()
        finally:
            await term.lease.release()

    # Reporting ----------------------------------------------------------
    @property
    def coordinators(self) -> dict[int, Coordinator]:
        """The coordinator of each partition this process owns."""
        return {k: term.coordinator for k, term in sorted(self.owned.items())}

    def ready(self) -> str | None:
        """None while serving (owning partitions or waiting for some)."""
        if self.single is not None:
            return self.single.ready()
        if self._stop.is_set():
            return "stopping"
        for term in self.owned.values():
            why = term.coordinator.ready()
            if why is not None:
                return f"partition {term.partition}: {why}"
        return None

    def health(self) -> dict[str, Any]:
        """The partitions owned, the members seen, and the sums of their reports."""
        if self.single is not None:
            return self.single.health()
        reports = {k: c.health() for k, c in self.coordinators.items()}
        report: dict[str, Any] = {
            "role": "active" if reports else "standby",
            "partitions": self.partitions,
            "owned": sorted(reports),
            "members": self.members,
            "taken": self.taken,
        }
        for name in ("workflows_cached", "workflows_running", "events_folded", "timers"):
            report[name] = sum(int(r.get(name, 0)) for r in reports.values())
        report["queues"] = reports[0]["queues"] if 0 in reports else {}
        return report

    async def shutdown(self) -> None:
        """Stop serving and hand every partition back (idempotent)."""
        self._stop.set()
        if self.single is not None:
            await self.single.shutdown()


__all__ = ["PartitionedCoordinators", "fair_share", "lease_key", "preference"]

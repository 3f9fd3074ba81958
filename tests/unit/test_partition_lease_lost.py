"""A partition coordinator whose lease is lost stops folding at once, by
itself: not when its process's balance loop next looks. That loop starts
partition coordinators one at a time, and a start can take many seconds during
a NATS fail-over (partition 0's waited 9.5 s for queue depths and 10 s for its
dead-letter consumer in a chaos run of test_localcluster); meanwhile the lease
had expired, the other process had taken the partition, and both folded it,
each refusing what the other had dispatched ("never dispatched", "foreign
clock entries"): workflows stuck for good."""

from __future__ import annotations

import asyncio
import os

from agenticflow.coordinator.partitions import PartitionedCoordinators, lease_key
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.ops.config import Settings


async def test_a_partition_whose_lease_is_lost_stops_at_once() -> None:
    settings = Settings(url=f"memory://lease-lost-{os.getpid()}", partitions=2, lease_ttl_s=3)
    bus = await Bus.connect(settings, name="coord-a", role="coordinator")
    process = PartitionedCoordinators(bus=bus, node_id="coord-a")
    try:
        await bus.ensure_topology()
        process.partitions = 2
        await process._take(1)  # what the balance loop does, without the loop
        term = process.owned[1]
        runner = term.coordinator.runner
        assert runner is not None
        assert not runner.done()
        # Another process holds the lease now (it expired during a fail-over): the
        # next renewal, a third of the TTL away, finds it changed.
        leases = await bus.kv(bus.names.leases_bucket, ttl=float(settings.lease_ttl_s))
        await leases.put(lease_key(1), b"coord-b")
        async with asyncio.timeout(5):  # was: until the balance loop ran again
            await runner
        assert term.lease.lost.is_set()
        assert term.over
    finally:
        for held in list(process.owned.values()):
            await process._end(held)
        await bus.close()

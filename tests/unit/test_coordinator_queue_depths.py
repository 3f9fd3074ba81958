"""Partition 0's coordinator also reads the task queues' depths for its
heartbeat: metrics only, which must hold nothing up. The read is a JetStream
API request that the bus retries for up to 30 s, and start() waited for it (it
sends the first heartbeat). In the chaos run of test_localcluster, a NATS node
killed while partition 0's coordinator was starting held its start up for
9.5 s (4 runs in 14): partition 0 folded nothing meanwhile, and the partition
balance of its process, which starts coordinators one at a time, stood still
until its membership expired."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.bus.registry import open_entry
from agenticflow.shared.ops.config import Settings


async def test_no_answer_on_the_queue_depths_holds_up_neither_start_nor_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(url=f"memory://queue-depths-{os.getpid()}", heartbeat_s=0.2)
    bus = await Bus.connect(settings, name="coord", role="coordinator")
    asked = asyncio.Event()

    async def no_answer(stream: str) -> list[dict[str, Any]]:
        asked.set()
        await asyncio.Event().wait()  # like a stream whose leader is being elected
        raise AssertionError("unreachable")

    monkeypatch.setattr(bus, "consumer_infos", no_answer)
    coordinator = Coordinator(bus=bus, node_id="coord-queues", partition=0, partitions=1)
    try:
        async with asyncio.timeout(5):  # was: never (the bus retries the read for 30 s)
            await coordinator.start()
        assert asked.is_set()
        assert coordinator.ready() is None
        agents = await bus.kv(bus.names.agents_bucket)
        key = "coord-queues.coordinator"
        stored = await bus.kv_read(agents, key)
        assert stored is not None  # registered all the same
        entry = open_entry(bus.seal, bus.names.agents_bucket, key, stored.value)
        assert entry is not None
        assert entry["coordinator"] == "coord-queues"
        assert coordinator.queues == {}  # no depths known yet
    finally:
        await coordinator.shutdown()
        await bus.close()

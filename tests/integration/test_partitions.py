"""The events stream's partition transform on a real server: the stored
subjects carry :func:`agenticflow.shared.wire.names.partition_of`, the count is fixed once the
stream exists, and every event reaches exactly one partition's consumer."""

from __future__ import annotations

import random

from nats.js.api import AckPolicy, ConsumerConfig

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.names import partition_of
from tests.conftest import unique_prefix
from tests.support.natsbus import connected


async def test_stored_subjects_carry_the_partition(nats_server: NatsServer) -> None:
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("ptx"), partitions=8)
    names = settings.names
    rng = random.Random(7)
    ids = [f"wf-{rng.getrandbits(48):x}" for _ in range(200)]
    async with connected(settings, name="partitions-test") as bus:
        await bus.ensure_topology()
        assert await bus.event_partitions() == 8
        for workflow_id in ids:
            await bus.js.publish(names.event_subject(workflow_id, "task.completed"), b"x")
        await bus.js.publish(f"{names.prefix}.evt.no-type", b"x")  # malformed: no event type
        stored = await bus.read_stored(names.events_stream, names.event_subjects)
        subjects = [m.subject for m in stored]
        expected = [f"{names.prefix}.evt.{w}.{partition_of(w, 8)}.task.completed" for w in ids]
        assert subjects == [*expected, f"{names.prefix}.evt.no-type"]

        # Each message is pending on exactly one partition's consumer; the
        # malformed one on partition 0's (whose coordinator records it as rejected).
        pending = []
        for partition in range(8):
            consumer = names.partition_consumer(partition, 8)
            await bus.js.add_consumer(
                names.events_stream,
                ConsumerConfig(
                    durable_name=consumer,
                    filter_subjects=names.partition_events(partition),
                    ack_policy=AckPolicy.EXPLICIT,
                ),
            )
            info = await bus.js.consumer_info(names.events_stream, consumer)
            pending.append(info.num_pending)
        counts = [sum(1 for w in ids if partition_of(w, 8) == k) for k in range(8)]
        counts[0] += 1
        assert pending == counts
        assert all(pending), "200 ids left a partition empty"

        # Stored events read back as published: signatures and ids intact.
        one = await bus.read_stored(names.events_stream, names.workflow_events(ids[0]))
        assert names.published_subject(one[0].subject) == names.event_subject(
            ids[0], "task.completed"
        )
        assert len(
            await bus.read_stored(
                names.events_stream, names.stored_events_of_type("task.completed")
            )
        ) == len(ids)

    # A process configured otherwise keeps the stream's count (and says so).
    other = settings.model_copy(update={"partitions": 2})
    async with connected(other, name="partitions-test-2") as bus:
        await bus.ensure_topology()
        assert await bus.event_partitions() == 8

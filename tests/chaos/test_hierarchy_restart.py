"""A coordinator killed (SIGKILL) while a child workflow runs: its last task
finishes while no coordinator is alive, so the restarted one must tell the
parent from the stream alone. The parent task completes exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.replay import verify
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.graph.hierarchy import child_workflow_id
from agenticflow.shared.wire.events import EventType
from tests.chaos.helpers import Observer, assert_exactly_once
from tests.conftest import CHAOS_APP, unique_prefix
from tests.integration.helpers import wf

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

FAST = {"task_ack_wait_s": 2, "lease_ttl_s": 3, "coordinator_ack_wait_s": 2}


async def test_coordinator_killed_while_a_child_runs_completes_the_parent_once(
    nats_server: NatsServer, log_dir: Path
) -> None:
    prefix = unique_prefix("hkill")
    async with (
        DevCluster(
            app=CHAOS_APP,
            nats_url=nats_server.url,
            prefix=prefix,
            settings=FAST,
            log_dir=log_dir / prefix,
            workers=1,
            concurrency=4,
        ) as cluster,
        connected(cluster.settings, name="chaos-hierarchy") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        client = Client(bus=bus, node_id="chaos-hierarchy")
        definition = wf(
            {"id": "first", "capability": "add", "params": {"value": 1}},
            {
                "id": "c",
                "depends_on": ["first"],
                "workflow": {
                    "name": "inner",
                    "tasks": [{"id": "s", "capability": "slow", "params": {"seconds": 1.0}}],
                },
            },
            {"id": "after", "capability": "echo", "depends_on": ["c"]},
        )
        workflow_id = await client.submit(definition)
        child_id = child_workflow_id(workflow_id, "c", 1)

        def child_task(event_type: EventType) -> bool:
            return any(
                e.workflow_id == child_id and e.type == event_type and e.task_id == "s"
                for _, e in observer.seen
            )

        await observer.until(lambda o: child_task(EventType.TASK_STARTED))
        assert cluster.coordinator is not None
        cluster.kill(cluster.coordinator)
        # The child's last task finishes while no coordinator runs.
        await observer.until(lambda o: child_task(EventType.TASK_COMPLETED))
        assert not any(
            e.workflow_id == child_id and e.type == EventType.WORKFLOW_COMPLETED
            for _, e in observer.seen
        )
        cluster.add_coordinator()
        result = await assert_exactly_once(client, [workflow_id, child_id], timeout=90)
        assert result.duplicate_outcomes_in_stream == 0
        parent = await client.status(workflow_id)
        child = await client.status(child_id)
        assert parent.tasks["c"].result == child.output == {"s": "done"}
        assert parent.output["after"]["inputs"] == {"c": {"s": "done"}}
        # In the streams (a re-sent message, deduplicated, is not stored twice).
        events = [*await client.events(workflow_id), *await client.events(child_id)]
        stored = Counter((e.workflow_id, e.type, e.task_id) for e in events)
        assert stored[(child_id, EventType.WORKFLOW_SUBMITTED, None)] == 1, "started once"
        assert stored[(child_id, EventType.WORKFLOW_COMPLETED, None)] == 1
        assert stored[(workflow_id, EventType.TASK_COMPLETED, "c")] == 1, "told once"
        assert stored[(workflow_id, EventType.WORKFLOW_COMPLETED, None)] == 1
        for replayed in (workflow_id, child_id):
            events = await client.events(replayed)
            assert verify(events, await client.status(replayed)) == [], replayed

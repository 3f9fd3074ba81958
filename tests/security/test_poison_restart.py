"""A coordinator that starts on a stream already holding poison keeps serving.

The poison is published while no coordinator runs, onto a workflow whose
snapshot predates it: the new coordinator meets it twice, re-folding the
workflow's stream tail on recovery and reading its durable consumer. Both
refuse it; it is recorded once per event; the workflow and the cluster go on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.wire.codec import H_SCHEMA, H_VCLOCK
from agenticflow.shared.wire.events import (
    EventType,
    MessageRejected,
    TaskCompleted,
    TaskHeartbeat,
    WorkflowResumeRequested,
)
from agenticflow.shared.wire.vclock import VectorClock
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import run, wf
from tests.security.conftest import Target, forged

pytestmark = pytest.mark.timeout(180)

FAST = {"lease_ttl_s": 3, "coordinator_ack_wait_s": 2}


async def test_a_coordinator_restarted_on_poison_refuses_it_and_serves(
    nats_server: NatsServer, log_dir: Path
) -> None:
    prefix = unique_prefix("poisoned")
    async with (
        DevCluster(
            app="tests.support.app:core",
            workers=1,
            nats_url=nats_server.url,
            prefix=prefix,
            settings=FAST,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="poisoner") as bus,
    ):
        client = Client(bus=bus, node_id="poisoner")
        observer = Observer(bus)
        await observer.start()
        target = Target("default", cluster, bus, client, observer, None)
        workflow_id = await client.submit(wf({"id": "w", "capability": "nobody-serves-this"}))
        waiting = await target.until_state(
            workflow_id, lambda s: s.tasks["w"].status == TaskStatus.SCHEDULED
        )
        old = cluster.coordinator
        assert old is not None
        cluster.kill(old)
        await asyncio.to_thread(old.wait, 30)

        clock = waiting.vclock.increment("w-evil")
        beat = forged(
            workflow_id,
            EventType.TASK_HEARTBEAT,
            TaskHeartbeat(worker="w-evil"),
            source="w-evil",
            vclock=clock,
            task_id="w",
            attempt=1,
        )
        poisons = {
            "schema": await target.publish(
                beat, as_="w", headers=lambda h: h.__setitem__(H_SCHEMA, "7" * 4400)
            ),
            "overflow": await target.publish(
                beat.model_copy(update={"id": beat.id + "-o"}),
                as_="w",
                headers=lambda h: h.__setitem__(H_VCLOCK, f"x:{2**63 - 1}"),
            ),
            "bloat": await target.publish(
                forged(
                    workflow_id,
                    EventType.WORKFLOW_RESUME_REQUESTED,
                    WorkflowResumeRequested(),
                    vclock=VectorClock({f"n{i:03}": 1 for i in range(600)}),
                ),
                as_="c",
            ),
            "attempt": await target.publish(
                forged(
                    workflow_id,
                    EventType.TASK_COMPLETED,
                    TaskCompleted(result="forged"),
                    source="w-evil",
                    vclock=clock,
                    task_id="w",
                    attempt=5,
                ),
                as_="w",
            ),
        }
        cluster.add_coordinator()
        codes = {
            name: (await target.rejection(seq, timeout=60)).code for name, seq in poisons.items()
        }
        assert codes == {
            "schema": "malformed_message",
            "overflow": "clock_overflow",
            "bloat": "clock_too_large",
            "attempt": "not_dispatched",
        }
        fresh = await run(client, wf({"id": "a", "capability": "add", "params": {"value": 5}}))
        assert fresh.tasks["a"].result == 5
        state = await client.status(workflow_id)
        assert state.status == WorkflowStatus.RUNNING
        assert state.tasks["w"].status == TaskStatus.SCHEDULED
        assert len(state.vclock) < 64
        for seq in poisons.values():
            records = [
                e
                for _, e in observer.seen
                if isinstance(e.data, MessageRejected) and e.data.stream_seq == seq
            ]
            assert len(records) == 1, f"seq {seq} recorded {len(records)} times"
        assert cluster.coordinator is not None
        assert cluster.coordinator.poll() is None

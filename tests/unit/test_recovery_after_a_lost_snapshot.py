"""A coordinator killed between storing a batch's commands and writing its
snapshot, whose task then finished while no coordinator ran: the next one folds
the workflow from scratch and must not store anything after its end (a chaos
run once saw a ``task.unserved`` hint stored after ``workflow.completed``,
which a re-fold of the stream merged and the snapshot did not)."""

from __future__ import annotations

import os
import time

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import Emit, fold, reduce
from agenticflow.coordinator.replay import BOOKKEEPING, first_difference, verify
from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import Event, EventType, TaskCompleted, TaskStarted
from tests.integration.helpers import wf


async def test_a_refold_after_a_lost_snapshot_stores_nothing_after_the_end() -> None:
    settings = Settings(url=f"memory://lost-snapshot-{os.getpid()}")
    bus = await Bus.connect(settings, name="client")
    try:
        await bus.ensure_topology()
        client = Client(bus=bus, node_id="client")
        workflow_id = await client.submit(wf({"id": "s", "capability": "slow"}))
        (submitted,) = await client.events(workflow_id)
        # The killed coordinator's writer stored its batch's commands...
        state, commands = reduce(None, submitted, source="coord-1")
        assert state is not None
        await bus.publish_many([bus.encode_event(c.event) for c in commands if isinstance(c, Emit)])
        # ...but not the snapshot; then a worker ran the task (no coordinator up).
        now = time.time_ns()
        for i, (kind, data) in enumerate(
            [
                (
                    EventType.TASK_STARTED,
                    TaskStarted(worker="w1", agent="slow", instance="w1.slow.0"),
                ),
                (
                    EventType.TASK_COMPLETED,
                    TaskCompleted(result="done", worker="w1", agent="slow", instance="w1.slow.0"),
                ),
            ]
        ):
            event = Event(
                id=f"{workflow_id}:s:1:{kind.value}",
                type=kind,
                workflow_id=workflow_id,
                source="w1",
                timestamp=now + i,
                vclock=state.vclock.merge({"w1": i + 1}),
                data=data,
                task_id="s",
                attempt=1,
            )
            await bus.publish_many([bus.encode_event(event)])
        coordinator_bus = await Bus.connect(settings, name="coord", role="coordinator")
        async with Coordinator(bus=coordinator_bus, node_id="coord-2"):
            final = await client.wait(workflow_id, timeout=30)
        # Shut down: its writer stored whatever it had to.
        events = await client.events(workflow_id)
        assert events[-1].type == EventType.WORKFLOW_COMPLETED, [e.type for e in events]
        assert not [e for e in events if e.type == EventType.TASK_UNSERVED]
        refold = fold(events)
        assert refold is not None
        difference = first_difference(
            refold.model_dump(mode="json", exclude=BOOKKEEPING),
            final.model_dump(mode="json", exclude=BOOKKEEPING),
        )
        assert difference is None, difference
        assert verify(events, final) == []
        # Nor is the task sent again: its message went out before the crash,
        # and a second one would run it twice once the duplicate window passed.
        names = bus.names
        assert await bus.count_stored(names.tasks_stream, names.task_subject("slow")) == 0
    finally:
        await bus.close()

"""Nothing stops a partition: whatever raises while folding or snapshotting one
event dead-letters that event, and the coordinator goes on.

Admission and the reducer are built not to raise (the fuzz tests hold them to
it), so these tests inject the fault: the coordinator's fold, or a state's
encoding, raises for one marked event. A real nats-server, an in-process
coordinator and worker.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator import reducer, service
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.service import Coordinator
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.codec import encode_event
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    InterventionRequested,
    MessageRejected,
    TaskHeartbeat,
)
from agenticflow.worker.runtime import Worker
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import run, wf
from tests.support.app import app

pytestmark = pytest.mark.timeout(120)


@dataclass
class Rig:
    bus: Bus
    client: Client
    observer: Observer

    async def poison_record(self, seq: int) -> MessageRejected:
        def found() -> list[MessageRejected]:
            return [
                e.data
                for _, e in self.observer.seen
                if isinstance(e.data, MessageRejected) and e.data.stream_seq == seq
            ]

        await self.observer.until(lambda _: bool(found()), timeout=30)
        records = found()
        assert len(records) == 1
        return records[0]

    async def running(self) -> WorkflowState:
        """A workflow whose task runs until feedback arrives."""
        workflow_id = await self.client.submit(
            wf({"id": "s", "capability": "listen", "params": {"timeout": 90}})
        )
        async for state in self.client.states(workflow_id):
            if state.tasks["s"].status == TaskStatus.RUNNING:
                return state
        raise AssertionError("the workflow never ran")

    async def publish(self, event: Event) -> int:
        seq, _ = await self.bus.publish_raw(*_reordered(encode_event(event, self.bus.names)))
        return seq


def _reordered(message: tuple[str, dict[str, str], bytes]) -> tuple[str, bytes, dict[str, str]]:
    subject, headers, body = message
    return subject, body, headers


@pytest.fixture
async def rig(nats_server: NatsServer) -> AsyncIterator[Rig]:
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("guard"))
    async with (
        connected(settings, name="guard-coordinator", role="coordinator") as coordinator_bus,
        Coordinator(bus=coordinator_bus, node_id="coord-guard"),
        connected(settings, name="guard-worker", role="worker") as worker_bus,
        Worker(bus=worker_bus, app=app, node_id="w-guard", concurrency=32),
        connected(settings, name="guard-client") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        yield Rig(bus, Client(bus=bus, node_id="guard-client"), observer)


def _raising_for(marker: Callable[[Event], bool]) -> Callable[..., Any]:
    real = reducer.apply

    def apply(state: WorkflowState | None, event: Event, **kwargs: Any) -> Any:
        if marker(event):
            raise RuntimeError("injected fault while folding")
        return real(state, event, **kwargs)

    return apply


async def test_an_event_whose_fold_raises_is_dead_lettered(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def poisoned(event: Event) -> bool:
        return isinstance(event.data, TaskHeartbeat) and event.data.worker == "poison"

    monkeypatch.setattr(service, "apply", _raising_for(poisoned))
    state = await rig.running()
    seq = await rig.publish(
        Event(
            id="poison-beat",
            type=EventType.TASK_HEARTBEAT,
            workflow_id=state.workflow_id,
            source="w-guard",
            timestamp=time.time_ns(),
            vclock=state.vclock.increment("w-guard"),
            data=TaskHeartbeat(worker="poison"),
            task_id="s",
            attempt=1,
        )
    )
    record = await rig.poison_record(seq)
    assert record.code == "poison_message"
    assert "injected fault while folding" in record.reason
    await rig.client.feedback(state.workflow_id, "go on")
    done = await rig.client.wait(state.workflow_id, timeout=60)
    assert done.status == WorkflowStatus.COMPLETED
    fresh = await run(rig.client, wf({"id": "a", "capability": "add", "params": {"value": 1}}))
    assert fresh.tasks["a"].result == 1


async def test_an_event_that_makes_a_state_unsavable_is_dead_lettered(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = WorkflowState.to_snapshot

    def to_snapshot(self: WorkflowState) -> bytes:
        if "unsavable" in self.feedback:
            raise OverflowError("injected fault while encoding")
        return real(self)

    monkeypatch.setattr(WorkflowState, "to_snapshot", to_snapshot)
    state = await rig.running()
    seq = await rig.publish(
        Event(
            id="poison-feedback",
            type=EventType.INTERVENTION_REQUESTED,
            workflow_id=state.workflow_id,
            source="guard-client",
            timestamp=time.time_ns(),
            vclock=state.vclock.increment("guard-client"),
            data=InterventionRequested(request_id="r1", action="feedback", text="unsavable"),
        )
    )
    record = await rig.poison_record(seq)
    assert record.code == "poison_message"
    assert "injected fault while encoding" in record.reason
    done = await rig.client.wait(state.workflow_id, timeout=60)
    assert done.status == WorkflowStatus.COMPLETED
    assert done.feedback == []
    other = await rig.running()  # the control: the coordinator still steers
    applied = await rig.client.feedback(other.workflow_id, "fine")
    assert applied.feedback == ["fine"]

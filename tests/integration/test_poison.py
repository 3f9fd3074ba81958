"""Poison messages: recorded with a reason, never applied, never redelivered forever."""

from __future__ import annotations

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.wire.codec import (
    H_ATTEMPT,
    H_MSG_ID,
    H_SCHEMA,
    H_SOURCE,
    H_TASK,
    H_TYPE,
    H_VCLOCK,
    H_WORKFLOW,
)
from agenticflow.shared.wire.events import Event, EventType, MessageRejected
from agenticflow.shared.wire.names import SYSTEM_WORKFLOW
from tests.chaos.helpers import Observer
from tests.integration.helpers import of_type, run, wf
from tests.support.acks import AckWatch


async def _waiting_task(client: Client) -> tuple[str, Event]:
    """A workflow whose one task waits in a queue nobody serves, and its dispatch."""
    workflow_id = await client.submit(wf({"id": "lonely", "capability": "nobody-serves-this"}))
    async for state in client.states(workflow_id):
        if state.tasks["lonely"].attempts == 1:
            break
    (scheduled,) = of_type(await client.events(workflow_id), EventType.TASK_SCHEDULED)
    return workflow_id, scheduled


async def _garbage_task(bus: Bus, workflow_id: str, msg_id: str, clock: str) -> int:
    """A task on a served subject, naming the waiting task, with a garbage body."""
    seq, _ = await bus.publish_raw(
        bus.names.task_subject("echo"),
        b"\xc1\xc1 not msgpack",
        {
            H_MSG_ID: msg_id,
            H_TYPE: "task",
            H_SCHEMA: "1",
            H_VCLOCK: clock,
            H_SOURCE: "attacker",
            H_WORKFLOW: workflow_id,
            H_TASK: "lonely",
            H_ATTEMPT: "1",
        },
    )
    return seq


async def test_unreadable_task_fails_its_workflow_clearly(client: Client, bus: Bus) -> None:
    # A dispatched task message that cannot be read (its clock is the dispatch's).
    workflow_id, scheduled = await _waiting_task(client)
    acks = await AckWatch(bus, "echo").start()
    seq = await _garbage_task(bus, workflow_id, "corrupt-1", scheduled.vclock.encode())
    state = await client.wait(workflow_id, timeout=30)
    assert state.status == WorkflowStatus.FAILED
    error = state.tasks["lonely"].error
    assert error is not None
    assert error.type == "MalformedMessageError"
    assert "could not be read" in error.message
    events = await client.events(workflow_id)
    rejected = of_type(events, EventType.MESSAGE_REJECTED)
    assert len(rejected) == 1
    assert isinstance(rejected[0].data, MessageRejected)
    assert "msgpack" in rejected[0].data.reason
    assert await acks.next("+TERM") == seq, "terminated, never redelivered"
    await acks.stop()


async def test_garbage_from_someone_who_never_saw_the_dispatch_fails_nothing(
    client: Client, bus: Bus
) -> None:
    workflow_id, _ = await _waiting_task(client)
    observer = Observer(bus)
    await observer.start()
    acks = await AckWatch(bus, "echo").start()
    seq = await _garbage_task(bus, workflow_id, "forged-1", "x:1")
    assert await acks.next("+TERM") == seq, "terminated, never redelivered"
    # The worker records the task as rejected and reports a failure, which admission
    # refuses: its clock does not follow the dispatch (and carries the forger's entry).
    refusals = {"clock_behind_dispatch", "clock_foreign_entries"}
    await observer.until(
        lambda o: any(
            isinstance(e.data, MessageRejected) and e.data.code in refusals
            for _, e in o.seen
            if e.workflow_id == workflow_id
        ),
        timeout=30,
    )
    await acks.stop()
    state = await client.status(workflow_id)
    assert state.status == WorkflowStatus.RUNNING
    assert state.tasks["lonely"].status == TaskStatus.SCHEDULED
    assert state.tasks["lonely"].error is None


async def test_anonymous_garbage_is_recorded_and_workers_keep_serving(
    client: Client, bus: Bus
) -> None:
    acks = await AckWatch(bus, "add").start()
    seq, _ = await bus.publish_raw(bus.names.task_subject("add"), b"garbage", {H_MSG_ID: "g-1"})
    state = await run(client, wf({"id": "after", "capability": "add", "params": {"value": 3}}))
    assert state.status == WorkflowStatus.COMPLETED
    assert await acks.next("+TERM") == seq, "terminated, never redelivered"
    await acks.stop()
    system = await client.events(SYSTEM_WORKFLOW)
    reasons = [
        e.data for e in system if isinstance(e.data, MessageRejected) and e.data.stream_seq == seq
    ]
    assert len(reasons) == 1
    assert "missing header AF-Type" in reasons[0].reason


async def test_malformed_event_is_recorded_and_not_applied(client: Client, bus: Bus) -> None:
    workflow_id = await client.submit(wf({"id": "lonely", "capability": "nobody-serves-this"}))
    async for state in client.states(workflow_id):
        if state.tasks["lonely"].attempts == 1:
            break
    subject = bus.names.event_subject(workflow_id, "task.completed")
    watch = await bus.nc.subscribe(bus.names.event_subject(workflow_id, "message.rejected"))
    await bus.publish_raw(subject, b"\x93\x01", {H_MSG_ID: "bad-evt-1", H_TYPE: "task.completed"})
    await watch.next_msg(timeout=10)
    await watch.unsubscribe()
    events = await client.events(workflow_id)
    rejected = of_type(events, EventType.MESSAGE_REJECTED)[0]
    assert isinstance(rejected.data, MessageRejected)
    assert rejected.data.subject == subject
    current = await client.status(workflow_id)
    assert current.status == WorkflowStatus.RUNNING
    assert current.tasks["lonely"].result is None
    # The coordinator still serves other workflows.
    assert (await run(client, wf({"id": "x", "capability": "add"}))).status == "completed"


async def test_unreadable_submission_is_rejected_with_the_reason(
    client: Client, bus: Bus, cluster: DevCluster
) -> None:
    subject = bus.names.event_subject("wf-garbled", "workflow.submitted")
    await bus.publish_raw(
        subject,
        b"\x80",
        {H_MSG_ID: "wf-garbled:submitted", H_TYPE: "workflow.submitted", H_SCHEMA: "1",
         H_VCLOCK: "c:1", H_SOURCE: "c"},
    )  # fmt: skip
    state = await client.wait("wf-garbled", timeout=30)
    assert state.status == WorkflowStatus.REJECTED
    assert state.reason is not None
    assert "could not be read" in state.reason

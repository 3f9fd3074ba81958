"""People steering running workflows, across real processes: pause, resume,
abort, modify, feedback, approval gates and handler approval requests.

The session cluster (a coordinator and two worker processes) runs the tasks;
the test process is the person, through the client API and the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.replay import verify
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import InterventionRefusedError
from agenticflow.shared.wire.codec import decode_event
from agenticflow.shared.wire.events import Event, EventType, agent_moves
from agenticflow.worker.runtime import Worker
from tests.integration.helpers import agenticflow, of_type, wf
from tests.support.app import steering
from tests.support.natsbus import connected


def task_is(task_id: str, *statuses: TaskStatus) -> Callable[[WorkflowState], bool]:
    return lambda state: state.tasks[task_id].status in statuses or state.is_terminal


async def running(client: Client, workflow_id: str, task_id: str) -> WorkflowState:
    return await client.wait_for(workflow_id, task_is(task_id, TaskStatus.RUNNING), timeout=60)


async def waiting(client: Client, workflow_id: str, task_id: str) -> WorkflowState:
    state = await client.wait_for(
        workflow_id, task_is(task_id, TaskStatus.WAITING_APPROVAL), timeout=60
    )
    assert state.tasks[task_id].status == TaskStatus.WAITING_APPROVAL, state.reason
    return state


async def next_event(bus: Bus, workflow_id: str, event_type: EventType) -> asyncio.Future[Event]:
    """A future for the next event of this type stored for the workflow."""
    found: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Any) -> None:
        if not found.done():
            found.set_result(decode_event(msg.subject, msg.headers, msg.data, bus.names))

    sub = await bus.nc.subscribe(bus.names.event_subject(workflow_id, event_type.value), cb=on_msg)
    found.add_done_callback(lambda _: asyncio.ensure_future(sub.unsubscribe()))
    return found


async def test_pause_holds_dispatch_feedback_reaches_the_running_handler_then_resume(
    client: Client,
) -> None:
    workflow_id = await client.submit(
        wf(
            {"id": "a", "capability": "listen"},
            {"id": "b", "capability": "context", "depends_on": ["a"]},
        )
    )
    await running(client, workflow_id, "a")
    paused = await client.pause(workflow_id, by="ann")
    assert paused.action == "pause"
    applied = await client.feedback(workflow_id, "go on, briefly")
    assert applied.feedback == ["go on, briefly"]
    # The running handler got the feedback and finished; b is held by the pause.
    state = await client.wait_for(
        workflow_id, task_is("a", TaskStatus.COMPLETED, TaskStatus.FAILED), timeout=60
    )
    assert state.tasks["a"].result == {"before": [], "got": "go on, briefly"}
    assert state.paused
    assert state.tasks["b"].status == TaskStatus.PENDING
    assert state.tasks["b"].note == "held: the workflow is paused"
    await client.resume(workflow_id)
    final = await client.wait(workflow_id, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    assert final.tasks["b"].result["feedback"] == ["go on, briefly"]
    events = await client.events(workflow_id)
    applied_events = of_type(events, EventType.INTERVENTION_APPLIED)
    assert [e.data.action for e in applied_events] == ["pause", "feedback", "resume"]  # type: ignore[attr-defined]
    # Replay re-folds the interventions to the stored state, and causality holds.
    assert verify(events, await client.status(workflow_id)) == []


async def test_abort_cancels_the_running_handler_on_its_worker(client: Client, bus: Bus) -> None:
    workflow_id = await client.submit(
        wf(
            {"id": "a", "capability": "listen", "params": {"timeout": 600}},
            {"id": "b", "capability": "echo", "depends_on": ["a"]},
        )
    )
    await running(client, workflow_id, "a")
    cancelled = await next_event(bus, workflow_id, EventType.TASK_FAILED)
    await client.abort(workflow_id, "wrong customer", by="ann")
    final = await client.wait(workflow_id, timeout=30)
    assert final.status == WorkflowStatus.ABORTED
    assert final.reason == "aborted by ann: wrong customer"
    assert {t.status for t in final.tasks.values()} == {TaskStatus.CANCELLED}
    # The worker cancelled the handler at once (its timeout was 600 s) and said so.
    failure = await asyncio.wait_for(cancelled, 30)
    assert failure.data.error.type == "TaskCancelledError"  # type: ignore[attr-defined]
    assert "wrong customer" in failure.data.error.message  # type: ignore[attr-defined]
    with pytest.raises(InterventionRefusedError) as refused:
        await client.pause(workflow_id)
    assert refused.value.code == "workflow_finished"


async def test_modify_changes_tasks_not_started_and_refuses_invalid_changes(
    client: Client,
) -> None:
    workflow_id = await client.submit(
        wf(
            {"id": "a", "capability": "listen"},
            {"id": "b", "capability": "context", "depends_on": ["a"], "params": {"x": 1}},
            {"id": "c", "capability": "echo", "depends_on": ["b"]},
        )
    )
    await running(client, workflow_id, "a")
    before = await client.status(workflow_id)
    for bad, code in (
        ({"remove": ["a"]}, "has started"),
        ({"remove": ["b"]}, "unknown task 'b'"),
        ({"add": [{"id": "d", "capability": "echo", "depends_on": ["zz"]}]}, "unknown task"),
    ):
        with pytest.raises(InterventionRefusedError) as refused:
            await client.modify(workflow_id, bad)
        assert refused.value.code == "invalid_modification"
        assert code in str(refused.value)
    unchanged = await client.status(workflow_id)
    assert unchanged.definition == before.definition
    applied = await client.modify(
        workflow_id,
        {
            "remove": ["c"],
            "params": {"b": {"y": 2}},
            "add": [{"id": "d", "capability": "echo", "depends_on": ["a"]}],
        },
    )
    assert "removed c" in applied.summary
    await client.feedback(workflow_id, "done")
    final = await client.wait(workflow_id, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    assert sorted(final.tasks) == ["a", "b", "d"]
    assert final.tasks["b"].result["params"] == {"x": 1, "y": 2}
    assert sorted(final.output) == ["b", "d"]


async def test_an_approval_gate_waits_and_the_decision_reaches_the_handler(
    client: Client,
) -> None:
    definition = wf(
        {"id": "draft", "capability": "echo"},
        {"id": "publish", "capability": "context", "depends_on": ["draft"], "approval": {}},
    )
    workflow_id = await client.submit(definition)
    state = await waiting(client, workflow_id, "publish")
    pending = state.tasks["publish"].waiting
    assert pending is not None
    assert pending.gate
    assert "draft" in pending.data["inputs"]
    with pytest.raises(InterventionRefusedError) as refused:
        await client.approve(workflow_id, "draft")
    assert refused.value.code == "not_waiting"
    await client.approve(workflow_id, "publish", "looks good", by="ann")
    final = await client.wait(workflow_id, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    approval = final.tasks["publish"].result["approval"]
    assert (approval["approved"], approval["comment"], approval["by"]) == (
        True,
        "looks good",
        "ann",
    )

    rejected_id = await client.submit(definition)
    await waiting(client, rejected_id, "publish")
    await client.reject(rejected_id, "publish", "too long")
    failed = await client.wait(rejected_id, timeout=60)
    assert failed.status == WorkflowStatus.FAILED
    assert failed.reason is not None
    assert "approval rejected by" in failed.reason
    assert "too long" in failed.reason
    assert failed.tasks["publish"].started_at is None  # it never ran


async def test_an_expired_gate_follows_on_timeout(client: Client) -> None:
    workflow_id = await client.submit(
        wf(
            {
                "id": "x",
                "capability": "context",
                "approval": {"timeout": "1s", "on_timeout": "approve"},
            }
        )
    )
    final = await client.wait(workflow_id, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    approval = final.tasks["x"].result["approval"]
    assert (approval["approved"], approval["timed_out"], approval["by"]) == (True, True, "timeout")


async def test_a_handler_request_frees_its_slot_and_gets_each_decision(client: Client) -> None:
    workflow_id = await client.submit(
        wf({"id": "refund", "capability": "ask", "params": {"asks": 2}})
    )
    state = await waiting(client, workflow_id, "refund")
    pending = state.tasks["refund"].waiting
    assert pending is not None
    assert (pending.reason, pending.data, pending.index) == ("refund #0?", {"amount": 90}, 0)
    await client.approve(workflow_id, "refund", "ok")
    await client.wait_for(
        workflow_id,
        lambda s: s.tasks["refund"].waiting is not None and s.tasks["refund"].waiting.index == 1,
        timeout=60,
    )
    await client.reject(workflow_id, "refund", "not this one")
    final = await client.wait(workflow_id, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    decisions = final.tasks["refund"].result["decisions"]
    assert [(d["approved"], d["comment"]) for d in decisions] == [
        (True, "ok"),
        (False, "not this one"),
    ]
    events = await client.events(workflow_id)
    # Each wait ended its attempt: the worker acked it (no slot held while waiting).
    asked = of_type(events, EventType.TASK_APPROVAL_REQUESTED)
    assert [(e.attempt, e.data.index) for e in asked] == [(1, 0), (2, 1)]  # type: ignore[attr-defined]
    # The agent's moves are not stored (by default): the task events imply them.
    assert of_type(events, EventType.AGENT_STATE_CHANGED) == []
    moves = [
        (e.data.from_state, e.data.to_state)  # type: ignore[attr-defined]
        for e in agent_moves(events)
        if e.attempt == 1
    ]
    assert moves == [
        ("idle", "processing"),
        ("processing", "waiting_approval"),
        ("waiting_approval", "idle"),
    ]


async def test_interventions_on_unknown_or_finished_workflows_are_refused_and_recorded(
    client: Client,
) -> None:
    with pytest.raises(InterventionRefusedError) as unknown:
        await client.pause("never-submitted-wf")
    assert unknown.value.code == "unknown_workflow"
    events = await client.events("never-submitted-wf")
    assert [e.type for e in events] == [
        EventType.INTERVENTION_REQUESTED,
        EventType.INTERVENTION_REFUSED,
    ]
    workflow_id = await client.submit(wf({"id": "a", "capability": "echo"}))
    await client.wait(workflow_id, timeout=60)
    with pytest.raises(InterventionRefusedError) as finished:
        await client.feedback(workflow_id, "too late")
    assert finished.value.code == "workflow_finished"


async def test_the_cli_steers_and_exits_5_on_a_refusal(client: Client, cluster: DevCluster) -> None:
    workflow_id = await client.submit(
        wf({"id": "a", "capability": "context", "approval": {"reason": "ok to run?"}})
    )
    await waiting(client, workflow_id, "a")
    not_waiting = await asyncio.to_thread(
        agenticflow, cluster.settings, "approve", workflow_id, "nope"
    )
    assert not_waiting.returncode == 5, not_waiting.stderr
    assert "no task 'nope'" in not_waiting.stderr
    done = await asyncio.to_thread(
        agenticflow, cluster.settings, "approve", workflow_id, "a", "--comment", "go", "--by", "bo"
    )
    assert done.returncode == 0, done.stderr
    assert "task 'a' approved" in done.stdout
    final = await client.wait(workflow_id, timeout=60)
    assert final.tasks["a"].result["approval"]["comment"] == "go"
    unknown = await asyncio.to_thread(agenticflow, cluster.settings, "pause", "no-such-wf")
    assert unknown.returncode == 3
    assert "unknown_workflow" in unknown.stderr


async def test_per_task_agent_events_can_be_stored_and_are_not_derived_twice(
    cluster: DevCluster,
) -> None:
    chatty = cluster.settings.model_copy(update={"agent_task_events": True})
    async with connected(chatty, name="chatty-worker") as bus:
        client = Client(bus=bus, node_id="chatty-client")
        async with Worker(bus=bus, app=steering, node_id="w-chatty", route="chatty"):
            workflow_id = await client.submit(
                wf({"id": "a", "capability": "context"}), route="chatty"
            )
            final = await client.wait(workflow_id, timeout=60)
        assert final.status == WorkflowStatus.COMPLETED
        instance = final.tasks["a"].instance or ""
        assert instance.startswith("w-chatty.context.")
        events = await client.events(workflow_id)
        stored = of_type(events, EventType.AGENT_STATE_CHANGED)
        expected = [
            ("idle", "processing", "task_assigned"),
            ("processing", "idle", "task_completed"),
        ]
        assert [
            (e.data.from_state, e.data.to_state, e.data.trigger)  # type: ignore[attr-defined]
            for e in stored
        ] == expected
        assert agent_moves(events) == stored  # none derived beside the stored ones
        # Without them, the task events imply the same moves.
        bare = [e for e in events if e.type != EventType.AGENT_STATE_CHANGED]
        derived = agent_moves(bare)
        assert [
            (e.data.instance, e.data.from_state, e.data.to_state, e.data.trigger)  # type: ignore[attr-defined]
            for e in derived
        ] == [(instance, *move) for move in expected]
        assert [e.seq for e in derived] == [
            e.seq for e in bare if e.type in (EventType.TASK_STARTED, EventType.TASK_COMPLETED)
        ]

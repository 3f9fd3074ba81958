"""Hierarchical workflows on the session cluster: tasks that are child workflows.

A child runs as a workflow of its own (own id, events, snapshot), started by
the coordinator when its parent's task is ready; its outcome becomes the
task's. Waits are on snapshots and events with timeouts, never sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.replay import verify
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.graph.hierarchy import CHILD_CAPABILITY, child_workflow_id
from agenticflow.shared.wire.events import EventType
from tests.integration.helpers import agenticflow, of_type, run, wf

pytestmark = pytest.mark.timeout(120)


def sub(*tasks: dict[str, Any], name: str = "child") -> dict[str, Any]:
    return {"name": name, "tasks": list(tasks)}


def task_is(task_id: str, *statuses: TaskStatus) -> Callable[[WorkflowState], bool]:
    return lambda state: state.tasks[task_id].status in statuses or state.is_terminal


async def assert_replays_clean(client: Client, *workflow_ids: str) -> None:
    for workflow_id in workflow_ids:
        events = await client.events(workflow_id)
        assert verify(events, await client.status(workflow_id)) == [], workflow_id


async def test_parent_child_and_grandchild_complete_with_the_childs_output(
    client: Client, cluster: DevCluster
) -> None:
    definition = wf(
        {"id": "plan", "capability": "add", "params": {"value": 1}},
        {
            "id": "research",
            "depends_on": ["plan"],
            "params": {"topic": "nats"},
            "workflow": sub(
                {"id": "search", "capability": "sync_upper"},
                {
                    "id": "deep",
                    "depends_on": ["search"],
                    "workflow": sub({"id": "read", "capability": "add", "params": {"value": 41}}),
                },
                name="research",
            ),
        },
        {"id": "report", "capability": "echo", "depends_on": ["research"]},
    )
    workflow_id = await client.submit(definition, input={"text": "hello"})
    state = await client.wait(workflow_id, timeout=90)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    child_id = child_workflow_id(workflow_id, "research", 1)
    assert state.tasks["research"].child == child_id
    assert state.tasks["research"].capability == CHILD_CAPABILITY
    child = await client.status(child_id)
    assert child.status == WorkflowStatus.COMPLETED
    assert child.parent is not None
    assert (child.parent.workflow_id, child.parent.task_id, child.parent.attempt) == (
        workflow_id,
        "research",
        1,
    )
    assert child.input == {"text": "hello", "topic": "nats", "inputs": {"plan": 1}}
    grandchild_id = child_workflow_id(child_id, "deep", 1)
    assert child.tasks["deep"].child == grandchild_id
    grandchild = await client.status(grandchild_id)
    assert grandchild.output == {"read": 41}
    # Outputs flow up: the grandchild's into the child, the child's into the parent.
    assert child.output == {"deep": {"read": 41}}
    assert state.tasks["research"].result == child.output
    assert state.output["report"]["inputs"] == {"research": child.output}
    assert child.tasks["search"].result == "HELLO"  # the parent's input reached the child
    # Each is a workflow of its own, whose replay verifies.
    await assert_replays_clean(client, workflow_id, child_id, grandchild_id)
    events = await client.events(workflow_id)
    outcome = [e for e in of_type(events, EventType.TASK_COMPLETED) if e.task_id == "research"]
    assert [e.source for e in outcome] == [child_id]
    shown = agenticflow(cluster.settings, "status", workflow_id)
    assert shown.returncode == 0, shown.stderr
    assert f"child workflow {child_id}" in shown.stdout


async def test_a_failing_child_fails_the_parent_task(client: Client) -> None:
    definition = wf(
        {"id": "c", "workflow": sub({"id": "x", "capability": "fatal", "params": {"item": "7"}})},
        {"id": "after", "capability": "echo", "depends_on": ["c"]},
    )
    state = await run(client, definition, timeout=90)
    assert state.status == WorkflowStatus.FAILED
    assert state.failed_task == "c"
    child_id = child_workflow_id(state.workflow_id, "c", 1)
    child = await client.status(child_id)
    assert child.status == WorkflowStatus.FAILED
    task = state.tasks["c"]
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 1, "a failed child is not retried without the task's own retry"
    assert task.error is not None
    assert task.error.type == "ChildWorkflowFailedError"
    assert "cannot process 7: bad input" in task.error.message
    assert state.tasks["after"].status == TaskStatus.CANCELLED
    await assert_replays_clean(client, state.workflow_id, child_id)


async def test_aborting_the_parent_aborts_its_child_and_grandchild(client: Client) -> None:
    definition = wf(
        {
            "id": "c",
            "workflow": sub(
                {"id": "g", "workflow": sub({"id": "l", "capability": "listen"})},
            ),
        },
    )
    workflow_id = await client.submit(definition)
    child_id = child_workflow_id(workflow_id, "c", 1)
    grandchild_id = child_workflow_id(child_id, "g", 1)
    await client.wait_for(grandchild_id, task_is("l", TaskStatus.RUNNING), timeout=60)
    applied = await client.abort(workflow_id, "changed my mind", by="ann")
    assert applied.action == "abort"
    for waited in (workflow_id, child_id, grandchild_id):
        state = await client.wait(waited, timeout=60)
        assert state.status == WorkflowStatus.ABORTED, (waited, state.reason)
    grandchild = await client.status(grandchild_id)
    assert grandchild.tasks["l"].status == TaskStatus.CANCELLED
    assert grandchild.reason is not None
    assert "its parent was aborted" in grandchild.reason
    assert "changed my mind" in grandchild.reason
    parent = await client.status(workflow_id)
    assert parent.tasks["c"].status == TaskStatus.CANCELLED
    await assert_replays_clean(client, workflow_id, child_id, grandchild_id)


async def test_pausing_the_parent_holds_new_children_and_pauses_running_ones(
    client: Client,
) -> None:
    definition = wf(
        {"id": "a", "capability": "listen"},
        {
            "id": "c",
            "workflow": sub(
                {"id": "x", "capability": "listen"},
                {"id": "y", "capability": "context", "depends_on": ["x"]},
            ),
        },
        {"id": "d", "depends_on": ["a"], "workflow": sub({"id": "z", "capability": "echo"})},
    )
    workflow_id = await client.submit(definition)
    child_id = child_workflow_id(workflow_id, "c", 1)
    await client.wait_for(workflow_id, task_is("a", TaskStatus.RUNNING), timeout=60)
    await client.wait_for(child_id, task_is("x", TaskStatus.RUNNING), timeout=60)
    await client.pause(workflow_id, by="ann")
    await client.wait_for(child_id, lambda s: s.paused or s.is_terminal, timeout=60)
    # a finishes while paused; d, now ready, is held: its child does not start.
    await client.feedback(workflow_id, "parent, go on")
    state = await client.wait_for(
        workflow_id, task_is("a", TaskStatus.COMPLETED, TaskStatus.FAILED), timeout=60
    )
    assert state.tasks["a"].status == TaskStatus.COMPLETED
    assert state.tasks["d"].status == TaskStatus.PENDING
    assert state.tasks["d"].child is None
    # The running child's own next task is held too.
    await client.feedback(child_id, "child, go on")
    child = await client.wait_for(
        child_id, task_is("x", TaskStatus.COMPLETED, TaskStatus.FAILED), timeout=60
    )
    assert child.tasks["x"].result == {"before": [], "got": "child, go on"}
    assert child.tasks["y"].status == TaskStatus.PENDING
    await client.resume(workflow_id)
    state = await client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    child = await client.status(child_id)
    assert not child.paused
    assert child.tasks["y"].result["feedback"] == ["child, go on"]
    d_child = child_workflow_id(workflow_id, "d", 1)
    assert state.tasks["d"].result == (await client.status(d_child)).output
    await assert_replays_clean(client, workflow_id, child_id, d_child)

"""Partial recovery: resume a failed workflow keeping completed results."""

from __future__ import annotations

import pytest

from agenticflow import ConfigError, NotFoundError
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.wire.events import EventType
from tests.integration.helpers import of_type, run, wf


async def test_resume_reruns_only_what_did_not_complete(client: Client) -> None:
    definition = wf(
        {"id": "a", "capability": "add", "params": {"value": 1}},
        {"id": "b", "capability": "flaky", "params": {"succeed_on": 2},
         "retry": {"max_attempts": 1}, "depends_on": ["a"]},
        {"id": "c", "capability": "add", "depends_on": ["a"]},
        {"id": "d", "capability": "add", "depends_on": ["b", "c"]},
    )  # fmt: skip
    failed = await run(client, definition)
    assert failed.status == WorkflowStatus.FAILED
    assert failed.failed_task == "b"

    await client.resume(failed.workflow_id)
    state = await client.wait_for_resume(failed.workflow_id, 1, timeout=30)
    assert state.status == WorkflowStatus.COMPLETED
    assert state.resumes == 1
    assert state.tasks["b"].attempts == 2
    assert state.tasks["b"].result == {"succeeded_on": 2}
    assert state.tasks["a"].attempts == 1
    events = await client.events(state.workflow_id)
    scheduled = [e.task_id for e in of_type(events, EventType.TASK_SCHEDULED)]
    assert scheduled.count("a") == 1, "a completed before the failure and was kept"
    assert scheduled.count("b") == 2
    assert len(of_type(events, EventType.WORKFLOW_RESUMED)) == 1


async def test_resume_from_a_task_reruns_it_and_its_dependents(client: Client) -> None:
    definition = wf(
        {"id": "a", "capability": "add", "params": {"value": 1}},
        {"id": "b", "capability": "add", "params": {"value": 2}, "depends_on": ["a"]},
        {"id": "c", "capability": "add", "depends_on": ["b"]},
    )
    done = await run(client, definition)
    assert done.status == WorkflowStatus.COMPLETED
    await client.resume(done.workflow_id, from_task="b")
    state = await client.wait_for_resume(done.workflow_id, 1, timeout=30)
    assert state.status == WorkflowStatus.COMPLETED
    assert {t: s.attempts for t, s in state.tasks.items()} == {"a": 1, "b": 2, "c": 2}
    assert state.output == {"c": 3}


async def test_resume_refuses_what_it_cannot_do(client: Client) -> None:
    done = await run(client, wf({"id": "a", "capability": "add"}))
    with pytest.raises(ConfigError, match="only a failed workflow"):
        await client.resume(done.workflow_id)
    with pytest.raises(NotFoundError, match="no task 'zz'"):
        await client.resume(done.workflow_id, from_task="zz")
    with pytest.raises(NotFoundError):
        await client.resume("wf-never-submitted")

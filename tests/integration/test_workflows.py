"""Workflows run end to end on a real server, a real coordinator and two real workers."""

from __future__ import annotations

import itertools

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import fold
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.wire.events import EventType, TaskCompleted
from agenticflow.shared.wire.vclock import Ordering
from tests.integration.helpers import by_task, of_type, run, wf


async def test_diamond_results_flow_and_clocks_are_causal(client: Client) -> None:
    definition = wf(
        {"id": "a", "capability": "add", "params": {"value": 1}},
        {"id": "b", "capability": "add", "params": {"value": 10}, "depends_on": ["a"]},
        {"id": "c", "capability": "add", "params": {"value": 100}, "depends_on": ["a"]},
        {"id": "d", "capability": "add", "depends_on": ["b", "c"]},
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.COMPLETED
    assert {k: t.result for k, t in state.tasks.items()} == {"a": 1, "b": 11, "c": 101, "d": 112}
    assert state.output == {"d": 112}

    events = await client.events(state.workflow_id)
    scheduled = by_task(events, EventType.TASK_SCHEDULED)
    completed = by_task(events, EventType.TASK_COMPLETED)
    assert set(completed) == {("a", 1), ("b", 1), ("c", 1), ("d", 1)}
    for key, done in completed.items():
        assert done.vclock.compare(scheduled[key].vclock) == Ordering.AFTER
    # d is dispatched only after (causally) both of its dependencies completed.
    for dep in ("b", "c"):
        assert scheduled[("d", 1)].vclock.compare(completed[(dep, 1)].vclock) == Ordering.AFTER
    # Replay: the stored stream folds to the stored snapshot.
    replayed = fold(events)
    assert replayed is not None
    # version and last_seq are bookkeeping of the live shell (it skips saving no-op folds).
    ignore = {"version", "last_seq"}
    assert replayed.model_dump(exclude=ignore) == state.model_dump(exclude=ignore)


async def test_fan_out_of_200_tasks_each_applied_once(client: Client) -> None:
    leaves = [{"id": f"t{i}", "capability": "add", "params": {"value": i}} for i in range(200)]
    gather = {"id": "sum", "capability": "add", "depends_on": [t["id"] for t in leaves]}
    state = await run(client, wf(*leaves, gather), timeout=120)
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["sum"].result == sum(range(200))
    assert all(t.attempts == 1 for t in state.tasks.values())
    events = await client.events(state.workflow_id)
    outcomes = of_type(events, EventType.TASK_COMPLETED)
    assert sorted(e.task_id or "" for e in outcomes) == sorted(state.tasks)
    workers = {e.data.worker for e in outcomes if isinstance(e.data, TaskCompleted)}
    assert len(workers) == 2, "both worker processes took part"


async def test_task_failing_twice_then_succeeding_is_retried(client: Client) -> None:
    definition = wf(
        {
            "id": "f",
            "capability": "flaky",
            "params": {"succeed_on": 3},
            "retry": {"max_attempts": 3, "initial_interval_s": 0.05, "backoff": 2},
        }
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["f"].attempts == 3
    assert state.tasks["f"].result == {"succeeded_on": 3}
    events = await client.events(state.workflow_id)
    assert [e.attempt for e in of_type(events, EventType.TASK_FAILED)] == [1, 2]
    retries = of_type(events, EventType.TASK_RETRY_SCHEDULED)
    assert [e.attempt for e in retries] == [1, 2]
    assert [e.attempt for e in of_type(events, EventType.TASK_SCHEDULED)] == [1, 2, 3]


async def test_retries_exhausted_fail_the_workflow(client: Client) -> None:
    definition = wf(
        {
            "id": "f",
            "capability": "flaky",
            "params": {"succeed_on": 9},
            "retry": {"max_attempts": 2, "initial_interval_s": 0.01},
        }
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.FAILED
    assert state.tasks["f"].attempts == 2
    assert state.reason is not None
    assert "gave up after 2 attempts" in state.reason


async def test_non_retryable_failure_fails_workflow_with_the_error(client: Client) -> None:
    definition = wf(
        {"id": "ok", "capability": "add", "params": {"value": 1}},
        {"id": "bad", "capability": "fatal", "params": {"item": "order-7"}, "depends_on": ["ok"]},
        {"id": "after", "capability": "add", "depends_on": ["bad"]},
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.FAILED
    assert state.failed_task == "bad"
    bad = state.tasks["bad"]
    assert bad.status == TaskStatus.FAILED
    assert bad.attempts == 1
    assert bad.error is not None
    assert bad.error.type == "NonRetryableError"
    assert "order-7" in bad.error.message
    assert state.tasks["after"].status == TaskStatus.CANCELLED
    view = state.public_view()
    assert view["tasks"]["bad"]["error"]["type"] == "NonRetryableError"


async def test_cyclic_graph_is_rejected_by_the_coordinator(client: Client) -> None:
    definition = wf(
        {"id": "a", "capability": "add", "depends_on": ["c"]},
        {"id": "b", "capability": "add", "depends_on": ["a"]},
        {"id": "c", "capability": "add", "depends_on": ["b"]},
    )
    state = await run(client, definition, validate=False)
    assert state.status == WorkflowStatus.REJECTED
    assert state.reason is not None
    assert "dependency cycle" in state.reason
    events = await client.events(state.workflow_id)
    assert [e.type for e in events] == [EventType.WORKFLOW_SUBMITTED, EventType.WORKFLOW_REJECTED]


async def test_unknown_dependency_and_duplicate_ids_are_rejected(client: Client) -> None:
    definition = wf(
        {"id": "a", "capability": "add"},
        {"id": "a", "capability": "add"},
        {"id": "b", "capability": "add", "depends_on": ["ghost"]},
    )
    state = await run(client, definition, validate=False)
    assert state.status == WorkflowStatus.REJECTED
    text = " ".join(state.problems)
    assert "duplicate task id 'a'" in text
    assert "unknown task 'ghost'" in text


async def test_unserved_capability_is_reported_not_silent(client: Client) -> None:
    definition = wf({"id": "lonely", "capability": "nobody-serves-this"})
    workflow_id = await client.submit(definition)
    note = ""
    async for state in client.states(workflow_id):
        note = state.tasks["lonely"].note or ""
        if note:
            break
    assert state.status == WorkflowStatus.RUNNING
    assert state.tasks["lonely"].status == TaskStatus.SCHEDULED
    assert "no live worker serves capability 'nobody-serves-this'" in note


async def test_task_timeout_fails_the_attempt(client: Client) -> None:
    definition = wf(
        {
            "id": "s",
            "capability": "slow",
            "params": {"seconds": 30},
            "timeout_s": 0.3,
            "retry": {"max_attempts": 1},
        }
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.FAILED
    error = state.tasks["s"].error
    assert error is not None
    assert error.type == "TaskTimeoutError"


async def test_oversized_result_fails_clearly(client: Client) -> None:
    state = await run(client, wf({"id": "huge", "capability": "big"}))
    assert state.status == WorkflowStatus.FAILED
    error = state.tasks["huge"].error
    assert error is not None
    assert error.type == "PayloadTooLargeError"
    assert not error.retryable


async def test_plain_sync_handler_and_workflow_input(client: Client) -> None:
    state = await run(client, wf({"id": "u", "capability": "sync_upper"}), input={"text": "hi"})
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["u"].result == "HI"


async def test_submitting_twice_with_one_id_runs_once(client: Client) -> None:
    definition = wf({"id": "a", "capability": "add", "params": {"value": 5}})
    first = await client.submit(definition, workflow_id="idem-wf-1")
    second = await client.submit(definition, workflow_id="idem-wf-1")
    assert first == second == "idem-wf-1"
    state = await client.wait(first, timeout=30)
    assert state.status == WorkflowStatus.COMPLETED
    events = await client.events(first)
    assert len(of_type(events, EventType.WORKFLOW_SUBMITTED)) == 1
    assert len(of_type(events, EventType.TASK_COMPLETED)) == 1


async def test_heartbeats_keep_a_long_task_alive(client: Client) -> None:
    definition = wf(
        {
            "id": "long",
            "capability": "slow",
            "params": {"seconds": 2},
            "heartbeat_timeout_s": 0.6,
            "retry": {"max_attempts": 1},
        }
    )
    state = await run(client, definition)
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["long"].attempts == 1
    events = await client.events(state.workflow_id)
    assert len(of_type(events, EventType.TASK_HEARTBEAT)) >= 4
    assert of_type(events, EventType.TASK_TIMED_OUT) == []


async def test_an_agent_instance_runs_one_task_at_a_time(client: Client) -> None:
    tasks = [{"id": f"s{i}", "capability": "solo", "params": {"seconds": 0.2}} for i in range(6)]
    state = await run(client, wf(*tasks))
    assert state.status == WorkflowStatus.COMPLETED
    by_worker: dict[str, list[tuple[int, int]]] = {}
    for task in state.tasks.values():
        by_worker.setdefault(task.result["worker"], []).append(
            (task.result["began"], task.result["ended"])
        )
    for spans in by_worker.values():
        spans.sort()
        for (_, ended), (began, _) in itertools.pairwise(spans):
            assert began >= ended, "one instance per worker: its tasks never overlap"

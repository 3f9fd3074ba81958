"""The public client API against the shared cluster: connect, start, result,
run, typed results, listing with filters, cancel versus terminate, and the
deprecated calls that still work for one release."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import agenticflow
from agenticflow import (
    ResultValidationError,
    TaskStatus,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowStatus,
    WorkflowSummary,
)
from agenticflow.cluster.dev import DevCluster
from agenticflow.shared.errors import ConfigError, InterventionRefusedError
from agenticflow.shared.wire.events import EventType, WorkflowCancelled
from agenticflow.shared.wire.ids import new_workflow_id
from tests.integration.helpers import of_type, wf

pytestmark = pytest.mark.timeout(120)


class Echoed(BaseModel):
    task: str
    params: dict[str, Any]
    agent: str


@pytest.fixture(scope="module")
async def api(cluster: DevCluster) -> AsyncIterator[agenticflow.Client]:
    async with agenticflow.connect(settings=cluster.settings, node_id="api-tests") as client:
        yield client


def named(*tasks: dict[str, Any], name: str) -> agenticflow.WorkflowDefinition:
    return wf(*tasks, name=name)


async def until_running(handle: agenticflow.WorkflowHandle, task: str) -> None:
    await handle.client.wait_for(
        handle.id, lambda s: s.tasks[task].status == TaskStatus.RUNNING, timeout=30
    )


async def until_listed(
    client: agenticflow.Client, name: str, count: int, **filters: Any
) -> list[WorkflowSummary]:
    """The listing of ``name`` once it shows ``count`` finished workflows: the index
    record is written alongside the final snapshot, so a KV watch of the index
    says when to look again (no polling interval)."""
    store = await client.bus.kv(client.bus.names.workflow_index_bucket)
    watcher = await store.watchall(inactive_threshold=5.0)
    try:
        async with asyncio.timeout(30):
            while True:
                found = await client.list(name=name, **filters)
                if len(found) >= count and all(s.state != WorkflowStatus.RUNNING for s in found):
                    return found
                await watcher.updates(timeout=30)
    finally:
        await watcher.stop()


async def test_start_and_result_with_a_typed_result(api: agenticflow.Client) -> None:
    handle = await api.start(
        named({"id": "e", "capability": "echo", "params": {"x": 1}}, name="api-typed")
    )
    raw = await handle.result(timeout=60)
    assert raw["task"] == "e"  # one sink: its result, not a dict by task
    typed = await handle.result(type=Echoed)
    assert isinstance(typed, Echoed)
    assert typed.params == {"x": 1}
    with pytest.raises(ResultValidationError, match="is not a valid int"):
        await handle.result(type=int)
    status = await handle.status()
    assert status.status == WorkflowStatus.COMPLETED
    assert of_type(await handle.events(), EventType.WORKFLOW_COMPLETED)


async def test_run_is_start_and_result_and_an_id_makes_it_idempotent(
    api: agenticflow.Client,
) -> None:
    definition = named(
        {"id": "a", "capability": "add", "params": {"value": 2}},
        {"id": "b", "capability": "add", "params": {"value": 3}, "depends_on": ["a"]},
        name="api-run",
    )
    workflow_id = new_workflow_id()
    assert await api.run(definition, id=workflow_id, type=int, timeout=60) == 5
    again = await api.start(definition, id=workflow_id)  # the same workflow, not a new one
    assert again.id == workflow_id
    assert await again.result() == 5
    assert await api.handle(workflow_id).result() == 5


async def test_a_workflow_file_path_and_several_sinks(
    api: agenticflow.Client, tmp_path: Path
) -> None:
    file = tmp_path / "two.yaml"
    file.write_text(
        "name: api-file\ntasks:\n"
        "  - {id: x, capability: add, params: {value: 1}}\n"
        "  - {id: y, capability: add, params: {value: 2}}\n"
    )
    assert await api.run(file, timeout=60) == {"x": 1, "y": 2}
    assert await api.run(str(file), type=dict[str, int], timeout=60) == {"x": 1, "y": 2}


async def test_a_failed_workflow_raises_with_its_reason(api: agenticflow.Client) -> None:
    handle = await api.start(named({"id": "f", "capability": "fatal"}, name="api-failed"))
    with pytest.raises(WorkflowFailedError, match="bad input") as failed:
        await handle.result(timeout=60)
    assert failed.value.state == WorkflowStatus.FAILED
    assert failed.value.failed_task == "f"
    assert failed.value.workflow_id == handle.id
    slow = await api.start(named({"id": "s", "capability": "slow"}, name="api-timeout"))
    with pytest.raises(TimeoutError, match="did not finish within"):
        await slow.result(timeout=0.01)


async def test_cancel_lets_a_task_that_ignores_it_finish_and_keeps_its_result(
    api: agenticflow.Client,
) -> None:
    # "s" waits for feedback and never looks at ctx.cancelled: it finishes when
    # the feedback comes, after the cancel.
    handle = await api.start(
        named(
            {"id": "s", "capability": "listen", "params": {"timeout": 60}},
            {"id": "after", "capability": "echo", "depends_on": ["s"]},
            name="api-cancel-ignored",
        )
    )
    await until_running(handle, "s")
    applied = await handle.cancel("enough")
    assert applied.action == "cancel"
    assert (await handle.status()).status == WorkflowStatus.RUNNING  # s still runs
    await handle.feedback("finish what you have")
    with pytest.raises(WorkflowCancelledError, match="cancelled by api-tests: enough") as ended:
        await handle.result(timeout=60)
    state = ended.value.status
    assert state.status == WorkflowStatus.CANCELLED
    assert state.tasks["s"].status == TaskStatus.COMPLETED
    assert state.tasks["s"].result["got"] == "finish what you have"
    assert state.tasks["after"].status == TaskStatus.CANCELLED  # never dispatched
    events = await handle.events()
    assert not [e for e in of_type(events, EventType.TASK_SCHEDULED) if e.task_id == "after"]
    (cancelled,) = of_type(events, EventType.WORKFLOW_CANCELLED)
    assert isinstance(cancelled.data, WorkflowCancelled)
    assert cancelled.data.completed == ["s"]


async def test_cancel_reaches_a_task_that_checks_it(api: agenticflow.Client) -> None:
    handle = await api.start(
        named(
            {"id": "c", "capability": "cancellable", "params": {"seconds": 90}},
            name="api-cancel-checked",
        )
    )
    await until_running(handle, "c")
    await handle.cancel()
    state = await handle.wait(timeout=30)  # long before the task's 90 s
    assert state.status == WorkflowStatus.CANCELLED
    assert state.tasks["c"].status == TaskStatus.CANCELLED
    assert state.tasks["c"].attempts == 1  # not retried
    failed = of_type(await handle.events(), EventType.TASK_FAILED)
    assert [e.data.error.code for e in failed] == ["task_cancelled"]  # type: ignore[attr-defined]


async def test_terminate_ends_at_once_and_a_second_stop_is_refused(
    api: agenticflow.Client,
) -> None:
    handle = await api.start(
        named({"id": "s", "capability": "slow", "params": {"seconds": 60}}, name="api-terminate")
    )
    await until_running(handle, "s")
    await handle.terminate("now")
    state = await handle.wait(timeout=30)  # not the task's 60 s
    assert state.status == WorkflowStatus.ABORTED
    assert state.reason == "terminated by api-tests: now"
    assert state.tasks["s"].status == TaskStatus.CANCELLED
    with pytest.raises(WorkflowCancelledError):
        await handle.result()
    with pytest.raises(InterventionRefusedError) as refused:
        await handle.cancel()
    assert refused.value.code == "workflow_finished"


async def test_pause_resume_feedback_through_the_handle(api: agenticflow.Client) -> None:
    handle = await api.start(
        named({"id": "l", "capability": "listen", "params": {"timeout": 60}}, name="api-steer")
    )
    await until_running(handle, "l")
    assert (await handle.pause()).action == "pause"
    assert (await handle.resume()).action == "resume"
    await handle.feedback("shorter, please")
    assert (await handle.result(timeout=60))["got"] == "shorter, please"


async def test_list_filters_by_state_name_and_since_newest_first(
    api: agenticflow.Client,
) -> None:
    name = f"api-list-{new_workflow_id()[-8:]}"
    before = datetime.now(UTC) - timedelta(seconds=1)
    ok = [named({"id": "e", "capability": "echo"}, name=name) for _ in range(3)]
    ids = []
    for definition in ok:  # one after the other: distinct creation times
        handle = await api.start(definition)
        await handle.wait(timeout=60)
        ids.append(handle.id)
    bad = await api.start(named({"id": "f", "capability": "fatal"}, name=name))
    await bad.wait(timeout=60)
    found = await until_listed(api, name, 4)
    assert [s.id for s in found] == [bad.id, *reversed(ids)]
    top = found[0]
    assert (top.name, top.state, top.tasks_total, top.tasks_done) == (
        name,
        WorkflowStatus.FAILED,
        1,
        0,
    )
    assert top.created_at >= before
    assert top.updated_at >= top.created_at
    assert found[1].tasks_done == 1
    assert [s.id for s in await api.list(name=name, state="failed")] == [bad.id]
    completed = await api.list(name=name, state=WorkflowStatus.COMPLETED, limit=2)
    assert [s.id for s in completed] == list(reversed(ids))[:2]
    assert await api.list(name=name, since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(await api.list(name=name, since=timedelta(hours=1))) == 4
    assert len(await api.list(name=f"{name[:-3]}*", limit=None)) == 4
    with pytest.raises(ConfigError, match="unknown workflow state"):
        await api.list(state="finished")


async def test_connect_awaited_by_url_and_prefix_then_closed(cluster: DevCluster) -> None:
    client = await agenticflow.connect(cluster.url, prefix=cluster.settings.prefix)
    try:
        assert await client.run(named({"id": "a", "capability": "add"}, name="api-url")) == 0
    finally:
        await client.close()
    assert client.bus.closed.is_set()
    await client.close()  # idempotent
    with pytest.raises(ConfigError):
        agenticflow.connect(cluster.url, settings=cluster.settings)


async def test_the_old_calls_still_work_and_warn(cluster: DevCluster) -> None:
    with pytest.warns(DeprecationWarning, match="connected"):
        connection = agenticflow.connected(cluster.settings, name="old-style")
    async with connection as bus:
        with pytest.warns(DeprecationWarning, match=r"Client\(bus=..., node_id=...\)"):
            client = agenticflow.Client(bus=bus, node_id="old-style")
        with pytest.warns(DeprecationWarning, match=r"Client.submit\(\) is deprecated"):
            workflow_id = await client.submit(wf({"id": "a", "capability": "add"}))
        assert isinstance(workflow_id, str)
        state = await client.wait(workflow_id, timeout=60)
        assert state.status == WorkflowStatus.COMPLETED
        assert not bus.nc.is_closed

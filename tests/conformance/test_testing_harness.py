"""agenticflow.testing: a whole cluster in the test's own event loop, on the
memory backend, with a clock the test moves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import agenticflow.testing
from agenticflow import AgentApp, TaskContext
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.examples.apps import app as examples_app
from agenticflow.shared.errors import ConfigError, WorkflowFailedError
from agenticflow.shared.graph.workflow import WorkflowDefinition

EXAMPLES = Path(agenticflow.examples.apps.__file__).parent


def one_task(capability: str, **task: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {"name": "t", "tasks": [{"id": "a", "capability": capability, **task}]}
    )


async def test_the_customer_service_example_runs_to_completion_in_process() -> None:
    workflow = EXAMPLES / "customer_service" / "workflow.yaml"
    given = json.loads((EXAMPLES / "customer_service" / "input.json").read_text())
    started = time.perf_counter()
    async with agenticflow.testing.cluster(examples_app, workers=2) as client:
        handle = await client.start(workflow, input=given)
        await handle.result(timeout=30)
        state = await client.status(handle.id)
    assert state is not None
    assert state.status == WorkflowStatus.COMPLETED
    assert all(t.status.value == "completed" for t in state.tasks.values()), state.tasks
    print(f"in-process run: {time.perf_counter() - started:.3f}s")


async def test_a_timed_out_task_is_retried_when_the_clock_moves_not_when_time_passes() -> None:
    app = AgentApp("slow")
    calls: list[int] = []

    @app.agent("sleep", name="sleeper")
    async def sleep(ctx: TaskContext) -> dict[str, int]:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            await ctx_sleep(3600)  # a hung handler: only the task timeout ends it
        return {"attempt": ctx.attempt}

    clock = agenticflow.testing.Clock()
    async with agenticflow.testing.cluster(app, clock=clock) as client:
        workflow = one_task(
            "sleep", timeout_s=600, retry={"max_attempts": 2, "initial_interval_s": 30}
        )
        handle = await client.start(workflow)
        while calls != [1]:
            await clock.advance(0)
        real = time.perf_counter()
        await clock.advance(601)  # the timeout
        await clock.advance(31)  # the retry's backoff
        result = await handle.result(timeout=10)
        assert result == {"attempt": 2}
        assert time.perf_counter() - real < 10, "waited in real time"


async def ctx_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_a_failing_handler_fails_the_workflow_with_its_error() -> None:
    app = AgentApp("failing")

    @app.agent("break", name="broken")
    async def broken(ctx: TaskContext) -> None:
        raise ValueError("no such order")

    async with agenticflow.testing.cluster(app) as client:
        with pytest.raises(WorkflowFailedError, match="no such order"):
            await client.run(one_task("break", retry={"max_attempts": 1}), timeout=10)


async def test_bad_settings_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="test cluster"):
        async with agenticflow.testing.cluster(examples_app, settings={"partitions": 0}):
            pass


async def test_a_two_hour_wait_passes_when_the_clock_moves() -> None:
    app = AgentApp("waits")

    @app.agent("send")
    async def send(ctx: TaskContext) -> dict[str, Any]:
        return dict(ctx.inputs)

    clock = agenticflow.testing.Clock()
    async with agenticflow.testing.cluster(app, clock=clock) as client:
        workflow = WorkflowDefinition.model_validate(
            {
                "name": "t",
                "tasks": [
                    {"id": "cool_off", "wait": "2h"},
                    {"id": "reply", "wait": {"signal": "reply", "timeout": "1d"}},
                    {"id": "a", "capability": "send", "depends_on": ["cool_off", "reply"]},
                ],
            }
        )
        handle = await client.start(workflow)
        await client.wait_for(
            handle.id, lambda s: s.tasks["cool_off"].status.value == "waiting", timeout=10
        )
        real = time.perf_counter()
        await clock.advance(2 * 3600, step=600)
        state = await client.wait_for(
            handle.id, lambda s: s.tasks["cool_off"].status.value == "completed", timeout=10
        )
        assert state.tasks["reply"].status.value == "waiting"
        await clock.advance(86400, step=3600)  # the signal's timeout: the workflow fails
        with pytest.raises(WorkflowFailedError, match="no signal 'reply' came within 86400s"):
            await handle.result(timeout=10)
        assert time.perf_counter() - real < 10, "waited in real time"

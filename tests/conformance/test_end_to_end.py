"""The end-to-end behaviours every backend must give: the same app, the same
workflows and the same assertions on ``memory``, ``nats`` (and ``redis``),
with the coordinator and workers in this process
(:func:`agenticflow.testing.cluster` on each backend's URL).

What needs separate processes (killing a worker mid-task) is in
tests/chaos for NATS and test_redis_backend for Redis."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import agenticflow.coordinator.client as core_client
import agenticflow.examples.apps
import agenticflow.testing
from agenticflow import AgentApp, TaskContext
from agenticflow.client import Client
from agenticflow.coordinator.replay import verify
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.examples.apps import app as examples_app
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.bus.registry import wait_registered
from agenticflow.shared.errors import (
    InterventionRefusedError,
    NotFoundError,
    StateConflictError,
    WorkflowDefinitionError,
    WorkflowFailedError,
)
from agenticflow.shared.graph.hierarchy import child_workflow_id
from agenticflow.worker.runtime import Worker
from tests.conformance.conftest import BACKENDS
from tests.integration.helpers import wf
from tests.support.app import core, steering

EXAMPLES = Path(agenticflow.examples.apps.__file__).parent
APP = AgentApp("conformance").include(core).include(steering)

Start = Callable[..., AbstractAsyncContextManager[Client]]


def backend_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The URL a cluster of ``backend`` runs on (None: a new memory server)."""
    if backend == "memory":
        return None
    return str(request.getfixturevalue(f"{backend}_server").url)


@pytest.fixture(params=BACKENDS)
def start(request: pytest.FixtureRequest) -> Start:
    """``async with start(app) as client``: a cluster of ``app`` on this test's backend."""
    backend: str = request.param

    def starting(app: AgentApp = APP, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        url = backend_url(backend, request)
        prefix = f"e2e{os.getpid()}x{os.urandom(3).hex()}"
        settings = {"prefix": prefix, "task_ack_wait_s": 5, **kwargs.pop("settings", {})}
        return agenticflow.testing.cluster(app, url=url, settings=settings, **kwargs)

    return starting


@pytest.mark.parametrize("example", ["customer_service", "content_pipeline", "trading"])
async def test_every_example_runs_to_completion(start: Start, example: str) -> None:
    given = json.loads((EXAMPLES / example / "input.json").read_text())
    async with start(examples_app, workers=2) as client:
        handle = await client.start(EXAMPLES / example / "workflow.yaml", input=given)
        approved: set[str] = set()

        def waiting(state: WorkflowState) -> set[str]:
            return {
                task_id
                for task_id, task in state.tasks.items()
                if task.status == TaskStatus.WAITING_APPROVAL and task_id not in approved
            }

        while True:  # approve every gate the example waits on (content_pipeline has one)
            state = await client.wait_for(
                handle.id, lambda s: s.is_terminal or bool(waiting(s)), timeout=60
            )
            if state.is_terminal:
                break
            for task_id in waiting(state):
                await client.approve(handle.id, task_id, "fine", by="tests")
                approved.add(task_id)
        # Each example's model (its scripted one, served by the workers) streamed a draft.
        tokens = [chunk.text async for chunk in handle.stream(kinds=["token"])]
        usage = await handle.usage()
    assert state.status == WorkflowStatus.COMPLETED
    assert {t.status for t in state.tasks.values()} == {TaskStatus.COMPLETED}
    assert len(tokens) > 10
    assert usage.total.calls >= 1


async def test_a_failed_attempt_is_retried_and_the_workflow_completes(start: Start) -> None:
    async with start() as client:
        result = await client.run(
            wf(
                {
                    "id": "a",
                    "capability": "flaky",
                    "params": {"succeed_on": 2},
                    "retry": {"max_attempts": 3, "initial_interval_s": 0},
                }
            ),
            timeout=30,
        )
    assert result == {"succeeded_on": 2}


async def test_a_task_over_its_timeout_fails_after_its_attempts(start: Start) -> None:
    async with start() as client:
        with pytest.raises(WorkflowFailedError, match="longer than"):
            await client.run(
                wf(
                    {
                        "id": "a",
                        "capability": "slow",
                        "params": {"seconds": 30},
                        "timeout_s": 0.2,
                        "retry": {"max_attempts": 2, "initial_interval_s": 0},
                    }
                ),
                timeout=30,
            )


async def test_an_approval_gate_holds_the_task_until_approved(start: Start) -> None:
    async with start() as client:
        handle = await client.start(
            wf({"id": "a", "capability": "context", "approval": {"reason": "ok?"}})
        )
        waiting = await client.wait_for(
            handle.id, lambda s: s.tasks["a"].status == TaskStatus.WAITING_APPROVAL, timeout=30
        )
        assert waiting.status == WorkflowStatus.RUNNING
        await client.approve(handle.id, "a", "go", by="ann")
        result = await handle.result(timeout=30)
    assert (result["approval"]["approved"], result["approval"]["comment"]) == (True, "go")


async def test_cancel_reaches_the_running_handler(start: Start) -> None:
    async with start() as client:
        handle = await client.start(wf({"id": "a", "capability": "cancellable"}))
        await client.wait_for(
            handle.id, lambda s: s.tasks["a"].status == TaskStatus.RUNNING, timeout=30
        )
        await handle.cancel()
        state = await client.wait(handle.id, timeout=30)
    assert state.status == WorkflowStatus.CANCELLED


async def test_replay_verifies_and_a_fork_reuses_the_results(start: Start) -> None:
    async with start() as client:
        source = await client.wait(
            await client.submit_workflow(
                wf(
                    {"id": "a", "capability": "add", "params": {"value": 2}},
                    {"id": "b", "capability": "add", "params": {"value": 3}, "depends_on": ["a"]},
                )
            ),
            timeout=30,
        )
        events = await client.events(source.workflow_id)
        assert verify(events, source) == []
        assert await client.reading_problems(events) == []
        fork = await client.wait(await client.fork(source.workflow_id), timeout=30)
    assert fork.status == WorkflowStatus.COMPLETED
    assert fork.tasks["b"].result == 5
    assert fork.tasks["a"].result == source.tasks["a"].result


async def test_workflows_run_side_by_side_and_each_task_once(start: Start) -> None:
    async with start(workers=2) as client:
        handles = [
            await client.start(
                wf(
                    *(
                        {"id": f"t{n}", "capability": "add", "params": {"value": n}}
                        for n in range(5)
                    )
                )
            )
            for _ in range(10)
        ]
        states = await asyncio.gather(*(client.wait(h.id, timeout=60) for h in handles))
        for handle in handles:
            started = [e for e in await client.events(handle.id) if e.type.value == "task.started"]
            assert len(started) == 5, "a task ran twice"
    assert {s.status for s in states} == {WorkflowStatus.COMPLETED}


async def test_streamed_output_reads_live_and_from_the_start(start: Start) -> None:
    async with start() as client:
        handle = await client.start(
            wf(
                {
                    "id": "n",
                    "capability": "narrate",
                    "params": {"wait": True, "words": ["Hello ", " world"]},
                }
            )
        )
        seen: list[tuple[str, Any]] = []
        async for chunk in handle.stream():
            seen.append((chunk.kind, chunk.data))
            if chunk.data == "Hello ":
                # Read while the task still runs: it waits for this feedback.
                assert (await handle.status()).tasks["n"].status != TaskStatus.COMPLETED
                await handle.feedback("there,")
        expected = [
            ("token", "Hello "),
            ("token", "there,"),
            ("token", " world"),
            ("progress", {"done": 2, "of": 2}),
            ("artifact", b"\x00raw"),
            ("log", "finished"),
        ]
        assert seen == expected  # the iteration ended with the workflow
        assert (await handle.result())["stored"] == [True] * 6
        # A late reader gets the same, from the stored events, and it ends.
        late = [(c.kind, c.data) async for c in handle.stream()]
        assert late == expected
        tokens = [c.text async for c in handle.stream(task="n", kinds=["token"])]
        assert "".join(tokens) == "Hello there, world"
        with pytest.raises(ValueError, match="unknown kind 'words'"):
            async for _ in handle.stream(kinds=["words"]):
                pass
        # Stored as task.output events, which replay verifies like the rest.
        events = await handle.events()
        outputs = [e for e in events if e.type.value == "task.output"]
        assert outputs
        assert outputs[-1].data.last  # type: ignore[attr-defined]
        assert verify(events, await handle.status()) == []


async def test_wait_nodes_hold_no_worker_and_a_signal_completes_one(start: Start) -> None:
    async with start() as client:
        handle = await client.start(
            wf(
                {"id": "first", "capability": "echo", "params": {"n": 1}},
                {"id": "pause", "wait": {"duration": 0.2}, "depends_on": ["first"]},
                {"id": "ok", "wait": {"signal": "go", "timeout": "1h"}, "depends_on": ["pause"]},
                {"id": "later", "wait": {"signal": "early"}, "depends_on": ["pause"]},
                {"id": "last", "capability": "echo", "depends_on": ["ok", "later"]},
            )
        )
        # A signal for a node that is not ready yet is kept for it.
        kept = await handle.signal("early", {"n": 0})
        assert "kept" in kept.summary
        waiting = await client.wait_for(
            handle.id, lambda s: s.tasks["ok"].status == TaskStatus.WAITING, timeout=30
        )
        assert waiting.tasks["pause"].status == TaskStatus.COMPLETED
        assert waiting.tasks["later"].status == TaskStatus.COMPLETED
        with pytest.raises(InterventionRefusedError) as refused:
            await handle.signal("nobody-waits")
        assert refused.value.code == "no_waiting_task"
        applied = await handle.signal("go", {"approved": True})
        assert "completed task(s) ok" in applied.summary
        result = await handle.result(timeout=30)
        state = await handle.status()
        events = await handle.events()
    assert result["inputs"]["ok"] == {"approved": True}
    assert result["inputs"]["later"] == {"n": 0}
    assert set(state.tasks["pause"].result) == {"waited_until"}
    # No worker ran a wait node: only the coordinator stored their outcomes.
    kinds = {t: [e.type.value for e in events if e.task_id == t] for t in ("pause", "ok")}
    assert kinds["pause"] == ["task.scheduled", "task.wait_elapsed", "task.completed"]
    assert kinds["ok"] == ["task.scheduled", "task.completed"]
    coordinators = {e.source for e in events if e.type.value == "task.scheduled"}
    assert {e.source for e in events if e.task_id in ("pause", "ok", "later")} <= coordinators
    assert verify(events, state) == []


async def test_a_schedule_starts_its_workflow_at_each_tick(start: Start) -> None:
    async with start() as client:
        workflow = wf({"id": "a", "capability": "echo", "params": {"from": "schedule"}})
        created = await client.create_schedule("tick", workflow, every="1s")
        info = await client.wait_for_schedule("tick", lambda i: i.state.fired >= 1)
        first = info.state.last_workflow_id
        assert first is not None
        assert first.startswith("tick-")
        assert (await client.handle(first).result(timeout=30))["params"] == {"from": "schedule"}
        with pytest.raises(StateConflictError, match="exists"):
            await client.create_schedule("tick", workflow, every="1h")
        manual = await client.trigger_schedule("tick")
        assert manual.startswith("tick-man-")
        await client.handle(manual).result(timeout=30)
        await client.pause_schedule("tick")
        listed = await client.schedules()
        assert [(i.spec.name, i.spec.paused) for i in listed] == [("tick", True)]
        assert listed[0].spec.created_at == created.created_at
        await client.delete_schedule("tick")
        assert await client.schedules() == []


async def test_registered_workflows_run_by_name_and_version(start: Start) -> None:
    async with start() as client:
        first = wf({"id": "a", "capability": "echo", "params": {"v": 1}}, name="greet")
        second = wf({"id": "a", "capability": "echo", "params": {"v": 2}}, name="greet")
        assert (await client.register_workflow(first)).ref == "greet@1"
        assert (await client.register_workflow(second)).ref == "greet@2"
        assert (await client.register_workflow(first, version="stable")).ref == "greet@stable"
        with pytest.raises(StateConflictError, match="greet@2 is registered already"):
            await client.register_workflow(first, version="2")
        assert (await client.run("greet@2", timeout=30))["params"] == {"v": 2}
        assert (await client.run("greet", timeout=30))["params"] == {"v": 1}  # the latest: stable
        with pytest.raises(NotFoundError, match=r"versions of 'greet': 1, 2, stable"):
            await client.start("greet@9")
        with pytest.raises(WorkflowDefinitionError, match="cannot be registered"):
            await client.register_workflow(wf({"id": "a", "capability": "echo"}, name="has space"))
        listed = [(d.name, d.version) for d in await client.registered_workflows()]
        assert listed == [("greet", "1"), ("greet", "2"), ("greet", "stable")]
        handle = await client.start("greet@1")
        await handle.result(timeout=30)
        definition = (await handle.status()).definition
        assert definition is not None
        assert definition.version == "1"


async def test_a_rolling_upgrade_keeps_each_workflow_on_its_version(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_client, "_VERSIONS_TTL_S", 0.0)  # read the registry each start
    v1, v2 = AgentApp("v1"), AgentApp("v2")
    release = asyncio.Event()
    ran: list[tuple[str, str, str]] = []

    @v1.agent("step", version="1")
    async def step_v1(ctx: TaskContext) -> str:
        ran.append((ctx.workflow_id, ctx.task_id, "1"))
        if ctx.params.get("hold"):
            await release.wait()
        return "1"

    @v2.agent("step", version="2")
    async def step_v2(ctx: TaskContext) -> str:
        ran.append((ctx.workflow_id, ctx.task_id, "2"))
        return "2"

    second = {"id": "b", "capability": "step", "depends_on": ["a"]}
    held = wf({"id": "a", "capability": "step", "params": {"hold": True}}, second)
    quick = wf({"id": "a", "capability": "step"}, second)
    async with start(v1) as client:
        old = await client.start(held)
        await client.wait_for(
            old.id, lambda s: s.tasks["a"].status == TaskStatus.RUNNING, timeout=30
        )
        # Version 2 is deployed beside version 1 (a rolling upgrade).
        bus = await Bus.connect(client.bus.settings, name="v2-worker", role="worker")
        worker = Worker(bus=bus, app=v2, node_id="w-v2", concurrency=4, shutdown_grace_s=1.0)
        running = asyncio.create_task(worker.run())
        try:
            await wait_registered(
                client.bus,
                lambda seen: any(w.get("version") == "2" for w in seen.workers.values()),
                timeout=30,
            )
            new = await client.start(quick)  # pinned to the latest: 2
            assert await new.result(timeout=30) == "2"
            release.set()  # the old workflow's next task stays on version 1
            assert await old.result(timeout=30) == "1"
            assert (await old.status()).versions == {"step": "1"}
            assert (await new.status()).versions == {"step": "2"}
            unpinned = await client.start(quick, versions={})
            await unpinned.result(timeout=30)  # either version may run it
        finally:
            await worker.shutdown()
            await asyncio.gather(running, return_exceptions=True)
            await bus.close()
    by_workflow = {(wid, task): version for wid, task, version in ran}
    assert by_workflow[(old.id, "a")] == by_workflow[(old.id, "b")] == "1"
    assert by_workflow[(new.id, "a")] == by_workflow[(new.id, "b")] == "2"
    agents = {a.name: a.version for a in v2.agents}
    assert agents == {"step_v2": "2"}


async def test_a_child_whose_id_was_taken_fails_its_parent_task(start: Start) -> None:
    # Someone who read the parent's id starts a workflow under its child's id
    # first: the parent's task fails, naming why, instead of waiting for ever.
    parent_id = f"parent-{os.urandom(4).hex()}"
    child_id = child_workflow_id(parent_id, "nested", 1)
    async with start() as client:
        squatter = await client.start(wf({"id": "s", "capability": "echo"}), id=child_id)
        await squatter.result(timeout=30)
        parent = await client.start(
            wf(
                {"id": "first", "capability": "echo"},
                {
                    "id": "nested",
                    "depends_on": ["first"],
                    "workflow": {"tasks": [{"id": "c", "capability": "echo"}]},
                },
            ),
            id=parent_id,
        )
        with pytest.raises(WorkflowFailedError, match="is taken by a workflow"):
            await parent.result(timeout=30)
        state = await parent.status()
    error = state.tasks["nested"].error
    assert error is not None
    assert error.code == "child_id_taken"

"""The client facade's pure parts: what ``start`` accepts, what ``result`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

import agenticflow
from agenticflow.client import _definition, _output_of
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.errors import ConfigError, NotFoundError, WorkflowDefinitionError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import Event, EventType, WorkflowCompleted
from agenticflow.shared.wire.vclock import VectorClock
from tests.unit.test_reducer import DIAMOND


def test_start_accepts_a_definition_a_file_or_a_template_name(tmp_path: Path) -> None:
    assert _definition(DIAMOND, None) is DIAMOND
    file = tmp_path / "one.json"
    file.write_text('{"name": "one", "tasks": [{"id": "a", "capability": "echo"}]}')
    assert _definition(file, None).name == "one"
    assert _definition(str(file), None).name == "one"
    with pytest.raises(WorkflowDefinitionError, match="cannot read"):
        _definition(tmp_path / "missing.yaml", None)
    rendered = _definition("content-pipeline", {"topic": "coffee"})
    assert rendered.tasks
    with pytest.raises(NotFoundError):
        _definition("no-such-template", None)


def test_the_output_is_the_single_sinks_result_or_a_dict() -> None:
    one = WorkflowState(workflow_id="w", status=WorkflowStatus.COMPLETED, output={"d": 4})
    assert _output_of(one) == 4
    two = one.model_copy(update={"output": {"x": 1, "y": 2}})
    assert _output_of(two) == {"x": 1, "y": 2}
    failed = one.model_copy(update={"status": WorkflowStatus.FAILED, "reason": "task 'd' failed"})
    with pytest.raises(agenticflow.WorkflowFailedError, match="w' failed: task 'd' failed"):
        _output_of(failed)
    for stopped in (WorkflowStatus.CANCELLED, WorkflowStatus.ABORTED):
        with pytest.raises(agenticflow.WorkflowCancelledError) as raised:
            _output_of(one.model_copy(update={"status": stopped}))
        assert raised.value.state == stopped


def test_connect_checks_its_arguments_before_any_connection() -> None:
    settings = agenticflow.Settings()
    with pytest.raises(ConfigError, match="not both"):
        agenticflow.connect("nats://127.0.0.1:1", settings=settings)
    pending = agenticflow.connect(settings=settings)  # nothing is opened until awaited
    assert hasattr(pending, "__await__")
    assert hasattr(pending, "__aenter__")


class _Stub:
    """A client whose stored snapshot left the output out (too large for NATS);
    its bus (where result() also listens for the completion) is a real memory one."""

    def __init__(self, state: WorkflowState, events: list[Event], bus: Bus) -> None:
        self.state, self.stored, self.bus = state, events, bus

    async def wait(self, workflow_id: str, *, timeout: float | None = None) -> WorkflowState:
        return self.state

    async def events(self, workflow_id: str) -> list[Event]:
        return self.stored


async def test_a_trimmed_snapshots_output_is_read_from_the_stream() -> None:
    trimmed = WorkflowState(
        workflow_id="w",
        status=WorkflowStatus.COMPLETED,
        problems=["the snapshot left out the task results and output to fit"],
    )
    completed = Event(
        id="w:completed",
        type=EventType.WORKFLOW_COMPLETED,
        workflow_id="w",
        source="coord",
        timestamp=1,
        vclock=VectorClock(),
        data=WorkflowCompleted(output={"d": "big"}),
    )
    bus = await Bus.connect(Settings(url=f"memory://facade-{os.getpid()}"), name="facade")
    try:
        stub = _Stub(trimmed, [completed], bus)
        handle = agenticflow.WorkflowHandle("w", stub)  # type: ignore[arg-type]
        assert await handle.result() == "big"
    finally:
        await bus.close()


async def test_a_wait_ends_at_its_deadline_even_when_a_read_swallows_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Python 3.11 an ``asyncio.wait_for`` inside a read (nats-py has them)
    swallows a cancellation that lands as its inner future completes. A clean
    clone's CI run met it once: ``result(timeout=0.01)`` of a 1 s task returned
    the result instead of raising. The wait checks its deadline itself."""
    from agenticflow.coordinator.client import Client

    bus = await Bus.connect(Settings(url=f"memory://deadline-{os.getpid()}"), name="deadline")
    try:
        client = Client(bus=bus, node_id="deadline")
        reads = 0

        async def swallowing(workflow_id: str) -> WorkflowState | None:
            nonlocal reads
            reads += 1
            # What 3.11's wait_for does when its inner future is done:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.2)
            return None

        monkeypatch.setattr(client, "_readable", swallowing)
        waiting = asyncio.ensure_future(client.wait("w-never", timeout=0.01))
        finished, _ = await asyncio.wait({waiting}, timeout=10)
        assert waiting in finished, "the wait went on past its deadline"
        assert isinstance(waiting.exception(), TimeoutError)
        assert reads == 1
    finally:
        await bus.close()

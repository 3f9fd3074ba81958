"""What every chaos scenario asserts at the end, and how it builds its load."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import fold
from agenticflow.coordinator.replay import BOOKKEEPING
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.bus.base import Bus, Message
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.events import Event, EventType


class Observer:
    """Every event as it is stored, with the time we saw it (a core subscription)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: list[tuple[float, Event]] = []
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        await self.bus.subscribe(self.bus.names.event_subjects, self._on_msg)

    async def _on_msg(self, msg: Message) -> None:
        try:
            event = self.bus.decode_event(msg)
        except MalformedMessageError:
            return  # a poison message: the coordinator records it as rejected
        async with self._changed:
            self.seen.append((time.monotonic(), event))
            self._changed.notify_all()

    def count(self, event_type: EventType) -> int:
        return sum(1 for _, e in self.seen if e.type == event_type)

    async def until(self, predicate: Any, timeout: float = 60) -> None:
        """Wait until ``predicate(self)`` holds, woken by each new event."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(wait(), timeout)

    def first_after(self, since: float, predicate: Any) -> float | None:
        for at, event in self.seen:
            if at >= since and predicate(event):
                return at
        return None


@dataclass
class Report:
    """What a scenario measured: printed by the suite and kept in the note."""

    workflows: int = 0
    tasks: int = 0
    lost: int = 0
    applied_twice: int = 0
    duplicate_outcomes_in_stream: int = 0
    figures: dict[str, float] = field(default_factory=dict)


def chain_workflow(length: int, *, capability: str = "add", **task: Any) -> WorkflowDefinition:
    """A chain of ``length`` tasks, each adding 1 to its predecessor's result."""
    params = {"value": 1, **task.pop("params", {})}
    tasks = [
        {
            "id": f"t{i}",
            "capability": capability,
            "params": params,
            "depends_on": [f"t{i - 1}"] if i else [],
            **task,
        }
        for i in range(length)
    ]
    return parse_workflow({"name": f"chain-{length}", "tasks": tasks})


async def assert_exactly_once(
    client: Client, workflow_ids: list[str], *, timeout: float = 120
) -> Report:
    """Every workflow completed; every task's outcome applied once, in the state
    and in the stream; every state equals a re-fold of its stream."""
    states: list[WorkflowState] = await asyncio.gather(
        *(client.wait(workflow_id, timeout=timeout) for workflow_id in workflow_ids)
    )
    report = Report(workflows=len(states))
    for state in states:
        assert state.status == WorkflowStatus.COMPLETED, (state.workflow_id, state.reason)
        events = await client.events(state.workflow_id)
        completions = Counter(e.task_id for e in events if e.type == EventType.TASK_COMPLETED)
        report.tasks += len(state.tasks)
        for task_id, task in state.tasks.items():
            if task.status != TaskStatus.COMPLETED or completions[task_id] == 0:
                report.lost += 1
            report.duplicate_outcomes_in_stream += max(completions[task_id] - 1, 0)
        if state.completed != len(state.tasks):
            report.applied_twice += abs(state.completed - len(state.tasks))
        replayed = fold(events)
        assert replayed is not None
        assert replayed.model_dump(exclude=BOOKKEEPING) == state.model_dump(exclude=BOOKKEEPING), (
            f"{state.workflow_id}: the stored state is not a re-fold of the stream"
        )
    assert report.lost == 0, report
    assert report.applied_twice == 0, report
    return report

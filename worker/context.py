"""What a handler receives: the task, its inputs, and a bound logger."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.effects import Effects


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One attempt of one task, as seen by the agent handling it."""

    workflow_id: str
    task_id: str
    attempt: int
    capability: str
    params: dict[str, Any]
    """The task's own parameters, from the workflow definition."""
    inputs: dict[str, Any]
    """Results of the task's dependencies, by task id."""
    input: dict[str, Any]
    """The workflow's input, as submitted."""
    agent: str
    worker: str
    timeout_s: float | None = None
    log: structlog.typing.FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("agenticflow.task")
    )
    effects: Effects | None = None

    async def effect(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call the outside world through this: ``await ctx.effect("search", fn, q)``
        runs ``fn(q)`` (sync or async) and records its result as a
        ``task.effect_recorded`` event, so ``agenticflow rerun`` can serve it
        from the recording instead of calling again."""
        if self.effects is None:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        return await self.effects.call(name, fn, *args, **kwargs)


__all__ = ["TaskContext"]

"""What a handler receives: the task, its inputs, and a bound logger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog


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


__all__ = ["TaskContext"]

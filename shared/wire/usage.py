"""Model usage: tokens and cost per call, summed per task and per workflow.

A model call through ``ctx.llm`` is recorded as a ``task.effect_recorded``
event named ``llm:<model>`` whose result holds ``usage`` (``input_tokens``,
``output_tokens``, ``cost_usd`` by ``Settings.llm_prices``). :func:`llm_usage`
sums them from a workflow's events at read time, so nothing else is stored:
a call counts once by its idempotency key (a retried attempt served from the
answer cache records the same key again), and calls served from a recording
(``agenticflow rerun``) count nothing: they were not paid for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agenticflow.shared.wire.events import Event, EventType, TaskEffectRecorded

LLM_EFFECT = "llm:"
"""The name prefix of a model call's recorded effect."""
LLM_EVENT = EventType.TASK_EFFECT_RECORDED.value
"""The type of the events that hold model calls' usage."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost of one or more model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
            self.calls + other.calls,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON output, the CLI)."""
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass(frozen=True, slots=True)
class WorkflowUsage:
    """A workflow's model usage: in all, and by task."""

    total: Usage = field(default_factory=Usage)
    by_task: dict[str, Usage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON output, the CLI)."""
        return {
            **self.total.to_dict(),
            "by_task": {task: usage.to_dict() for task, usage in sorted(self.by_task.items())},
        }


def cost_of(
    prices: Mapping[str, tuple[float, float]], model: str, input_tokens: int, output_tokens: int
) -> float:
    """USD for a call, from ``prices`` (model -> USD per million input and
    output tokens); 0 for a model not listed."""
    price = prices.get(model)
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def call_usage(result: Any) -> Usage | None:
    """The usage a recorded model call's result holds (None: none)."""
    usage = result.get("usage") if isinstance(result, dict) else None
    if not isinstance(usage, dict):
        return None
    try:
        return Usage(
            int(usage.get("input_tokens", 0)),
            int(usage.get("output_tokens", 0)),
            float(usage.get("cost_usd", 0.0)),
            1,
        )
    except (TypeError, ValueError):
        return None


def llm_usage(events: Iterable[Event]) -> WorkflowUsage:
    """The model usage recorded in a workflow's events (see the module docstring)."""
    seen: set[str] = set()
    by_task: dict[str, Usage] = {}
    total = Usage()
    for event in events:
        data = event.data
        if not isinstance(data, TaskEffectRecorded) or data.replayed:
            continue
        if not data.effect.name.startswith(LLM_EFFECT) or data.key in seen:
            continue
        usage = call_usage(data.effect.result)
        if usage is None:
            continue
        seen.add(data.key)
        task = event.task_id or ""
        by_task[task] = by_task.get(task, Usage()) + usage
        total = total + usage
    return WorkflowUsage(total, by_task)


__all__ = [
    "LLM_EFFECT",
    "LLM_EVENT",
    "Usage",
    "WorkflowUsage",
    "call_usage",
    "cost_of",
    "llm_usage",
]

"""The agent app the benchmarks run: one capability that does no work.

With a handler that costs nothing, a benchmark measures AgenticFlow itself:
the coordinator's fold-and-dispatch loop, the workers' pull-run-publish loop
and the JetStream round trips between them.
"""

from __future__ import annotations

from typing import Any

from agenticflow import AgentApp, TaskContext

app = AgentApp("benchmarks")


@app.agent(capabilities=["noop"])
async def noop(ctx: TaskContext) -> dict[str, Any]:
    """Return the task's (small) params unchanged."""
    return ctx.params


__all__ = ["app", "noop"]

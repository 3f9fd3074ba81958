"""The agent app the benchmarks run: one capability that does no work.

With a handler that costs nothing, a benchmark measures AgenticFlow itself:
the coordinator's fold-and-dispatch loop, the workers' pull-run-publish loop
and the JetStream round trips between them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agenticflow import AgentApp, TaskContext

app = AgentApp("benchmarks")


@app.agent(capabilities=["noop"])
async def noop(ctx: TaskContext) -> dict[str, Any]:
    """Return the task's (small) params unchanged."""
    return ctx.params


__all__ = ["app", "noop", "one_app", "scale_app", "stream", "wait"]


@app.agent(capabilities=["wait"])
async def wait(ctx: TaskContext) -> dict[str, Any]:
    """Wait ``params.seconds`` (a stand-in for an LLM or tool call), then return."""
    await asyncio.sleep(float(ctx.params.get("seconds", 0.1)))
    return {"waited": ctx.params.get("seconds", 0.1)}


@app.agent(capabilities=["stream"])
async def stream(ctx: TaskContext) -> dict[str, Any]:
    """Stream ``params.chunks`` tokens of ``params.size`` characters, as fast
    as the buffer takes them; return how many were stored and dropped."""
    token = "x" * int(ctx.params.get("size", 8))
    dropped = 0
    for _ in range(int(ctx.params.get("chunks", 1000))):
        if not await ctx.stream(token):
            dropped += 1
    return {"dropped": dropped}


SCALE_INSTANCES = int(os.environ.get("AGENTICFLOW_BENCH_INSTANCES", "5000"))
"""Instances of the noop agent in each worker of ``scale_app`` (W4)."""

scale_app = AgentApp("benchmarks-scale")
scale_app.add_agent(noop, capabilities=["noop"], name="noop", instances=SCALE_INSTANCES)

one_app = AgentApp("benchmarks-one")
one_app.add_agent(noop, capabilities=["noop"], name="noop", instances=1)
"""The same agent with one instance: the baseline for memory per instance."""

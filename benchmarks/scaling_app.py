"""The agent app of the scaling benchmark: one capability that waits on I/O.

Its handler awaits ``asyncio.sleep(latency_ms / 1000)``: a stand-in for an
LLM or a tool call, which holds one of the worker's slots without using its
CPU. With every slot busy, a worker completes at most ``slots / latency``
tasks per second, so adding workers should add throughput until the
coordinator, the server or the machine's cores give out
(see :mod:`benchmarks.scaling`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from agenticflow import AgentApp, TaskContext

CAPABILITY = "io"
"""What the benchmark's tasks ask for."""

app = AgentApp("benchmarks-scaling")


@app.agent(capabilities=[CAPABILITY])
async def io_wait(ctx: TaskContext) -> dict[str, Any]:
    """Wait ``params.latency_ms`` (default 50; 0 yields once), then return it."""
    latency_ms = float(ctx.params.get("latency_ms", 50.0))
    await asyncio.sleep(latency_ms / 1000)
    return {"waited_ms": latency_ms}


__all__ = ["CAPABILITY", "app", "io_wait"]

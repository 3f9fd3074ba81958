"""The agent app the integration tests run in real worker processes."""

from __future__ import annotations

import asyncio
from typing import Any

from agenticflow import AgentApp, NonRetryableError, TaskContext, TaskError

app = AgentApp("tests")


@app.agent(capabilities=["echo"])
async def echo(ctx: TaskContext) -> dict[str, Any]:
    """Return the params, the dependency results and who ran it."""
    return {"task": ctx.task_id, "params": ctx.params, "inputs": ctx.inputs, "agent": ctx.agent}


@app.agent(capabilities=["add"])
async def add(ctx: TaskContext) -> int:
    """Sum ``params.value`` and every integer dependency result."""
    own = int(ctx.params.get("value", 0))
    return own + sum(v for v in ctx.inputs.values() if isinstance(v, int))


@app.agent(capabilities=["flaky"])
async def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fail until attempt ``params.succeed_on`` (deterministic, keyed on the attempt)."""
    if ctx.attempt < int(ctx.params.get("succeed_on", 3)):
        raise TaskError(f"transient failure on attempt {ctx.attempt}")
    return {"succeeded_on": ctx.attempt}


@app.agent(capabilities=["fatal"])
async def fatal(ctx: TaskContext) -> None:
    """Always fail in a way retrying cannot fix."""
    raise NonRetryableError(f"cannot process {ctx.params.get('item', 'this')}: bad input")


@app.agent(capabilities=["slow"])
async def slow(ctx: TaskContext) -> str:
    """Take ``params.seconds`` (a stand-in for a long LLM call)."""
    await asyncio.sleep(float(ctx.params.get("seconds", 1.0)))
    return "done"


@app.agent(capabilities=["sync_upper"])
def sync_upper(ctx: TaskContext) -> str:
    """A plain (non-async) handler: runs in a thread."""
    return str(ctx.input.get("text", "")).upper()


@app.agent(capabilities=["big"])
async def big(ctx: TaskContext) -> str:
    """Return a result larger than the server's max_payload."""
    return "x" * int(ctx.params.get("size", 2 * 1024 * 1024))

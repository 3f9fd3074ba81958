"""An agent app with tools, served by the tool tests' worker processes.

The tools leave traces in files named by their params (each test uses its own
``tmp_path``), so a test can count side effects across processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agenticflow import AgentApp, TaskContext
from worker.tools import BreakerPolicy, RateLimit, SandboxLimits, ToolCall, tool

app = AgentApp("tools-tests")


class Trace(BaseModel):
    """Where a tool appends one line per real call."""

    path: str
    value: int = Field(default=0, ge=0, le=1000)


@tool(permissions={"fs:write"})
def bump(params: Trace, call: ToolCall) -> dict[str, Any]:
    """Append the call's idempotency key to a file (one line per side effect)."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{call.key} {os.getpid()}\n")
    return {"value": params.value, "key": call.key}


@tool(
    permissions={"remote"},
    provider="remote-api",
    breaker=BreakerPolicy(failure_threshold=3, recovery_timeout_s=120),
)
def remote_call(params: Trace) -> str:
    """A remote API that is down: counts the attempt, then fails."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    raise ConnectionError("remote-api: connection refused")


@tool(
    permissions={"remote"},
    provider="other-api",
    breaker=BreakerPolicy(failure_threshold=2, recovery_timeout_s=120),
)
def other_call(params: Trace) -> str:
    """Another remote API, for the other direction of the breaker test."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    raise ConnectionError("other-api: connection refused")


@tool(permissions={"limited"}, rate_limit=RateLimit(3, per_s=1.0, max_wait_s=30), breaker=None)
def limited(params: Trace) -> float:
    """Record when the call ran (wall clock) and by which process."""
    now = time.time()
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{now!r} {os.getpid()}\n")
    return now


@tool(permissions={"admin"})
def purge_everything(params: Trace) -> str:
    """A tool the agent is not granted."""
    Path(params.path).write_text("purged", encoding="utf-8")
    return "purged"


class Nothing(BaseModel):
    """No params."""


@tool(sandbox=True, timeout_s=30)
def env_in_sandbox(params: Nothing) -> dict[str, Any]:
    """What a sandboxed process sees of its environment."""
    return {"secret": os.environ.get("TOOL_SECRET"), "env": sorted(os.environ)}


@tool(timeout_s=30)
def env_in_process(params: Nothing) -> dict[str, Any]:
    """The same, in the worker process (the control)."""
    return {"secret": os.environ.get("TOOL_SECRET"), "env": sorted(os.environ)}


class Alloc(BaseModel):
    """How much memory to take."""

    mb: int = Field(ge=1)


@tool(sandbox=True, timeout_s=30, limits=SandboxLimits(memory_mb=400))
def hog(params: Alloc) -> int:
    """Allocate ``mb`` MiB."""
    block = bytearray(params.mb * 1024 * 1024)
    return len(block)


@tool(sandbox=True, timeout_s=30, limits=SandboxLimits(cpu_s=1))
def spin(params: Nothing) -> int:
    """Loop for ever (burns CPU)."""
    n = 0
    while True:
        n += 1


@tool(sandbox=True, timeout_s=1)
def nap(params: Nothing) -> str:
    """Sleep past the timeout."""
    time.sleep(60)
    return "woke"


@tool(sandbox=True, timeout_s=30)
def sandboxed_add(params: Trace, call: ToolCall) -> dict[str, Any]:
    """A sandboxed tool that works: gets its params and call."""
    return {"value": params.value + 1, "key": call.key, "cwd": os.getcwd()}


TOOLS = [
    bump,
    remote_call,
    other_call,
    limited,
    purge_everything,
    env_in_sandbox,
    env_in_process,
    hog,
    spin,
    nap,
    sandboxed_add,
]
GRANTED = {"fs:*", "remote", "limited"}
"""Everything but ``admin``."""


@app.agent(capabilities=["use_tool"], tools=TOOLS, permissions=GRANTED)
async def use_tool(ctx: TaskContext) -> Any:
    """Call ``params.tool`` with ``params.args`` ``params.times`` times; the last result.

    With ``params.on_feedback``, first wait for feedback to the workflow (the
    test sends it once every task runs, so that they call at the same time)."""
    assert ctx.tools is not None
    if ctx.params.get("on_feedback") and not ctx.feedback:
        await ctx.feedback.next(timeout=120)
    result: Any = None
    for _ in range(int(ctx.params.get("times", 1))):
        result = await ctx.tools.call(ctx.params["tool"], **ctx.params.get("args", {}))
    return result


@app.agent(capabilities=["use_many"], tools=TOOLS, permissions=GRANTED)
async def use_many(ctx: TaskContext) -> list[dict[str, Any]]:
    """``call_many`` over ``params.calls`` (``[[tool, args], ...]``)."""
    assert ctx.tools is not None
    outcomes = await ctx.tools.call_many(
        [(name, args) for name, args in ctx.params["calls"]], concurrency=2
    )
    return [
        {"tool": o.tool, "ok": o.ok, "value": o.value, "error": type(o.error).__name__}
        if o.error
        else {"tool": o.tool, "ok": o.ok, "value": o.value, "error": None}
        for o in outcomes
    ]


@app.agent(capabilities=["effect_then_wait"], tools=[bump], permissions={"fs:write"})
async def effect_then_wait(ctx: TaskContext) -> dict[str, Any]:
    """Make one side effect, then wait for feedback to the workflow (the test
    SIGKILLs the worker meanwhile)."""
    assert ctx.tools is not None
    done = await ctx.tools.call("bump", path=ctx.params["counter"], value=1)
    if not ctx.feedback:
        await ctx.feedback.next(timeout=120)
    return {"effect": done, "worker": ctx.worker}

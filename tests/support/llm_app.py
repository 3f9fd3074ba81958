"""Agents that call a model (``ctx.llm``, ``ctx.run_agent``): the LLM tests run
them in real worker processes against the local stub (``agenticflow llm-stub``).

Tools append a line to the file named by ``LLM_TEST_TOOL_LOG`` each time they
really run, so a test can count executions across processes."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from agenticflow import AgentApp, TaskContext, tool

app = AgentApp("llm-tests")


def _ran(line: str) -> None:
    path = os.environ.get("LLM_TEST_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


class AddInput(BaseModel):
    a: int
    b: int


class LookupInput(BaseModel):
    city: str


@tool
def add(params: AddInput) -> int:
    """Add two integers."""
    _ran(f"add {params.a} {params.b}")
    return params.a + params.b


@tool
def weather(params: LookupInput) -> dict[str, Any]:
    """Today's weather in a city."""
    _ran(f"weather {params.city}")
    return {"city": params.city, "sky": "clear", "celsius": 21}


@app.agent(capabilities=["llm_loop"], tools=[add, weather])
async def loop(ctx: TaskContext) -> dict[str, Any]:
    """``ctx.run_agent`` over the two tools; params: question, max_steps, stream."""
    result = await ctx.run_agent(
        ctx.params.get("model"),
        "You answer with the tools you have.",
        str(ctx.params.get("question", "")),
        tools=ctx.params.get("tools"),
        max_steps=int(ctx.params.get("max_steps", 5)),
        stream=bool(ctx.params.get("stream", False)),
    )
    return result.to_dict()


@app.agent(capabilities=["llm_chat"])
async def chat(ctx: TaskContext) -> dict[str, Any]:
    """One ``ctx.llm.chat`` call; params: prompt, stream, calls (how many)."""
    assert ctx.llm is not None
    texts = []
    for i in range(int(ctx.params.get("calls", 1))):
        answer = await ctx.llm.chat(
            [{"role": "user", "content": f"{ctx.params.get('prompt', 'hi')} #{i}"}],
            stream=bool(ctx.params.get("stream", False)),
        )
        texts.append(answer.text)
    return {"texts": texts}

"""The tool-calling loop: ``await ctx.run_agent(model, instructions, input, tools=[...])``.

Each step asks the model (``ctx.llm.chat``, a recorded and cached effect) with
the conversation so far and the declarations of the offered tools; each tool
call the model asks for goes through ``ctx.tools.call`` (lookup, schema
validation, permissions and policy, breaker, rate limit, sandbox, audit,
once-semantics) and its result goes back to the model as a ``tool`` message.
The loop ends when the model answers without asking for a tool.

Every step is durable because both halves are: the model's answers are cached
under attempt-independent keys, and so are ``once`` tools' results (the
default). When the worker dies mid-loop and the task runs again, the loop
replays its completed steps from those caches -- the provider is not called
for them and the tools do not run again -- and goes on from the first step
that had not completed. That needs the loop to be deterministic: the same
instructions, input and tools in the same order (they are the handler's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agenticflow.shared.errors import (
    AgenticFlowError,
    AgentLoopError,
    NonRetryableError,
    ToolError,
    UnknownToolError,
)
from agenticflow.shared.wire.usage import Usage

if TYPE_CHECKING:
    from agenticflow.worker.llm import LLM, LLMResponse
    from agenticflow.worker.tools import ToolBox

MAX_STEPS = 100
"""The most steps ``max_steps`` may allow."""


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One tool call the loop made."""

    step: int
    name: str
    arguments: dict[str, Any]
    result: Any
    error: str | None = None
    """How the call failed, when the loop told the model (``tool_errors="tell_model"``)."""


@dataclass(frozen=True, slots=True)
class AgentResult:
    """How a :func:`run_agent` loop ended."""

    output: str
    """The model's final answer."""
    steps: int
    """Model calls made (the last one answered)."""
    tool_calls: list[ToolStep] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The whole conversation, final answer included."""
    usage: Usage = field(default_factory=Usage)
    """Tokens and cost of the loop's model calls (answers served from a cache
    or recording included: what the loop's answers cost when made)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data: a handler may return it as the task's result."""
        return {
            "output": self.output,
            "steps": self.steps,
            "tool_calls": [
                {
                    "step": t.step,
                    "name": t.name,
                    "arguments": t.arguments,
                    "result": t.result,
                    **({"error": t.error} if t.error is not None else {}),
                }
                for t in self.tool_calls
            ],
            "usage": self.usage.to_dict(),
        }


async def run_agent(
    llm: LLM,
    toolbox: ToolBox | None,
    *,
    model: str | None,
    instructions: str,
    input: str | Sequence[dict[str, Any]],
    tools: Sequence[str] | None = None,
    max_steps: int = 10,
    stream: bool = False,
    tool_errors: Literal["raise", "tell_model"] = "raise",
    agent: str = "",
) -> AgentResult:
    """Run the loop (see the module docstring); returns the final answer.

    ``tools``: names of the agent's tools the model may call (None: all of
    them; ``[]``: none). ``input``: the user's message, or messages to follow
    the instructions. ``tool_errors``: ``raise`` (the default) fails the loop at
    a tool call that fails; ``tell_model`` gives the model the error instead,
    as the call's result (``{"error": "Type: message"}``), when the model or
    the tool caused it (see :func:`model_error`), so it may try otherwise.
    Raises ValueError (bad arguments), UnknownToolError (a
    tool named in ``tools`` or asked for by the model that the agent does not
    offer), AgentLoopError (the model still asked for tools at ``max_steps``),
    and what ``ctx.llm.chat`` and ``ctx.tools.call`` raise."""
    if not isinstance(instructions, str):
        raise TypeError("instructions is the system prompt, a string")
    if not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be an integer from 1 to {MAX_STEPS}")
    if tool_errors not in ("raise", "tell_model"):
        raise ValueError(f"tool_errors is 'raise' or 'tell_model', not {tool_errors!r}")
    offered = _offered(toolbox, tools, agent)
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}]
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    else:
        messages.extend(dict(message) for message in input)
    declarations = [
        schema for schema in (toolbox.schemas() if toolbox else []) if schema["name"] in offered
    ]
    calls: list[ToolStep] = []
    usage = Usage()
    for step in range(1, max_steps + 1):
        response: LLMResponse = await llm.chat(
            messages, model=model, tools=declarations or None, stream=stream
        )
        usage = usage + response.usage
        messages.append(response.message())
        if not response.tool_calls:
            return AgentResult(response.text, step, calls, messages, usage)
        for call in response.tool_calls:
            try:
                result = await _call_tool(
                    toolbox, offered, call.name, call.arguments, step=step, agent=agent
                )
            except Exception as exc:
                if tool_errors == "raise" or not model_error(exc):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                calls.append(ToolStep(step, call.name, call.arguments, None, error))
                content = _text({"error": error})
            else:
                calls.append(ToolStep(step, call.name, call.arguments, result))
                content = _text(result)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    raise AgentLoopError(
        f"the model still asked for tools after max_steps={max_steps} steps "
        f"({len(calls)} tool calls); raise max_steps or change the instructions"
    )


async def _call_tool(
    toolbox: ToolBox | None,
    offered: set[str],
    name: str,
    /,
    arguments: dict[str, Any],
    *,
    step: int,
    agent: str,
) -> Any:
    if name not in offered or toolbox is None:
        have = ", ".join(sorted(offered)) or "none"
        raise UnknownToolError(
            f"the model asked for tool {name!r} at step {step}, which agent "
            f"{agent!r} does not offer it (offered: {have})",
            tool=name,
        )
    return await toolbox.call(name, **arguments)


def model_error(exc: Exception) -> bool:
    """Whether a tool call failed by the model's doing or the tool's own (a
    tool not offered, arguments its schema refuses, a permission or safety
    refusal, an exception the tool raised), which the model may correct;
    not a failure of the infrastructure (breaker, rate limit, timeout,
    sandbox, transport), which the task's retry policy handles."""
    if isinstance(exc, ToolError):
        return isinstance(exc, NonRetryableError)
    return not isinstance(exc, AgenticFlowError)


def _offered(toolbox: ToolBox | None, tools: Sequence[str] | None, agent: str) -> set[str]:
    have = {t.name for t in toolbox.registry} if toolbox is not None else set()
    if tools is None:
        return have
    if isinstance(tools, str):
        raise TypeError("tools is a list of tool names, not one string")
    unknown = sorted(set(tools) - have)
    if unknown:
        raise UnknownToolError(
            f"agent {agent!r} has no tool {', '.join(map(repr, unknown))} "
            f"(it has: {', '.join(sorted(have)) or 'none'})",
            tool=unknown[0],
        )
    return set(tools)


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result, sort_keys=True, default=str)


__all__ = ["MAX_STEPS", "AgentResult", "ToolStep", "model_error", "run_agent"]

"""Durable model calls: ``await ctx.llm.chat(messages)``, ``await ctx.llm.complete(prompt)``.

Every call is a recorded side effect (:mod:`agenticflow.worker.effects`) named
``llm:<model>``, with the effect's attempt-independent idempotency key
(``workflow:task:call:llm:<model>``). A call goes through, in order:

1. the **recording**: in a re-execution (``agenticflow rerun``) the answer is
   served from the recorded ``task.effect_recorded`` event, and the provider
   is not called (a call the recording lacks raises ReplayDivergedError);
2. the **answer cache**: an answer stored under the same key and the same
   request (a redelivered task: the worker was killed, the task timed out or
   failed and is retried) is returned without calling the provider; the
   cache is the cluster's tool-result bucket (``tool_results_ttl_s``);
3. the provider's cluster-wide **circuit breaker** (``llm-<host>``, opened by
   ``llm_breaker_failures`` failed calls in a row; CircuitOpenError, retryable)
   and **rate limit** (``llm_rate_limit`` calls per minute);
4. the **request** (:class:`~agenticflow.worker.llm_provider.ChatProvider`: its
   own retries on 429/5xx), streamed to ``ctx.stream`` as tokens when
   ``stream=True``;
5. the **usage**: input and output tokens and the cost by
   ``Settings.llm_prices``, stored with the answer (so the recording holds it:
   :func:`agenticflow.shared.wire.usage.llm_usage` sums it per task and
   workflow) and counted in metrics.

An answer served from the cache or the recording costs nothing and is not
counted again. A streamed call served from the recording streams its text as
one chunk (the re-execution's readers have no other copy); one served from the
cache does not stream again (the earlier attempt's tokens are in the
workflow's log).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agenticflow.shared.errors import (
    LLMRequestError,
    NonRetryableError,
    RateLimitedError,
)
from agenticflow.shared.ops.metrics import (
    llm_calls,
    llm_cost,
    llm_errors,
    llm_input_tokens,
    llm_output_tokens,
)
from agenticflow.shared.ops.telemetry import tracer
from agenticflow.shared.wire.usage import Usage, cost_of
from agenticflow.worker.effects import Effects, params_hash
from agenticflow.worker.llm_anthropic import AnthropicProvider
from agenticflow.worker.llm_provider import ChatProvider, provider_name
from agenticflow.worker.tools.cluster import cluster_state
from agenticflow.worker.tools.spec import BreakerPolicy, RateLimit
from agenticflow.worker.tools.state import CachedResult, MemoryToolState, ToolState

if TYPE_CHECKING:
    from agenticflow.shared.bus.base import Bus
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.wire.codec import TaskMessage
    from agenticflow.worker.app import LLMEndpoint

StreamText = Callable[[str], Awaitable[Any]]
"""Where a streamed call's tokens go (the worker passes ``ctx.stream``)."""

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_REQUEST_OPTIONS = frozenset(
    {"temperature", "max_tokens", "top_p", "stop", "seed", "response_format", "tool_choice"}
)


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A tool call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """A model's answer."""

    content: str | None
    """The answer's text; None when the model only called tools."""
    tool_calls: list[ToolRequest] = field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    served: str = "provider"
    """``provider`` (called now), ``cache`` (an earlier attempt's answer) or
    ``recording`` (a re-execution's)."""

    @property
    def text(self) -> str:
        """The answer's text ('' when none)."""
        return self.content or ""

    def message(self) -> dict[str, Any]:
        """The answer as the assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _json(call.arguments)},
                }
                for call in self.tool_calls
            ]
        return message

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], served: str) -> LLMResponse:
        """From the plain data stored in the recording and the cache."""
        usage = answer.get("usage") or {}
        return cls(
            content=answer.get("content"),
            tool_calls=[
                ToolRequest(str(c["id"]), str(c["name"]), dict(c["arguments"]))
                for c in answer.get("tool_calls") or []
            ],
            finish_reason=answer.get("finish_reason"),
            model=str(answer.get("model") or ""),
            usage=Usage(
                input_tokens=int(usage.get("input_tokens", 0)),
                output_tokens=int(usage.get("output_tokens", 0)),
                cost_usd=float(usage.get("cost_usd", 0.0)),
                calls=1,
            ),
            served=served,
        )


class LLM:
    """A task attempt's model client (``ctx.llm``); see the module docstring."""

    def __init__(
        self,
        *,
        provider: ChatProvider | None,
        model: str | None = None,
        effects: Effects | None = None,
        state: ToolState | None = None,
        key_prefix: str = "",
        prices: Mapping[str, tuple[float, float]] | None = None,
        breaker: BreakerPolicy | None = None,
        rate_limit: RateLimit | None = None,
        stream: StreamText | None = None,
        capability: str = "",
    ) -> None:
        self.provider = provider
        self.model = model
        self.effects = effects
        self.state = state if state is not None else MemoryToolState()
        self.prices = dict(prices or {})
        self.breaker = breaker if breaker is not None else BreakerPolicy()
        self.rate_limit = rate_limit
        self.capability = capability
        self._key_prefix = key_prefix
        self._stream = stream
        self._calls = 0
        self.usage = Usage()
        """What this attempt's calls to the provider used (served answers excluded)."""

    @property
    def breaker_key(self) -> str:
        """The provider's breaker and rate-limit name (``llm-<host>``)."""
        host = self.provider.provider if self.provider is not None else "none"
        return "llm-" + re.sub(r"[^A-Za-z0-9_-]", "_", host)[:60]

    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        stream: bool = False,
    ) -> str:
        """The model's text answer to ``prompt`` (with an optional ``system``
        message); raises what :meth:`chat` raises."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        return (await self.chat(messages, model=model, stream=stream)).text

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        stream: bool = False,
        **options: Any,
    ) -> LLMResponse:
        """The model's answer to ``messages`` (chat-completions messages: dicts
        with ``role`` and ``content``), offering ``tools`` (function
        declarations: ``name``, ``description``, ``parameters``, as
        ``ctx.tools.schemas()`` gives them). ``options``: ``temperature``,
        ``max_tokens``, ``top_p``, ``stop``, ``seed``, ``response_format``,
        ``tool_choice``. ``stream``: tokens go to ``ctx.stream`` as they come.

        Raises ValueError (malformed messages, an unknown option),
        LLMRequestError (also when no endpoint or model is configured: not
        retried), CircuitOpenError, RateLimitedError,
        LLMUnavailableError, LLMRequestError, LLMResponseError,
        ReplayDivergedError."""
        request = self._request(messages, model, tools, options)
        name = f"llm:{request['model']}"
        with tracer().start_as_current_span(
            f"llm {request['model']}", attributes={"llm.model": request["model"]}
        ):
            if self.effects is not None:
                index = self.effects.next_index()
                key = self.effects.key(index, name)
            else:
                index, key = self._calls, f"{self._key_prefix}:{self._calls}:{name}"
                self._calls += 1
            served = ["recording"]

            async def run(**body: Any) -> dict[str, Any]:
                answer, how = await self._call(key, name, body, stream=stream)
                served[0] = how
                return answer

            if self.effects is not None:
                answer = await self.effects.call_at(index, name, run, **request)
            else:
                answer = await run(**request)
            response = LLMResponse.from_answer(answer, served[0])
            if response.served == "recording" and stream and response.content:
                await self._emit(response.content)
            return response

    def _request(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None,
        tools: Sequence[Mapping[str, Any]] | None,
        options: Mapping[str, Any],
    ) -> dict[str, Any]:
        unknown = sorted(set(options) - _REQUEST_OPTIONS)
        if unknown:
            known = ", ".join(sorted(_REQUEST_OPTIONS))
            raise ValueError(f"unknown option {', '.join(unknown)} (known: {known})")
        if isinstance(messages, str | bytes) or not messages:
            raise ValueError("messages is a non-empty list of {'role': ..., 'content': ...}")
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
                raise ValueError(
                    f"message {i} needs a role ({', '.join(sorted(_ROLES))}), got {message!r:.80}"
                )
        chosen = model or self.model
        if not chosen:
            raise LLMRequestError("ctx.llm has no model: pass model= or set AGENTICFLOW_LLM_MODEL")
        request: dict[str, Any] = {
            "model": chosen,
            "messages": [dict(message) for message in messages],
        }
        if tools:
            request["tools"] = [_declaration(tool) for tool in tools]
        request.update(options)
        return request

    async def _call(
        self, key: str, name: str, body: dict[str, Any], *, stream: bool
    ) -> tuple[dict[str, Any], str]:
        digest = params_hash((), body)
        hit = await self.state.cached(key)
        if hit is not None and hit.tool == name and hit.params_hash == digest:
            return hit.result, "cache"
        if self.provider is None:
            raise LLMRequestError(
                "ctx.llm has no endpoint: set AGENTICFLOW_LLM_BASE_URL on the workers"
            )
        breaker = self.breaker_key
        ticket = await self.state.admit(breaker, self.breaker, trial_s=self.provider.timeout_s + 5)
        model = str(body["model"])
        try:
            if self.rate_limit is not None:
                await self.state.acquire(
                    breaker, self.rate_limit, max_wait_s=self.provider.timeout_s
                )
            answer = await self.provider.send(body, on_token=self._emit if stream else None)
        except Exception as exc:
            counted = not isinstance(exc, NonRetryableError | RateLimitedError | LLMRequestError)
            await self.state.settle(
                ticket, "failure" if counted else "neutral", f"{type(exc).__name__}: {exc}"
            )
            llm_errors.add(model)
            raise
        await self.state.settle(ticket, "ok")
        usage = answer["usage"]
        usage["cost_usd"] = cost_of(
            self.prices, model, usage["input_tokens"], usage["output_tokens"]
        )
        self.usage = self.usage + Usage(
            usage["input_tokens"], usage["output_tokens"], usage["cost_usd"], 1
        )
        llm_calls.add(model)
        llm_input_tokens.add(model, usage["input_tokens"])
        llm_output_tokens.add(model, usage["output_tokens"])
        llm_cost.add(model, round(usage["cost_usd"] * 1e6))
        await self.state.remember(key, CachedResult(name, digest, answer, time.time()))
        return answer, "provider"

    async def _emit(self, text: str) -> None:
        if self._stream is not None:
            await self._stream(text)


def _declaration(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool as the chat-completions ``tools`` entry (``{"type": "function", ...}``)."""
    if tool.get("type") == "function" and isinstance(tool.get("function"), Mapping):
        return {"type": "function", "function": dict(tool["function"])}
    if not isinstance(tool.get("name"), str):
        raise TypeError(f"a tool declaration needs a name, got {tool!r:.80}")
    return {"type": "function", "function": dict(tool)}


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def task_llm(
    bus: Bus,
    settings: Settings,
    task: TaskMessage,
    *,
    effects: Effects,
    stream: StreamText,
    worker: str,
    fallback: LLMEndpoint | None = None,
) -> LLM:
    """The worker runtime's ``ctx.llm`` for one task attempt: the endpoint,
    model and key of ``Settings.llm_*`` (shared with the planner; the API by
    ``llm_api``) -- or, when the settings name no endpoint, ``fallback`` (the
    agent's :attr:`AgentApp.llm_endpoints` entry) -- cluster-wide
    state, the attempt's effects and stream."""
    provider = None
    base_url, model = settings.llm_base_url, settings.llm_model
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    if not base_url and fallback is not None:
        base_url, model, key = fallback.base_url, model or fallback.model, fallback.api_key
    if base_url:
        kind = AnthropicProvider if settings.llm_api == "anthropic" else ChatProvider
        provider = kind(
            base_url=base_url,
            api_key=key,
            timeout_s=settings.llm_timeout_s,
            attempts=settings.llm_max_attempts,
        )
    return LLM(
        provider=provider,
        model=model,
        effects=effects,
        state=cluster_state(bus, worker=worker),
        key_prefix=f"{task.workflow_id}:{task.task_id}",
        prices=settings.llm_prices,
        breaker=BreakerPolicy(
            failure_threshold=settings.llm_breaker_failures,
            recovery_timeout_s=settings.llm_breaker_recovery_s,
        ),
        rate_limit=None if settings.llm_rate_limit is None else RateLimit(settings.llm_rate_limit),
        stream=stream,
        capability=task.capability,
    )


__all__ = ["LLM", "LLMResponse", "StreamText", "ToolRequest", "provider_name", "task_llm"]

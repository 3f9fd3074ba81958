"""An agent's tools bound to one task attempt: ``await ctx.tools.call(name, **params)``.

Every call goes through the same steps, in order:

1. **lookup** in the agent's registry (else UnknownToolError);
2. **validation** of the params against the tool's input model (else
   ToolValidationError listing each field);
3. **permission** check against what the agent was granted (else
   ToolPermissionError naming what is missing);
4. the **side-effect record** (:class:`~agenticflow.worker.effects.Effects`): the call
   gets its index and idempotency key, and its result is recorded as a
   ``task.effect_recorded`` event (``agenticflow rerun`` serves it from there);
5. the **result cache**: a result stored under the same idempotency key (a
   redelivered task) is returned without calling the tool (``cached``);
6. the **circuit breaker** (CircuitOpenError while open), then the **rate
   limit** (waits for a slot up to ``max_wait_s``, else RateLimitedError),
   both cluster-wide through :class:`~agenticflow.worker.tools.state.ToolState`;
7. the tool itself under its **timeout** (ToolTimeoutError), in this process
   or in a sandbox; its result is cached under the key;
8. an **audit record**: one ``task.tool_called`` event per call, whatever the
   outcome, with hashes of params and result.

Refused calls (steps 1-3) never reach the tool and change no breaker, limit or
cache. The breaker counts a tool's failures and timeouts, not a caller's
mistakes (non-retryable errors) nor rate-limit refusals.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agenticflow.shared.errors import (
    MalformedMessageError,
    NonRetryableError,
    RateLimitedError,
    ToolPermissionError,
    ToolTimeoutError,
    ToolValidationError,
    UnknownToolError,
)
from agenticflow.shared.ops.telemetry import tracer
from agenticflow.shared.resilience import CircuitOpenError
from agenticflow.shared.security.rbac import SecurityContext
from agenticflow.shared.wire.codec import pack
from agenticflow.shared.wire.events import TaskToolCalled
from agenticflow.worker.effects import Effects, error_info, params_hash
from agenticflow.worker.tools.registry import ToolRegistry
from agenticflow.worker.tools.sandbox import run_sandboxed
from agenticflow.worker.tools.spec import Tool, ToolCall, plain
from agenticflow.worker.tools.state import CachedResult, MemoryToolState, ToolState

AuditPublish = Callable[[TaskToolCalled, str], Awaitable[None]]
"""Stores a ``task.tool_called`` event; the second argument is the event id's
suffix (``tool:<call>``, or ``tool:<call>:cached`` for a result served from
the cache, so a redelivered attempt's record is not deduplicated away)."""

_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (UnknownToolError, "unknown"),
    (ToolValidationError, "invalid"),
    (ToolPermissionError, "denied"),
    (CircuitOpenError, "open"),
    (RateLimitedError, "rate_limited"),
    (ToolTimeoutError, "timeout"),
)


def outcome_of(exc: BaseException) -> str:
    """The audit outcome of a failed call."""
    for kind, outcome in _OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "error"


def result_hash(value: Any) -> str:
    """A stable digest of a result (msgpack, or repr when not plain data)."""
    try:
        data = pack(value)
    except MalformedMessageError:
        data = repr(value).encode()
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One call of :meth:`ToolBox.call_many`: its result, or the error it raised."""

    tool: str
    value: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the call returned."""
        return self.error is None

    def unwrap(self) -> Any:
        """The result; raises the call's error."""
        if self.error is not None:
            raise self.error
        return self.value


class _Served:
    """How the effect's function ended (the effect layer does not say)."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome = "cached"  # a rerun serves the call from the recording


class ToolBox:
    """An agent's tool registry bound to one task attempt (``ctx.tools``)."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        state: ToolState | None = None,
        workflow_id: str = "",
        task_id: str = "",
        attempt: int = 1,
        agent: str = "",
        instance: str = "",
        worker: str = "",
        effects: Effects | None = None,
        publish: AuditPublish | None = None,
        concurrency: int = 8,
        security: SecurityContext | None = None,
        allow_weak_sandbox: bool = False,
    ) -> None:
        self.registry = registry
        self.security = security
        """The agent's RBAC context (``agent:<name>`` in the policy); None: no policy."""
        self.allow_weak_sandbox = allow_weak_sandbox
        """Run sandboxed tools where the kernel cannot isolate them as declared
        (``Settings.allow_weak_sandbox``); False: SandboxIsolationError."""
        self.state = state if state is not None else MemoryToolState(worker=worker)
        self.workflow_id = workflow_id
        self.task_id = task_id
        self.attempt = attempt
        self.agent = agent
        self.instance = instance
        self.worker = worker
        self.effects = effects
        self.concurrency = concurrency
        self._publish = publish
        self._calls = 0

    def schemas(self) -> list[dict[str, Any]]:
        """The agent's tools as LLM function declarations."""
        return self.registry.schemas()

    # Calling ------------------------------------------------------------
    async def call(self, name: str, /, **params: Any) -> Any:
        """Call tool ``name`` with ``params``; returns its result.

        Raises UnknownToolError, ToolValidationError, ToolPermissionError
        (non-retryable), CircuitOpenError, RateLimitedError, ToolTimeoutError,
        SandboxError, or the tool's own exception.
        """
        return await self._call(self._next_index(), name, params)

    async def call_many(
        self,
        calls: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        concurrency: int | None = None,
    ) -> list[ToolOutcome]:
        """Run ``(name, params)`` calls concurrently, at most ``concurrency`` at a
        time; returns one :class:`ToolOutcome` per call, in input order (a failed
        call does not stop the others)."""
        items = list(calls)
        # Indices (and so idempotency keys) in input order, before anything
        # runs: the same in every attempt however the calls interleave.
        indices = [self._next_index() for _ in items]
        gate = asyncio.Semaphore(concurrency or self.concurrency)

        async def one(index: int, name: str, params: Mapping[str, Any]) -> ToolOutcome:
            async with gate:
                try:
                    return ToolOutcome(name, value=await self._call(index, name, dict(params)))
                except Exception as exc:
                    return ToolOutcome(name, error=exc)

        async with asyncio.TaskGroup() as group:
            running = [
                group.create_task(one(index, name, params))
                for index, (name, params) in zip(indices, items, strict=True)
            ]
        return [task.result() for task in running]

    def _next_index(self) -> int:
        if self.effects is not None:
            return self.effects.next_index()
        index = self._calls
        self._calls += 1
        return index

    def _key(self, index: int, effect: str) -> str:
        if self.effects is not None:
            return self.effects.key(index, effect)
        return f"{self.workflow_id}:{self.task_id}:{index}:{effect}"

    def _check(self, name: str, params: dict[str, Any]) -> tuple[Tool, BaseModel]:
        """Lookup, validation, permission; raises the typed error of a refusal."""
        found = self.registry.get(name)
        if found is None:
            have = ", ".join(sorted(t.name for t in self.registry)) or "none"
            raise UnknownToolError(
                f"agent {self.agent!r} has no tool {name!r} (it has: {have})", tool=name
            )
        model = found.validate(params)
        missing = self.registry.missing(found)
        if missing:
            raise ToolPermissionError(
                f"agent {self.agent!r} lacks permission {', '.join(missing)} "
                f"required by tool {name!r}",
                tool=name,
                missing=missing,
            )
        if self.security is not None:
            denied = self.security.denial(name, found.permissions, model.model_dump())
            if denied is not None:
                raise ToolPermissionError(
                    f"policy refuses tool {name!r}: {denied}",
                    tool=name,
                    missing=sorted(p for p in found.permissions if not self.security.can(p)),
                )
        return found, model

    async def _call(self, index: int, name: str, params: dict[str, Any]) -> Any:
        with tracer().start_as_current_span(
            f"tool {name}",
            attributes={"tool.name": name, "tool.call": index, "agent.name": self.agent},
        ):
            return await self._call_untraced(index, name, params)

    async def _call_untraced(self, index: int, name: str, params: dict[str, Any]) -> Any:
        began = time.perf_counter()
        effect = f"tool:{name}"
        key = self._key(index, effect)
        digest = params_hash((), params)
        try:
            found, model = self._check(name, params)
        except (UnknownToolError, ToolValidationError, ToolPermissionError) as exc:
            await self._audit(name, index, key, digest, began, error=exc)
            raise
        data = model.model_dump(mode="json")
        digest = params_hash((), data)
        served = _Served()
        call = ToolCall(
            key=key,
            tool=name,
            workflow_id=self.workflow_id,
            task_id=self.task_id,
            attempt=self.attempt,
            agent=self.agent,
            index=index,
        )

        async def run(**validated: Any) -> Any:
            return await self._run(found, model=model, call=call, digest=digest, served=served)

        try:
            if self.effects is not None:
                result = await self.effects.call_at(index, effect, run, **data)
            else:
                result = await run(**data)
        except Exception as exc:
            await self._audit(name, index, key, digest, began, error=exc)
            raise
        await self._audit(name, index, key, digest, began, result=result, outcome=served.outcome)
        return result

    async def _run(
        self, found: Tool, *, model: BaseModel, call: ToolCall, digest: str, served: _Served
    ) -> Any:
        """Cache, breaker, rate limit, the tool under its timeout, cache again."""
        if found.once:
            hit = await self.state.cached(call.key)
            if hit is not None and hit.params_hash == digest:
                served.outcome = "cached"
                return hit.result
        ticket = await self.state.admit(found.key, found.breaker, trial_s=found.timeout_s + 5)
        try:
            limit = found.rate_limit
            if limit is not None:
                wait = limit.max_wait_s if limit.max_wait_s is not None else found.timeout_s
                await self.state.acquire(found.key, limit, max_wait_s=wait)
            result = plain(await self._invoke(found, model, call))
        except Exception as exc:
            counted = not isinstance(exc, NonRetryableError | RateLimitedError)
            await self.state.settle(
                ticket, "failure" if counted else "neutral", f"{type(exc).__name__}: {exc}"
            )
            raise
        except BaseException:
            await asyncio.shield(self.state.settle(ticket, "neutral"))
            raise
        await self.state.settle(ticket, "ok")
        if found.once:
            try:
                pack(result)
            except MalformedMessageError:
                pass  # not plain data: nothing to cache (the effect layer says so too)
            else:
                await self.state.remember(
                    call.key, CachedResult(found.name, digest, result, time.time())
                )
        served.outcome = "ok"
        return result

    async def _invoke(self, found: Tool, model: BaseModel, call: ToolCall) -> Any:
        if found.sandbox:
            return await run_sandboxed(
                found, model.model_dump(mode="json"), call, allow_weak=self.allow_weak_sandbox
            )
        args: tuple[Any, ...] = (model, call) if found.takes_call else (model,)
        try:
            async with asyncio.timeout(found.timeout_s) as deadline:
                if found.is_async:
                    return await found.fn(*args)
                return await asyncio.to_thread(found.fn, *args)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # the tool's own timeout error
            raise ToolTimeoutError(
                f"tool {found.name!r} ran longer than {found.timeout_s:g}s", tool=found.name
            ) from exc

    async def _audit(
        self,
        name: str,
        index: int,
        key: str,
        digest: str,
        began: float,
        *,
        result: Any = None,
        outcome: str = "ok",
        error: Exception | None = None,
    ) -> None:
        if self._publish is None:
            return
        record = TaskToolCalled(
            tool=name,
            agent=self.agent,
            instance=self.instance,
            call=index,
            key=key,
            params_hash=digest,
            result_hash=None if error is not None else result_hash(result),
            outcome=outcome if error is None else outcome_of(error),
            error=None if error is None else error_info(error),
            duration_ms=(time.perf_counter() - began) * 1000,
            worker=self.worker,
        )
        suffix = f"tool:{index}" if record.outcome != "cached" else f"tool:{index}:cached"
        await self._publish(record, suffix)


__all__ = ["AuditPublish", "ToolBox", "ToolOutcome", "outcome_of", "result_hash"]

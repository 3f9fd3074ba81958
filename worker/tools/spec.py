"""What a tool is: a function with a pydantic input model and its call policy.

::

    class Lookup(BaseModel):
        ticket_id: int

    @tool(permissions={"tickets:read"}, timeout_s=5, rate_limit="60/min")
    async def lookup_ticket(params: Lookup, call: ToolCall) -> dict[str, Any]:
        ...

The decorated name is a :class:`Tool`; give it to an agent
(``@app.agent(..., tools=[lookup_ticket], permissions={"tickets:read"})``) and
call it from the handler with ``await ctx.tools.call("lookup_ticket", ticket_id=7)``.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from agenticflow.shared.errors import ConfigError, ToolValidationError
from agenticflow.shared.resilience import check_limits

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
"""Tool and provider names: also KV keys and parts of idempotency keys."""

_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``calls`` calls in any ``per_s`` seconds (a sliding window),
    counted across the cluster with GCRA (:mod:`agenticflow.worker.tools.ratelimit`)."""

    calls: int
    per_s: float = 60.0
    max_wait_s: float | None = None
    """How long a call waits for a free slot before RateLimitedError; None: the
    tool's timeout."""
    burst: int = 1
    """Calls that may go at once (1 <= burst <= calls); 1 spaces calls
    ``per_s / calls`` apart, ``b`` lowers the sustained rate to
    ``(calls - b + 1) / per_s``. Never more than ``calls`` per ``per_s`` either way."""

    def __post_init__(self) -> None:
        if self.calls < 1 or self.per_s <= 0:
            raise ConfigError("a rate limit needs calls >= 1 and per_s > 0")
        if not 1 <= self.burst <= self.calls:
            raise ConfigError(f"a rate limit's burst must be between 1 and calls ({self.calls})")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"60/min"``, ``"10/s"``, ``"1000/h"``, ``"5/2s"``; raises ConfigError."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*", text)
        unit = match.group(3) if match else ""
        if match is None or unit not in _PERIODS:
            raise ConfigError(f"rate limit {text!r} must look like '60/min', '10/s' or '5/2s'")
        count = float(match.group(2)) if match.group(2) else 1.0
        return cls(int(match.group(1)), per_s=count * _PERIODS[unit])

    def __str__(self) -> str:
        burst = f" burst {self.burst}" if self.burst > 1 else ""
        return f"{self.calls}/{self.per_s:g}s{burst}"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a tool's (or provider's) cluster-wide circuit opens and closes again."""

    failure_threshold: int = 5
    """Consecutive failures, counted across workers, that open the circuit."""
    recovery_timeout_s: float = 30.0
    """How long the circuit stays open before a trial call may go through."""
    half_open_max_calls: int = 1
    """Trial calls at a time, cluster-wide, while half-open."""
    success_threshold: int = 1
    """Trial successes that close the circuit."""

    def __post_init__(self) -> None:
        check_limits(self, what="breaker")


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of a sandboxed tool's process (see :mod:`agenticflow.worker.tools.sandbox`).

    Raises ConfigError for a limit below 1.
    """

    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU): SIGXCPU, then SIGKILL a second later."""
    memory_mb: int = 512
    """Address space (RLIMIT_AS): the interpreter itself needs ~100 MiB of it."""
    open_files: int = 64
    file_size_mb: int = 16
    processes: int = 16
    """Processes and threads the tool may have at once, itself included
    (RLIMIT_NPROC, counted per call where the kernel allows: a fork bomb stops
    there)."""
    network: bool = False
    """False: the process gets its own empty network namespace (where the kernel
    cannot give it one, the tool is not run unless the operator allows a weak
    sandbox)."""
    require_isolation: bool = False
    """The sandbox fails closed whatever this says: where the kernel allows no
    chroot jail, no network namespace (with ``network=False``) or no user of
    the tool's own, the tool is not run (SandboxIsolationError) unless the
    operator allows a weak sandbox (``agenticflow worker --allow-weak-sandbox``).
    True: refuse it even then."""

    def __post_init__(self) -> None:
        numbers = ("cpu_s", "memory_mb", "open_files", "file_size_mb", "processes")
        low = [name for name in numbers if getattr(self, name) < 1]
        if low:
            raise ConfigError(f"sandbox limits must be at least 1: {', '.join(low)}")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """What a tool learns about the call besides its params."""

    key: str
    """Idempotency key: the same for this call in every attempt of the task, so
    an outside system can deduplicate on it."""
    tool: str
    workflow_id: str = ""
    task_id: str = ""
    attempt: int = 0
    agent: str = ""
    index: int = 0
    """The call's position among the task's side effects."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the sandbox)."""
        return {
            "key": self.key,
            "tool": self.tool,
            "workflow_id": self.workflow_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "agent": self.agent,
            "index": self.index,
        }


ToolFn = Callable[..., Awaitable[Any]] | Callable[..., Any]


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A declared tool; build one with :func:`tool`."""

    name: str
    fn: ToolFn
    input: type[BaseModel]
    permissions: frozenset[str] = frozenset()
    timeout_s: float = 30.0
    rate_limit: RateLimit | None = None
    sandbox: bool = False
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    """None: no circuit breaker for this tool."""
    provider: str | None = None
    """Share breaker and rate limit with every tool naming the same provider
    (e.g. several tools calling one LLM API)."""
    once: bool = True
    """Cache the result under the call's idempotency key, so a redelivered task
    does not call again (turn off for cheap reads)."""
    description: str = ""
    pools: tuple[Any, ...] = ()
    """Resource pools the tool holds (their metrics: :meth:`ToolRegistry.pool_metrics`)."""

    @property
    def key(self) -> str:
        """Name of the circuit breaker and the rate limit this tool counts against."""
        return self.provider or self.name

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def takes_call(self) -> bool:
        """Whether the function takes the :class:`ToolCall` as a second argument."""
        return len(inspect.signature(self.fn).parameters) >= 2

    @property
    def target(self) -> str:
        """``module:qualname`` of the function (what a sandbox imports)."""
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """The params as the input model; raises ToolValidationError listing each field."""
        try:
            return self.input.model_validate(params)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in err['loc']) or '(params)'}: {err['msg']}"
                for err in exc.errors()
            ]
            raise ToolValidationError(
                f"invalid params for tool {self.name!r}: {'; '.join(problems)}",
                tool=self.name,
                errors=problems,
            ) from None

    def schema(self) -> dict[str, Any]:
        """The tool as an LLM function declaration: name, description and the
        JSON schema of its input (``parameters``)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.input.model_json_schema(),
        }

    def info(self) -> dict[str, Any]:
        """Everything declared about the tool (for listings)."""
        return {
            **self.schema(),
            "permissions": sorted(self.permissions),
            "timeout_s": self.timeout_s,
            "rate_limit": str(self.rate_limit) if self.rate_limit else None,
            "sandbox": self.sandbox,
            "breaker": None if self.breaker is None else vars_of(self.breaker),
            "provider": self.provider,
            "once": self.once,
        }


def vars_of(obj: Any) -> dict[str, Any]:
    """A slotted dataclass's fields as a dict."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _input_model(fn: ToolFn) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as exc:
        raise ConfigError(
            f"cannot read the annotations of tool {getattr(fn, '__name__', fn)!r} ({exc}); "
            "pass input=Model"
        ) from exc
    params = list(inspect.signature(fn).parameters)
    model = hints.get(params[0]) if params else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(
            f"tool {getattr(fn, '__name__', fn)!r}: annotate its first parameter with a "
            "pydantic model, or pass input=Model"
        )
    return model


def make_tool(
    fn: ToolFn,
    *,
    name: str | None = None,
    input: type[BaseModel] | None = None,
    permissions: Iterable[str] = (),
    timeout_s: float = 30.0,
    rate_limit: RateLimit | str | None = None,
    sandbox: bool = False,
    limits: SandboxLimits | None = None,
    breaker: BreakerPolicy | None = BreakerPolicy(),
    provider: str | None = None,
    once: bool = True,
    description: str | None = None,
    pools: Iterable[Any] = (),
) -> Tool:
    """The non-decorator form of :func:`tool`; raises ConfigError."""
    tool_name = name or str(getattr(fn, "__name__", ""))
    if not NAME_RE.match(tool_name):
        raise ConfigError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'")
    if provider is not None and not NAME_RE.match(provider):
        raise ConfigError(f"provider {provider!r} must be 1-64 letters, digits, '_' or '-'")
    if timeout_s <= 0:
        raise ConfigError(f"tool {tool_name!r}: timeout_s must be positive")
    limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
    made = Tool(
        name=tool_name,
        fn=fn,
        input=input or _input_model(fn),
        permissions=frozenset(permissions),
        timeout_s=timeout_s,
        rate_limit=limit,
        sandbox=sandbox,
        limits=limits or SandboxLimits(),
        breaker=breaker,
        provider=provider,
        once=once,
        description=description
        if description is not None
        else (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " "),
        pools=tuple(pools),
    )
    if sandbox and ("<locals>" in fn.__qualname__ or fn.__module__ == "__main__"):
        raise ConfigError(
            f"sandboxed tool {tool_name!r} must be a module-level function of an importable "
            f"module (it is {made.target})"
        )
    return made


@overload
def tool(fn: ToolFn, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    input: type[BaseModel] | None = None,
    permissions: Iterable[str] = (),
    timeout_s: float = 30.0,
    rate_limit: RateLimit | str | None = None,
    sandbox: bool = False,
    limits: SandboxLimits | None = None,
    breaker: BreakerPolicy | None = ...,
    provider: str | None = None,
    once: bool = True,
    description: str | None = None,
) -> Callable[[ToolFn], Tool]: ...


def tool(fn: ToolFn | None = None, /, **options: Any) -> Tool | Callable[[ToolFn], Tool]:
    """Declare a tool: ``@tool`` or ``@tool(permissions={"fs:read"}, timeout_s=5, ...)``.

    The function (async, or plain: then it runs in a thread) takes the validated
    input model, and optionally the :class:`ToolCall`; it returns msgpack-able
    data (a pydantic model is dumped). Options are those of :func:`make_tool`.
    Raises ConfigError for a bad name, a missing input model or a bad limit.
    """
    if fn is not None:
        return make_tool(fn, **options)

    def declare(inner: ToolFn) -> Tool:
        return make_tool(inner, **options)

    return declare


def plain(value: Any) -> Any:
    """A tool's result as plain data (pydantic models dumped)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


__all__ = [
    "NAME_RE",
    "BreakerPolicy",
    "RateLimit",
    "SandboxLimits",
    "Tool",
    "ToolCall",
    "ToolFn",
    "make_tool",
    "plain",
    "tool",
]

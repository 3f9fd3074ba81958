"""What a handler receives: the task, its inputs, and a bound logger."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from agenticflow.shared.errors import TaskCancelledError
from agenticflow.shared.wire.events import MAX_APPROVAL_WAIT_S, ApprovalDecision
from agenticflow.worker.effects import Effects

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agenticflow.worker.agent_loop import AgentResult
    from agenticflow.worker.llm import LLM
    from agenticflow.worker.memory import AgentMemory
    from agenticflow.worker.streaming import OutputStream
    from agenticflow.worker.tools import ToolBox


class ApprovalPending(BaseException):
    """Raised by :meth:`TaskContext.request_approval` when no decision exists yet.

    It unwinds the handler (a ``BaseException``, so ``except Exception`` in user
    code does not swallow it); the worker records ``task.approval_requested``
    and frees the slot. Once a person decides, the task runs again and the same
    call returns the decision.
    """

    def __init__(
        self, reason: str, data: Any, index: int, timeout_s: float | None, on_timeout: str
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data
        self.index = index
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout


class Feedback:
    """Feedback people sent to the workflow: what was sent before the task
    started, plus what arrives while it runs (``await ctx.feedback.next()``)."""

    def __init__(self, items: list[str] | None = None) -> None:
        self._items = list(items or [])
        self._arrived = asyncio.Event()

    def add(self, text: str) -> None:
        """Called by the worker when feedback arrives for the running task."""
        self._items.append(text)
        self._arrived.set()

    @property
    def items(self) -> list[str]:
        """Every feedback text so far, oldest first."""
        return list(self._items)

    @property
    def latest(self) -> str | None:
        """The newest feedback text, if any."""
        return self._items[-1] if self._items else None

    async def next(self, timeout: float | None = None) -> str:
        """Wait for the next feedback text sent while the task runs; raises
        TimeoutError after ``timeout`` seconds."""
        seen = len(self._items)
        async with asyncio.timeout(timeout):
            while len(self._items) <= seen:
                self._arrived.clear()
                await self._arrived.wait()
        return self._items[seen]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __repr__(self) -> str:
        return f"Feedback({self._items!r})"


class Cancellation:
    """Whether the task's workflow was cancelled while the task runs
    (``agenticflow workflow cancel``, ``handle.cancel()``).

    Cancel is cooperative: the handler may finish (its result is kept) or stop
    early: check ``ctx.cancelled``, ``await ctx.cancellation.wait()``, or call
    ``ctx.raise_if_cancelled()`` (raises TaskCancelledError, which records the
    task as cancelled). A terminate does not wait: it cancels the handler.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str = "") -> None:
        """Called by the worker when the workflow is cancelled."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        """Whether the workflow was cancelled."""
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until the workflow is cancelled; raises TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            await self._event.wait()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def __repr__(self) -> str:
        return f"Cancellation(cancelled={self.is_set()}, reason={self.reason!r})"


ON_TIMEOUT = ("reject", "approve", "fail")


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One attempt of one task, as seen by the agent handling it."""

    workflow_id: str
    task_id: str
    attempt: int
    capability: str
    params: dict[str, Any]
    """The task's own parameters, from the workflow definition."""
    inputs: dict[str, Any]
    """Results of the task's dependencies, by task id."""
    input: dict[str, Any]
    """The workflow's input, as submitted."""
    agent: str
    worker: str
    timeout_s: float | None = None
    log: structlog.typing.FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("agenticflow.task")
    )
    effects: Effects | None = None
    instance: str = ""
    """The agent instance running this attempt."""
    feedback: Feedback = field(default_factory=Feedback)
    """Feedback people sent to the workflow (``agenticflow feedback``)."""
    approval: ApprovalDecision | None = None
    """The decision of the workflow file's ``approval:`` gate on this task, if any."""
    approvals: list[ApprovalDecision] = field(default_factory=list)
    """Decisions of this handler's earlier ``request_approval`` calls, in order."""
    tools: ToolBox | None = None
    """The agent's tools, bound to this task: ``await ctx.tools.call(name, **params)``."""
    memory: AgentMemory | None = None
    """The agent's durable memory (KV, encrypted): ``await ctx.memory.get(name)``."""
    cancellation: Cancellation = field(default_factory=Cancellation)
    """Set when the workflow is cancelled while the task runs (see :attr:`cancelled`)."""
    output: OutputStream | None = None
    """Where :meth:`stream` puts chunks (the worker makes one per attempt)."""
    llm: LLM | None = None
    """The model client (``await ctx.llm.chat(messages)``): every call is a
    recorded, cached effect (see :mod:`agenticflow.worker.llm`)."""
    _approval_calls: list[int] = field(default_factory=lambda: [0])

    async def stream(self, data: Any, kind: str = "token") -> bool:
        """Stream a piece of output to whoever watches the workflow
        (``handle.stream()``, ``agenticflow watch ID --stream``): text, bytes,
        a dict, a list or a number; ``kind`` is ``token`` (text shown inline
        as it is made), ``progress``, ``log`` or ``artifact``.

        Chunks are stored in order in the workflow's events log (a late reader
        and ``replay`` see them too), batched every ``Settings.stream_flush_s``.
        Returns False when the chunk was dropped because the bus did not take
        the output within ``Settings.stream_block_s`` (drops are counted and
        reported to readers); a reader never slows the handler. Raises
        ValueError (unknown kind), TypeError (unsupported data), PayloadTooLargeError (a
        chunk over 256 KiB). Without a worker (a handler called directly in a
        unit test) chunks are dropped and this returns False."""
        if self.output is None:
            return False
        return await self.output.put(data, kind)

    async def run_agent(
        self,
        model: str | None,
        instructions: str,
        input: str | Sequence[dict[str, Any]],
        *,
        tools: Sequence[str] | None = None,
        max_steps: int = 10,
        stream: bool = False,
        tool_errors: Literal["raise", "tell_model"] = "raise",
    ) -> AgentResult:
        """Run the tool-calling loop: ask ``model`` (None: ``Settings.llm_model``)
        with ``instructions`` and ``input``, call the tools it asks for among
        ``tools`` (names of this agent's tools; None: all), until it answers
        without a tool or ``max_steps`` model calls (``tool_errors``:
        ``tell_model`` hands a failed tool call's error to the model instead
        of failing). Each step is durable: a
        task that runs again resumes after its last completed step (see
        :mod:`agenticflow.worker.agent_loop`). Raises ValueError,
        UnknownToolError, AgentLoopError (``max_steps``), RuntimeError (no
        ``ctx.llm``: the handler runs outside a worker), and what
        ``ctx.llm.chat`` and ``ctx.tools.call`` raise."""
        from agenticflow.worker.agent_loop import run_agent

        if self.llm is None:
            raise RuntimeError("ctx.llm is not set: run_agent needs a worker (or pass llm=)")
        return await run_agent(
            self.llm,
            self.tools,
            model=model,
            instructions=instructions,
            input=input,
            tools=tools,
            max_steps=max_steps,
            stream=stream,
            tool_errors=tool_errors,
            agent=self.agent,
        )

    @property
    def cancelled(self) -> bool:
        """True once the workflow was cancelled: finish now (the result is kept)
        or stop (:meth:`raise_if_cancelled`)."""
        return self.cancellation.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelledError if the workflow was cancelled: the task ends
        as cancelled (never retried)."""
        if self.cancellation.is_set():
            reason = self.cancellation.reason
            raise TaskCancelledError(
                "the workflow was cancelled" + (f": {reason}" if reason else "")
            )

    async def effect(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call the outside world through this: ``await ctx.effect("search", fn, q)``
        runs ``fn(q)`` (sync or async) and records its result as a
        ``task.effect_recorded`` event, so ``agenticflow rerun`` can serve it
        from the recording instead of calling again."""
        if self.effects is None:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        return await self.effects.call(name, fn, *args, **kwargs)

    async def request_approval(
        self,
        reason: str,
        data: Any = None,
        *,
        timeout_s: float | None = None,
        on_timeout: str = "reject",
    ) -> ApprovalDecision:
        """Ask a person to approve before going on; returns their decision.

        The first time, this ends the attempt (no worker slot is held while a
        person decides, and the wait survives restarts). Once decided
        (``agenticflow approve|reject``, or the timeout's ``on_timeout`` policy:
        ``reject``, ``approve`` or ``fail``), the task runs again from the
        start and this call returns the decision. Work done before the call
        runs again too: make side effects through ``ctx.tools`` (results are
        cached by an attempt-independent idempotency key) so they are not
        repeated. Only ``async`` handlers can ask.
        """
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}")
        if timeout_s is not None and not 0 < timeout_s <= MAX_APPROVAL_WAIT_S:
            raise ValueError(
                f"timeout_s must be over 0 and at most {MAX_APPROVAL_WAIT_S} (30 days)"
            )
        index = self._approval_calls[0]
        self._approval_calls[0] += 1
        if index < len(self.approvals):
            return self.approvals[index]
        raise ApprovalPending(reason, data, index, timeout_s, on_timeout)


__all__ = ["ON_TIMEOUT", "ApprovalPending", "Cancellation", "Feedback", "TaskContext"]

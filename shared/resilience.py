"""Resilience around calls to a dependency: a circuit breaker and a retry helper.

:class:`CircuitBreaker` stops calling a dependency that keeps failing and lets a
few trial calls through once it may have recovered::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
    OPEN ──(recovery_timeout_s has passed)──▶ HALF_OPEN
    HALF_OPEN ──(success_threshold trial successes)──▶ CLOSED
    HALF_OPEN ──(any trial failure)──▶ OPEN

While it is OPEN, and while HALF_OPEN already runs ``half_open_max_calls``
trials, a call raises :class:`CircuitOpenError` without reaching the dependency.
That error is retryable by the framework's rules (it is not a
:class:`~agenticflow.shared.errors.NonRetryableError`), and its ``retry_after_s`` says when
trying again makes sense.

:func:`retry_policy` and :func:`retry_async` retry a call with capped exponential
backoff (built on tenacity) and re-raise the last error when they give up.

Neither is thread-safe: use one breaker from one event loop. Within that loop
the breaker needs no lock, because it never awaits between reading and
updating its state.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypedDict, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
)

from agenticflow.shared.errors import CircuitOpenError, ConfigError, NonRetryableError

log = structlog.get_logger("agenticflow.resilience")

P = ParamSpec("P")
T = TypeVar("T")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
Listener = Callable[["BreakerState", "BreakerState"], None]
Sleep = Callable[[float], Awaitable[None]]


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is; the value is what logs and snapshots show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerSnapshot(TypedDict):
    """What :meth:`CircuitBreaker.snapshot` returns."""

    name: str
    state: str
    failures: int
    opened_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _Ticket:
    """One admitted call: the state period it was admitted in, and whether it is a trial."""

    generation: int
    trial: bool


class CircuitBreaker:
    """Fails fast while a dependency is down; see the module docstring for the states.

    Use it as ``async with breaker:``, as a decorator of async functions
    (``@breaker``), or as ``await breaker.call(fn, *args)``; each raises
    :class:`CircuitOpenError` when the call is refused and otherwise lets the
    call's own result or error through.

    A call that raises one of ``excluded`` (for example a caller's mistake such
    as :class:`~agenticflow.shared.errors.NonRetryableError`) counts neither as a failure nor
    as a success, and neither does a cancelled call. ``clock`` returns seconds
    on a monotonic scale; tests pass a fake one instead of sleeping.
    ``on_change`` listeners are called as ``listener(old, new)`` on every
    transition; one that raises is logged and ignored.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        excluded: ExceptionTypes = (),
        clock: Callable[[], float] = time.monotonic,
        on_change: Iterable[Listener] = (),
    ) -> None:
        """Raises ConfigError if a threshold is below 1 or the timeout is negative."""
        if failure_threshold < 1 or half_open_max_calls < 1 or success_threshold < 1:
            raise ConfigError(f"circuit {name!r}: thresholds and max calls must be at least 1")
        if recovery_timeout_s < 0:
            raise ConfigError(f"circuit {name!r}: recovery_timeout_s must not be negative")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self.excluded: tuple[type[BaseException], ...] = (
            excluded if isinstance(excluded, tuple) else (excluded,)
        )
        self.on_change: list[Listener] = list(on_change)
        self._clock = clock
        self._state = BreakerState.CLOSED
        # Bumped on every transition so a call that outlives its state period
        # (e.g. admitted while CLOSED, finished after the breaker opened) is ignored.
        self._generation = 0
        self._failures = 0
        self._successes = 0
        self._trials = 0
        self._opened_at: float | None = None
        self._last_error: type[BaseException] | None = None
        # ``async with breaker`` keeps no per-call object, so tickets are kept per task.
        self._entered: dict[asyncio.Task[Any] | None, list[_Ticket]] = {}

    # Observation --------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state; reading it moves OPEN to HALF_OPEN once the timeout has passed."""
        if (
            self._state is BreakerState.OPEN
            and self._opened_at is not None
            and self._clock() >= self._opened_at + self.recovery_timeout_s
        ):
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        """The breaker's state for logs, health checks and metrics."""
        return {
            "name": self.name,
            "state": self.state.value,
            "failures": self._failures,
            "opened_at": self._opened_at,
            "last_error": self._last_error.__name__ if self._last_error else None,
        }

    def reset(self) -> None:
        """Close the breaker and forget failures (an operator's override)."""
        self._transition(BreakerState.CLOSED)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value} failures={self._failures}>"

    # Use ----------------------------------------------------------------
    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker; raises CircuitOpenError if refused."""
        ticket = self._admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so every call goes through the breaker."""

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return guarded

    async def __aenter__(self) -> CircuitBreaker:
        """Admit one call; raises CircuitOpenError if refused."""
        ticket = self._admit()
        self._entered.setdefault(asyncio.current_task(), []).append(ticket)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        stack = self._entered[task]
        ticket = stack.pop()
        if not stack:
            del self._entered[task]
        self._settle(ticket, exc)

    # Core ---------------------------------------------------------------
    def _admit(self) -> _Ticket:
        state = self.state
        if state is BreakerState.CLOSED:
            return _Ticket(self._generation, trial=False)
        if state is BreakerState.OPEN:
            assert self._opened_at is not None
            remaining = self._opened_at + self.recovery_timeout_s - self._clock()
            raise CircuitOpenError(self.name, retry_after_s=max(remaining, 0.0))
        if self._trials >= self.half_open_max_calls:
            # A trial is running; if it fails, the breaker stays open this long.
            raise CircuitOpenError(self.name, retry_after_s=self.recovery_timeout_s)
        self._trials += 1
        return _Ticket(self._generation, trial=True)

    def _settle(self, ticket: _Ticket, exc: BaseException | None) -> None:
        if ticket.generation != self._generation:
            return
        if ticket.trial:
            self._trials -= 1
        if exc is None:
            self._on_success()
        elif isinstance(exc, Exception) and not isinstance(exc, self.excluded):
            self._on_failure(exc)

    def _on_success(self) -> None:
        if self._state is BreakerState.CLOSED:
            self._failures = 0
            return
        self._successes += 1
        if self._successes >= self.success_threshold:
            self._transition(BreakerState.CLOSED)

    def _on_failure(self, exc: Exception) -> None:
        self._last_error = type(exc)
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._successes = 0
        self._trials = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif new is BreakerState.CLOSED:
            self._failures = 0
            self._opened_at = None
        if old is new:
            return
        if new is BreakerState.OPEN:
            log.warning(
                "circuit opened",
                circuit=self.name,
                previous=old.value,
                failures=self._failures,
                error_type=self._last_error.__name__ if self._last_error else None,
            )
        else:
            log.info("circuit state changed", circuit=self.name, previous=old.value, state=new)
        for listener in list(self.on_change):
            try:
                listener(old, new)
            except Exception as error:
                log.warning(
                    "circuit listener failed",
                    circuit=self.name,
                    error=str(error),
                    error_type=type(error).__name__,
                )


# Retries ----------------------------------------------------------------
def backoff_delay(
    attempt: int,
    *,
    initial_s: float,
    backoff: float,
    max_s: float,
    jitter: bool,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``initial_s * backoff ** (attempt - 1)``, capped at ``max_s``; with
    ``jitter`` a uniform pick from the upper half of that, so clients that
    failed together do not retry together, and the cap still holds.
    """
    try:
        delay = min(max_s, initial_s * backoff ** (attempt - 1))
    except OverflowError:  # a huge attempt number: the cap applies
        delay = max_s if initial_s > 0 else 0.0
    if jitter:
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - spreading load, not secrecy
    return delay


def retry_policy(
    *,
    attempts: int = 3,
    initial_s: float = 0.1,
    backoff: float = 2.0,
    max_s: float = 5.0,
    retry_on: ExceptionTypes = (Exception,),
    give_up_on: ExceptionTypes = (NonRetryableError, CircuitOpenError),
    jitter: bool = True,
    sleep: Sleep = asyncio.sleep,
    what: str = "call",
) -> AsyncRetrying:
    """A tenacity ``AsyncRetrying``: up to ``attempts`` tries, capped exponential backoff.

    An error is retried if it is one of ``retry_on`` and none of ``give_up_on``
    (``give_up_on`` wins); otherwise it propagates at once. When the attempts
    are spent the last error is re-raised, not tenacity's ``RetryError``.
    An open circuit is not retried by default: its caller should back off for
    ``retry_after_s`` instead (for a task, a ``nak`` with that delay).
    ``sleep`` is injectable so tests do not wait. Raises ConfigError if
    ``attempts`` is below 1 or a delay is negative.
    """
    if attempts < 1 or initial_s < 0 or max_s < 0 or backoff < 1:
        raise ConfigError("retry policy: attempts >= 1, delays >= 0 and backoff >= 1 required")

    def wait(state: RetryCallState) -> float:
        return backoff_delay(
            state.attempt_number, initial_s=initial_s, backoff=backoff, max_s=max_s, jitter=jitter
        )

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info(
            f"{what} failed; retrying",
            attempt=state.attempt_number,
            of=attempts,
            delay_s=round(state.upcoming_sleep, 3),
            error_type=type(error).__name__,
        )

    return AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception_type(retry_on) & retry_if_not_exception_type(give_up_on),
        before_sleep=before_sleep,
        reraise=True,
    )


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    initial_s: float = 0.1,
    backoff: float = 2.0,
    max_s: float = 5.0,
    retry_on: ExceptionTypes = (Exception,),
    give_up_on: ExceptionTypes = (NonRetryableError, CircuitOpenError),
    jitter: bool = True,
    sleep: Sleep = asyncio.sleep,
    what: str = "call",
) -> T:
    """Await ``fn()`` under :func:`retry_policy`; raises ``fn``'s last error when it gives up."""
    policy = retry_policy(
        attempts=attempts,
        initial_s=initial_s,
        backoff=backoff,
        max_s=max_s,
        retry_on=retry_on,
        give_up_on=give_up_on,
        jitter=jitter,
        sleep=sleep,
        what=what,
    )
    async for attempt in policy:
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises


__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "backoff_delay",
    "retry_async",
    "retry_policy",
]

"""Resilience around calls to a dependency: a circuit breaker and a retry helper.

:class:`CircuitBreaker` stops calling a dependency that keeps failing and lets a
few trial calls through once it may have recovered::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
    OPEN ──(recovery_timeout_s has passed)──▶ HALF_OPEN
    HALF_OPEN ──(success_threshold trial successes)──▶ CLOSED
    HALF_OPEN ──(any trial failure)──▶ OPEN

While it is OPEN, and while HALF_OPEN already runs ``half_open_max_calls``
trials, a call raises :class:`CircuitOpenError` without reaching the dependency.

The machine itself is pure: :func:`admit` and :func:`settle` take a
:class:`Circuit` (the state as a value), the time and the limits, and return the
new value (None when nothing changes). :class:`CircuitBreaker` keeps one in
memory; the tools' cluster-wide breaker
(:mod:`agenticflow.worker.tools.breaker`) keeps one in a KV record shared by
every worker. Both make the same transitions.
That error is retryable by the framework's rules (it is not a
:class:`~agenticflow.shared.errors.NonRetryableError`), and its ``retry_after_s`` says when
trying again makes sense.

:func:`backoff_delay` is the one backoff formula (capped exponential, optional
jitter): :func:`retry_policy` and :func:`retry_async` retry a call with it (built
on tenacity) and re-raise the last error when they give up. Every other wait
between tries uses it too: task retries (``RetryPolicy.delay_s``), the bus's
JetStream retries and topology poll, the coordinator's retry-in-place, the
audit chain's contention back-off and the process-identity request.

Neither is thread-safe: use one breaker from one event loop. Within that loop
the breaker needs no lock, because it never awaits between reading and
updating its state.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypedDict, TypeVar

import structlog

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

from agenticflow.shared.errors import CircuitOpenError, ConfigError, NonRetryableError

log = structlog.get_logger("agenticflow.resilience")

P = ParamSpec("P")
T = TypeVar("T")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
Listener = Callable[["BreakerState", "BreakerState"], None]
Sleep = Callable[[float], Awaitable[None]]
Outcome = Literal["ok", "failure", "neutral"]
"""How an admitted call ended: ``neutral`` counts neither way (a caller's
mistake, a cancelled call)."""


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is; the value is what logs and snapshots show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The state machine (pure) ------------------------------------------------
class BreakerLimits(Protocol):
    """The thresholds the machine reads (a :class:`CircuitBreaker`, a tool's
    ``BreakerPolicy``)."""

    @property
    def failure_threshold(self) -> int: ...
    @property
    def recovery_timeout_s(self) -> float: ...
    @property
    def half_open_max_calls(self) -> int: ...
    @property
    def success_threshold(self) -> int: ...


def check_limits(limits: BreakerLimits, *, what: str) -> None:
    """Raise ConfigError unless the thresholds are at least 1 and the timeout not negative."""
    if min(limits.failure_threshold, limits.half_open_max_calls, limits.success_threshold) < 1:
        raise ConfigError(f"{what}: thresholds and max calls must be at least 1")
    if limits.recovery_timeout_s < 0:
        raise ConfigError(f"{what}: recovery_timeout_s must not be negative")


@dataclass(frozen=True, slots=True)
class Circuit:
    """A breaker's state as a value, for :func:`admit` and :func:`settle`.

    Times are on whatever clock the caller passes as ``now`` (monotonic in
    memory, wall clock in a shared record). A half-open trial holds its slot
    until ``trial_until``: a holder that dies during a trial (another process)
    does not keep the circuit half-open for ever.
    """

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    """Consecutive failures (reset by a success while closed)."""
    successes: int = 0
    """Trial successes while half-open."""
    trials: int = 0
    """Trial calls in flight while half-open."""
    opened_until: float = 0.0
    trial_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """What :func:`admit` decided."""

    allowed: bool
    trial: bool = False
    circuit: Circuit | None = None
    """The state to keep before the call goes through (it took a trial slot)."""
    retry_after_s: float = 0.0


_CLOSED = Circuit()
_ADMITTED = Admission(allowed=True)
"""A closed circuit's answer: no new state, no allocation."""


def elapsed(circuit: Circuit, now: float) -> Circuit | None:
    """The circuit once its open period is over (HALF_OPEN), or None if unchanged."""
    if circuit.state is BreakerState.OPEN and now >= circuit.opened_until:
        return replace(
            circuit, state=BreakerState.HALF_OPEN, successes=0, trials=0, trial_until=0.0
        )
    return None


def admit(
    circuit: Circuit, now: float, limits: BreakerLimits, *, trial_s: float = math.inf
) -> Admission:
    """May a call go through now? ``trial_s`` bounds how long a trial holds its slot."""
    if circuit.state is BreakerState.CLOSED:
        return _ADMITTED
    if circuit.state is BreakerState.OPEN:
        if now < circuit.opened_until:
            return Admission(allowed=False, retry_after_s=circuit.opened_until - now)
        circuit = replace(circuit, state=BreakerState.HALF_OPEN, trials=0, trial_until=0.0)
    # HALF_OPEN
    if now >= circuit.trial_until:  # no trial in flight, or the ones in flight are overdue
        taken = replace(
            circuit, state=BreakerState.HALF_OPEN, trials=1, successes=0, trial_until=now + trial_s
        )
        return Admission(allowed=True, trial=True, circuit=taken)
    if circuit.trials >= limits.half_open_max_calls:
        return Admission(allowed=False, retry_after_s=circuit.trial_until - now)
    taken = replace(circuit, trials=circuit.trials + 1, trial_until=now + trial_s)
    return Admission(allowed=True, trial=True, circuit=taken)


def settle(
    circuit: Circuit, now: float, limits: BreakerLimits, *, trial: bool, outcome: Outcome
) -> Circuit | None:
    """The circuit after an admitted call ended, or None if it does not change.

    A late outcome (of a call admitted before the circuit opened, or a non-trial
    call while half-open) changes nothing, except that a late success while
    closed still resets the failure count.
    """
    if outcome == "neutral":
        if trial and circuit.state is BreakerState.HALF_OPEN and circuit.trials > 0:
            return replace(circuit, trials=circuit.trials - 1)
        return None
    if outcome == "ok":
        return _succeeded(circuit, limits, trial=trial)
    return _failed(circuit, now, limits, trial=trial)


def _succeeded(circuit: Circuit, limits: BreakerLimits, *, trial: bool) -> Circuit | None:
    if circuit.state is BreakerState.CLOSED:
        return replace(circuit, failures=0) if circuit.failures else None
    if circuit.state is not BreakerState.HALF_OPEN or not trial:
        return None
    if circuit.successes + 1 >= limits.success_threshold:
        return _CLOSED
    return replace(circuit, successes=circuit.successes + 1, trials=max(circuit.trials - 1, 0))


def _failed(circuit: Circuit, now: float, limits: BreakerLimits, *, trial: bool) -> Circuit | None:
    state = circuit.state
    if state is BreakerState.CLOSED:
        if circuit.failures + 1 < limits.failure_threshold:
            return replace(circuit, failures=circuit.failures + 1)
    elif state is not BreakerState.HALF_OPEN or not trial:
        return None  # a late failure of a call admitted before the circuit opened
    return Circuit(
        state=BreakerState.OPEN,
        failures=circuit.failures + 1,
        opened_until=now + limits.recovery_timeout_s,
    )


# The in-memory breaker ---------------------------------------------------
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
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        check_limits(self, what=f"circuit {name!r}")
        self.excluded: tuple[type[BaseException], ...] = (
            excluded if isinstance(excluded, tuple) else (excluded,)
        )
        self.on_change: list[Listener] = list(on_change)
        self._clock = clock
        self._circuit = _CLOSED
        # Bumped on every transition so a call that outlives its state period
        # (e.g. admitted while CLOSED, finished after the breaker opened) is ignored.
        self._generation = 0
        self._opened_at: float | None = None
        self._last_error: type[BaseException] | None = None
        # ``async with breaker`` keeps no per-call object, so tickets are kept per task.
        self._entered: dict[asyncio.Task[Any] | None, list[_Ticket]] = {}

    # Observation --------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state; reading it moves OPEN to HALF_OPEN once the timeout has passed."""
        if self._circuit.state is BreakerState.OPEN:
            now = self._clock()
            moved = elapsed(self._circuit, now)
            if moved is not None:
                self._set(moved, now)
        return self._circuit.state

    def snapshot(self) -> BreakerSnapshot:
        """The breaker's state for logs, health checks and metrics."""
        return {
            "name": self.name,
            "state": self.state.value,
            "failures": self._circuit.failures,
            "opened_at": self._opened_at,
            "last_error": self._last_error.__name__ if self._last_error else None,
        }

    def reset(self) -> None:
        """Close the breaker and forget failures (an operator's override)."""
        old = self._circuit.state
        self._circuit = _CLOSED
        self._changed(old, BreakerState.CLOSED, self._clock())

    def __repr__(self) -> str:
        circuit = self._circuit
        return f"<CircuitBreaker {self.name!r} {circuit.state.value} failures={circuit.failures}>"

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

    # Core: the pure machine above, plus tickets --------------------------
    def _admit(self) -> _Ticket:
        circuit = self._circuit
        if circuit.state is BreakerState.CLOSED:  # the hot path: no clock, no allocation
            return _Ticket(self._generation, trial=False)
        now = self._clock()
        admission = admit(circuit, now, self)
        if admission.circuit is not None:
            self._set(admission.circuit, now)
        if not admission.allowed:
            retry_after = admission.retry_after_s
            if math.isinf(retry_after):
                # A trial is running; if it fails, the breaker stays open this long.
                retry_after = self.recovery_timeout_s
            raise CircuitOpenError(self.name, retry_after_s=retry_after)
        return _Ticket(self._generation, trial=admission.trial)

    def _settle(self, ticket: _Ticket, exc: BaseException | None) -> None:
        if ticket.generation != self._generation:
            return
        outcome: Outcome
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, Exception) and not isinstance(exc, self.excluded):
            outcome = "failure"
            self._last_error = type(exc)
        else:
            outcome = "neutral"
        # Only a failure can open the circuit, the one move that reads the time:
        # a success (the hot path) reads no clock and, while closed, allocates nothing.
        now = self._clock() if outcome == "failure" else 0.0
        new = settle(self._circuit, now, self, trial=ticket.trial, outcome=outcome)
        if new is not None:
            self._set(new, now)

    def _set(self, new: Circuit, now: float) -> None:
        old = self._circuit.state
        self._circuit = new
        if new.state is not old:
            self._changed(old, new.state, now)

    def _changed(self, old: BreakerState, new: BreakerState, now: float) -> None:
        self._generation += 1
        if new is BreakerState.OPEN:
            self._opened_at = now
        elif new is BreakerState.CLOSED:
            self._opened_at = None
        if old is new:
            return
        if new is BreakerState.OPEN:
            log.warning(
                "circuit opened",
                circuit=self.name,
                previous=old.value,
                failures=self._circuit.failures,
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

    ``initial_s * backoff ** (attempt - 1)``, capped at ``max_s`` (an attempt
    below 1 counts as 1); with
    ``jitter`` a uniform pick from the upper half of that, so clients that
    failed together do not retry together, and the cap still holds.
    """
    try:
        delay = min(max_s, initial_s * backoff ** max(attempt - 1, 0))
    except OverflowError:  # a huge attempt number: the cap applies
        delay = max_s if initial_s > 0 else 0.0
    if jitter:
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - spreading load, not secrecy
    return delay


def backoff_wait(
    *, initial_s: float, backoff: float, max_s: float, jitter: bool
) -> Callable[[RetryCallState], float]:
    """:func:`backoff_delay` as a tenacity ``wait``."""

    def wait(state: RetryCallState) -> float:
        return backoff_delay(
            state.attempt_number, initial_s=initial_s, backoff=backoff, max_s=max_s, jitter=jitter
        )

    return wait


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
    # Imported here: the backoff formula and the breaker need no tenacity, and
    # the workflow model (RetryPolicy) imports this module.
    from tenacity import (
        AsyncRetrying,
        retry_if_exception_type,
        retry_if_not_exception_type,
        stop_after_attempt,
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
        wait=backoff_wait(initial_s=initial_s, backoff=backoff, max_s=max_s, jitter=jitter),
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
    "Admission",
    "BreakerLimits",
    "BreakerSnapshot",
    "BreakerState",
    "Circuit",
    "CircuitBreaker",
    "CircuitOpenError",
    "Outcome",
    "admit",
    "backoff_delay",
    "backoff_wait",
    "check_limits",
    "elapsed",
    "retry_async",
    "retry_policy",
    "settle",
]

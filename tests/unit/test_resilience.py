"""The circuit breaker's state machine (on a fake clock) and the retry helper."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    NonRetryableError,
    TaskError,
    TransportError,
)
from agenticflow.shared.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    backoff_delay,
    retry_async,
    retry_policy,
)

PROPS = settings(database=None, max_examples=200, deadline=None)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class BoomError(Exception):
    """The dependency failed."""


def breaker(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    options: dict[str, object] = {"failure_threshold": 3, "recovery_timeout_s": 10.0}
    options.update(kwargs)
    return CircuitBreaker("dep", clock=clock, **options)  # type: ignore[arg-type]


def state(b: CircuitBreaker) -> BreakerState:
    """``b.state`` read afresh (mypy would otherwise keep a narrowed property type)."""
    return b.state


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise BoomError("down")


async def fail_n(b: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(BoomError):
            await b.call(fail)


class Gate:
    """A call that runs inside the breaker until the test releases it."""

    def __init__(self, b: CircuitBreaker) -> None:
        self.entered = asyncio.Event()
        self.decided = asyncio.Event()
        self.refused: CircuitOpenError | None = None
        self.release: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.task = asyncio.create_task(self._run(b))

    async def _run(self, b: CircuitBreaker) -> None:
        try:
            async with b:
                self.entered.set()
                self.decided.set()
                error = await self.release
                if error is not None:
                    raise error
        except CircuitOpenError as exc:
            if self.entered.is_set():
                raise
            self.refused = exc
            self.decided.set()

    async def wait_entered(self) -> None:
        await asyncio.wait_for(self.entered.wait(), timeout=5)

    async def wait_decided(self) -> None:
        await asyncio.wait_for(self.decided.wait(), timeout=5)

    async def finish(self, error: BaseException | None = None) -> None:
        if not self.release.done():
            self.release.set_result(error)
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), timeout=5)


# Errors --------------------------------------------------------------------


def test_circuit_open_error_is_ours_and_retryable() -> None:
    error = CircuitOpenError("dep", retry_after_s=2.5)
    assert isinstance(error, AgenticFlowError)
    assert not isinstance(error, NonRetryableError | TransportError | TaskError)
    assert error.code == "circuit_open"
    assert error.retry_after_s == 2.5
    assert error.name == "dep"
    assert "dep" in str(error)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
        {"recovery_timeout_s": -1.0},
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        breaker(FakeClock(), **kwargs)


# Transitions ---------------------------------------------------------------


async def test_opens_after_threshold_consecutive_failures() -> None:
    b = breaker(FakeClock())
    await fail_n(b, 2)
    assert state(b) is BreakerState.CLOSED
    await fail_n(b, 1)
    assert state(b) is BreakerState.OPEN


async def test_open_rejects_without_calling_and_says_when_to_retry() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(counted)
    assert calls == 0
    assert info.value.retry_after_s == pytest.approx(6.0)
    clock.advance(5.5)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(counted)
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert calls == 0


async def test_half_open_after_recovery_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    clock.advance(9.999)
    assert state(b) is BreakerState.OPEN
    clock.advance(0.001)
    assert state(b) is BreakerState.HALF_OPEN


async def test_half_open_allows_one_trial_and_rejects_a_concurrent_second() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    clock.advance(10.0)
    trial = Gate(b)
    await trial.wait_entered()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after_s == pytest.approx(10.0)
    await trial.finish()
    assert state(b) is BreakerState.CLOSED
    assert await b.call(ok) == "ok"


async def test_half_open_max_calls_allows_that_many_trials() -> None:
    clock = FakeClock()
    b = breaker(clock, half_open_max_calls=2, success_threshold=2)
    await fail_n(b, 3)
    clock.advance(10.0)
    first, second = Gate(b), Gate(b)
    await first.wait_entered()
    await second.wait_entered()
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    await first.finish()
    assert state(b) is BreakerState.HALF_OPEN
    await second.finish()
    assert state(b) is BreakerState.CLOSED


async def test_trial_success_closes() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    clock.advance(10.0)
    assert await b.call(ok) == "ok"
    assert state(b) is BreakerState.CLOSED
    assert b.snapshot()["failures"] == 0
    # Closed again: it takes the full threshold to open once more.
    await fail_n(b, 2)
    assert state(b) is BreakerState.CLOSED


async def test_success_threshold_needs_that_many_trial_successes() -> None:
    clock = FakeClock()
    b = breaker(clock, success_threshold=3)
    await fail_n(b, 3)
    clock.advance(10.0)
    for _ in range(2):
        await b.call(ok)
        assert state(b) is BreakerState.HALF_OPEN
    await b.call(ok)
    assert state(b) is BreakerState.CLOSED


async def test_trial_failure_reopens_for_a_full_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    clock.advance(12.0)
    await fail_n(b, 1)
    assert state(b) is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after_s == pytest.approx(10.0)
    clock.advance(10.0)
    assert state(b) is BreakerState.HALF_OPEN


async def test_success_resets_the_failure_count_when_closed() -> None:
    b = breaker(FakeClock())
    for _ in range(5):
        await fail_n(b, 2)
        await b.call(ok)
    assert state(b) is BreakerState.CLOSED
    assert b.snapshot()["failures"] == 0


async def test_excluded_errors_do_not_count() -> None:
    b = breaker(FakeClock(), excluded=NonRetryableError)

    async def bad_input() -> None:
        raise NonRetryableError("bad input")

    for _ in range(10):
        with pytest.raises(NonRetryableError):
            await b.call(bad_input)
    assert state(b) is BreakerState.CLOSED
    assert b.snapshot()["failures"] == 0
    assert b.snapshot()["last_error"] is None


async def test_excluded_error_in_a_trial_frees_the_slot_without_closing() -> None:
    clock = FakeClock()
    b = breaker(clock, excluded=(NonRetryableError,))
    await fail_n(b, 3)
    clock.advance(10.0)
    with pytest.raises(NonRetryableError):
        async with b:
            raise NonRetryableError("bad input")
    assert state(b) is BreakerState.HALF_OPEN
    await b.call(ok)
    assert state(b) is BreakerState.CLOSED


async def test_cancelled_trial_frees_the_slot() -> None:
    clock = FakeClock()
    b = breaker(clock)
    await fail_n(b, 3)
    clock.advance(10.0)
    trial = Gate(b)
    await trial.wait_entered()
    trial.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(trial.task, timeout=5)
    assert state(b) is BreakerState.HALF_OPEN
    assert await b.call(ok) == "ok"
    assert state(b) is BreakerState.CLOSED


async def test_a_call_that_outlives_its_state_does_not_count() -> None:
    clock = FakeClock()
    b = breaker(clock)
    slow = Gate(b)
    await slow.wait_entered()
    await fail_n(b, 3)
    clock.advance(10.0)
    assert state(b) is BreakerState.HALF_OPEN
    # Admitted while closed; its late failure must not re-open the half-open breaker.
    await slow.finish(BoomError("late"))
    assert state(b) is BreakerState.HALF_OPEN
    await b.call(ok)
    assert state(b) is BreakerState.CLOSED


async def test_reset_closes() -> None:
    b = breaker(FakeClock())
    await fail_n(b, 3)
    b.reset()
    assert state(b) is BreakerState.CLOSED
    assert await b.call(ok) == "ok"


# Forms ---------------------------------------------------------------------


async def test_decorator_form() -> None:
    clock = FakeClock()
    b = breaker(clock, failure_threshold=2)
    calls: list[int] = []

    @b
    async def fetch(x: int, *, fail_it: bool = False) -> int:
        """Fetch something."""
        calls.append(x)
        if fail_it:
            raise BoomError("down")
        return x * 2

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch something."
    assert await fetch(2) == 4
    for i in range(2):
        with pytest.raises(BoomError):
            await fetch(i, fail_it=True)
    with pytest.raises(CircuitOpenError):
        await fetch(9)
    assert calls == [2, 0, 1]


async def test_context_manager_form() -> None:
    b = breaker(FakeClock(), failure_threshold=2)
    async with b as entered:
        assert entered is b
    for _ in range(2):
        with pytest.raises(BoomError):
            async with b:
                raise BoomError("down")
    body_ran = False
    with pytest.raises(CircuitOpenError):
        async with b:
            body_ran = True
    assert not body_ran
    assert state(b) is BreakerState.OPEN


async def test_nested_context_managers_in_one_task() -> None:
    b = breaker(FakeClock(), failure_threshold=1)

    async def nested() -> None:
        async with b:
            async with b:
                pass
            raise BoomError("outer")

    with pytest.raises(BoomError):
        await nested()
    assert state(b) is BreakerState.OPEN


async def test_call_passes_arguments() -> None:
    b = breaker(FakeClock())

    async def add(a: int, b: int, *, c: int = 0) -> int:
        return a + b + c

    assert await b.call(add, 1, 2, c=3) == 6


# Observation ---------------------------------------------------------------


async def test_on_change_listener_sees_every_transition() -> None:
    clock = FakeClock()
    seen: list[tuple[BreakerState, BreakerState]] = []
    b = breaker(clock, on_change=[lambda old, new: seen.append((old, new))])
    await fail_n(b, 3)
    clock.advance(10.0)
    await fail_n(b, 1)
    clock.advance(10.0)
    await b.call(ok)
    assert seen == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


async def test_a_failing_listener_does_not_break_the_breaker() -> None:
    seen: list[BreakerState] = []

    def broken(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    b = breaker(FakeClock(), failure_threshold=1)
    b.on_change.append(broken)
    b.on_change.append(lambda old, new: seen.append(new))
    await fail_n(b, 1)
    assert state(b) is BreakerState.OPEN
    assert seen == [BreakerState.OPEN]


async def test_snapshot() -> None:
    clock = FakeClock()
    b = breaker(clock)
    assert b.snapshot() == {
        "name": "dep",
        "state": "closed",
        "failures": 0,
        "opened_at": None,
        "last_error": None,
    }
    await fail_n(b, 3)
    assert b.snapshot() == {
        "name": "dep",
        "state": "open",
        "failures": 3,
        "opened_at": 1000.0,
        "last_error": "BoomError",
    }
    clock.advance(10.0)
    assert b.snapshot()["state"] == "half_open"
    assert "dep" in repr(b)


# Property ------------------------------------------------------------------


@dataclass
class Witness:
    """What the breaker announced, recorded independently of its internals."""

    clock: FakeClock
    recovery_s: float
    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    period: int = 0
    trials: dict[int, int] = field(default_factory=dict)
    consistent: bool = True

    def __call__(self, old: BreakerState, new: BreakerState) -> None:
        # Listener errors are swallowed by the breaker, so record instead of asserting.
        self.consistent = self.consistent and old is self.state
        if new is BreakerState.HALF_OPEN:
            # Half-open only once the recovery timeout has passed since opening.
            self.consistent = (
                self.consistent
                and self.opened_at is not None
                and self.clock() >= self.opened_at + self.recovery_s
            )
        self.state = new
        self.period += 1
        if new is BreakerState.OPEN:
            self.opened_at = self.clock()

    def open_within_timeout(self) -> bool:
        return (
            self.state is BreakerState.OPEN
            and self.opened_at is not None
            and self.clock() < self.opened_at + self.recovery_s
        )


# Short sequences must reach OPEN and HALF_OPEN often, so starting and failing
# calls and stepping over the 10 s recovery timeout are drawn most.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.just(0)),
        st.tuples(st.sampled_from(["fail", "fail", "succeed", "exclude"]), st.integers(0, 7)),
        st.tuples(st.just("advance"), st.sampled_from([0, 1, 5, 9, 10, 11])),
    ),
    max_size=80,
)


@settings(database=None, max_examples=500, deadline=None)
@given(
    ops=operations,
    failure_threshold=st.integers(1, 4),
    half_open_max_calls=st.integers(1, 3),
    success_threshold=st.integers(1, 3),
)
async def test_never_admits_while_open_nor_too_many_trials(
    ops: list[tuple[str, int]],
    failure_threshold: int,
    half_open_max_calls: int,
    success_threshold: int,
) -> None:
    recovery = 10.0
    clock = FakeClock()
    witness = Witness(clock, recovery)
    b = CircuitBreaker(
        "prop",
        failure_threshold=failure_threshold,
        recovery_timeout_s=recovery,
        half_open_max_calls=half_open_max_calls,
        success_threshold=success_threshold,
        excluded=NonRetryableError,
        clock=clock,
        on_change=[witness],
    )
    running: list[tuple[Gate, int, bool]] = []
    try:
        for op, arg in ops:
            if op == "advance":
                clock.advance(arg)
            elif op == "start":
                gate = Gate(b)
                await gate.wait_decided()
                running_trials = witness.trials.get(witness.period, 0)
                if gate.refused is not None:
                    # Refused only while open within the timeout or with every trial slot taken.
                    assert witness.open_within_timeout() or (
                        witness.state is BreakerState.HALF_OPEN
                        and running_trials == half_open_max_calls
                    )
                    assert gate.refused.retry_after_s >= 0
                    await gate.finish()
                    continue
                assert not witness.open_within_timeout()
                assert witness.state is not BreakerState.OPEN
                trial = witness.state is BreakerState.HALF_OPEN
                if trial:
                    witness.trials[witness.period] = running_trials + 1
                    assert witness.trials[witness.period] <= half_open_max_calls
                running.append((gate, witness.period, trial))
            elif running:
                gate, period, trial = running.pop(arg % len(running))
                error = {
                    "succeed": None,
                    "fail": BoomError("down"),
                    "exclude": NonRetryableError("x"),
                }
                await gate.finish(error[op])
                if trial:
                    witness.trials[period] -= 1
            assert b.state is witness.state
            assert witness.consistent
    finally:
        for gate, _, _ in running:
            await gate.finish()


# Retries -------------------------------------------------------------------


class FakeSleep:
    """Records requested delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_retry_succeeds_after_transient_failures() -> None:
    sleep = FakeSleep()
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BoomError("transient")
        return "done"

    result = await retry_async(fn, attempts=5, initial_s=0.1, jitter=False, sleep=sleep)
    assert result == "done"
    assert len(calls) == 3
    assert sleep.delays == pytest.approx([0.1, 0.2])


async def test_retry_makes_exactly_attempts_calls_then_reraises_the_last_error() -> None:
    sleep = FakeSleep()
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        raise BoomError(f"attempt {len(calls)}")

    with pytest.raises(BoomError, match="attempt 4"):
        await retry_async(fn, attempts=4, jitter=False, sleep=sleep)
    assert len(calls) == 4
    assert len(sleep.delays) == 3


async def test_retry_stops_at_once_on_a_non_matching_error() -> None:
    sleep = FakeSleep()
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        await retry_async(fn, attempts=5, retry_on=(BoomError, TransportError), sleep=sleep)
    assert len(calls) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "error", [NonRetryableError("bad input"), CircuitOpenError("dep", retry_after_s=3.0)]
)
async def test_retry_gives_up_at_once_on_permanent_and_open_circuit(error: Exception) -> None:
    sleep = FakeSleep()
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        await retry_async(fn, attempts=5, sleep=sleep)
    assert len(calls) == 1
    assert sleep.delays == []


async def test_retry_delay_grows_and_is_capped() -> None:
    sleep = FakeSleep()

    async def fn() -> None:
        raise BoomError("down")

    with pytest.raises(BoomError):
        await retry_async(
            fn, attempts=7, initial_s=0.5, backoff=2.0, max_s=3.0, jitter=False, sleep=sleep
        )
    assert sleep.delays == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0, 3.0])


async def test_retry_with_jitter_stays_within_bounds() -> None:
    sleep = FakeSleep()

    async def fn() -> None:
        raise BoomError("down")

    with pytest.raises(BoomError):
        await retry_async(fn, attempts=8, initial_s=1.0, backoff=2.0, max_s=10.0, sleep=sleep)
    for attempt, delay in enumerate(sleep.delays, start=1):
        ceiling = min(10.0, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling


async def test_retry_policy_is_a_tenacity_loop() -> None:
    sleep = FakeSleep()
    calls = 0
    async for attempt in retry_policy(attempts=3, jitter=False, sleep=sleep):
        with attempt:
            calls += 1
            if calls < 2:
                raise BoomError("once")
    assert calls == 2
    assert sleep.delays == pytest.approx([0.1])


async def test_retry_through_a_breaker_stops_when_it_opens() -> None:
    sleep = FakeSleep()
    b = breaker(FakeClock(), failure_threshold=2)
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        raise BoomError("down")

    with pytest.raises(CircuitOpenError):
        await retry_async(lambda: b.call(fn), attempts=10, sleep=sleep)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"initial_s": -1.0}, {"max_s": -1.0}, {"backoff": 0.5}],
)
def test_retry_policy_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        retry_policy(**kwargs)  # type: ignore[arg-type]


@PROPS
@given(
    attempt=st.integers(1, 60),
    initial_s=st.floats(0, 10),
    backoff=st.floats(1, 4),
    max_s=st.floats(0, 60),
    jitter=st.booleans(),
)
def test_backoff_delay_is_bounded(
    attempt: int, initial_s: float, backoff: float, max_s: float, jitter: bool
) -> None:
    delay = backoff_delay(attempt, initial_s=initial_s, backoff=backoff, max_s=max_s, jitter=jitter)
    assert 0 <= delay <= max_s
    if attempt > 1 and not jitter:
        earlier = backoff_delay(
            attempt - 1, initial_s=initial_s, backoff=backoff, max_s=max_s, jitter=False
        )
        assert earlier <= delay

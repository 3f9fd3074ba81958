"""The one breaker state machine (shared.resilience's admit/settle) and the one
backoff formula, and the two breakers built on the machine agreeing."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.shared.graph.workflow import RetryPolicy
from agenticflow.shared.resilience import (
    BreakerState,
    Circuit,
    CircuitBreaker,
    CircuitOpenError,
    Outcome,
    admit,
    backoff_delay,
    settle,
)
from agenticflow.worker.tools import breaker as shared_record
from agenticflow.worker.tools.spec import BreakerPolicy

OUTCOMES: tuple[Outcome, ...] = ("ok", "failure", "neutral")
LIMITS = BreakerPolicy(failure_threshold=2, recovery_timeout_s=10, success_threshold=2)


def test_the_machine_opens_half_opens_and_closes() -> None:
    circuit = Circuit()
    assert admit(circuit, 0, LIMITS).allowed
    once = settle(circuit, 1, LIMITS, trial=False, outcome="failure")
    assert once is not None
    assert once.failures == 1
    opened = settle(once, 2, LIMITS, trial=False, outcome="failure")
    assert opened == Circuit(state=BreakerState.OPEN, failures=2, opened_until=12)
    refused = admit(opened, 5, LIMITS)
    assert (refused.allowed, refused.retry_after_s) == (False, 7)
    trial = admit(opened, 12, LIMITS, trial_s=3)
    assert trial.trial
    assert trial.circuit is not None
    assert (trial.circuit.state, trial.circuit.trials, trial.circuit.trial_until) == (
        BreakerState.HALF_OPEN,
        1,
        15,
    )
    # One trial at a time; an overdue trial frees its slot.
    assert not admit(trial.circuit, 13, LIMITS, trial_s=3).allowed
    assert admit(trial.circuit, 15, LIMITS, trial_s=3).trial
    halfway = settle(trial.circuit, 13, LIMITS, trial=True, outcome="ok")
    assert halfway is not None
    assert halfway.successes == 1
    assert settle(halfway, 14, LIMITS, trial=True, outcome="ok") == Circuit()
    # A late failure (not a trial) while half-open changes nothing.
    assert settle(halfway, 14, LIMITS, trial=False, outcome="failure") is None


def test_one_backoff_formula() -> None:
    delays = [
        backoff_delay(n, initial_s=0.2, backoff=2.0, max_s=5.0, jitter=False) for n in range(1, 8)
    ]
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_delay(0, initial_s=0.2, backoff=2.0, max_s=5.0, jitter=False) == 0.2
    assert backoff_delay(10**6, initial_s=0.2, backoff=2.0, max_s=5.0, jitter=False) == 5.0
    jittered = backoff_delay(3, initial_s=0.2, backoff=2.0, max_s=5.0, jitter=True)
    assert 0.4 <= jittered <= 0.8
    policy = RetryPolicy(initial_interval_s=0.2, backoff=2.0, max_interval_s=5.0)
    assert [policy.delay_s(n) for n in range(1, 8)] == delays


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def boom() -> None:
    raise RuntimeError("boom")


async def fine() -> None:
    return None


@settings(database=None, max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(OUTCOMES), st.sampled_from([0.0, 4.0, 11.0])),
        max_size=40,
    )
)
async def test_the_memory_breaker_and_the_shared_record_agree(
    calls: list[tuple[Outcome, float]],
) -> None:
    """Calls one after another: both breakers admit, refuse and move alike."""
    clock = Clock()
    policy = BreakerPolicy(failure_threshold=3, recovery_timeout_s=10, success_threshold=2)
    memory = CircuitBreaker(
        "dep",
        failure_threshold=3,
        recovery_timeout_s=10,
        success_threshold=2,
        excluded=(ValueError,),
        clock=clock,
    )
    record = shared_record.BreakerRecord()
    for outcome, pause in calls:
        clock.now += pause
        decision = shared_record.admit(record, clock.now, policy, trial_s=math.inf)
        refused: CircuitOpenError | None = None
        try:
            async with memory:
                if outcome == "failure":
                    await boom()
                elif outcome == "neutral":
                    raise ValueError("a caller's mistake")
                await fine()
        except CircuitOpenError as error:
            refused = error
        except (RuntimeError, ValueError):
            pass
        assert decision.allowed == (refused is None)
        if refused is not None:
            # While a trial runs the record waits for its deadline; memory says recovery_timeout_s.
            expected = decision.retry_after_s if decision.retry_after_s != math.inf else 10
            assert refused.retry_after_s == expected
            continue
        record = decision.record or record
        new = shared_record.settle(
            record,
            clock.now,
            policy,
            trial=decision.trial,
            outcome=outcome,
        )
        record = new or record
        assert memory.state.value == record.state
        assert memory.snapshot()["failures"] == record.failures

"""A circuit breaker whose state is shared data: pure decisions over a record.

The same machine as :class:`agenticflow.shared.resilience.CircuitBreaker`::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
    OPEN ──(recovery_timeout_s has passed; a trial is admitted)──▶ HALF_OPEN
    HALF_OPEN ──(success_threshold trial successes)──▶ CLOSED
    HALF_OPEN ──(a trial failure)──▶ OPEN

but the state is a :class:`BreakerRecord` that lives in a KV entry shared by
every worker (:mod:`agenticflow.worker.tools.cluster`), so these functions take the record
and the time and return the new record, or None when nothing changes (then
nothing is written: a closed breaker costs no round trip). Times are wall-clock
seconds since the epoch, as the record is read on other machines. A half-open
trial holds its slot until ``trial_until``: a worker that dies during a trial
does not keep the circuit half-open for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agenticflow.shared.resilience import BreakerState
from agenticflow.worker.tools.record import Record
from agenticflow.worker.tools.spec import BreakerPolicy

CLOSED = BreakerState.CLOSED.value
OPEN = BreakerState.OPEN.value
HALF_OPEN = BreakerState.HALF_OPEN.value
"""The record stores the states of :class:`~agenticflow.shared.resilience.BreakerState` as text."""


@dataclass(frozen=True, slots=True)
class BreakerRecord(Record):
    """One breaker's shared state."""

    state: str = CLOSED
    failures: int = 0
    successes: int = 0
    trials: int = 0
    opened_until: float = 0.0
    trial_until: float = 0.0
    last_error: str | None = None
    changed_at: float = 0.0
    by: str = ""
    """The worker that made the last change."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What :func:`admit` decided."""

    allowed: bool
    trial: bool = False
    record: BreakerRecord | None = None
    """The record to write before the call goes through (taking a trial slot)."""
    retry_after_s: float = 0.0


def admit(record: BreakerRecord, now: float, policy: BreakerPolicy, *, trial_s: float) -> Admission:
    """May a call go through? ``trial_s`` bounds how long a trial holds its slot."""
    if record.state == CLOSED:
        return Admission(allowed=True)
    if record.state == OPEN:
        if now < record.opened_until:
            return Admission(allowed=False, retry_after_s=record.opened_until - now)
        taken = replace(record, state=HALF_OPEN, trials=1, successes=0, trial_until=now + trial_s)
        return Admission(allowed=True, trial=True, record=taken)
    # HALF_OPEN
    if now >= record.trial_until:  # the trials in flight are overdue: their workers died
        taken = replace(record, trials=1, successes=0, trial_until=now + trial_s)
        return Admission(allowed=True, trial=True, record=taken)
    if record.trials >= policy.half_open_max_calls:
        return Admission(allowed=False, retry_after_s=record.trial_until - now)
    taken = replace(record, trials=record.trials + 1, trial_until=now + trial_s)
    return Admission(allowed=True, trial=True, record=taken)


def settle(
    record: BreakerRecord,
    now: float,
    policy: BreakerPolicy,
    *,
    trial: bool,
    outcome: str,
    error: str | None = None,
) -> BreakerRecord | None:
    """The record after a call ended (``outcome``: ``ok``, ``failure`` or
    ``neutral``, e.g. a caller's mistake), or None if it does not change."""
    if outcome == "neutral":
        if trial and record.state == HALF_OPEN and record.trials > 0:
            return replace(record, trials=record.trials - 1, changed_at=now)
        return None
    if outcome == "ok":
        return _succeeded(record, now, policy, trial=trial)
    return _failed(record, now, policy, trial=trial, error=error)


def _succeeded(
    record: BreakerRecord, now: float, policy: BreakerPolicy, *, trial: bool
) -> BreakerRecord | None:
    if record.state == CLOSED:
        return replace(record, failures=0, changed_at=now) if record.failures else None
    if record.state != HALF_OPEN or not trial:
        return None
    if record.successes + 1 >= policy.success_threshold:
        return BreakerRecord(changed_at=now)
    return replace(
        record,
        successes=record.successes + 1,
        trials=max(record.trials - 1, 0),
        changed_at=now,
    )


def _failed(
    record: BreakerRecord, now: float, policy: BreakerPolicy, *, trial: bool, error: str | None
) -> BreakerRecord | None:
    if record.state == CLOSED:
        failures = record.failures + 1
        if failures >= policy.failure_threshold:
            return _opened(record, now, policy, failures, error)
        return replace(record, failures=failures, last_error=error, changed_at=now)
    if record.state == HALF_OPEN and trial:
        return _opened(record, now, policy, record.failures + 1, error)
    return None  # a late failure of a call admitted before the circuit opened


def _opened(
    record: BreakerRecord, now: float, policy: BreakerPolicy, failures: int, error: str | None
) -> BreakerRecord:
    return replace(
        record,
        state=OPEN,
        failures=failures,
        successes=0,
        trials=0,
        opened_until=now + policy.recovery_timeout_s,
        trial_until=0.0,
        last_error=error,
        changed_at=now,
    )


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Admission", "BreakerRecord", "admit", "settle"]

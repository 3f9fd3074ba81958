"""A circuit breaker whose state is shared data: the shared machine over a KV record.

The state machine is the one in :mod:`agenticflow.shared.resilience` (its
``admit`` and ``settle``), which :class:`~agenticflow.shared.resilience.CircuitBreaker`
runs in memory::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
    OPEN ──(recovery_timeout_s has passed; a trial is admitted)──▶ HALF_OPEN
    HALF_OPEN ──(success_threshold trial successes)──▶ CLOSED
    HALF_OPEN ──(a trial failure)──▶ OPEN

Here the state is a :class:`BreakerRecord` that lives in a KV entry shared by
every worker (:mod:`agenticflow.worker.tools.cluster`): this module only maps the
record to the machine's :class:`~agenticflow.shared.resilience.Circuit` and back,
adding what the record keeps beside it (the last error, when and by whom it
changed). :func:`admit` and :func:`settle` take the record and the time and
return the new record, or None when nothing changes (then nothing is written: a
closed breaker costs no round trip). Times are wall-clock seconds since the
epoch, as the record is read on other machines. A half-open trial holds its
slot until ``trial_until``: a worker that dies during a trial does not keep the
circuit half-open for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agenticflow.shared import resilience
from agenticflow.shared.resilience import BreakerState, Circuit, Outcome
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
    decided = resilience.admit(_circuit(record), now, policy, trial_s=trial_s)
    taken = None if decided.circuit is None else _with(record, decided.circuit)
    return Admission(decided.allowed, decided.trial, taken, decided.retry_after_s)


def settle(
    record: BreakerRecord,
    now: float,
    policy: BreakerPolicy,
    *,
    trial: bool,
    outcome: Outcome,
    error: str | None = None,
) -> BreakerRecord | None:
    """The record after a call ended (``outcome``: ``ok``, ``failure`` or
    ``neutral``, e.g. a caller's mistake), or None if it does not change."""
    new = resilience.settle(_circuit(record), now, policy, trial=trial, outcome=outcome)
    if new is None:
        return None
    if new.state is BreakerState.CLOSED and record.state != CLOSED:
        return BreakerRecord(changed_at=now)  # closed again: a fresh record
    last_error = error if outcome == "failure" else record.last_error
    return replace(_with(record, new), last_error=last_error, changed_at=now)


def _circuit(record: BreakerRecord) -> Circuit:
    return Circuit(
        state=BreakerState(record.state),
        failures=record.failures,
        successes=record.successes,
        trials=record.trials,
        opened_until=record.opened_until,
        trial_until=record.trial_until,
    )


def _with(record: BreakerRecord, circuit: Circuit) -> BreakerRecord:
    return replace(
        record,
        state=circuit.state.value,
        failures=circuit.failures,
        successes=circuit.successes,
        trials=circuit.trials,
        opened_until=circuit.opened_until,
        trial_until=circuit.trial_until,
    )


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Admission", "BreakerRecord", "admit", "settle"]

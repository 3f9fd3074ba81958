"""The shared breaker and rate-limit records: pure decisions, no store."""

from __future__ import annotations

from agenticflow.worker.tools.breaker import CLOSED, HALF_OPEN, OPEN, BreakerRecord, admit, settle
from agenticflow.worker.tools.ratelimit import RateRecord
from agenticflow.worker.tools.spec import BreakerPolicy

POLICY = BreakerPolicy(failure_threshold=3, recovery_timeout_s=10, half_open_max_calls=2)


def fail(record: BreakerRecord, now: float, *, trial: bool = False) -> BreakerRecord:
    new = settle(record, now, POLICY, trial=trial, outcome="failure", error="boom")
    assert new is not None
    return new


def test_closed_admits_without_a_write_and_opens_after_the_threshold() -> None:
    record = BreakerRecord()
    decision = admit(record, 0, POLICY, trial_s=5)
    assert decision.allowed
    assert decision.record is None
    record = fail(fail(record, 1), 2)
    assert (record.state, record.failures) == (CLOSED, 2)
    record = fail(record, 3)
    assert (record.state, record.opened_until, record.last_error) == (OPEN, 13, "boom")
    refused = admit(record, 5, POLICY, trial_s=5)
    assert not refused.allowed
    assert refused.retry_after_s == 8


def test_a_success_resets_consecutive_failures_and_a_quiet_success_writes_nothing() -> None:
    record = fail(BreakerRecord(), 1)
    reset = settle(record, 2, POLICY, trial=False, outcome="ok")
    assert reset is not None
    assert reset.failures == 0
    assert settle(reset, 3, POLICY, trial=False, outcome="ok") is None


def test_half_open_trials_are_limited_and_expire() -> None:
    record = fail(fail(fail(BreakerRecord(), 0), 0), 0)
    first = admit(record, 10, POLICY, trial_s=5)
    assert first.allowed
    assert first.trial
    assert first.record is not None
    record = first.record
    assert (record.state, record.trials) == (HALF_OPEN, 1)
    second = admit(record, 11, POLICY, trial_s=5)
    assert second.allowed
    assert second.record is not None
    record = second.record
    third = admit(record, 12, POLICY, trial_s=5)
    assert not third.allowed  # two trials at a time, cluster-wide
    # The trials' workers died: after trial_until a new trial may start.
    late = admit(record, 17, POLICY, trial_s=5)
    assert late.allowed
    assert late.record is not None
    assert late.record.trials == 1


def test_trial_success_closes_and_trial_failure_reopens() -> None:
    opened = fail(fail(fail(BreakerRecord(), 0), 0), 0)
    trial = admit(opened, 10, POLICY, trial_s=5).record
    assert trial is not None
    closed = settle(trial, 11, POLICY, trial=True, outcome="ok")
    assert closed is not None
    assert closed.state == CLOSED
    assert closed.failures == 0
    reopened = settle(trial, 11, POLICY, trial=True, outcome="failure", error="again")
    assert reopened is not None
    assert reopened.state == OPEN
    assert reopened.opened_until == 21
    released = settle(trial, 11, POLICY, trial=True, outcome="neutral")
    assert released is not None
    assert released.trials == 0
    assert released.state == HALF_OPEN


def test_late_failures_of_calls_admitted_before_opening_are_ignored() -> None:
    opened = fail(fail(fail(BreakerRecord(), 0), 0), 0)
    assert settle(opened, 1, POLICY, trial=False, outcome="failure") is None
    assert settle(opened, 1, POLICY, trial=False, outcome="ok") is None


def test_records_survive_unknown_fields_and_garbage() -> None:
    data = {**BreakerRecord(state=OPEN, failures=4).to_dict(), "from_the_future": 1}
    assert BreakerRecord.from_dict(data).failures == 4
    assert BreakerRecord.from_dict("garbage") == BreakerRecord()
    assert RateRecord.from_dict({"tat_us": 3, "calls": 2, "x": 0}).tat_us == 3
    assert RateRecord.from_dict({"window": 3, "count": 2}) == RateRecord()  # a fixed-window record

"""``wait:`` nodes (a timer, a time, a signal) in the reducer, driven through
the simulator of ``test_reducer``; and their definitions' validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agenticflow.coordinator.admission import Refuse, Rules, admit
from agenticflow.coordinator.reducer import ArmTimer, fold, pending_timers
from agenticflow.coordinator.state import MAX_KEPT_SIGNALS, TaskStatus, WorkflowStatus
from agenticflow.shared.graph.workflow import TaskSpec
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    TaskCompleted,
    TaskWaitElapsed,
)
from agenticflow.shared.wire.ids import task_key
from tests.unit.test_interventions import intervention, refused_code, verdict
from tests.unit.test_reducer import WF, Sim, definition, dispatches, only_dispatch, timers

TIMER = definition(
    {"id": "draft", "capability": "write"},
    {"id": "cool_off", "wait": "2h", "depends_on": ["draft"]},
    {"id": "send", "capability": "send", "depends_on": ["cool_off"]},
)
SIGNAL = definition(
    {"id": "draft", "capability": "write"},
    {"id": "ok", "wait": {"signal": "approved"}, "depends_on": ["draft"]},
    {"id": "send", "capability": "send", "depends_on": ["ok"]},
)


def signal_wait(**wait: Any) -> Any:
    return definition(
        {"id": "draft", "capability": "write"},
        {"id": "ok", "wait": {"signal": "approved", **wait}, "depends_on": ["draft"]},
        {"id": "send", "capability": "send", "depends_on": ["ok"]},
    )


def elapsed(sim: Sim, timer: ArmTimer) -> Event:
    """What the shell publishes when a wait's timer fires."""
    assert timer.kind == "wait"
    return sim.shell_event(
        EventType.TASK_WAIT_ELAPSED,
        TaskWaitElapsed(due_ns=timer.due_ns),
        task_id=timer.task_id,
        attempt=timer.attempt,
        what=f"wait_elapsed:{timer.due_ns}",
        at_least=timer.due_ns,
    )


def run_draft(sim: Sim) -> list[Any]:
    draft = only_dispatch(sim.submit(SIGNAL))
    sim.publish(sim.started(draft))
    return sim.publish(sim.completed(draft, "text"))


def status(sim: Sim, task_id: str) -> TaskStatus:
    return sim.st.tasks[task_id].status


def replays_to_the_same_state(sim: Sim) -> None:
    again = fold(list(sim.log))
    assert again is not None
    assert again.model_dump(exclude={"version"}) == sim.st.model_dump(exclude={"version"})


# Timers ------------------------------------------------------------------------


def test_a_timer_waits_without_a_worker_and_completes_when_it_fires() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(TIMER))
    sim.publish(sim.started(draft))
    commands = sim.publish(sim.completed(draft, "text"))
    assert dispatches(commands) == []  # nothing goes to a worker
    (timer,) = [t for t in timers(commands) if t.kind == "wait"]
    ready = sim.st.tasks["cool_off"].started_at
    assert ready is not None
    assert timer.due_ns == ready + 7200 * 10**9
    assert status(sim, "cool_off") == TaskStatus.WAITING
    assert sim.st.tasks["cool_off"].note == "waiting for 7200s"
    assert pending_timers(sim.st) == [timer]  # a successor coordinator re-arms it
    send = only_dispatch(sim.publish(elapsed(sim, timer)))
    waited = datetime.fromtimestamp(timer.due_ns / 1e9, UTC).isoformat()
    assert send.inputs == {"cool_off": {"waited_until": waited}}
    assert status(sim, "cool_off") == TaskStatus.COMPLETED
    # The completion is stored for readers, from the coordinator.
    (stored,) = [e for e in sim.emitted if e.type == EventType.TASK_COMPLETED]
    assert (stored.task_id, stored.source) == ("cool_off", sim.source)
    replays_to_the_same_state(sim)


def test_a_timer_fires_once_a_second_firing_changes_nothing() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(TIMER))
    sim.publish(sim.started(draft))
    (timer,) = [t for t in timers(sim.publish(sim.completed(draft, 1))) if t.kind == "wait"]
    assert dispatches(sim.publish(elapsed(sim, timer))) != []
    before = sim.st.model_dump(exclude={"vclock", "last_seq"})
    assert sim.publish(elapsed(sim, timer)) == []  # a fail-over's coordinator fired it again
    assert sim.st.model_dump(exclude={"vclock", "last_seq"}) == before


def test_a_time_in_the_past_fires_at_once() -> None:
    sim = Sim()
    defn = definition({"id": "w", "wait": {"until": "2000-01-01T00:00:00Z"}})
    (timer,) = timers(sim.submit(defn))
    assert timer.due_ns == 946684800 * 10**9
    sim.publish(elapsed(sim, timer))
    assert sim.st.status == WorkflowStatus.COMPLETED
    assert sim.st.output == {"w": {"waited_until": "2000-01-01T00:00:00+00:00"}}


def test_a_worker_cannot_complete_a_waiting_node() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(TIMER))
    sim.publish(sim.started(draft))
    sim.publish(sim.completed(draft, 1))
    forged = Event(
        id=task_key(WF, "cool_off", 1, "completed"),
        type=EventType.TASK_COMPLETED,
        workflow_id=WF,
        source="w1",
        timestamp=sim.tick(),
        vclock=sim.st.vclock.increment("w1"),
        data=TaskCompleted(result="skip the wait", worker="w1"),
        task_id="cool_off",
        attempt=1,
    )
    verdict_ = admit(sim.st, forged, Rules())
    assert isinstance(verdict_, Refuse)
    assert verdict_.code == "not_dispatched"
    before = sim.st.model_dump(exclude={"vclock", "last_seq", "version"})
    assert sim.publish(forged) == []  # (the shell records the refusal)
    after = sim.st.model_dump(exclude={"vclock", "last_seq", "version"})
    assert after == before
    assert sim.st.tasks["cool_off"].status == TaskStatus.WAITING


def test_only_a_coordinator_may_say_a_wait_elapsed() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(TIMER))
    sim.publish(sim.started(draft))
    (timer,) = [t for t in timers(sim.publish(sim.completed(draft, 1))) if t.kind == "wait"]
    forged = elapsed(sim, timer).model_copy(update={"signer": "w1", "signer_role": "worker"})
    verdict_ = admit(sim.st, forged, Rules())
    assert isinstance(verdict_, Refuse)
    assert verdict_.code == "wrong_role"


# Signals -----------------------------------------------------------------------


def test_a_signal_completes_the_waiting_node_with_its_data() -> None:
    sim = Sim()
    commands = run_draft(sim)
    assert timers(commands) == []  # no timeout: waits until the signal comes
    assert sim.st.tasks["ok"].status == TaskStatus.WAITING
    commands = sim.publish(intervention(sim, "signal", signal="approved", data={"by": "ann"}))
    assert verdict(sim, commands).type == EventType.INTERVENTION_APPLIED
    send = only_dispatch(commands)
    assert send.inputs == {"ok": {"by": "ann"}}
    replays_to_the_same_state(sim)


def test_a_signal_sent_before_the_node_is_ready_is_kept_for_it() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(SIGNAL))
    commands = sim.publish(intervention(sim, "signal", signal="approved", data=42))
    answer = verdict(sim, commands)
    assert answer.type == EventType.INTERVENTION_APPLIED
    assert "kept" in answer.data.summary  # type: ignore[attr-defined]
    assert [s.name for s in sim.st.signals] == ["approved"]
    sim.publish(sim.started(draft))
    send = only_dispatch(sim.publish(sim.completed(draft, "text")))
    assert send.inputs == {"ok": 42}
    assert sim.st.signals == []  # taken
    replays_to_the_same_state(sim)


def test_a_signal_nobody_waits_for_is_refused_and_changes_nothing() -> None:
    sim = Sim()
    run_draft(sim)
    assert refused_code(sim, intervention(sim, "signal", signal="aproved")) == "no_waiting_task"
    assert refused_code(sim, intervention(sim, "signal", signal="no spaces")) == "invalid"
    assert refused_code(sim, intervention(sim, "signal")) == "invalid"


def test_kept_signals_are_bounded() -> None:
    sim = Sim()
    sim.submit(SIGNAL)
    for n in range(MAX_KEPT_SIGNALS):
        commands = sim.publish(intervention(sim, "signal", signal="approved", data=n))
        assert verdict(sim, commands).type == EventType.INTERVENTION_APPLIED
    assert refused_code(sim, intervention(sim, "signal", signal="approved")) == "too_many_signals"


def test_a_signal_wait_that_times_out_fails_the_workflow() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(signal_wait(timeout="10m")))
    sim.publish(sim.started(draft))
    (timer,) = [t for t in timers(sim.publish(sim.completed(draft, 1))) if t.kind == "wait"]
    sim.publish(elapsed(sim, timer))
    assert sim.st.status == WorkflowStatus.FAILED
    error = sim.st.tasks["ok"].error
    assert error is not None
    assert (error.code, error.retryable) == ("signal_timeout", False)
    assert "no signal 'approved' came within 600s" in (sim.st.reason or "")
    replays_to_the_same_state(sim)


def test_a_signal_wait_may_continue_without_data_when_it_times_out() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(signal_wait(timeout=5, on_timeout="continue")))
    sim.publish(sim.started(draft))
    (timer,) = [t for t in timers(sim.publish(sim.completed(draft, 1))) if t.kind == "wait"]
    send = only_dispatch(sim.publish(elapsed(sim, timer)))
    assert send.inputs == {"ok": None}


def test_the_timeout_of_a_signalled_wait_changes_nothing() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(signal_wait(timeout="1h")))
    sim.publish(sim.started(draft))
    (timer,) = [t for t in timers(sim.publish(sim.completed(draft, 1))) if t.kind == "wait"]
    sim.publish(intervention(sim, "signal", signal="approved", data="yes"))
    assert sim.publish(elapsed(sim, timer)) == []
    assert sim.st.tasks["ok"].status == TaskStatus.COMPLETED


def test_cancelling_a_waiting_workflow_ends_it_at_once() -> None:
    sim = Sim()
    run_draft(sim)
    commands = sim.publish(intervention(sim, "cancel", reason="not needed"))
    assert verdict(sim, commands).type == EventType.INTERVENTION_APPLIED
    assert sim.st.status == WorkflowStatus.CANCELLED
    assert sim.st.tasks["ok"].status == TaskStatus.CANCELLED
    assert pending_timers(sim.st) == []


# Definitions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "problem"),
    [
        ({}, "exactly one of"),
        ({"duration": "1h", "signal": "x"}, "exactly one of"),
        ({"until": "2026-12-24T09:00:00"}, "has no time zone"),
        ({"until": "tomorrow"}, "not an ISO 8601 time"),
        ({"duration": "1h", "timeout": "2h"}, "apply to a signal wait only"),
        ({"signal": "has space"}, "signal name"),
        ({"duration": "400d"}, "less than or equal"),
        ({"duration": "soon"}, "not a duration"),
    ],
)
def test_a_bad_wait_is_refused_with_a_reason(wait: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TaskSpec.model_validate({"id": "w", "wait": wait})


def test_a_wait_node_takes_no_worker_settings_and_its_capability_is_reserved() -> None:
    with pytest.raises(ValueError, match="takes no timeout_s"):
        TaskSpec.model_validate({"id": "w", "wait": "1h", "timeout_s": 5})
    with pytest.raises(ValueError, match="reserved for 'wait:' nodes"):
        TaskSpec.model_validate({"id": "w", "capability": "wait"})
    with pytest.raises(ValueError, match="only one of them"):
        TaskSpec.model_validate({"id": "w", "capability": "write", "wait": "1h"})
    spec = TaskSpec.model_validate({"id": "w", "wait": {"until": "2026-12-24T09:00:00+01:00"}})
    assert spec.wait is not None
    assert spec.wait.until == "2026-12-24T08:00:00+00:00"


def test_submitting_a_wait_needs_the_wait_permission() -> None:
    # A workflow of waits alone holds a snapshot and a timer for up to a year:
    # not for anyone whom the policy grants nothing.
    from agenticflow.coordinator.admission import used_capabilities

    assert used_capabilities(TIMER) == {"write", "send", "wait"}


def test_a_wait_counts_from_the_servers_time_not_the_senders_claim() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(TIMER))
    sim.publish(sim.started(draft))
    done = sim.completed(draft, "text")
    stored = done.timestamp
    # The worker stamps its completion 1970 (or far ahead): the server's time counts.
    for claimed in (1, 2**62):
        forged = done.model_copy(update={"timestamp": claimed, "stored_ns": stored})
        other = Sim()
        d = only_dispatch(other.submit(TIMER))
        other.publish(other.started(d))
        (timer,) = [t for t in timers(other.publish(forged)) if t.kind == "wait"]
        assert timer.due_ns == stored + 7200 * 10**9


def test_a_signal_may_name_the_one_node_it_is_for() -> None:
    two_gates = definition(
        {"id": "draft", "capability": "write"},
        {"id": "legal_ok", "wait": {"signal": "approved"}, "depends_on": ["draft"]},
        {"id": "revise", "capability": "write", "depends_on": ["legal_ok"]},
        {"id": "cfo_ok", "wait": {"signal": "approved"}, "depends_on": ["revise"]},
        {"id": "pay", "capability": "pay", "depends_on": ["cfo_ok"]},
    )
    sim = Sim()
    draft = only_dispatch(sim.submit(two_gates))
    sim.publish(sim.started(draft))
    sim.publish(sim.completed(draft, "v1"))
    legal = {"signal": "approved", "task_id": "legal_ok", "data": {"by": "legal"}}
    revise = only_dispatch(sim.publish(intervention(sim, "signal", **legal)))
    # Legal's retry (its first answer was lost) is for legal_ok, which is done.
    assert refused_code(sim, intervention(sim, "signal", **legal)) == "no_waiting_task"
    sim.publish(sim.started(revise))
    assert dispatches(sim.publish(sim.completed(revise, "v2"))) == []
    assert status(sim, "cfo_ok") == TaskStatus.WAITING  # still waits for the CFO
    # A signal for a node not ready yet is kept for that node only.
    sim2 = Sim()
    only_dispatch(sim2.submit(two_gates))
    cfo = {"signal": "approved", "task_id": "cfo_ok", "data": "cfo"}
    verdict(sim2, sim2.publish(intervention(sim2, "signal", **cfo)))
    assert [(k.name, k.task) for k in sim2.st.signals] == [("approved", "cfo_ok")]


def test_signal_data_is_bounded() -> None:
    sim = Sim()
    run_draft(sim)
    big = "x" * (64 * 1024 + 1)
    assert refused_code(sim, intervention(sim, "signal", signal="approved", data=big)) == (
        "too_large"
    )

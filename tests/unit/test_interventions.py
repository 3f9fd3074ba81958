"""The reducer's interventions (pause, resume, abort, modify, feedback) and
approval waits (gates and handler requests), driven through the simulator of
``test_reducer``: hand-made events in, decisions and dispatches out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.coordinator.reducer import ArmTimer, pending_timers
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.graph.workflow import TaskSpec
from agenticflow.shared.wire.codec import TaskMessage
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    InterventionRequested,
    Modification,
    TaskApprovalExpired,
    TaskApprovalRequested,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.vclock import VectorClock
from tests.unit.test_reducer import DIAMOND, WF, Sim, definition, dispatches, emits, only_dispatch

CHAIN = definition(
    {"id": "a", "capability": "work"},
    {"id": "b", "capability": "work", "depends_on": ["a"]},
    {"id": "c", "capability": "work", "depends_on": ["b"]},
)
GATED = definition(
    {"id": "draft", "capability": "write"},
    {
        "id": "publish",
        "capability": "publish",
        "depends_on": ["draft"],
        "approval": {"timeout": "1h", "on_timeout": "fail"},
    },
)
_requests = iter(range(1_000_000))


def intervention(sim: Sim, action: str, **fields: Any) -> Event:
    """A person's request, as the client publishes it."""
    request_id = f"r{next(_requests)}"
    return Event(
        id=workflow_key(WF, f"intervention:{request_id}"),
        type=EventType.INTERVENTION_REQUESTED,
        workflow_id=WF,
        source="cli",
        timestamp=sim.tick(),
        vclock=(sim.state.vclock if sim.state else VectorClock()).increment("cli"),
        data=InterventionRequested(request_id=request_id, action=action, by="ann", **fields),
    )


def verdict(sim: Sim, commands: list[Any]) -> Event:
    """The applied or refused event answering a request."""
    (answer,) = [
        e
        for e in emits(commands)
        if e.type in (EventType.INTERVENTION_APPLIED, EventType.INTERVENTION_REFUSED)
    ]
    return answer


def refused_code(sim: Sim, event: Event) -> str:
    """Publish ``event``; it must be refused without changing the workflow."""
    before = sim.st.model_dump(exclude={"vclock", "last_seq", "version"})
    answer = verdict(sim, sim.publish(event))
    assert answer.type == EventType.INTERVENTION_REFUSED, answer
    assert sim.st.model_dump(exclude={"vclock", "last_seq", "version"}) == before
    return str(answer.data.code)  # type: ignore[attr-defined]


def start(sim: Sim, task: TaskMessage) -> None:
    sim.publish(sim.started(task))


def finish(sim: Sim, task: TaskMessage) -> list[Any]:
    return sim.publish(sim.completed(task, {"done": task.task_id}))


# Pause and resume -------------------------------------------------------------


def test_pause_holds_new_dispatches_and_resume_releases_them() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    start(sim, a)
    answer = verdict(sim, sim.publish(intervention(sim, "pause")))
    assert answer.type == EventType.INTERVENTION_APPLIED
    assert sim.st.paused
    # The running task finishes; its dependent is held, not dispatched.
    assert dispatches(finish(sim, a)) == []
    assert sim.st.tasks["b"].status == TaskStatus.PENDING
    assert sim.st.tasks["b"].note == "held: the workflow is paused"
    commands = sim.publish(intervention(sim, "resume"))
    assert verdict(sim, commands).type == EventType.INTERVENTION_APPLIED
    b = only_dispatch(commands)
    assert (b.task_id, b.attempt) == ("b", 1)
    sim.run(sim.publish(sim.completed(b, 1)))
    assert sim.st.status == WorkflowStatus.COMPLETED


def test_a_retry_due_while_paused_is_held_and_keeps_its_attempt_number() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(definition({"id": "a", "capability": "w"})))
    start(sim, a)
    commands = sim.publish(sim.failed(a))
    (timer,) = [c for c in commands if isinstance(c, ArmTimer)]
    sim.publish(intervention(sim, "pause"))
    assert dispatches(sim.publish(sim.retry_due(timer))) == []
    resumed = only_dispatch(sim.publish(intervention(sim, "resume")))
    assert resumed.attempt == 2


def test_pause_twice_and_resume_when_not_paused_are_refused() -> None:
    sim = Sim()
    sim.submit(CHAIN)
    assert refused_code(sim, intervention(sim, "resume")) == "not_paused"
    sim.publish(intervention(sim, "pause"))
    assert refused_code(sim, intervention(sim, "pause")) == "already_paused"


# Abort ------------------------------------------------------------------------


def test_abort_cancels_unfinished_tasks_and_ignores_late_outcomes() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    start(sim, a)
    commands = sim.publish(intervention(sim, "abort", reason="wrong input"))
    aborted = [e for e in emits(commands) if e.type == EventType.WORKFLOW_ABORTED]
    assert len(aborted) == 1
    assert sim.st.status == WorkflowStatus.ABORTED
    assert sim.st.reason == "aborted by ann: wrong input"
    assert {t.status for t in sim.st.tasks.values()} == {TaskStatus.CANCELLED}
    assert sorted(aborted[0].data.cancelled) == ["a", "b", "c", "d"]  # type: ignore[attr-defined]
    sim.assert_ignored(sim.completed(a, 1))
    assert refused_code(sim, intervention(sim, "resume")) == "workflow_finished"


# Feedback ---------------------------------------------------------------------


def test_feedback_reaches_every_later_dispatch() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    assert a.feedback == []
    answer = verdict(sim, sim.publish(intervention(sim, "feedback", text="be brief")))
    assert answer.data.text == "be brief"  # type: ignore[attr-defined]
    sim.publish(intervention(sim, "feedback", text="cite sources"))
    start(sim, a)
    b = only_dispatch(finish(sim, a))
    assert b.feedback == ["be brief", "cite sources"]
    assert refused_code(sim, intervention(sim, "feedback", text="  ")) == "invalid"


# Modify -----------------------------------------------------------------------


def test_modify_adds_replaces_and_changes_params_of_tasks_not_started() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    changes = Modification(
        add=[TaskSpec(id="d", capability="review", depends_on=("a",))],
        replace=[TaskSpec(id="c", capability="summarise", depends_on=("b", "d"))],
        params={"b": {"depth": 2}},
    )
    answer = verdict(sim, sim.publish(intervention(sim, "modify", changes=changes)))
    assert answer.type == EventType.INTERVENTION_APPLIED
    assert "added d" in answer.data.summary  # type: ignore[attr-defined]
    start(sim, a)
    ready = {t.task_id: t for t in dispatches(finish(sim, a))}
    assert sorted(ready) == ["b", "d"]
    assert ready["b"].params == {"depth": 2}
    sim.run([])
    for task in ready.values():
        start(sim, task)
        commands = finish(sim, task)
    c = only_dispatch(commands)
    assert c.capability == "summarise"
    assert sorted(c.inputs) == ["b", "d"]


def test_removing_the_last_pending_tasks_completes_the_workflow() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    start(sim, a)
    finish(sim, a)  # b is now scheduled: only c can go
    assert (
        refused_code(sim, intervention(sim, "modify", changes=Modification(remove=["b", "c"])))
        == "invalid_modification"
    )
    b = sim.dispatched[-1]
    start(sim, b)
    sim.publish(intervention(sim, "modify", changes=Modification(remove=["c"])))
    finish(sim, b)
    assert sim.st.status == WorkflowStatus.COMPLETED
    assert set(sim.st.tasks) == {"a", "b"}


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (Modification(remove=["a"]), "it has started"),
        (Modification(remove=["nope"]), "no such task"),
        (Modification(add=[TaskSpec(id="b", capability="x")]), "has one already"),
        (Modification(remove=["b"]), "unknown task 'b'"),
        (
            Modification(replace=[TaskSpec(id="b", capability="w", depends_on=("c",))]),
            "cycle",
        ),
        (Modification(), "changes nothing"),
    ],
)
def test_invalid_modifications_are_refused_with_the_reason(changes: Modification, why: str) -> None:
    sim = Sim()
    sim.submit(CHAIN)
    answer = verdict(sim, sim.publish(intervention(sim, "modify", changes=changes)))
    assert answer.type == EventType.INTERVENTION_REFUSED
    assert why in answer.data.reason, answer.data.reason  # type: ignore[attr-defined]
    assert [s.id for s in sim.st.definition.tasks] == ["a", "b", "c"]  # type: ignore[union-attr]


# Approval gates -----------------------------------------------------------------


def expire(sim: Sim, timer: ArmTimer) -> list[Any]:
    return sim.publish(
        sim.shell_event(
            EventType.TASK_APPROVAL_EXPIRED,
            TaskApprovalExpired(due_ns=timer.due_ns),
            task_id=timer.task_id,
            attempt=timer.attempt,
            what=f"approval_expired:{timer.due_ns}",
            at_least=timer.due_ns,
        )
    )


def reach_gate(sim: Sim) -> list[Any]:
    draft = only_dispatch(sim.submit(GATED))
    start(sim, draft)
    return finish(sim, draft)


def test_a_gate_waits_without_dispatching_then_runs_with_the_decision() -> None:
    sim = Sim()
    commands = reach_gate(sim)
    assert dispatches(commands) == []
    (asked,) = [e for e in emits(commands) if e.type == EventType.TASK_APPROVAL_REQUESTED]
    assert asked.data.gate  # type: ignore[attr-defined]
    assert asked.data.data["inputs"] == {"draft": {"done": "draft"}}  # type: ignore[attr-defined]
    task = sim.st.tasks["publish"]
    assert task.status == TaskStatus.WAITING_APPROVAL
    assert [t.kind for t in pending_timers(sim.st)] == ["approval"]
    commands = sim.publish(intervention(sim, "approve", task_id="publish", reason="ship it"))
    publish = only_dispatch(commands)
    assert publish.approval is not None
    assert (publish.approval.approved, publish.approval.comment) == (True, "ship it")
    assert pending_timers(sim.st) == []
    start(sim, publish)
    finish(sim, publish)
    assert sim.st.status == WorkflowStatus.COMPLETED


def test_a_rejected_gate_fails_the_task_and_the_workflow_with_the_comment() -> None:
    sim = Sim()
    reach_gate(sim)
    commands = sim.publish(intervention(sim, "reject", task_id="publish", reason="too long"))
    assert dispatches(commands) == []
    assert sim.st.status == WorkflowStatus.FAILED
    error = sim.st.tasks["publish"].error
    assert error is not None
    assert error.type == "ApprovalRejectedError"
    assert error.message == "approval rejected by ann: too long"


@pytest.mark.parametrize("policy", ["approve", "reject", "fail"])
def test_an_expired_gate_follows_its_policy(policy: str) -> None:
    sim = Sim()
    gated = definition(
        {"id": "x", "capability": "w", "approval": {"timeout_s": 60, "on_timeout": policy}}
    )
    commands = sim.submit(gated)
    (timer,) = [c for c in commands if isinstance(c, ArmTimer)]
    assert timer.due_ns == sim.st.tasks["x"].waiting.due_ns  # type: ignore[union-attr]
    commands = expire(sim, timer)
    if policy == "approve":
        task = only_dispatch(commands)
        assert task.approval is not None
        assert task.approval.timed_out
        return
    assert sim.st.status == WorkflowStatus.FAILED
    error = sim.st.tasks["x"].error
    assert error is not None
    expected = "ApprovalRejectedError" if policy == "reject" else "ApprovalTimeoutError"
    assert error.type == expected


def test_decisions_for_tasks_not_waiting_are_refused() -> None:
    sim = Sim()
    draft = only_dispatch(sim.submit(GATED))
    assert refused_code(sim, intervention(sim, "approve", task_id="draft")) == "not_waiting"
    assert refused_code(sim, intervention(sim, "approve", task_id="ghost")) == "unknown_task"
    assert refused_code(sim, intervention(sim, "reject")) == "invalid"
    start(sim, draft)
    finish(sim, draft)
    sim.publish(intervention(sim, "approve", task_id="publish"))
    assert refused_code(sim, intervention(sim, "approve", task_id="publish")) == "not_waiting"


# Handler requests -------------------------------------------------------------


def handler_asks(
    sim: Sim, task: TaskMessage, index: int, *, timeout_s: float | None = None
) -> list[Any]:
    data = TaskApprovalRequested(
        reason="send the refund?", data={"amount": 90}, index=index, timeout_s=timeout_s
    )
    return sim.publish(
        sim.worker_event(
            task, EventType.TASK_APPROVAL_REQUESTED, data, f"approval_requested:{index}", "w1"
        )
    )


def test_a_handler_request_frees_the_attempt_and_the_rerun_gets_the_decision() -> None:
    sim = Sim()
    first = only_dispatch(sim.submit(definition({"id": "refund", "capability": "pay"})))
    start(sim, first)
    handler_asks(sim, first, 0)
    task = sim.st.tasks["refund"]
    assert task.status == TaskStatus.WAITING_APPROVAL
    second = only_dispatch(sim.publish(intervention(sim, "approve", task_id="refund")))
    assert second.attempt == 2
    assert [d.approved for d in second.approvals] == [True]
    start(sim, second)
    handler_asks(sim, second, 1)  # a second request in the same handler
    third = only_dispatch(sim.publish(intervention(sim, "reject", task_id="refund", reason="no")))
    assert [(d.approved, d.comment) for d in third.approvals] == [(True, ""), (False, "no")]
    # Waiting for people is not retrying: the retry budget is intact.
    assert sim.st.tasks["refund"].attempt_base == 2
    start(sim, third)
    finish(sim, third)
    assert sim.st.status == WorkflowStatus.COMPLETED


def test_a_request_from_a_stale_attempt_or_a_replayed_index_is_ignored() -> None:
    sim = Sim()
    first = only_dispatch(sim.submit(definition({"id": "t", "capability": "pay"})))
    start(sim, first)
    handler_asks(sim, first, 0)
    second = only_dispatch(sim.publish(intervention(sim, "approve", task_id="t")))
    start(sim, second)
    stale = sim.worker_event(
        first,
        EventType.TASK_APPROVAL_REQUESTED,
        TaskApprovalRequested(reason="again", index=0),
        "approval_requested:0b",
        "w1",
    )
    sim.assert_ignored(stale)
    replayed = sim.worker_event(
        second,
        EventType.TASK_APPROVAL_REQUESTED,
        TaskApprovalRequested(reason="again", index=0),
        "approval_requested:0",
        "w1",
    )
    sim.assert_ignored(replayed)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["pause", "resume", "feedback", "approve"]), max_size=12))
def test_any_sequence_of_interventions_still_runs_every_task_exactly_once(
    actions: list[str],
) -> None:
    """Whatever people do in between (short of abort), once resumed the workflow
    completes with every task completed once."""
    sim = Sim()
    commands = sim.submit(DIAMOND)
    pending = list(dispatches(commands))
    for action in actions:
        fields: dict[str, Any] = {"text": "note"} if action == "feedback" else {}
        if action == "approve":
            fields["task_id"] = "a"
        pending += dispatches(sim.publish(intervention(sim, action, **fields)))
        if pending:
            task = pending.pop(0)
            start(sim, task)
            pending += dispatches(finish(sim, task))
    if sim.st.paused:
        pending += dispatches(sim.publish(intervention(sim, "resume")))
    while pending:
        task = pending.pop(0)
        start(sim, task)
        pending += dispatches(finish(sim, task))
    assert sim.st.status == WorkflowStatus.COMPLETED
    done = [e.task_id or "" for e in sim.log if e.type == EventType.TASK_COMPLETED]
    assert sorted(done) == ["a", "b", "c", "d"]


def test_interventions_replay_to_the_same_state() -> None:
    """Folding the stored stream again (replay, crash recovery) gives the same state."""
    from agenticflow.coordinator.reducer import fold

    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    sim.publish(intervention(sim, "feedback", text="x"))
    sim.publish(intervention(sim, "pause"))
    start(sim, a)
    finish(sim, a)
    sim.publish(intervention(sim, "modify", changes=Modification(params={"c": {"k": 1}})))
    sim.publish(intervention(sim, "resume"))
    replayed = fold(sim.log)
    assert replayed is not None
    assert replayed.model_dump() == sim.st.model_dump()
    assert task_key(WF, "b", 1, "scheduled") in {e.id for e in sim.log}

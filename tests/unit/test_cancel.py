"""Cancel (cooperative) versus terminate (now), in the reducer, and the RBAC
permissions that allow them: driven through the simulator of ``test_reducer``."""

from __future__ import annotations

from agenticflow.coordinator import replay
from agenticflow.coordinator.admission import Refuse, Rules, admit
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.errors import TaskCancelledError
from agenticflow.shared.security.rbac import Policy, intervention_permissions
from agenticflow.shared.wire.events import (
    ErrorInfo,
    EventType,
    TaskApprovalRequested,
    WorkflowCancelled,
)
from tests.unit.test_interventions import CHAIN, finish, intervention, refused_code, start, verdict
from tests.unit.test_reducer import DIAMOND, Sim, definition, dispatches, emits, only_dispatch

PARALLEL = definition(
    {"id": "a", "capability": "work"},
    {"id": "b", "capability": "work"},
    {"id": "c", "capability": "work", "depends_on": ["a", "b"]},
)


def status(sim: Sim) -> WorkflowStatus:
    return sim.st.status


def cancelled_events(sim: Sim) -> list[WorkflowCancelled]:
    return [
        e.data
        for e in sim.emitted
        if e.type == EventType.WORKFLOW_CANCELLED and isinstance(e.data, WorkflowCancelled)
    ]


def test_cancel_lets_the_running_task_finish_keeps_its_result_and_starts_nothing() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    start(sim, a)
    answer = verdict(sim, sim.publish(intervention(sim, "cancel", reason="enough")))
    assert answer.type == EventType.INTERVENTION_APPLIED
    assert status(sim) == WorkflowStatus.RUNNING
    assert sim.st.cancelling
    statuses = {t: task.status for t, task in sim.st.tasks.items()}
    assert statuses == {
        "a": TaskStatus.RUNNING,
        "b": TaskStatus.CANCELLED,
        "c": TaskStatus.CANCELLED,
    }
    assert dispatches(finish(sim, a)) == []  # its dependent is not dispatched
    assert sim.st.status == WorkflowStatus.CANCELLED
    assert sim.st.tasks["a"].status == TaskStatus.COMPLETED
    assert sim.st.tasks["a"].result == {"done": "a"}
    assert sim.st.reason == "cancelled by ann: enough"
    (ended,) = cancelled_events(sim)
    assert ended.completed == ["a"]
    assert sorted(ended.cancelled) == ["b", "c"]
    assert ended.by == "ann"
    assert replay.verify(sim.log, sim.st) == []


def test_cancel_with_nothing_running_ends_the_workflow_at_once() -> None:
    sim = Sim()
    sim.submit(CHAIN)  # a is queued, not started
    sim.publish(intervention(sim, "cancel"))
    assert sim.st.status == WorkflowStatus.CANCELLED
    assert {t.status for t in sim.st.tasks.values()} == {TaskStatus.CANCELLED}
    assert len(cancelled_events(sim)) == 1


def test_a_handler_that_stops_on_cancellation_ends_as_cancelled_without_retry() -> None:
    sim = Sim()
    a, b = dispatches(sim.submit(PARALLEL))
    start(sim, a)
    start(sim, b)
    sim.publish(intervention(sim, "cancel"))
    stopped = ErrorInfo(
        type=TaskCancelledError.__name__,
        message="the workflow was cancelled",
        code=TaskCancelledError.code,
        retryable=False,
    )
    sim.publish(sim.failed(a, stopped))
    assert status(sim) == WorkflowStatus.RUNNING  # b still runs
    assert sim.st.tasks["a"].status == TaskStatus.CANCELLED
    # b fails with a retryable error: no retry while cancelling, and the workflow
    # ends cancelled (not failed) with b's failure kept.
    commands = sim.publish(sim.failed(b))
    assert dispatches(commands) == []
    assert not [e for e in emits(commands) if e.type == EventType.TASK_RETRY_SCHEDULED]
    assert sim.st.status == WorkflowStatus.CANCELLED
    assert sim.st.tasks["b"].status == TaskStatus.FAILED
    assert sim.st.tasks["b"].error is not None


def test_late_outcomes_of_cancelled_tasks_are_ignored() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    sim.publish(intervention(sim, "cancel"))  # a was queued: cancelled with the rest
    sim.assert_ignored(sim.started(a))
    sim.assert_ignored(sim.completed(a, 1))


def test_while_cancelling_only_terminate_and_feedback_are_accepted() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    start(sim, a)
    sim.publish(intervention(sim, "cancel"))
    assert refused_code(sim, intervention(sim, "cancel")) == "already_cancelling"
    for action in ("pause", "resume"):
        assert refused_code(sim, intervention(sim, action)) == "cancelling"
    feedback = verdict(sim, sim.publish(intervention(sim, "feedback", text="hurry")))
    assert feedback.type == EventType.INTERVENTION_APPLIED
    sim.publish(intervention(sim, "terminate", reason="now"))
    assert sim.st.status == WorkflowStatus.ABORTED
    assert sim.st.reason == "terminated by ann: now"
    sim.assert_ignored(sim.completed(a, 1))


def test_terminate_is_abort_and_ends_at_once() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    start(sim, a)
    commands = sim.publish(intervention(sim, "terminate"))
    assert [e.type for e in emits(commands)].count(EventType.WORKFLOW_ABORTED) == 1
    assert sim.st.status == WorkflowStatus.ABORTED
    assert {t.status for t in sim.st.tasks.values()} == {TaskStatus.CANCELLED}
    assert refused_code(sim, intervention(sim, "cancel")) == "workflow_finished"


def test_a_cancel_reaches_a_task_that_asks_for_approval_after_it() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(CHAIN))
    start(sim, a)
    sim.publish(intervention(sim, "cancel"))
    asked = sim.worker_event(
        a, EventType.TASK_APPROVAL_REQUESTED, TaskApprovalRequested(reason="ok?"), "ask", "w1"
    )
    sim.publish(asked)
    assert sim.st.status == WorkflowStatus.CANCELLED  # nobody is asked
    assert sim.st.tasks["a"].status == TaskStatus.CANCELLED


def test_permissions_of_cancel_and_terminate() -> None:
    assert intervention_permissions("pause") == ("workflow:pause",)
    assert "workflow:abort" in intervention_permissions("terminate")
    assert "workflow:terminate" in intervention_permissions("abort")
    assert set(intervention_permissions("cancel")) == {
        "workflow:cancel",
        "workflow:terminate",
        "workflow:abort",
    }
    policy = Policy.from_dict(
        {
            "roles": {
                "canceller": {"permissions": ["workflow:cancel"]},
                "old_operator": {"permissions": ["workflow:abort"]},
            },
            "principals": {"carol": ["canceller"], "olga": ["old_operator"]},
        }
    )
    rules = Rules(policy=policy)
    sim = Sim()
    sim.submit(CHAIN)

    def verdict_of(action: str, who: str) -> object:
        event = intervention(sim, action).model_copy(
            update={"signer": who, "signer_role": "client"}
        )
        return admit(sim.st, event, rules)

    assert not isinstance(verdict_of("cancel", "carol"), Refuse)
    refused = verdict_of("terminate", "carol")
    assert isinstance(refused, Refuse)
    assert refused.code == "forbidden"
    assert "workflow:terminate or workflow:abort" in refused.reason
    for action in ("abort", "terminate", "cancel"):  # an old policy keeps working
        assert not isinstance(verdict_of(action, "olga"), Refuse)
    assert isinstance(verdict_of("pause", "olga"), Refuse)

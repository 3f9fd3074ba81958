"""Admission: one pure rule per attack, each with its control (the honest
version of the same event is admitted).

The workflows run on the reducer's simulator (:class:`tests.unit.test_reducer.Sim`),
whose ``reduce`` admits every event with the replay rules; the tests call
:func:`admit` with a coordinator's rules where configuration matters.
"""

from __future__ import annotations

from typing import Any

import pytest

from agenticflow.coordinator.admission import (
    ADMIT,
    COUNTER_LIMIT,
    Ignore,
    Refuse,
    Rules,
    Verdict,
    admit,
    used_capabilities,
)
from agenticflow.coordinator.reducer import COORDINATOR_NODE, apply, fold, reduce
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.graph.hierarchy import ParentLink, child_workflow_id
from agenticflow.shared.security.rbac import Policy
from agenticflow.shared.wire.codec import TaskMessage
from agenticflow.shared.wire.events import (
    FORBIDDEN,
    Event,
    EventType,
    InterventionRefused,
    InterventionRequested,
    MessageRejected,
    Modification,
    Origin,
    TaskCompleted,
    TaskHeartbeat,
    WorkflowResumeRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.vclock import VectorClock
from tests.unit.test_reducer import WF, Sim, definition, only_dispatch, submitted

RULES = Rules(max_clock_entries=8, claim_timeout_ns=30 * 10**9)
GATED = definition(
    {"id": "pay", "capability": "pay", "approval": {"required": True}},
    {"id": "after", "capability": "x", "depends_on": ["pay"]},
)
ONE = definition({"id": "t", "capability": "x"})
POLICY = Policy.from_dict(
    {
        "roles": {
            "operator": {"permissions": ["workflow:*"]},
            "commenter": {"permissions": ["workflow:feedback"]},
        },
        "principals": {"alice": ["operator"], "mallory": ["commenter"]},
    }
)


def signed(event: Event, principal: str, role: str, *, stored_ns: int | None = None) -> Event:
    """``event`` as the coordinator reads it from the stream once its seal verified it."""
    return event.model_copy(
        update={"signer": principal, "signer_role": role, "stored_ns": stored_ns}
    )


def snapshot(state: WorkflowState | None) -> bytes | None:
    return None if state is None else state.to_snapshot()


def assert_changes_nothing(sim: Sim, event: Event, expected: type[Verdict]) -> Verdict:
    """Admission says ``expected``, and folding the event as replay does changes nothing."""
    verdict = admit(sim.state, event, RULES)
    assert isinstance(verdict, expected), verdict
    before = snapshot(sim.state)
    assert sim.publish(event) == []
    assert snapshot(sim.state) == before
    return verdict


def refused(sim: Sim, event: Event, code: str) -> str:
    verdict = assert_changes_nothing(sim, event, Refuse)
    assert isinstance(verdict, Refuse)
    assert verdict.code == code, verdict.reason
    return verdict.reason


def completed_for(task: TaskMessage, sim: Sim, **update: Any) -> Event:
    """A completion of ``task``; another ``source`` ticks its own clock entry."""
    if "source" in update and "vclock" not in update:
        update["vclock"] = task.vclock.increment(update["source"])
    return sim.completed(task, "forged").model_copy(update=update)


# Outcomes -------------------------------------------------------------------


def test_an_outcome_must_name_its_attempt() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    reason = refused(sim, completed_for(task, sim, attempt=None), "no_attempt")
    assert "names no attempt" in reason
    sim.publish(sim.completed(task, "real"))  # the control
    assert sim.st.status == WorkflowStatus.COMPLETED


def test_an_outcome_for_an_attempt_never_dispatched_is_refused() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    reason = refused(sim, completed_for(task, sim, attempt=5), "not_dispatched")
    assert "attempt 5" in reason
    assert sim.st.tasks["t"].status == TaskStatus.SCHEDULED
    sim.publish(sim.completed(task, "real"))
    assert sim.st.tasks["t"].result == "real"


def test_a_task_waiting_at_its_gate_settles_only_by_a_decision() -> None:
    sim = Sim()
    assert sim.submit(GATED)  # the gate's approval request; no dispatch
    assert sim.st.tasks["pay"].status == TaskStatus.WAITING_APPROVAL
    fake = TaskMessage(
        workflow_id=WF, task_id="pay", attempt=1, capability="pay", vclock=sim.st.vclock
    )
    for attempt in (None, 0, 1, 2):
        forged = completed_for(fake, sim, attempt=attempt)
        assert admit(sim.state, forged, RULES) != ADMIT
        assert sim.publish(forged) == []
    assert sim.st.tasks["pay"].status == TaskStatus.WAITING_APPROVAL
    approve = _intervention("approve", by="alice", task_id="pay")
    task = only_dispatch(sim.publish(approve))  # the control: a decision dispatches it
    assert (task.task_id, task.attempt) == ("pay", 1)


def test_an_outcome_that_does_not_follow_its_dispatch_is_refused() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    blind = completed_for(task, sim, vclock=VectorClock({"w1": 1}))
    refused(sim, blind, "clock_behind_dispatch")
    behind = task.vclock.to_dict()
    behind[COORDINATOR_NODE] -= 1
    refused(sim, completed_for(task, sim, vclock=VectorClock(behind)), "clock_behind_dispatch")


def test_late_outcomes_of_superseded_or_settled_attempts_are_ignored_silently() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    sim.publish(sim.started(task))
    done = sim.completed(task, "real")
    sim.publish(done)
    again = done.model_copy(update={"id": "again"})
    assert_changes_nothing(sim, again, Ignore)


def test_only_the_claimant_settles_a_signed_attempt() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    sim.publish(signed(sim.started(task, worker="w1"), "worker-1", "worker", stored_ns=10**9))
    assert sim.st.tasks["t"].claimed_by == "worker-1"
    other = signed(sim.completed(task, "forged", worker="w2"), "worker-2", "worker")
    assert "claimed by worker-1" in refused(sim, other, "not_claimant")
    beat = sim.worker_event(
        task, EventType.TASK_HEARTBEAT, TaskHeartbeat(worker="w2"), "heartbeat:1", "w2"
    )
    refused(sim, signed(beat, "worker-2", "worker"), "not_claimant")
    own = signed(sim.completed(task, "real", worker="w1"), "worker-1", "worker")
    sim.publish(own)
    assert sim.st.tasks["t"].result == "real"


def test_a_silent_claim_moves_to_the_worker_a_redelivery_reached() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    t0 = 10**12
    sim.publish(signed(sim.started(task, worker="w1"), "worker-1", "worker", stored_ns=t0))
    early = signed(sim.started(task, worker="w2"), "worker-2", "worker", stored_ns=t0 + 10**9)
    assert isinstance(admit(sim.state, early, RULES), Refuse)  # the claimant may be alive
    late = signed(sim.started(task, worker="w2"), "worker-2", "worker", stored_ns=t0 + 31 * 10**9)
    assert admit(sim.state, late, RULES) == ADMIT
    state, _ = apply(sim.state, late)
    assert state is not None
    assert (state.tasks["t"].claimed_by, state.tasks["t"].worker) == ("worker-2", "w2")
    stale = signed(sim.completed(task, "old", worker="w1"), "worker-1", "worker")
    assert isinstance(admit(state, stale, RULES), Refuse)


def test_an_outcome_signed_by_a_client_is_refused() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    refused(sim, signed(sim.completed(task, "x"), "client", "client"), "wrong_role")


# Clocks -----------------------------------------------------------------------


def test_clocks_are_bounded_in_entries_and_counters() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    sim.publish(sim.started(task))  # the workflow's clock: client-1, coord, w1

    def verdict(clock: VectorClock) -> Verdict:
        return admit(sim.state, completed_for(task, sim, vclock=clock), RULES)

    wide = verdict(task.vclock.merge({f"n{i}": 1 for i in range(9)}))
    assert isinstance(wide, Refuse)
    assert (wide.code, "more than 8" in wide.reason) == ("clock_too_large", True)
    # an event adds no entry but its sender's: a few junk entries would fill the clock
    junk = verdict(task.vclock.merge({"n1": 1, "w1": 1}))
    assert isinstance(junk, Refuse)
    assert junk.code == "clock_foreign_entries"
    # nor moves an entry far ahead of the workflow's (the coordinator's next
    # increment would then pass 2^63 and every later event be refused)
    jump = verdict(task.vclock.merge({COORDINATOR_NODE: 2**40}))
    assert isinstance(jump, Refuse)
    assert jump.code == "clock_jump"
    huge = verdict(task.vclock.merge({"w1": COUNTER_LIMIT + 1}))
    assert isinstance(huge, Refuse)
    assert huge.code == "clock_overflow"
    # a sender's own new entry, when the workflow's clock is full
    full = sim.st.model_copy(update={"vclock": sim.st.vclock.merge({f"f{i}": 1 for i in range(5)})})
    assert len(full.vclock) == 8
    newcomer = completed_for(task, sim, source="w9", vclock=task.vclock.merge({"w9": 1}))
    assert admit(full, newcomer, RULES) == Refuse(
        "clock_too_large",
        "merging its vector clock would give the workflow 9 clock entries, more than 8",
    )
    sim.publish(sim.completed(task, "real"))  # the control
    assert sim.st.status == WorkflowStatus.COMPLETED
    assert len(sim.st.vclock) <= 8


# Unknown workflows, records ------------------------------------------------


def test_events_for_unknown_workflows_are_refused() -> None:
    task = TaskMessage(workflow_id="nobody", task_id="t", attempt=1, capability="x")
    sim = Sim()
    event = sim.completed(task, 1)
    verdict = admit(None, event, RULES)
    assert isinstance(verdict, Refuse)
    assert verdict.code == "unknown_workflow"
    assert reduce(None, event) == (None, [])
    rejection = event.model_copy(
        update={
            "type": EventType.MESSAGE_REJECTED,
            "data": MessageRejected(reason="r", code="c", subject="s"),
        }
    )
    assert isinstance(admit(None, rejection, RULES), Ignore)  # never answered again


# Submissions and child links --------------------------------------------------


def _child_submission(**update: Any) -> Event:
    base = submitted(ONE)
    data = WorkflowSubmitted(
        definition=ONE,
        parent=ParentLink(workflow_id="victim", task_id="pay", attempt=1),
    )
    return base.model_copy(update={"workflow_id": "fake-child", "data": data, **update})


def test_only_a_coordinator_starts_a_child_workflow_under_its_derived_id() -> None:
    verdict = admit(None, signed(_child_submission(), "client", "client"), RULES)
    assert isinstance(verdict, Refuse)
    assert verdict.code == "forged_child_link"
    derived = {"workflow_id": child_workflow_id("victim", "pay", 1)}
    real = signed(_child_submission(**derived), "coordinator", "coordinator")
    assert admit(None, real, RULES) == ADMIT
    for unsigned in (_child_submission(), _child_submission(workflow_id="victim-pay-1")):
        refused_link = admit(None, unsigned, RULES)  # default mode: the id gives it away
        assert isinstance(refused_link, Refuse)
        assert "is not the child workflow" in refused_link.reason
    assert admit(None, _child_submission(**derived), RULES) == ADMIT
    with_results = _child_submission(**derived)
    data = with_results.data.model_copy(update={"reuse": {"t": "forged"}})
    taking = admit(None, with_results.model_copy(update={"data": data}), RULES)
    assert isinstance(taking, Refuse)
    assert taking.code == "reuse_without_origin"


def test_a_task_that_runs_no_child_refuses_a_childs_report() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    report = completed_for(task, sim, source=child_workflow_id(WF, "t", 1))
    refused(sim, report, "not_claimant")


def test_a_report_from_a_workflow_that_is_not_the_tasks_child_is_refused() -> None:
    parent = definition({"id": "sub", "workflow": {"tasks": [{"id": "a", "capability": "x"}]}})
    sim = Sim()
    sim.submit(parent)
    child = sim.st.tasks["sub"].child
    assert child is not None
    fake = TaskMessage(
        workflow_id=WF, task_id="sub", attempt=1, capability="workflow", vclock=sim.st.vclock
    )
    report = completed_for(fake, sim, source="fake-child")
    refused(sim, report, "not_claimant")
    real = completed_for(fake, sim, source=child)
    assert admit(sim.state, real, RULES) == ADMIT


def test_reuse_needs_an_origin_and_forks_need_permission() -> None:
    plain = submitted(ONE).model_copy(
        update={"data": WorkflowSubmitted(definition=ONE, reuse={"t": "forged"})}
    )
    verdict = admit(None, plain, RULES)
    assert isinstance(verdict, Refuse)
    assert verdict.code == "reuse_without_origin"
    fork = submitted(ONE).model_copy(
        update={
            "data": WorkflowSubmitted(
                definition=ONE, reuse={"t": 1}, origin=Origin(kind="fork", workflow_id="src")
            )
        }
    )
    rules = Rules(policy=POLICY)
    refusal = admit(None, signed(fork, "mallory", "client"), rules)
    assert isinstance(refusal, Refuse)
    assert (refusal.code, refusal.reason) == (FORBIDDEN, "mallory lacks permission workflow:fork")
    assert admit(None, signed(fork, "alice", "client"), rules) == ADMIT


# RBAC on submissions ------------------------------------------------------------
SUBMITTERS = Policy.from_dict(
    {
        "roles": {
            "operator": {"permissions": ["workflow:*"]},
            "reporter": {"permissions": ["workflow:submit:x", "workflow:submit:report_*"]},
            "commenter": {"permissions": ["workflow:feedback"]},
        },
        "principals": {"alice": ["operator"], "bob": ["reporter"], "mallory": ["commenter"]},
    }
)
NESTED = definition(
    {"id": "t", "capability": "x"},
    {
        "id": "child",
        "depends_on": ["t"],
        "workflow": {
            "tasks": [
                {"id": "a", "capability": "report_weekly"},
                {"id": "deep", "workflow": {"tasks": [{"id": "p", "capability": "pay"}]}},
            ]
        },
    },
)


def _submission(defn: Any, *, by: str, **more: Any) -> Event:
    event = submitted(defn)
    data = WorkflowSubmitted(definition=defn, submitted_by=by, **more)
    return event.model_copy(update={"data": data})


def test_used_capabilities_include_every_child_workflows() -> None:
    assert used_capabilities(NESTED) == {"x", "report_weekly", "pay"}
    assert used_capabilities(ONE) == {"x"}


def test_a_submission_needs_submit_rights_for_every_capability_it_runs() -> None:
    rules = Rules(policy=SUBMITTERS)
    # bob may submit x and report_*: a flat workflow of x is admitted ...
    assert admit(None, signed(_submission(ONE, by="bob"), "bob", "client"), rules) == ADMIT
    # ... one that reaches pay three levels down is not, and nothing of it is folded.
    verdict = admit(None, signed(_submission(NESTED, by="bob"), "bob", "client"), rules)
    assert verdict == Refuse(
        FORBIDDEN,
        "bob may not submit capability 'pay' (it lacks workflow:submit:pay; roles: reporter)",
    )
    # A principal with no submit right, and one the policy does not name.
    for who in ("mallory", "nobody"):
        refusal = admit(None, signed(_submission(ONE, by=who), who, "client"), rules)
        assert isinstance(refusal, Refuse)
        assert (refusal.code, refusal.reason.split(" (")[0]) == (
            FORBIDDEN,
            f"{who} may not submit capability 'x'",
        )
    assert admit(None, signed(_submission(NESTED, by="a"), "alice", "client"), rules) == ADMIT


def test_the_signer_not_the_claimed_submitter_is_checked() -> None:
    rules = Rules(policy=SUBMITTERS)
    claims_alice = signed(_submission(NESTED, by="alice"), "mallory", "client")
    verdict = admit(None, claims_alice, rules)
    assert isinstance(verdict, Refuse)
    assert verdict.reason.startswith("mallory may not submit")
    # Unsigned (no keys): the claimed name is all there is, and it proves nothing.
    assert admit(None, _submission(NESTED, by="alice"), rules) == ADMIT
    assert isinstance(admit(None, _submission(ONE, by="mallory"), rules), Refuse)


def test_without_a_policy_any_submission_is_admitted_as_before() -> None:
    for event in (_submission(NESTED, by="mallory"), signed(_submission(NESTED, by="m"), "m", "x")):
        assert admit(None, event, Rules()) == ADMIT


def test_the_coordinators_child_submission_is_not_checked_again() -> None:
    """A child's definition was checked as part of its parent's submission."""
    rules = Rules(policy=SUBMITTERS)
    child = NESTED.tasks[1].workflow
    assert child is not None
    derived = {"workflow_id": child_workflow_id("victim", "pay", 1)}
    real = signed(_child_submission(**derived), "coordinator", "coordinator")
    real = real.model_copy(update={"data": real.data.model_copy(update={"definition": child})})
    assert admit(None, real, rules) == ADMIT


def test_a_fork_needs_its_permission_and_submit_rights() -> None:
    rules = Rules(policy=SUBMITTERS)
    origin = Origin(kind="fork", workflow_id="src")
    fork = _submission(NESTED, by="bob", reuse={"t": 1}, origin=origin)
    assert admit(None, signed(fork, "bob", "client"), rules) == Refuse(
        FORBIDDEN, "bob lacks permission workflow:fork"
    )
    assert admit(None, signed(fork, "alice", "client"), rules) == ADMIT
    submit_only = Policy.from_dict(
        {
            "roles": {"forker": {"permissions": ["workflow:fork", "workflow:submit:x"]}},
            "principals": {"fran": ["forker"]},
        }
    )
    verdict = admit(None, signed(fork, "fran", "client"), Rules(policy=submit_only))
    assert isinstance(verdict, Refuse)
    assert verdict.reason.startswith("fran may not submit capabilities 'pay', 'report_weekly'")


def test_a_refused_submission_is_skipped_by_replay_as_the_coordinator_recorded_it() -> None:
    event = signed(_submission(NESTED, by="bob"), "bob", "client").model_copy(update={"seq": 1})
    verdict = admit(None, event, Rules(policy=SUBMITTERS))
    assert isinstance(verdict, Refuse)
    record = Event(
        id="rejected:AF_EVENTS:1",
        type=EventType.MESSAGE_REJECTED,
        workflow_id=WF,
        source=COORDINATOR_NODE,
        timestamp=2 * 10**18,
        vclock=VectorClock({COORDINATOR_NODE: 1}),
        seq=2,
        data=MessageRejected(
            reason=verdict.reason,
            code=verdict.code,
            subject=f"af.evt.{WF}.workflow.submitted",
            stream_seq=1,
            sender="bob",
        ),
    )
    assert fold([event, record]) is None  # nothing of it was ever folded
    unrecorded = fold([event])  # the control: replay alone has no policy
    assert unrecorded is not None
    assert unrecorded.status == WorkflowStatus.RUNNING


# RBAC on interventions and resumes -------------------------------------------


def _intervention(action: str, *, by: str, task_id: str | None = None) -> Event:
    return Event(
        id=workflow_key(WF, f"intervention:{action}"),
        type=EventType.INTERVENTION_REQUESTED,
        workflow_id=WF,
        source=by,
        timestamp=2 * 10**18,
        vclock=VectorClock({by: 1}),
        data=InterventionRequested(request_id=f"r-{action}", action=action, by=by, task_id=task_id),
    )


def _resume(by: str, from_task: str | None = "t") -> Event:
    return Event(
        id=workflow_key(WF, "resume:1"),
        type=EventType.WORKFLOW_RESUME_REQUESTED,
        workflow_id=WF,
        source=by,
        timestamp=2 * 10**18,
        vclock=VectorClock({by: 1}),
        data=WorkflowResumeRequested(from_task=from_task, requested_by=by),
    )


@pytest.mark.parametrize("principal", ["mallory", "nobody"])
def test_resuming_or_rerunning_a_finished_workflow_needs_permission(principal: str) -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    sim.publish(sim.completed(task, "done"))
    rules = Rules(policy=POLICY)
    verdict = admit(sim.state, signed(_resume(principal), principal, "client"), rules)
    assert verdict == Refuse(FORBIDDEN, f"{principal} lacks permission workflow:resume")
    assert admit(sim.state, signed(_resume("alice"), "alice", "client"), rules) == ADMIT
    relayed = signed(_resume("x"), "coordinator", "coordinator")
    assert admit(sim.state, relayed, rules) == ADMIT


def test_every_intervention_is_checked_against_the_signers_roles() -> None:
    sim = Sim()
    sim.submit(ONE)
    rules = Rules(policy=POLICY)
    for action in ("pause", "abort", "approve", "modify"):
        verdict = admit(
            sim.state, signed(_intervention(action, by="x"), "mallory", "client"), rules
        )
        assert isinstance(verdict, Refuse)
        assert verdict.code == FORBIDDEN
    feedback = signed(_intervention("feedback", by="x"), "mallory", "client")
    assert admit(sim.state, feedback, rules) == ADMIT


# Replay ---------------------------------------------------------------------


def _record(sim: Sim, seq: int, refused_seq: int, **update: Any) -> Event:
    """The coordinator's ``message.rejected`` of the event stored at ``refused_seq``."""
    return Event(
        id=f"rejected:AF_EVENTS:{refused_seq}",
        type=EventType.MESSAGE_REJECTED,
        workflow_id=WF,
        source="coordinator",
        timestamp=sim.tick(),
        vclock=sim.st.vclock.increment("coord-shell"),
        data=MessageRejected(
            reason="mallory lacks permission workflow:resume",
            code=FORBIDDEN,
            subject=f"af.evt.{WF}.workflow.resume_requested",
            stream_seq=refused_seq,
        ),
        seq=seq,
    ).model_copy(update=update)


def test_replay_skips_what_the_coordinator_recorded_as_refused() -> None:
    # The coordinator refused mallory's re-run by its policy; replay has no policy,
    # so the recorded refusal is what makes it skip the request.
    sim = Sim()
    sim.publish(sim.completed(only_dispatch(sim.submit(ONE)), "done"))
    resume = _resume("mallory").model_copy(update={"seq": 100})
    assert fold([*sim.log, resume]).status == WorkflowStatus.RUNNING  # type: ignore[union-attr]
    replayed = fold([*sim.log, resume, _record(sim, 101, 100)])
    assert replayed is not None
    assert replayed.status == WorkflowStatus.COMPLETED
    # A record only counts if the coordinator made it, after the event it names.
    for forged in (
        _record(sim, 101, 100, signer="mallory", signer_role="client"),
        _record(sim, 99, 100),
        _record(sim, 101, 100, id="attack-1"),
    ):
        again = fold([*sim.log, resume, forged])
        assert again is not None
        assert again.status == WorkflowStatus.RUNNING


def test_replay_skips_only_the_intervention_admission_refused() -> None:
    # A refused request reusing the id of an applied one must not erase it in replay.
    sim = Sim()
    sim.submit(GATED)
    approve = _intervention("approve", by="alice", task_id="pay")
    sim.publish(approve)
    assert sim.st.tasks["pay"].status == TaskStatus.SCHEDULED
    reused = approve.model_copy(update={"seq": 100, "source": "mallory"})
    refusal = Event(
        id=workflow_key(WF, "intervention:r-approve:refused"),
        type=EventType.INTERVENTION_REFUSED,
        workflow_id=WF,
        source="coordinator",
        timestamp=sim.tick(),
        vclock=sim.st.vclock.increment("coord-shell"),
        data=InterventionRefused(
            request_id="r-approve",
            action="approve",
            reason="mallory lacks permission workflow:approve",
            code=FORBIDDEN,
            stream_seq=100,
        ),
        seq=101,
    )
    replayed = fold([*sim.log, reused, refusal])
    assert replayed is not None
    assert replayed.tasks["pay"].status == TaskStatus.SCHEDULED


def test_a_completed_payload_alone_cannot_complete_a_task() -> None:
    # The reducer's own checks stay as a second line behind admission.
    sim = Sim()
    task = only_dispatch(sim.submit(ONE))
    event = sim.completed(task, "x").model_copy(update={"data": TaskHeartbeat(worker="w")})
    state, _ = apply(sim.state, event)
    assert state is not None
    assert state.tasks["t"].status == TaskStatus.SCHEDULED
    assert task_key(WF, "t", 1, "completed") == event.id
    assert isinstance(TaskCompleted(result=1), TaskCompleted)


def test_a_modification_needs_submit_rights_for_what_it_adds_or_replaces() -> None:
    # carol may modify and submit x, not pay: adding (or replacing in) a task of
    # pay, directly or in a child workflow, is refused like a submission of it.
    policy = Policy.from_dict(
        {
            "roles": {"editor": {"permissions": ["workflow:modify", "workflow:submit:x"]}},
            "principals": {"carol": ["editor"]},
        }
    )
    rules = Rules(policy=policy)
    sim = Sim()
    sim.submit(ONE)

    def modify(changes: dict[str, Any]) -> Event:
        return signed(
            Event(
                id=f"{WF}:intervention:m",
                type=EventType.INTERVENTION_REQUESTED,
                workflow_id=WF,
                source="gateway",
                timestamp=sim.tick(),
                vclock=sim.st.vclock.increment("gateway"),
                data=InterventionRequested(
                    request_id="m",
                    action="modify",
                    by="carol",
                    changes=Modification.model_validate(changes),
                ),
            ),
            "carol",
            "client",
        )

    pay = {"id": "p", "capability": "pay", "depends_on": ["t"]}
    child = {"id": "c", "depends_on": ["t"], "workflow": {"tasks": [pay | {"depends_on": []}]}}
    for changes in ({"add": [pay]}, {"add": [child]}, {"replace": [pay | {"id": "t"}]}):
        verdict = admit(sim.st, modify(changes), rules)
        assert isinstance(verdict, Refuse), changes
        assert verdict.code == FORBIDDEN
        assert "workflow:submit:pay" in verdict.reason
    assert admit(sim.st, modify({"add": [pay | {"capability": "x"}]}), rules) == ADMIT
    assert admit(sim.st, modify({"remove": ["t"]}), rules) == ADMIT


def test_a_schedule_runs_id_is_refused_to_clients() -> None:
    # A schedule run's id is derived from its tick: a client taking one first
    # would have the schedule count someone else's run as its own.
    event = _submission(ONE, by="bob").model_copy(
        update={"workflow_id": "nightly-20261208T020000Z"}
    )
    verdict = admit(None, signed(event, "bob", "client"), Rules())
    assert isinstance(verdict, Refuse)
    assert verdict.code == "reserved_id"
    for fine in (
        "wf-01a2527f1a9c73c4bf7f48df0486de4b",
        "sub-0193a5b6-7c8d-7e9f-9123-456789abcdef",
        child_workflow_id("wf-parent", "step", 1),
    ):
        event = _submission(ONE, by="bob").model_copy(update={"workflow_id": fine})
        assert admit(None, signed(event, "bob", "client"), Rules()) == ADMIT

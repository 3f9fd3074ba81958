"""Admission under attack: a stateful fuzz of the coordinator's pure core.

One workflow runs in an honest world (the reducer's :class:`Sim` builds the
workers' and the shell's events: dispatch, ``task.started``, outcomes, fired
retry, timeout and approval timers, people's approvals and resumes) while an
attacker publishes arbitrary events into the same stream: any type, from any
role and principal, naming any attempt, task, vector clock and server time.

Every event, honest or not, is handled the way the coordinator handles it:
``admit(state, event, RULES)``, then ``apply`` only when admitted, then the
coordinator's own emitted events are read back (echoes) the same way. After
each event the checks below hold; they restate the rules documented in
:mod:`agenticflow.coordinator.admission`, so a transition they do not explain is an attack
that got through:

* admission and folding never raise, and the state always encodes;
* a refused or ignored event changes nothing, byte for byte (admission is pure,
  and ``reduce`` -- replay's admission + fold -- changes nothing either);
* the workflow's vector clock stays within 16 entries and below 2^63;
* a task completes or fails only through an outcome of its dispatched attempt
  from its runner (or a coordinator's timer, dead letter or an authorized
  decision); it waits for approval only at its gate or when its runner asked,
  and leaves the wait only by a decision or the expiry timer;
* with signatures on, a principal without ``workflow:*`` never gets an
  intervention or a resume applied.

Time bounds: the attacker's timestamps stay within int64 here; larger ones are
covered by :func:`test_a_runners_timestamp_cannot_make_the_state_unencodable`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agenticflow.coordinator.admission import COUNTER_LIMIT, Admit, Rules, Verdict, admit
from agenticflow.coordinator.reducer import (
    COORDINATOR_NODE,
    ArmTimer,
    Command,
    Dispatch,
    Emit,
    apply,
    reduce,
)
from agenticflow.coordinator.state import (
    ACTIVE_TASK,
    TERMINAL_TASK,
    TaskState,
    TaskStatus,
    WorkflowState,
    WorkflowStatus,
)
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.graph.hierarchy import ParentLink
from agenticflow.shared.graph.workflow import TaskSpec
from agenticflow.shared.security.rbac import Policy
from agenticflow.shared.wire.codec import TaskMessage, decode_event, encode_event, pack, unpack
from agenticflow.shared.wire.events import (
    ApprovalDecision,
    ErrorInfo,
    Event,
    EventType,
    InterventionRefused,
    InterventionRequested,
    MessageRejected,
    Modification,
    Origin,
    Payload,
    RecordedEffect,
    TaskApprovalDecided,
    TaskApprovalExpired,
    TaskApprovalRequested,
    TaskAuctionClosed,
    TaskBid,
    TaskClaimExpired,
    TaskCompleted,
    TaskDeadLettered,
    TaskEffectRecorded,
    TaskFailed,
    TaskHeartbeat,
    TaskRetryDue,
    TaskScheduled,
    TaskStarted,
    TaskTimedOut,
    TaskUnserved,
    WorkflowAborted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowResumed,
    WorkflowResumeRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import MAX_COUNTER, VectorClock
from tests.unit.test_reducer import (
    QUICK_RETRY,
    WF,
    Sim,
    definition,
    dispatches,
    only_dispatch,
    submitted,
)

MAX_CLOCK = 16
NAMES = Names(prefix="af")
POLICY = Policy.from_dict(
    {
        "roles": {"operator": {"permissions": ["workflow:*"]}, "nothing": {"permissions": []}},
        "principals": {"alice": ["operator"], "mallory": ["nothing"]},
    }
)
"""``alice`` may steer; ``mallory`` holds a role that grants nothing; anyone else
(``nobody``, the workers) is not in the policy at all."""
RULES = Rules(max_clock_entries=MAX_CLOCK, claim_timeout_ns=30 * 10**9, policy=POLICY)
DEFN = definition(
    {"id": "plain", "capability": "x", "timeout_s": 5, "retry": QUICK_RETRY},
    {
        "id": "gated",
        "capability": "pay",
        "approval": {"required": True, "timeout_s": 60, "on_timeout": "approve"},
    },
    {"id": "after", "capability": "y", "depends_on": ["plain", "gated"], "optional": True},
)
"""A retried task with a timeout, a gated task whose wait expires into an
approval, and an optional task that depends on both."""
TASK_IDS = ("plain", "gated", "after")
DEFN_GATE: dict[str, Any] = {"id": "pay", "capability": "pay", "approval": {"required": True}}
PRINCIPAL_OF = {"w1": "worker-1", "w2": "worker-2"}
"""The honest workers: node id (their clock entry) and signing principal."""
COORDINATOR = ("coordinator", "coordinator")
OPERATOR = ("alice", "client")
COORDINATOR_TYPES = frozenset(
    {EventType.TASK_TIMED_OUT, EventType.TASK_DEAD_LETTERED, EventType.TASK_APPROVAL_EXPIRED}
)
"""The coordinator's timers and dead letters that may end a task's attempt."""


# How the coordinator handles one event ---------------------------------------------


def snapshot(state: WorkflowState | None) -> bytes | None:
    return None if state is None else state.to_snapshot()


def authorized(event: Event, action: str, claimed: str) -> bool:
    """RBAC as documented: a signed coordinator, else the signer (else the name the
    event gives) must hold ``workflow:<action>``."""
    if event.signer_role == "coordinator":
        return True
    return POLICY.context(event.signer or claimed or "anonymous").can(f"workflow:{action}")


def steers(event: Event, actions: Sequence[str], task_id: str | None = None) -> bool:
    """An authorized intervention with one of ``actions`` (about ``task_id`` if given)."""
    data = event.data
    return (
        event.type == EventType.INTERVENTION_REQUESTED
        and isinstance(data, InterventionRequested)
        and data.action in actions
        and (task_id is None or data.task_id == task_id)
        and authorized(event, data.action, data.by)
    )


def resumes(event: Event) -> bool:
    """An authorized resume (or re-run) request."""
    data = event.data
    return (
        event.type == EventType.WORKFLOW_RESUME_REQUESTED
        and isinstance(data, WorkflowResumeRequested)
        and authorized(event, "resume", data.requested_by)
    )


def from_coordinator(event: Event) -> bool:
    """Sent by a coordinator (or by anyone when nothing is signed)."""
    return event.signer_role in (None, "coordinator")


def runs_attempt(before: WorkflowState, event: Event, task_id: str) -> bool:
    """Rule 5: ``event`` reports on the dispatched, unsettled attempt of ``task_id``,
    follows its dispatch and (signed) comes from its claimant or a coordinator."""
    task = before.tasks[task_id]
    return (
        before.status == WorkflowStatus.RUNNING
        and event.task_id == task_id
        and event.signer_role in (None, "worker", "coordinator")
        and task.status in ACTIVE_TASK
        and event.attempt == task.attempts
        and task.attempts > task.attempt_base
        and event.vclock.get(COORDINATOR_NODE) >= task.dispatch_coord
        and (
            event.signer is None
            or task.claimed_by is None
            or event.signer == task.claimed_by
            or event.signer_role == "coordinator"
        )
    )


def check_task(
    before: WorkflowState, after: WorkflowState, event: Event, task_id: str, new: TaskState
) -> None:
    """What may move one task, given the event that moved it."""
    old = before.tasks[task_id]
    why = f"{task_id}: {old.status.value} -> {new.status.value} by {event!r}"
    assert new.attempts >= old.attempts, why
    if new.claimed_by is not None and new.claimed_by != old.claimed_by:
        assert event.type == EventType.TASK_STARTED, why
        assert event.task_id == task_id, why
        assert event.signer == new.claimed_by, why
        if old.status == TaskStatus.RUNNING and old.claimed_by is not None:
            # a claim moves only once its claimant has been silent (or by a coordinator)
            assert event.signer_role == "coordinator" or (
                event.stored_ns is not None
                and old.alive_ns is not None
                and event.stored_ns - old.alive_ns >= RULES.claim_timeout_ns
            ), why
    if new.status == old.status:
        return
    if new.status == TaskStatus.COMPLETED:
        assert event.type == EventType.TASK_COMPLETED, why
        assert isinstance(event.data, TaskCompleted), why
        assert runs_attempt(before, event, task_id), why
    elif new.status == TaskStatus.FAILED:
        assert (
            (event.type == EventType.TASK_FAILED and runs_attempt(before, event, task_id))
            or (
                event.type in COORDINATOR_TYPES
                and from_coordinator(event)
                and event.task_id == task_id
            )
            or (old.status == TaskStatus.WAITING_APPROVAL and steers(event, ["reject"], task_id))
        ), why
    elif new.status == TaskStatus.SKIPPED:
        assert event.type == EventType.TASK_DEAD_LETTERED, why
        assert from_coordinator(event), why
        assert event.task_id == task_id, why
        assert event.attempt == old.attempts, why
    elif new.status == TaskStatus.CANCELLED:
        stopped = (WorkflowStatus.ABORTED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)
        assert after.status in stopped or after.cancelling, why
    elif new.status == TaskStatus.WAITING_APPROVAL:
        assert new.waiting is not None, why
        asked = event.type == EventType.TASK_APPROVAL_REQUESTED
        assert new.waiting.gate or (asked and runs_attempt(before, event, task_id)), why
    if old.status == TaskStatus.WAITING_APPROVAL and new.status != TaskStatus.CANCELLED:
        expired = event.type == EventType.TASK_APPROVAL_EXPIRED and from_coordinator(event)
        decided = steers(event, ["approve", "reject"], task_id)
        assert (expired and event.task_id == task_id) or decided, why
    if old.status in TERMINAL_TASK:
        assert resumes(event), why


STOPS = ("cancel", "terminate", "abort")
"""The interventions that end a workflow (cancel once nothing runs)."""


def check_transitions(before: WorkflowState, after: WorkflowState, event: Event) -> None:
    """Every change ``event`` made is one the documented rules allow."""
    for task_id in before.tasks:
        new = after.tasks.get(task_id)
        if new is None:
            assert steers(event, ["modify"]), f"{task_id} removed by {event!r}"
        else:
            check_task(before, after, event, task_id, new)
    if after.interventions > before.interventions:
        assert steers(
            event,
            [*STOPS, "pause", "resume", "modify", "feedback", "approve", "reject"],
        )
    if after.resumes > before.resumes:
        assert resumes(event), event
    if after.status == WorkflowStatus.ABORTED and before.status != WorkflowStatus.ABORTED:
        assert steers(event, ["abort", "terminate"]), event
    if after.cancelling and not before.cancelling:
        assert steers(event, ["cancel"]), event
    if after.status == WorkflowStatus.CANCELLED:
        assert after.cancelling, event
    if after.paused != before.paused:
        assert steers(event, ["pause", "resume"]), event


@dataclass
class Handled:
    """What handling one event did."""

    verdict: Verdict
    commands: list[Command]


class World:
    """The coordinator (admission, fold, echoes) around :class:`Sim`'s state and
    event builders, plus what the honest world knows: dispatched task messages,
    armed timers, and which worker runs which attempt."""

    def __init__(self, *, secure: bool) -> None:
        self.sim = Sim()
        self.secure = secure
        self.seq = 0
        self.dispatched: list[TaskMessage] = []
        self.timers: list[ArmTimer] = []
        self.runners: dict[tuple[str, int], str] = {}
        self.requests = 0

    @property
    def state(self) -> WorkflowState:
        return self.sim.st

    def sign(self, event: Event, principal: str, role: str, stored_ns: int | None = None) -> Event:
        """``event`` as decoding gives it: signed (secure mode) or not."""
        stored = event.timestamp if stored_ns is None else stored_ns
        if not self.secure:
            return event.model_copy(
                update={"signer": None, "signer_role": None, "stored_ns": stored}
            )
        return event.model_copy(
            update={"signer": principal, "signer_role": role, "stored_ns": stored}
        )

    def handle(self, event: Event) -> Handled:
        """Admit, fold and echo one event as the coordinator does, checking the
        documented rules along the way."""
        self.seq += 1
        event = event.model_copy(update={"seq": self.seq})
        state = self.sim.state
        before_bytes = snapshot(state)
        verdict = admit(state, event, RULES)
        assert snapshot(state) == before_bytes, "admission changed the state"
        assert admit(state, event, RULES) == verdict, "admission is not deterministic"
        if not isinstance(verdict, Admit):
            replayed, commands = reduce(copy.deepcopy(state), event, rules=RULES)
            assert commands == []
            assert snapshot(replayed) == before_bytes, f"{verdict} changed the state"
            return Handled(verdict, [])
        before = copy.deepcopy(state)
        after, commands = apply(state, event)
        assert after is not None
        self.sim.state = after
        after.to_snapshot()
        if before is not None:
            check_transitions(before, after, event)
        self.execute(commands)
        return Handled(verdict, commands)

    def execute(self, commands: list[Command]) -> None:
        """Remember dispatches and timers; read the emitted events back."""
        for command in commands:
            if isinstance(command, Dispatch):
                self.dispatched.append(command.task)
            elif isinstance(command, ArmTimer):
                self.timers.append(command)
            else:
                echo = command.event.model_copy(update={"timestamp": self.sim.tick()})
                self.handle(self.sign(echo, *COORDINATOR))

    # What the honest world may do now ------------------------------------------
    def live(self) -> list[TaskMessage]:
        """Dispatched task messages of attempts that are current and unsettled."""
        if self.state.status != WorkflowStatus.RUNNING:
            return []
        current: dict[str, TaskMessage] = {}
        for task in self.dispatched:
            state = self.state.tasks.get(task.task_id)
            if state and state.status in ACTIVE_TASK and state.attempts == task.attempt:
                current[task.task_id] = task
        return list(current.values())

    def due(self, kind: str) -> list[ArmTimer]:
        """Armed timers of ``kind`` that would still do something if they fired."""
        found: list[ArmTimer] = []
        for timer in self.timers:
            task = self.state.tasks.get(timer.task_id)
            if task is None or timer.kind != kind or task.attempts != timer.attempt:
                continue
            if (
                (kind == "retry" and task.status == TaskStatus.RETRY_WAIT)
                or (kind == "timeout" and task.deadline_ns == timer.due_ns)
                or (kind == "approval" and task.waiting and task.waiting.due_ns == timer.due_ns)
            ):
                found.append(timer)
        return found

    def waiting(self) -> list[str]:
        return [
            task_id
            for task_id, task in self.state.tasks.items()
            if task.status == TaskStatus.WAITING_APPROVAL
        ]

    def person(self, action: str, *, task_id: str | None = None, by: str = "alice") -> Event:
        """An intervention request from a client."""
        self.requests += 1
        return Event(
            id=workflow_key(WF, f"intervention:{self.requests}"),
            type=EventType.INTERVENTION_REQUESTED,
            workflow_id=WF,
            source=by or "client",
            timestamp=self.sim.tick(),
            vclock=VectorClock({"alice": self.requests}),
            data=InterventionRequested(
                request_id=f"r{self.requests}", action=action, by=by, task_id=task_id
            ),
        )

    def resume_request(self, from_task: str | None, *, by: str = "alice") -> Event:
        self.requests += 1
        return Event(
            id=workflow_key(WF, f"resume:{self.requests}"),
            type=EventType.WORKFLOW_RESUME_REQUESTED,
            workflow_id=WF,
            source=by or "client",
            timestamp=self.sim.tick(),
            vclock=VectorClock({"alice": self.requests}),
            data=WorkflowResumeRequested(from_task=from_task, requested_by=by),
        )


# What the attacker chooses ------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """The attacker's choices of payload content and time."""

    action: str
    """The intervention's action."""
    by: str
    """The name the payload claims (``by``, ``requested_by``, ``submitted_by``)."""
    flag: bool
    """A retryable error; a gate's request; an approving decision; a child link."""
    index: int
    """An approval request's index; which fork a submission claims."""
    due: str
    """A timer's ``due_ns``: the one the task waits for, zero, or another."""
    change: str
    """What a modification changes."""
    on_timeout: str
    wrong_payload: bool
    """A payload of another event type (decoding never gives one; the reducer copes)."""
    timestamp: str


KNOBS = st.builds(
    Knobs,
    action=st.sampled_from(
        [*STOPS, "pause", "resume", "modify", "feedback", "approve", "reject", "explode"]
    ),
    by=st.sampled_from(["alice", "mallory", "nobody", "", "coordinator"]),
    flag=st.booleans(),
    index=st.integers(-1, 3),
    due=st.sampled_from(["match", "zero", "other"]),
    change=st.sampled_from(["remove", "params", "add", "ungate", "nothing"]),
    on_timeout=st.sampled_from(["reject", "approve", "fail"]),
    wrong_payload=st.sampled_from([False, False, False, True]),
    timestamp=st.sampled_from(["now", "now", "now", "zero", "int64_max"]),
)


@dataclass(frozen=True)
class Clock:
    """The attacker's vector clock: a shape, a width and a counter."""

    shape: str
    width: int
    counter: int


CLOCKS = st.builds(
    Clock,
    shape=st.sampled_from(
        [
            *("dispatch", "dispatch", "dispatch", "behind", "behind"),
            *("empty", "workflow", "plus_one", "wide", "huge", "near_limit", "fill"),
        ]
    ),
    width=st.integers(1, 100),
    counter=st.sampled_from([1, 2**32, MAX_COUNTER - 2**32, MAX_COUNTER - 2**32 + 1, MAX_COUNTER])
    | st.integers(0, MAX_COUNTER),
)
ATTEMPTS: st.SearchStrategy[str | int] = st.one_of(
    st.just("current"),
    st.sampled_from(["none", "next", "previous", "zero", "max"]),
    st.integers(-2, MAX_COUNTER),
)
"""The target's current attempt half the time (the one that matters)."""
STORED: st.SearchStrategy[str | int] = st.sampled_from(
    ["none", "now", "alive", "claim_timeout", "claim_timeout-1", "max"]
) | st.integers(0, MAX_COUNTER)
SENDERS = st.sampled_from(
    [
        ("claimant", "worker"),
        ("worker-1", "worker"),
        ("worker-2", "worker"),
        ("mallory", "worker"),
        ("mallory", "client"),
        ("mallory", "admin"),
        ("nobody", "client"),
        ("alice", "client"),
        ("coordinator", "coordinator"),
    ]
)
"""Signing principals and roles (secure mode; unsigned otherwise). ``claimant``:
the principal that claimed the target task's attempt."""
TARGETS = st.sampled_from(["live", "live", "live", *TASK_IDS, "ghost", None])
"""A task id; ``live``: a task whose attempt runs now (if any)."""
RUNNER_KINDS = (
    EventType.TASK_STARTED,
    EventType.TASK_COMPLETED,
    EventType.TASK_FAILED,
    EventType.TASK_HEARTBEAT,
    EventType.TASK_APPROVAL_REQUESTED,
    EventType.TASK_EFFECT_RECORDED,
)
"""What the runner of an attempt reports."""
PEOPLE_KINDS = (
    EventType.INTERVENTION_REQUESTED,
    EventType.WORKFLOW_RESUME_REQUESTED,
    EventType.WORKFLOW_SUBMITTED,
)
COORDINATOR_KINDS = (
    EventType.TASK_BID,
    EventType.TASK_RETRY_DUE,
    EventType.TASK_TIMED_OUT,
    EventType.TASK_DEAD_LETTERED,
    EventType.TASK_APPROVAL_EXPIRED,
    EventType.TASK_UNSERVED,
    EventType.TASK_AUCTION_CLOSED,
    EventType.TASK_CLAIM_EXPIRED,
    EventType.TASK_APPROVAL_DECIDED,
    EventType.TASK_SCHEDULED,
    EventType.WORKFLOW_REJECTED,
    EventType.WORKFLOW_COMPLETED,
    EventType.WORKFLOW_FAILED,
    EventType.WORKFLOW_ABORTED,
    EventType.WORKFLOW_CANCELLED,
    EventType.WORKFLOW_RESUMED,
    EventType.MESSAGE_REJECTED,
    EventType.INTERVENTION_REFUSED,
)
"""The shell's timers and hints, the reducer's decisions and refusal records (and bids)."""
KINDS = st.one_of(
    st.sampled_from(RUNNER_KINDS), st.sampled_from(PEOPLE_KINDS), st.sampled_from(COORDINATOR_KINDS)
)
NEAR_MISSES = st.lists(
    st.sampled_from(
        [
            "attempt+1",
            "attempt-1",
            "no_attempt",
            "clock_behind",
            "clock_empty",
            "other_worker",
            "client",
            "coordinator",
            "other_task",
            "silent_claimant",
            "almost_silent_claimant",
        ]
    ),
    max_size=2,
)
"""How a forged outcome differs from the one the claimant would send (nothing: the
claimant itself, or anyone when nothing is signed)."""


def modification(change: str) -> Modification | None:
    return {
        "remove": Modification(remove=["after"]),
        "params": Modification(params={"after": {"forged": True}}),
        "add": Modification(add=[TaskSpec(id="extra", capability="x", depends_on=("plain",))]),
        "ungate": Modification(replace=[TaskSpec(id="gated", capability="pay")]),
        "nothing": None,
    }[change]


def payload(kind: EventType, knobs: Knobs, task_id: str | None, due_ns: int) -> Payload:
    """A payload of ``kind`` filled from the knobs."""
    worker = "w-evil"
    payloads: dict[EventType, Payload] = {
        EventType.TASK_STARTED: TaskStarted(worker=worker, agent="a", instance=f"{worker}.a.0"),
        EventType.TASK_COMPLETED: TaskCompleted(result="forged", worker=worker),
        EventType.TASK_FAILED: TaskFailed(
            error=ErrorInfo(type="Forged", message="forged", retryable=knobs.flag), worker=worker
        ),
        EventType.TASK_HEARTBEAT: TaskHeartbeat(worker=worker),
        EventType.TASK_APPROVAL_REQUESTED: TaskApprovalRequested(
            reason="forged",
            gate=knobs.flag,
            index=max(knobs.index, 0),  # a negative index no longer decodes
            timeout_s=None if knobs.flag else 1.0,
            on_timeout=knobs.on_timeout,
        ),
        EventType.TASK_EFFECT_RECORDED: TaskEffectRecorded(
            effect=RecordedEffect(call=0, name="tool", params_hash="h"), key="k"
        ),
        EventType.TASK_BID: TaskBid(worker=worker, agent="a", value=1.0),
        EventType.INTERVENTION_REQUESTED: InterventionRequested(
            request_id=f"forged-{knobs.index}",
            action=knobs.action,
            by=knobs.by,
            reason="forged",
            text="forged" if knobs.flag else " ",
            task_id=task_id,
            changes=modification(knobs.change),
        ),
        EventType.WORKFLOW_RESUME_REQUESTED: WorkflowResumeRequested(
            from_task=task_id, requested_by=knobs.by
        ),
        EventType.WORKFLOW_SUBMITTED: WorkflowSubmitted(
            definition=DEFN,
            submitted_by=knobs.by,
            parent=ParentLink(workflow_id="victim", task_id="t", attempt=1) if knobs.flag else None,
            reuse={"plain": "forged"} if knobs.index > 0 else {},
            origin=Origin(kind="fork", workflow_id="src") if knobs.index > 1 else None,
        ),
        EventType.TASK_RETRY_DUE: TaskRetryDue(),
        EventType.TASK_TIMED_OUT: TaskTimedOut(timeout_s=1.0, due_ns=due_ns),
        EventType.TASK_DEAD_LETTERED: TaskDeadLettered(reason="forged"),
        EventType.TASK_APPROVAL_EXPIRED: TaskApprovalExpired(due_ns=due_ns),
        EventType.TASK_UNSERVED: TaskUnserved(capability="x"),
        EventType.TASK_AUCTION_CLOSED: TaskAuctionClosed(due_ns=due_ns),
        EventType.TASK_CLAIM_EXPIRED: TaskClaimExpired(
            winner=worker, claim_timeout_s=1.0, due_ns=due_ns
        ),
        EventType.TASK_APPROVAL_DECIDED: TaskApprovalDecided(
            decision=ApprovalDecision(approved=knobs.flag, by=knobs.by)
        ),
        EventType.TASK_SCHEDULED: TaskScheduled(capability="x"),
        EventType.WORKFLOW_REJECTED: WorkflowRejected(reason="forged"),
        EventType.WORKFLOW_COMPLETED: WorkflowCompleted(output={"forged": True}),
        EventType.WORKFLOW_FAILED: WorkflowFailed(reason="forged", task_id=task_id),
        EventType.WORKFLOW_ABORTED: WorkflowAborted(reason="forged", by=knobs.by),
        EventType.WORKFLOW_CANCELLED: WorkflowCancelled(reason="forged", by=knobs.by),
        EventType.WORKFLOW_RESUMED: WorkflowResumed(tasks=list(TASK_IDS)),
        EventType.MESSAGE_REJECTED: MessageRejected(reason="forged", code="x", subject="s"),
        EventType.INTERVENTION_REFUSED: InterventionRefused(
            request_id="r1", action="approve", reason="forged", code="forbidden"
        ),
    }
    if knobs.wrong_payload:
        return TaskHeartbeat() if kind == EventType.TASK_COMPLETED else TaskCompleted(result=1)
    return payloads[kind]


class AdmissionMachine(RuleBasedStateMachine):
    """One workflow, an honest world and an attacker; default or secure mode."""

    world: World

    # The honest world ----------------------------------------------------------
    @initialize(secure=st.booleans())
    def submit(self, secure: bool) -> None:
        """A client submits the workflow: ``plain`` is dispatched, ``gated`` waits."""
        self.world = World(secure=secure)
        world = self.world
        honest = submitted(DEFN, ts=world.sim.tick())
        honest = honest.model_copy(  # unsigned, the name it gives is the principal checked
            update={"data": honest.data.model_copy(update={"submitted_by": OPERATOR[0]})}
        )
        handled = world.handle(world.sign(honest, *OPERATOR))
        assert isinstance(handled.verdict, Admit)
        assert only_dispatch(handled.commands).task_id == "plain"

    @precondition(lambda self: bool(self.world.live()))
    @rule(pick=st.integers(0, 3), worker=st.sampled_from(sorted(PRINCIPAL_OF)))
    def start(self, pick: int, worker: str) -> None:
        """A worker takes a dispatched attempt from its queue (or a redelivery)."""
        world = self.world
        live = world.live()
        task = live[pick % len(live)]
        event = world.sim.started(task, worker)
        handled = world.handle(world.sign(event, PRINCIPAL_OF[worker], "worker"))
        if isinstance(handled.verdict, Admit):
            world.runners.setdefault((task.task_id, task.attempt), worker)

    @precondition(lambda self: bool(self.world.live()))
    @rule(pick=st.integers(0, 3), outcome=st.sampled_from(["completed", "failed", "fatal"]))
    def finish(self, pick: int, outcome: str) -> None:
        """The worker that runs an attempt reports its outcome."""
        world = self.world
        live = world.live()
        task = live[pick % len(live)]
        worker = world.runners.get((task.task_id, task.attempt), "w1")
        if outcome == "completed":
            event = world.sim.completed(task, {"by": worker}, worker)
        else:
            error = ErrorInfo(type="Boom", message="boom", retryable=outcome == "failed")
            event = world.sim.failed(task, error, worker)
        world.handle(world.sign(event, PRINCIPAL_OF[worker], "worker"))

    @precondition(lambda self: bool(self.world.due("retry")))
    @rule()
    def fire_retry(self) -> None:
        """The shell's retry timer fires: the next attempt is dispatched."""
        world = self.world
        world.handle(world.sign(world.sim.retry_due(world.due("retry")[0]), *COORDINATOR))

    @precondition(lambda self: bool(self.world.due("timeout")))
    @rule()
    def fire_timeout(self) -> None:
        """The shell's timeout timer fires for a running attempt."""
        world = self.world
        world.handle(world.sign(world.sim.timed_out(world.due("timeout")[0]), *COORDINATOR))

    @precondition(lambda self: bool(self.world.due("approval")))
    @rule()
    def expire_approval(self) -> None:
        """Nobody decided in time: the gate's policy (approve) decides."""
        world = self.world
        timer = world.due("approval")[0]
        event = world.sim.shell_event(
            EventType.TASK_APPROVAL_EXPIRED,
            TaskApprovalExpired(due_ns=timer.due_ns),
            task_id=timer.task_id,
            attempt=timer.attempt,
            what="approval_expired",
            at_least=timer.due_ns,
        )
        world.handle(world.sign(event, *COORDINATOR))

    @precondition(lambda self: bool(self.world.waiting()))
    @rule(approve=st.booleans())
    def decide(self, approve: bool) -> None:
        """The operator approves or rejects a waiting task."""
        world = self.world
        task_id = world.waiting()[0]
        event = world.person("approve" if approve else "reject", task_id=task_id)
        world.handle(world.sign(event, *OPERATOR))

    @precondition(
        lambda self: self.world.state.status in (WorkflowStatus.FAILED, WorkflowStatus.COMPLETED)
    )
    @rule(from_task=st.sampled_from([None, *TASK_IDS]))
    def resume(self, from_task: str | None) -> None:
        """The operator resumes a failed workflow, or re-runs it from a task."""
        world = self.world
        world.handle(world.sign(world.resume_request(from_task), *OPERATOR))

    # The attacker ---------------------------------------------------------------
    @rule(
        kind=KINDS,
        sender=SENDERS,
        task_id=TARGETS,
        attempt=ATTEMPTS,
        clock=CLOCKS,
        stored=STORED,
        knobs=KNOBS,
    )
    def forge(
        self,
        kind: EventType,
        sender: tuple[str, str],
        task_id: str | None,
        attempt: str | int,
        clock: Clock,
        stored: str | int,
        knobs: Knobs,
    ) -> None:
        """Any event, from anyone, about anything."""
        self.attack(kind, sender, task_id, attempt, clock, stored, knobs)

    @precondition(lambda self: bool(self.world.dispatched))
    @rule(
        pick=st.integers(0, 3),
        kind=st.sampled_from(RUNNER_KINDS),
        misses=NEAR_MISSES,
        knobs=KNOBS,
    )
    def forge_near_miss(self, pick: int, kind: EventType, misses: list[str], knobs: Knobs) -> None:
        """An outcome of one of the last attempts dispatched (running, or settled or
        superseded since) that differs from what its runner would send in at most
        two ways: the boundaries admission draws."""
        world = self.world
        message = world.dispatched[-1 - pick % len(world.dispatched)]
        task = world.state.tasks.get(message.task_id)
        claimant = (task and task.claimed_by) or "worker-1"
        principal, role = claimant, "worker"
        task_id, clock = message.task_id, message.vclock
        attempt: int | None = message.attempt
        alive = task.alive_ns if task and task.alive_ns is not None else world.sim.now
        stored_ns: int | None = world.sim.now
        for miss in misses:
            if miss in ("attempt+1", "attempt-1"):
                attempt = (attempt or 0) + (1 if miss == "attempt+1" else -1)
            elif miss == "no_attempt":
                attempt = None
            elif miss == "clock_behind":
                entries = clock.to_dict()
                entries[COORDINATOR_NODE] = max(0, entries.get(COORDINATOR_NODE, 0) - 1)
                clock = VectorClock(entries)
            elif miss == "clock_empty":
                clock = VectorClock()
            elif miss == "other_worker":
                principal = "worker-2" if claimant == "worker-1" else "worker-1"
            elif miss in ("client", "coordinator"):
                principal, role = OPERATOR if miss == "client" else COORDINATOR
            elif miss == "other_task":
                task_id = next(t for t in TASK_IDS if t != task_id)
            else:
                silence = RULES.claim_timeout_ns - (miss == "almost_silent_claimant")
                stored_ns = alive + silence
        event = Event(
            id=task_key(WF, task_id, 0, f"near_miss:{world.seq}"),
            type=kind,
            workflow_id=WF,
            source=principal,
            timestamp=world.sim.tick(),
            vclock=clock,
            data=payload(kind, knobs, task_id, 0),
            task_id=task_id,
            attempt=attempt,
        )
        world.handle(world.sign(event, principal, role, stored_ns))

    def attack(
        self,
        kind: EventType,
        sender: tuple[str, str],
        task_id: str | None,
        attempt: str | int,
        clock: Clock,
        stored: str | int,
        knobs: Knobs,
    ) -> None:
        """Build the forged event from the choices, resolved against the current
        state, and hand it to the coordinator."""
        world = self.world
        state = world.state
        if task_id == "live":
            live = world.live()
            task_id = live[0].task_id if live else "plain"
        task = state.tasks.get(task_id) if task_id is not None else None
        principal, role = sender
        if principal == "claimant":
            principal = (task.claimed_by if task else None) or "worker-1"
        event = Event(
            id=task_key(WF, str(task_id), 0, f"forged:{world.seq}"),
            type=kind,
            workflow_id=WF,
            source=principal,
            timestamp=self.timestamp(knobs.timestamp),
            vclock=self.clock(clock, task_id),
            data=payload(kind, knobs, task_id, self.due_ns(knobs.due, task)),
            task_id=task_id,
            attempt=self.attempt(attempt, task),
        )
        event = world.sign(event, principal, role, self.stored_ns(stored, task))
        before = state.model_copy(deep=True)
        handled = world.handle(event)
        if world.secure and kind in (
            EventType.INTERVENTION_REQUESTED,
            EventType.WORKFLOW_RESUME_REQUESTED,
        ):
            self.check_rbac(event, handled, before)

    def check_rbac(self, event: Event, handled: Handled, before: WorkflowState) -> None:
        """Signed, a principal without workflow:* never steers the workflow."""
        assert event.signer is not None
        if event.signer_role == "coordinator" or POLICY.context(event.signer).can("workflow:*"):
            return
        assert not isinstance(handled.verdict, Admit), event
        state = self.world.state
        assert (state.interventions, state.resumes) == (before.interventions, before.resumes)
        emitted = {c.event.type for c in handled.commands if isinstance(c, Emit)}
        assert not emitted & {EventType.INTERVENTION_APPLIED, EventType.WORKFLOW_RESUMED}

    # Resolving the attacker's choices against the current state --------------------
    def timestamp(self, choice: str) -> int:
        return {"now": self.world.sim.tick(), "zero": 0, "int64_max": MAX_COUNTER}[choice]

    def attempt(self, choice: str | int, task: TaskState | None) -> int | None:
        if isinstance(choice, int):
            return choice
        current = task.attempts if task else 1
        return {
            "none": None,
            "current": current,
            "next": current + 1,
            "previous": current - 1,
            "zero": 0,
            "max": MAX_COUNTER,
        }[choice]

    def clock(self, choice: Clock, task_id: str | None) -> VectorClock:
        """The dispatch clock of the task's current attempt, a clock just behind it,
        the workflow's own, wide or huge ones."""
        world = self.world
        task = world.state.tasks.get(task_id) if task_id is not None else None
        dispatched = VectorClock({COORDINATOR_NODE: task.dispatch_coord} if task else {})
        for message in world.dispatched:
            if task is not None and (message.task_id, message.attempt) == (
                task_id,
                task.attempts,
            ):
                dispatched = message.vclock
        if choice.shape == "empty":
            return VectorClock()
        if choice.shape == "dispatch":
            return dispatched
        if choice.shape == "behind":
            entries = dispatched.to_dict()
            entries[COORDINATOR_NODE] = max(0, entries.get(COORDINATOR_NODE, 0) - 1)
            return VectorClock(entries)
        if choice.shape == "workflow":
            return world.state.vclock
        if choice.shape == "plus_one":
            return world.state.vclock.merge({"evil": max(1, choice.counter)})
        if choice.shape == "wide":
            return dispatched.merge({f"n{i}": max(1, choice.counter) for i in range(choice.width)})
        if choice.shape == "near_limit":  # the coordinator's next increment would overflow
            return dispatched.merge({COORDINATOR_NODE: COUNTER_LIMIT - choice.width})
        if choice.shape == "fill":  # junk entries up to the bound: no newcomer would fit
            room = MAX_CLOCK - len(dispatched) - 1
            return dispatched.merge({f"j{i}": 1 for i in range(max(room, 0))})
        return dispatched.merge({COORDINATOR_NODE: choice.counter, "evil": choice.counter})

    def stored_ns(self, choice: str | int, task: TaskState | None) -> int | None:
        if isinstance(choice, int):
            return choice
        alive = task.alive_ns if task and task.alive_ns is not None else self.world.sim.now
        return {
            "none": None,
            "now": self.world.sim.now,
            "alive": alive,
            "claim_timeout": alive + RULES.claim_timeout_ns,
            "claim_timeout-1": alive + RULES.claim_timeout_ns - 1,
            "max": MAX_COUNTER,
        }[choice]

    def due_ns(self, choice: str, task: TaskState | None) -> int:
        """A timer's due time: the one the task's state waits for, zero, or another."""
        if choice == "zero":
            return 0
        if choice == "other" or task is None:
            return 12345
        if task.waiting is not None and task.waiting.due_ns is not None:
            return task.waiting.due_ns
        if task.auction is not None:
            return task.auction.due_ns
        return task.deadline_ns or 0

    # Checked after every step ----------------------------------------------------
    @invariant()
    def the_state_encodes_and_its_clock_is_bounded(self) -> None:
        state = self.world.state
        data = state.to_snapshot()
        assert WorkflowState.from_snapshot(data).to_snapshot() == data
        assert len(state.vclock) <= MAX_CLOCK, state.vclock
        assert all(0 < counter < 2**63 for counter in state.vclock.values()), state.vclock
        # ... and far from its limits: one event cannot freeze the workflow
        assert all(counter < 2**40 for counter in state.vclock.values()), state.vclock

    @invariant()
    def task_counts_add_up(self) -> None:
        state = self.world.state
        done = sum(
            1
            for t in state.tasks.values()
            if t.status in (TaskStatus.COMPLETED, TaskStatus.SKIPPED)
        )
        assert state.completed == done


TestAdmissionUnderAttack = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)(AdmissionMachine).TestCase


# Findings (bugs this machine found, fixed; kept as regressions) -----------------------


def test_a_runners_timestamp_cannot_make_the_state_unencodable() -> None:
    """A timestamp of 2**64-1 once armed a retry due past 2**64: the state no
    longer encoded. The codec now bounds timestamps to 2**63-1."""
    sim = Sim()
    task = only_dispatch(sim.submit(definition({"id": "t", "capability": "x"})))
    subject, headers, body = encode_event(sim.failed(task), NAMES)
    raw = unpack(body)
    raw["ts"] = 2**64 - 1  # the largest integer msgpack carries
    with pytest.raises(MalformedMessageError, match="invalid timestamp"):
        decode_event(subject, headers, pack(raw), NAMES)
    raw["ts"] = 2**63 - 1  # the largest admitted: the state still encodes
    failed = decode_event(subject, headers, pack(raw), NAMES)
    assert isinstance(admit(sim.state, failed, RULES), Admit)
    state, _ = apply(sim.state, failed)
    assert state is not None
    state.to_snapshot()


def test_a_runner_cannot_put_its_deadlines_off_with_a_time_to_come() -> None:
    """A runner's task.started, failure or approval request once set the task's
    deadline, retry or expiry from its own timestamp: 2**63-1 put them off for
    ever (and past int64). They now count from when the server stored it."""
    sim = Sim()
    spec = {"id": "t", "capability": "x", "timeout_s": 10, "retry": QUICK_RETRY}
    task = only_dispatch(sim.submit(definition(spec)))
    started = sim.started(task)
    stored = started.timestamp
    lie = started.model_copy(update={"timestamp": 2**63 - 1, "stored_ns": stored})
    sim.state, commands = apply(sim.state, lie)
    (timer,) = [c for c in commands if isinstance(c, ArmTimer) and c.kind == "timeout"]
    assert timer.due_ns <= stored + 20 * 10**9
    failed = sim.failed(task)
    lie = failed.model_copy(update={"timestamp": 2**63 - 1, "stored_ns": failed.timestamp})
    sim.state, commands = apply(sim.state, lie)
    (retry,) = [c for c in commands if isinstance(c, ArmTimer) and c.kind == "retry"]
    assert retry.due_ns <= failed.timestamp + 60 * 10**9
    # Without a stored time (a test, a replay of an old record), deadlines are capped.
    sim.state, commands = apply(sim.state, sim.retry_due(retry))
    unstored = sim.started(only_dispatch(commands))
    sim.state, commands = apply(
        sim.state, unstored.model_copy(update={"timestamp": 2**63 - 1, "stored_ns": None})
    )
    (timer,) = [c for c in commands if isinstance(c, ArmTimer) and c.kind == "timeout"]
    assert timer.due_ns == 2**63 - 1
    assert sim.state is not None
    sim.state.to_snapshot()


def test_a_rejected_gate_is_asked_again_after_a_resume() -> None:
    """A resume once dispatched a task whose gate was rejected (its message
    carrying the rejection): a rejected gate is now asked again."""
    world = World(secure=True)
    world.handle(world.sign(submitted(definition(DEFN_GATE), ts=world.sim.tick()), *OPERATOR))
    world.handle(world.sign(world.person("reject", task_id="pay"), *OPERATOR))
    assert world.state.status == WorkflowStatus.FAILED
    handled = world.handle(world.sign(world.resume_request(None), *OPERATOR))
    assert isinstance(handled.verdict, Admit)
    sent = [task for task in dispatches(handled.commands) if task.task_id == "pay"]
    assert all(task.approval is not None and task.approval.approved for task in sent), sent
    assert world.state.tasks["pay"].status == TaskStatus.WAITING_APPROVAL

"""Admission: whether the coordinator may fold an event at all.

A pure function, ``admit(state, event, rules) -> Admit | Ignore | Refuse``, run
before the reducer on every event the coordinator consumes (and by replay and
crash recovery, over the same stream). It decides from the event, its sender's
verified identity (``event.signer`` and ``event.signer_role`` when signatures
are checked; only the unverifiable ``AF-Source`` otherwise) and the current
workflow state. No I/O, no clock reads.

* **Admit**: fold it.
* **Ignore**: a harmless leftover of at-least-once delivery (a duplicate, an
  outcome of an attempt that was superseded or already settled, anything for a
  finished workflow): not folded, its clock not merged, nothing recorded.
* **Refuse(code, reason)**: the sender may not say this. Not folded, its clock
  not merged; the shell acks it, records it once (``message.rejected``, or
  ``workflow.intervention_refused`` for an intervention) and audits it.

Rules, in order:

1. **Clocks are bounded**: at most ``max_clock_entries`` entries, and merging
   it may not grow the workflow's clock past that; an event adds no entry but
   its sender's (and the coordinator's own two), and moves no entry more than
   :data:`MAX_STEP` past the workflow's; counters below :data:`COUNTER_LIMIT`
   (headroom under 2^63 for our own increments). Node ids and the 19-digit
   bound are checked when the header is parsed.
2. **Unknown workflows**: only a submission (or the coordinator's own
   rejection of one) may name a workflow that does not exist.
3. **Submissions**: a child link (``parent``) only from a coordinator, under
   the child id derived from the parent's task and attempt (and a task that runs
   no child refuses a report from one);
   ``reuse`` only for a fork or rerun (``origin``), which need
   ``workflow:fork`` / ``workflow:rerun``. With a policy, every capability
   the definition runs (its child workflows' included) needs
   ``workflow:submit:<capability>`` (code ``forbidden``); without one,
   anyone who may publish a submission may submit anything.
4. **RBAC** for every intervention (``workflow:<action>``; see
   :func:`~agenticflow.shared.security.rbac.intervention_permissions` for cancel,
   terminate and abort) and every resume or
   re-run (``workflow:resume``, which ``dlq retry`` sends too). Signed
   coordinators are exempt (relayed parent interventions, oversize aborts).
5. **Outcomes** (``task.started/completed/failed/heartbeat``, approval
   requests, recorded effects) name an attempt; it must be the one currently
   dispatched and not settled, with a clock that reaches the dispatch's
   coordinator entry. A task running a child workflow is settled only by that
   child's report. With signatures, the principal whose signed
   ``task.started`` claimed the attempt is the only one that may settle it; a
   different principal may take the claim over only once the claimant has been
   silent for ``claim_timeout_ns`` (server time), as when JetStream redelivers
   the task of a dead worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agenticflow.coordinator.state import (
    COORDINATOR_NODE,
    TaskState,
    TaskStatus,
    WorkflowState,
    WorkflowStatus,
)
from agenticflow.shared.graph.hierarchy import CHILD_CAPABILITY, ParentLink, child_workflow_id
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.security.rbac import Policy, intervention_permissions
from agenticflow.shared.wire.events import (
    FORBIDDEN,
    Event,
    EventType,
    InterventionRequested,
    Modification,
    TaskApprovalRequested,
    TaskBid,
    WorkflowResumeRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.vclock import MAX_COUNTER, VectorClock

COUNTER_LIMIT = MAX_COUNTER - 2**32
MAX_STEP = 2**32
"""Most an event may move one clock entry past the workflow's: no node publishes
2^32 events about one workflow, and 2^63 stays out of reach."""
_COORDINATOR_ENTRIES = (COORDINATOR_NODE, "coord-shell")
_CHILD_HEAD = 32
"""A child's id begins with (at least this much of) its parent's."""
"""The coordinator's own entries: any of its events may add them."""
"""Largest clock counter admitted: the coordinator increments merged entries, and
a counter that could reach 2^63 would make the workflow's state unencodable."""

OUTCOMES = frozenset(
    {
        EventType.TASK_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TASK_HEARTBEAT,
        EventType.TASK_APPROVAL_REQUESTED,
        EventType.TASK_EFFECT_RECORDED,
    }
)
"""What the runner of a dispatched attempt reports about it."""
_SETTLING = frozenset(
    {EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_APPROVAL_REQUESTED}
)
"""Outcomes that end an attempt."""
_RECORDS = frozenset({EventType.MESSAGE_REJECTED, EventType.INTERVENTION_REFUSED})
"""Records of refusals: folded (for their clock) only when a coordinator made them."""
_TASK_DISPATCHED = frozenset({TaskStatus.SCHEDULED, TaskStatus.RUNNING})
ADMISSION_CODES = frozenset(
    {
        FORBIDDEN,
        "clock_too_large",
        "clock_overflow",
        "clock_jump",
        "clock_foreign_entries",
        "unknown_workflow",
        "wrong_role",
        "malformed_request",
    }
)
"""Codes of refusals that admission (not the reducer) makes of an intervention:
replay skips a request refused with one of them, as the coordinator did."""


@dataclass(frozen=True, slots=True)
class Admit:
    """Fold the event."""


@dataclass(frozen=True, slots=True)
class Ignore:
    """Skip the event without a record (a duplicate or a late leftover)."""

    why: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """The sender may not say this: record the refusal, change nothing."""

    code: str
    reason: str


Verdict = Admit | Ignore | Refuse
ADMIT = Admit()


@dataclass(frozen=True, slots=True)
class Rules:
    """What admission checks against besides the state (one per coordinator)."""

    max_clock_entries: int = 64
    claim_timeout_ns: int = 30_000_000_000
    """Silence of a claimant after which another principal may claim its attempt
    (the task queue's ack_wait: JetStream redelivers no sooner)."""
    policy: Policy | None = None
    """RBAC; None: anyone who may publish the event may steer, and submit any
    capability."""


REPLAY_RULES = Rules(max_clock_entries=4096, claim_timeout_ns=0)
"""Rules replay uses: the refusals that depended on configuration are recorded
in the stream (``message.rejected``) and skipped by their sequence instead."""


_EMPTY = VectorClock()


def sender(event: Event) -> str:
    """Who sent it: the verified signer, else the node the event names."""
    return event.signer or event.source


def admit(  # noqa: PLR0911 - one return per rule reads best
    state: WorkflowState | None, event: Event, rules: Rules
) -> Verdict:
    """Whether to fold ``event`` into ``state`` (None: no such workflow yet)."""
    refused = _clock(state, event, rules)
    if refused is not None:
        return refused
    kind = event.type
    if kind in _RECORDS:
        if state is None or (event.signer_role not in (None, "coordinator")):
            return Ignore("a record of a refusal")
        return ADMIT
    if state is None:
        return _unknown(event, rules)
    if kind == EventType.WORKFLOW_SUBMITTED:
        return _existing(state, event)
    if kind == EventType.WORKFLOW_REJECTED:
        return ADMIT if _is_coordinator(event) else _wrong_role(event)
    if kind == EventType.INTERVENTION_REQUESTED:
        return _intervention(state, event, rules)
    if kind == EventType.WORKFLOW_RESUME_REQUESTED:
        return _resume(event, rules)
    if kind in OUTCOMES or kind == EventType.TASK_BID:
        return _outcome(state, event, rules)
    # The coordinator's own events (timers, hints, echoes of its decisions): the
    # seal already lets only coordinators sign them.
    if not _is_coordinator(event):
        return _wrong_role(event)
    return ADMIT


def _existing(state: WorkflowState, event: Event) -> Verdict:
    """A submission for a workflow that exists: nothing new starts. A child's
    start whose id another workflow took first is refused, so the parent task
    fails (see :func:`agenticflow.coordinator.children.id_taken`) instead of
    waiting for ever."""
    data = event.data
    link = data.parent if isinstance(data, WorkflowSubmitted) else None
    if link is None or not _is_coordinator(event):
        return Ignore("the workflow exists already")
    mine = state.parent
    if mine is not None and (mine.workflow_id, mine.task_id, mine.attempt) == (
        link.workflow_id,
        link.task_id,
        link.attempt,
    ):
        return Ignore("the child workflow exists already (a re-sent start)")
    return Refuse(
        CHILD_ID_TAKEN,
        f"child workflow id {event.workflow_id!r} of task {link.task_id!r} of "
        f"{link.workflow_id!r} is taken by a workflow that is not that task's child",
    )


def _is_coordinator(event: Event) -> bool:
    return event.signer_role in (None, "coordinator")


def _wrong_role(event: Event) -> Refuse:
    return Refuse(
        "wrong_role",
        f"{sender(event)} ({event.signer_role}) may not send {event.type.value}",
    )


def _clock(state: WorkflowState | None, event: Event, rules: Rules) -> Refuse | None:
    clock = event.vclock
    limit = rules.max_clock_entries
    if len(clock) > limit:
        return Refuse(
            "clock_too_large", f"its vector clock has {len(clock)} entries, more than {limit}"
        )
    known = state.vclock if state is not None else _EMPTY
    grows = False
    for node, counter in clock.items():
        if counter > COUNTER_LIMIT:
            return Refuse(
                "clock_overflow", f"its vector clock's counter for {node!r} is too close to 2^63"
            )
        mine = known.get(node)
        if counter - mine > MAX_STEP:
            return Refuse(
                "clock_jump",
                f"its vector clock moves {node!r} more than 2^32 ahead of the workflow's",
            )
        grows = grows or not mine
    return _growth(known, event, limit) if grows and state is not None else None


def _growth(known: VectorClock, event: Event, limit: int) -> Refuse | None:
    """Merging the event's clock adds only its sender's entry, within the bound."""
    new = [node for node in event.vclock if node not in known]
    foreign = [node for node in new if node not in (event.source, *_COORDINATOR_ENTRIES)]
    if foreign:
        return Refuse(
            "clock_foreign_entries",
            f"its vector clock adds entries for other nodes ({_listed(foreign)}): an event "
            "may add only its sender's",
        )
    if len(known) + len(new) > limit:
        return Refuse(
            "clock_too_large",
            f"merging its vector clock would give the workflow {len(known) + len(new)} "
            f"clock entries, more than {limit}",
        )
    return None


def _listed(nodes: list[str]) -> str:
    shown = ", ".join(repr(n) for n in nodes[:3])
    return shown + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")


def _unknown(event: Event, rules: Rules) -> Verdict:
    kind = event.type
    if kind == EventType.WORKFLOW_SUBMITTED:
        return _submission(event, rules)
    if kind == EventType.WORKFLOW_REJECTED:
        return ADMIT if _is_coordinator(event) else _wrong_role(event)
    return Refuse("unknown_workflow", f"no workflow {event.workflow_id!r} has been submitted")


CHILD_ID_TAKEN = "child_id_taken"
"""Refusal of a child's start whose id another workflow took first."""

RESERVED_ID = re.compile(r"-\d{8}T\d{6}Z\Z")
"""Workflow ids only coordinators give: a schedule run's (a tick's time).
(A child workflow's id cannot be told apart from a client's id that ends in a
UUID; see the security guide.)"""


def _submission(event: Event, rules: Rules) -> Verdict:
    data = event.data
    if not isinstance(data, WorkflowSubmitted):
        return Refuse("malformed_request", "a workflow.submitted event without a submission")
    if data.reuse and data.origin is None:
        return Refuse(
            "reuse_without_origin",
            "a submission may reuse results only as a fork or rerun of another workflow",
        )
    if data.parent is not None:
        return _child_link(event, data.parent)
    if event.signer_role not in (None, "coordinator") and RESERVED_ID.search(event.workflow_id):
        # A schedule run's id is derived from its tick: taken first, the
        # schedule would count someone else's run as its own.
        return Refuse(
            "reserved_id",
            f"workflow id {event.workflow_id!r} has the form of a schedule run's "
            "(NAME-YYYYMMDDTHHMMSSZ), which only coordinators start",
        )
    if data.origin is not None:
        permission = f"workflow:{'rerun' if data.origin.kind == 'rerun' else 'fork'}"
        verdict = _rbac(event, rules, permission, data.submitted_by)
        if verdict != ADMIT:
            return verdict
    return _capabilities(event, rules, data)


def _capabilities(event: Event, rules: Rules, data: WorkflowSubmitted) -> Verdict:
    """RBAC on what a submission runs: ``workflow:submit:<capability>`` for every
    capability of its definition, the child workflows' it will start included
    (a child's own submission comes from the coordinator and is not checked again)."""
    if rules.policy is None or event.signer_role == "coordinator":
        return ADMIT
    principal = event.signer or data.submitted_by or "anonymous"
    denial = rules.policy.context(principal).submit_denial(used_capabilities(data.definition))
    return ADMIT if denial is None else Refuse(FORBIDDEN, denial)


def used_capabilities(definition: WorkflowDefinition) -> set[str]:
    """Every capability ``definition`` runs, nested child workflows' included."""
    found: set[str] = set()
    stack = [definition]
    while stack:
        for task in stack.pop().tasks:
            if task.workflow is not None:
                stack.append(task.workflow)
            else:  # a wait node's is 'wait': workflow:submit:wait lets one wait
                found.add(task.capability)
    return found


def _child_link(event: Event, link: ParentLink) -> Verdict:
    """A child workflow's start: only from a coordinator, under its derived id."""
    if event.signer_role is not None and event.signer_role != "coordinator":
        return Refuse(
            "forged_child_link",
            f"{sender(event)} ({event.signer_role}) may not start a child workflow: "
            "only the coordinator that dispatched the parent task does",
        )
    if event.workflow_id != child_workflow_id(link.workflow_id, link.task_id, link.attempt):
        return Refuse(
            "forged_child_link",
            f"{event.workflow_id!r} is not the child workflow of attempt {link.attempt} "
            f"of task {link.task_id!r} of {link.workflow_id!r}",
        )
    return ADMIT


def _rbac(event: Event, rules: Rules, permission: str | tuple[str, ...], claimed: str) -> Verdict:
    """RBAC: the signer (else the name the event gives, which proves nothing)
    must hold ``permission`` (or one of them)."""
    if rules.policy is None or event.signer_role == "coordinator":
        return ADMIT
    principal = event.signer or claimed or "anonymous"
    wanted = (permission,) if isinstance(permission, str) else permission
    context = rules.policy.context(principal)
    if any(context.can(p) for p in wanted):
        return ADMIT
    return Refuse(FORBIDDEN, f"{principal} lacks permission {' or '.join(wanted)}")


def _intervention(state: WorkflowState, event: Event, rules: Rules) -> Verdict:
    data = event.data
    if not isinstance(data, InterventionRequested):
        return Refuse("malformed_request", "an intervention request without a request")
    verdict = _rbac(event, rules, intervention_permissions(data.action), data.by)
    if verdict != ADMIT or data.changes is None:
        return verdict
    if rules.policy is None or event.signer_role == "coordinator":
        return ADMIT
    return _modified(state, event, rules, data.changes, data.by)


def _modified(
    state: WorkflowState, event: Event, rules: Rules, changes: Modification, claimed: str
) -> Verdict:
    """What a modification needs beyond ``workflow:modify``.

    Removing a task that has an approval gate, or replacing it with one whose
    gate differs, decides that gate: ``workflow:approve`` too (else a modifier
    would skip the person the gate waits for). What it adds or replaces runs:
    the same submit rights as a submission of those tasks (nested child
    workflows' included)."""
    assert rules.policy is not None
    gated = {
        t.id: t.approval
        for t in (state.definition.tasks if state.definition is not None else ())
        if t.approval is not None
    }
    touched = [tid for tid in changes.remove if tid in gated]
    touched += [t.id for t in changes.replace if t.id in gated and t.approval != gated[t.id]]
    if touched:
        verdict = _rbac(event, rules, intervention_permissions("approve"), claimed)
        if isinstance(verdict, Refuse):
            gates = ", ".join(sorted(touched))
            return Refuse(verdict.code, f"{verdict.reason}: the change removes the gate of {gates}")
    tasks = (*changes.add, *changes.replace)
    if not tasks:
        return ADMIT
    principal = event.signer or claimed or "anonymous"
    runs = used_capabilities(WorkflowDefinition(name="modification", tasks=tasks))
    denial = rules.policy.context(principal).submit_denial(runs)
    return ADMIT if denial is None else Refuse(FORBIDDEN, denial)


def _resume(event: Event, rules: Rules) -> Verdict:
    data = event.data
    if not isinstance(data, WorkflowResumeRequested):
        return Refuse("malformed_request", "a resume request without a request")
    return _rbac(event, rules, "workflow:resume", data.requested_by)


def _outcome(  # noqa: PLR0911 - one return per rule reads best
    state: WorkflowState, event: Event, rules: Rules
) -> Verdict:
    kind, role = event.type, event.signer_role
    if role is not None and role not in ("worker", "coordinator"):
        return _wrong_role(event)
    if state.status != WorkflowStatus.RUNNING:
        return Ignore(f"the workflow is {state.status.value}")
    if isinstance(event.data, TaskApprovalRequested) and event.data.gate:
        return Ignore("the coordinator's own request at a gate")
    task_id = event.task_id
    task = state.tasks.get(task_id) if task_id is not None else None
    if task_id is None or task is None:
        return Refuse("unknown_task", f"workflow {state.workflow_id!r} has no task {task_id!r}")
    attempt = event.attempt
    if attempt is None:
        return Refuse("no_attempt", f"{kind.value} for task {task_id!r} names no attempt")
    if attempt > task.attempts:
        return Refuse(
            "not_dispatched",
            f"attempt {attempt} of task {task_id!r} was never dispatched "
            f"(the current attempt is {task.attempts})",
        )
    if attempt < task.attempts or attempt <= task.attempt_base:
        return Ignore("an outcome of a superseded attempt")
    if kind == EventType.TASK_BID:
        if task.status != TaskStatus.AUCTION:
            return Ignore("the auction is closed")
        if not isinstance(event.data, TaskBid) or event.data.worker != event.source:
            return Refuse("not_claimant", "a bid names another worker than its sender")
        return ADMIT
    if task.status not in _TASK_DISPATCHED:
        refused = _not_dispatched(task_id, task) if kind in _SETTLING else None
        return refused or Ignore("the attempt is settled")
    return _runner(state, task_id, event, rules)


def _not_dispatched(task_id: str, task: TaskState) -> Refuse | None:
    """The refusal of an outcome for a task that waits without a worker."""
    if task.status == TaskStatus.WAITING:
        return Refuse(
            "not_dispatched",
            f"task {task_id!r} is a 'wait:' node: only its time or a signal settles it",
        )
    if task.status in (TaskStatus.WAITING_APPROVAL, TaskStatus.AUCTION):
        return Refuse(
            "not_dispatched",
            f"task {task_id!r} is {task.status.value}: no attempt of it runs "
            "(only approve or reject settle a task that waits for approval)",
        )
    return None


def _runner(  # noqa: PLR0911 - one return per rule reads best
    state: WorkflowState, task_id: str, event: Event, rules: Rules
) -> Verdict:
    """Whether the sender runs the dispatched attempt of ``task_id``."""
    task = state.tasks[task_id]
    if task.capability == CHILD_CAPABILITY:  # (reserved: a task that runs a child)
        if event.source != task.child or not _is_coordinator(event):
            return Refuse(
                "not_claimant",
                f"task {task_id!r} runs child workflow {task.child!r}: only its report settles it",
            )
        return ADMIT
    if event.source.startswith(state.workflow_id[:_CHILD_HEAD]) and event.source == (
        child_workflow_id(state.workflow_id, task_id, task.attempts)
    ):
        return Refuse(
            "not_claimant", f"task {task_id!r} runs no child workflow: a child's report is refused"
        )
    if event.vclock.get(COORDINATOR_NODE) < task.dispatch_coord:
        return Refuse(
            "clock_behind_dispatch",
            f"its vector clock does not follow the dispatch of attempt {task.attempts} "
            f"of task {task_id!r}",
        )
    claimant = task.claimed_by
    if event.signer is None or claimant is None or event.signer == claimant:
        return ADMIT
    if event.signer_role == "coordinator":
        return ADMIT  # the shell fails a task whose message it cannot publish
    if (
        event.type == EventType.TASK_STARTED
        and event.stored_ns is not None
        and task.alive_ns is not None
        and event.stored_ns - task.alive_ns >= rules.claim_timeout_ns
    ):
        return ADMIT  # redelivered after its claimant went silent: the claim moves
    return Refuse(
        "not_claimant",
        f"attempt {task.attempts} of task {task_id!r} was claimed by {claimant}, "
        f"not {event.signer}",
    )


__all__ = [
    "ADMISSION_CODES",
    "ADMIT",
    "COUNTER_LIMIT",
    "OUTCOMES",
    "REPLAY_RULES",
    "Admit",
    "Ignore",
    "Refuse",
    "Rules",
    "Verdict",
    "admit",
    "sender",
    "used_capabilities",
]

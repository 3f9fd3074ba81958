"""The attacks of issue 19, each against the default and the secure cluster.

Every test attacks, waits for the coordinator's record of the refusal, then
checks that nothing changed and that the honest action (its control) still
works; the cluster keeps serving after each.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agenticflow.coordinator.admission import COUNTER_LIMIT
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.graph.hierarchy import ParentLink, child_workflow_id
from agenticflow.shared.security.identity import take_process_identity
from agenticflow.shared.wire.codec import (
    H_SCHEMA,
    H_VCLOCK,
    TaskMessage,
    encode_event,
    encode_task,
    pack,
    unpack,
)
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    InterventionRequested,
    MessageRejected,
    TaskCompleted,
    TaskFailed,
    TaskHeartbeat,
    TaskStarted,
    TaskWaitElapsed,
    WorkflowFailed,
    WorkflowResumeRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import uuid7
from agenticflow.shared.wire.vclock import VectorClock
from tests.integration.helpers import of_type, run, wf
from tests.security.conftest import Target, forged

pytestmark = pytest.mark.timeout(180)

LISTENING = {"id": "s", "capability": "listen", "params": {"timeout": 90}}
"""A task that runs until feedback arrives (``_finish``): no race with the attack."""

GATED = wf(
    {"id": "pay", "capability": "echo", "approval": {"required": True}, "params": {"to": "bob"}},
    {"id": "after", "capability": "echo", "depends_on": ["pay"]},
)


async def _gated(target: Target) -> WorkflowState:
    workflow_id = await target.client.submit(GATED)
    return await target.until_state(
        workflow_id, lambda s: s.tasks["pay"].status == TaskStatus.WAITING_APPROVAL
    )


async def _still_serving(target: Target) -> None:
    """A fresh workflow completes, and the coordinator process is alive."""
    state = await run(
        target.client, wf({"id": "fresh", "capability": "add", "params": {"value": 2}})
    )
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["fresh"].result == 2
    coordinator = target.cluster.coordinator
    assert coordinator is not None
    assert coordinator.poll() is None


async def _listening(target: Target) -> WorkflowState:
    """A workflow whose task ``s`` runs until feedback arrives, once it runs."""
    workflow_id = await target.client.submit(wf(LISTENING))
    return await target.until_state(
        workflow_id, lambda s: s.tasks["s"].status == TaskStatus.RUNNING
    )


async def _finish(target: Target, workflow_id: str) -> WorkflowState:
    """Wake the listening task with feedback; the workflow completes."""
    await target.client.feedback(workflow_id, "go on")
    state = await target.client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED
    assert state.tasks["s"].result["got"] == "go on"
    return state


async def _approve_and_finish(target: Target, victim: WorkflowState) -> WorkflowState:
    """The control: a person approves the gate; the genuine handler's result counts."""
    await target.client.approve(victim.workflow_id, "pay", "ok")
    state = await target.client.wait(victim.workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED
    result = state.tasks["pay"].result
    assert isinstance(result, dict)
    assert "forged" not in repr(result)
    return state


# 1. Fake child link --------------------------------------------------------------


async def test_a_fake_child_workflow_cannot_settle_another_workflows_task(target: Target) -> None:
    victim = await _gated(target)
    link = ParentLink(
        workflow_id=victim.workflow_id, task_id="pay", attempt=1, vclock=victim.vclock
    )
    fake = wf({"id": "t", "capability": "echo"})
    derived = child_workflow_id(victim.workflow_id, "pay", 1)
    seqs = []
    for workflow_id, reuse in (("fake-child-1", {"t": "forged"}), (derived, {"t": "forged"})):
        event = forged(
            workflow_id,
            EventType.WORKFLOW_SUBMITTED,
            WorkflowSubmitted(definition=fake, parent=link, reuse=reuse, submitted_by="mallory"),
        )
        seqs.append(await target.publish(event, as_="mallory"))
    codes = {(await target.rejection(seq)).code for seq in seqs}
    assert codes == {"reuse_without_origin"}
    # Without results to reuse, under the derived id: a coordinator's start only
    # (secure); else the fake child runs, and its report is what is refused.
    seq = await target.publish(
        forged(
            derived,
            EventType.WORKFLOW_SUBMITTED,
            WorkflowSubmitted(definition=fake, parent=link, submitted_by="mallory"),
        ),
        as_="mallory",
    )
    if target.secure:
        assert (await target.rejection(seq)).code == "forged_child_link"
    else:
        await target.client.wait(derived, timeout=60)
        await target.observer.until(
            lambda o: any(
                isinstance(e.data, MessageRejected) and e.data.code == "not_dispatched"
                for e in target.seen(victim.workflow_id, EventType.MESSAGE_REJECTED)
            )
        )
    state = await target.client.status(victim.workflow_id)
    assert state.tasks["pay"].status == TaskStatus.WAITING_APPROVAL
    assert state.tasks["pay"].result is None
    await _approve_and_finish(target, victim)


# 2. Outcome from the wrong worker -------------------------------------------------


async def test_an_outcome_cannot_settle_a_task_waiting_for_approval(target: Target) -> None:
    victim = await _gated(target)
    seqs = [
        await target.publish(
            forged(
                victim.workflow_id,
                EventType.TASK_COMPLETED,
                TaskCompleted(result={"forged": True}, worker="w-evil", agent="echo"),
                source="w-evil",
                vclock=victim.vclock.increment("w-evil"),
                task_id="pay",
                attempt=attempt,
            ),
            as_="worker-2",
        )
        for attempt in (None, 1)
    ]
    codes = [(await target.rejection(seq)).code for seq in seqs]
    assert codes == ["no_attempt", "not_dispatched"]
    state = await target.client.status(victim.workflow_id)
    assert state.tasks["pay"].status == TaskStatus.WAITING_APPROVAL
    assert state.tasks["after"].status == TaskStatus.PENDING
    await _approve_and_finish(target, victim)


async def test_only_the_worker_that_claimed_an_attempt_settles_it(target: Target) -> None:
    if not target.secure:
        pytest.skip("without keys no sender is known: the attempt and clock rules apply")
    started = await _listening(target)
    workflow_id = started.workflow_id
    # Claimed by the worker process's own identity, not its group's principal.
    claimant = started.tasks["s"].claimed_by
    assert claimant is not None
    assert claimant.startswith("worker/")
    # Another group's key, and the same group's key (what any process of the
    # group holds): neither is the claiming process.
    for as_ in ("worker-2", "worker"):
        seq = await target.publish(
            forged(
                workflow_id,
                EventType.TASK_COMPLETED,
                TaskCompleted(result="forged", worker="w-evil"),
                source="w-evil",
                vclock=started.vclock.increment("w-evil"),
                task_id="s",
                attempt=1,
            ),
            as_=as_,
        )
        rejected = await target.rejection(seq)
        assert (rejected.code, rejected.sender) == ("not_claimant", as_)
    await _finish(target, workflow_id)


# 3. Outcome for an attempt never dispatched ---------------------------------------


async def test_an_outcome_for_an_attempt_never_dispatched_is_refused(target: Target) -> None:
    workflow_id = await target.client.submit(
        wf(
            LISTENING,
            {"id": "next", "capability": "echo", "depends_on": ["s"]},
        )
    )
    running = await target.until_state(
        workflow_id, lambda s: s.tasks["s"].status == TaskStatus.RUNNING
    )
    seq = await target.publish(
        forged(
            workflow_id,
            EventType.TASK_COMPLETED,
            TaskCompleted(result="forged", worker="w-evil"),
            source="w-evil",
            vclock=running.vclock.increment("w-evil"),
            task_id="s",
            attempt=5,
        ),
        as_="worker-2",
    )
    rejected = await target.rejection(seq)
    assert rejected.code == "not_dispatched"
    assert "attempt 5" in rejected.reason
    state = await _finish(target, workflow_id)
    assert state.tasks["next"].result["inputs"]["s"] == state.tasks["s"].result
    records = [
        e
        for e in target.seen(workflow_id, EventType.MESSAGE_REJECTED)
        if isinstance(e.data, MessageRejected) and e.data.stream_seq == seq
    ]
    assert len(records) == 1, "recorded once"


# 4. Resume and re-run check RBAC --------------------------------------------------


async def test_a_resume_without_permission_runs_nothing_again(target: Target) -> None:
    if not target.secure:
        pytest.skip("RBAC needs signatures: without keys anyone may steer (documented)")
    state = await run(target.client, wf({"id": "charge", "capability": "echo"}))
    assert state.status == WorkflowStatus.COMPLETED
    seq = await target.publish(
        forged(
            state.workflow_id,
            EventType.WORKFLOW_RESUME_REQUESTED,
            WorkflowResumeRequested(from_task="charge", requested_by="client"),
            vclock=state.vclock.increment("mallory"),
        ),
        as_="mallory",
    )
    rejected = await target.rejection(seq)
    assert rejected.code == "forbidden"
    assert rejected.reason == "mallory lacks permission workflow:resume"
    events = await target.client.events(state.workflow_id)
    assert not of_type(events, EventType.WORKFLOW_RESUMED)
    assert len(of_type(events, EventType.TASK_STARTED)) == 1, "the side effect ran once"
    # the control: the operator may re-run it
    await target.client.resume(state.workflow_id, from_task="charge")
    final = await target.client.wait_for_resume(state.workflow_id, 1, timeout=60)
    assert final.status == WorkflowStatus.COMPLETED
    assert len(of_type(await target.client.events(state.workflow_id), EventType.TASK_STARTED)) == 2


# 5-7. Poison headers, clock overflow, clock bloat, unknown workflows -------------


async def test_no_poison_stops_the_coordinator(target: Target) -> None:
    running = await _listening(target)
    workflow_id = running.workflow_id
    clock = running.vclock.increment("w-evil")
    beat = forged(
        workflow_id,
        EventType.TASK_HEARTBEAT,
        TaskHeartbeat(worker="w-evil"),
        source="w-evil",
        vclock=clock,
        task_id="s",
        attempt=1,
    )

    def header(name: str, value: str) -> Callable[[dict[str, str]], None]:
        return lambda headers: headers.__setitem__(name, value)

    wide = VectorClock({f"n{i:03}": 1 for i in range(600)})
    resume = forged(
        workflow_id,
        EventType.WORKFLOW_RESUME_REQUESTED,
        WorkflowResumeRequested(requested_by="client"),
        vclock=wide,
    )
    pause = forged(
        workflow_id,
        EventType.INTERVENTION_REQUESTED,
        InterventionRequested(request_id="bloat", action="pause", by="client"),
        vclock=VectorClock({f"m{i:03}": 1 for i in range(65)}),
    )
    attacks = {
        "schema of 4,400 digits": (beat, "worker", header(H_SCHEMA, "1" * 4400), None),
        "counter of 2^64": (beat, "worker", header(H_VCLOCK, f"x:{2**64}"), None),
        "counter of 2^63 - 1": (beat, "worker", header(H_VCLOCK, f"x:{2**63 - 1}"), None),
        "600-entry clock": (resume, "client", None, None),
        "not msgpack": (beat, "worker", None, b"\xc1\xc1\xc1"),
    }
    expected = {
        "schema of 4,400 digits": "malformed_message",
        "counter of 2^64": "malformed_message",
        "counter of 2^63 - 1": "clock_overflow",
        "600-entry clock": "clock_too_large",
        "not msgpack": "malformed_message",
    }
    seqs: dict[str, int] = {}
    for name, (event, principal, alter, body) in attacks.items():
        seqs[name] = await target.publish(
            event.model_copy(update={"id": f"{event.id}-{len(seqs)}"}),
            as_=principal,
            headers=alter,
            body=body,
        )
    codes = {name: (await target.rejection(seq)).code for name, seq in seqs.items()}
    assert codes == expected
    # An intervention refused by admission is answered as one: its sender waits for it.
    await target.publish(pause, as_="client")
    await target.observer.until(
        lambda o: any(
            getattr(e.data, "request_id", None) == "bloat"
            and e.type == EventType.INTERVENTION_REFUSED
            for _, e in o.seen
        )
    )
    state = await _finish(target, workflow_id)
    assert not state.paused
    assert len(state.vclock) <= target.bus.settings.max_clock_entries
    assert max(state.vclock.values()) < 2**62
    await _still_serving(target)


async def test_events_for_unknown_workflows_are_refused_and_recorded(target: Target) -> None:
    seq = await target.publish(
        forged(
            "nobody-submitted-this",
            EventType.TASK_COMPLETED,
            TaskCompleted(result="forged"),
            task_id="t",
            attempt=1,
        ),
        as_="worker-2",
    )
    rejected = await target.rejection(seq)
    assert rejected.code == "unknown_workflow"
    await _still_serving(target)


async def test_a_task_message_no_coordinator_dispatched_is_not_run(target: Target) -> None:
    workflow_id = "ghost-" + uuid7()[-12:]
    task = TaskMessage(workflow_id=workflow_id, task_id="t", attempt=1, capability="echo")
    subject, headers, body = encode_task(task, target.bus.names, seal=target.seal("mallory"))
    await target.bus.publish_raw(subject, body, headers)
    await target.observer.until(
        lambda o: bool(target.seen(workflow_id, EventType.MESSAGE_REJECTED)), timeout=30
    )
    (rejected,) = [e.data for e in target.seen(workflow_id, EventType.MESSAGE_REJECTED)]
    assert isinstance(rejected, MessageRejected)
    assert rejected.code == "forged_message"
    assert not target.seen(workflow_id, EventType.TASK_STARTED), "the handler never ran"
    await _still_serving(target)


async def test_a_refusal_that_cannot_be_written_stops_nothing(target: Target) -> None:
    # An intervention whose request id holds a line feed, or is 600 KB long: its
    # refusal record would repeat the id in a header. Refused as unreadable.
    running = await _listening(target)
    workflow_id = running.workflow_id
    request = forged(
        workflow_id,
        EventType.INTERVENTION_REQUESTED,
        InterventionRequested(request_id="placeholder", action="pause", by="client"),
        source="client",
        vclock=running.vclock.increment("client"),
    )
    _, _, plain = encode_event(request, target.bus.names)
    seqs: list[int] = []
    for bad in ("x\ny", "r" * 600_000):
        body = unpack(plain)
        body["data"]["request_id"] = bad
        seqs.append(
            await target.publish(
                request.model_copy(update={"id": f"{request.id}-{len(seqs)}"}),
                as_="client",
                body=pack(body),
            )
        )
    codes = [(await target.rejection(seq)).code for seq in seqs]
    assert codes == ["malformed_message", "malformed_message"]
    assert not (await target.client.status(workflow_id)).paused
    await _finish(target, workflow_id)
    await _still_serving(target)


async def test_a_huge_failure_message_does_not_jam_the_coordinator(target: Target) -> None:
    # A 600 KB error message: the workflow's failure repeats it twice (over 1 MiB).
    # Sent by the process that claimed the attempt (in secure mode: a compromised
    # worker process with its own identity; the genuine worker cuts messages).
    if target.secure:
        node = f"w-evil-{uuid7()[-8:]}"
        principal = await target.process(node)
        workflow_id = await target.client.submit(wf(LISTENING), route="nobody-serves-this")
        scheduled = await target.until_state(
            workflow_id, lambda s: s.tasks["s"].status == TaskStatus.SCHEDULED
        )
        clock = scheduled.vclock.increment(node)
        await target.publish(
            forged(
                workflow_id,
                EventType.TASK_STARTED,
                TaskStarted(worker=node, agent="listen", instance=f"{node}.listen.0"),
                source=node,
                vclock=clock,
                task_id="s",
                attempt=1,
            ),
            as_=node,
        )
        running = await target.until_state(
            workflow_id, lambda s: s.tasks["s"].status == TaskStatus.RUNNING
        )
        assert running.tasks["s"].claimed_by == principal
        worker, as_ = node, node
    else:
        running = await _listening(target)
        workflow_id = running.workflow_id
        worker, as_ = running.tasks["s"].worker or "w", "worker"
    failure = TaskFailed(
        error=ErrorInfo(type="Boom", message="m" * 600_000, retryable=False),
        worker=worker,
    )
    await target.publish(
        forged(
            workflow_id,
            EventType.TASK_FAILED,
            failure,
            source=worker,
            vclock=running.vclock.increment(worker),
            task_id="s",
            attempt=1,
        ),
        as_=as_,
    )
    state = await target.client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.FAILED
    (failed,) = target.seen(workflow_id, EventType.WORKFLOW_FAILED)
    assert isinstance(failed.data, WorkflowFailed)
    assert "characters, cut" in failed.data.reason
    await _still_serving(target)


async def test_one_event_cannot_freeze_a_workflows_clock(target: Target) -> None:
    # A counter next to the limit on the coordinator's entry (its next increment
    # would overflow), or 60 junk entries (new nodes would not fit): both refused.
    running = await _listening(target)
    workflow_id = running.workflow_id
    worker = running.tasks["s"].worker or "w"

    def beat(clock: VectorClock) -> Event:
        return forged(
            workflow_id,
            EventType.TASK_HEARTBEAT,
            TaskHeartbeat(worker=worker),
            source=worker,
            vclock=clock,
            task_id="s",
            attempt=1,
        )

    near = running.vclock.merge({"coord": COUNTER_LIMIT}).increment(worker)
    junk = running.vclock.merge({f"j{i}": 1 for i in range(60)}).increment(worker)
    codes = [
        (await target.rejection(await target.publish(beat(clock), as_="worker"))).code
        for clock in (near, junk)
    ]
    assert codes == ["clock_jump", "clock_foreign_entries"]
    # the honest actions still work: an intervention from a new client, the outcome
    state = await _finish(target, workflow_id)
    assert state.vclock.get("coord") < 2**32


# Per-process identities -----------------------------------------------------------------


async def test_a_node_id_is_issued_once(target: Target) -> None:
    """A holder of the group key cannot take the identity of a running process."""
    if target.keys is None:
        pytest.skip("no keys: no identities")
    workers = [i for i in await target.client.agents() if i.get("role") == "worker"]
    assert workers
    taken = str(workers[0]["worker"])
    settings = target.bus.settings.model_copy(update={"principal": "worker"})
    bus = await Bus.connect(settings, name="identity-thief", role="worker")
    try:
        with pytest.raises(ConfigError, match="has a process identity already"):
            await take_process_identity(bus, taken, timeout=30)
        assert bus.seal.certificate is None  # still only the group key
        # A new node id is issued (the control).
        principal = await target.process(f"{taken}-fresh")
        assert principal == f"worker/{taken}-fresh"
    finally:
        await bus.close()


async def test_a_wait_node_is_settled_only_by_its_time_or_its_signal(target: Target) -> None:
    """A worker's outcome for a ``wait:`` node, and a ``task.wait_elapsed`` from a
    worker, are refused and change nothing; the genuine signal completes it."""
    workflow_id = await target.client.submit(
        wf(
            {"id": "hold", "wait": {"signal": "go", "timeout": "1h"}},
            {"id": "after", "capability": "echo", "depends_on": ["hold"]},
        )
    )
    victim = await target.until_state(
        workflow_id, lambda s: s.tasks["hold"].status == TaskStatus.WAITING
    )
    due = victim.tasks["hold"].deadline_ns or 0
    attacks = [
        (
            EventType.TASK_COMPLETED,
            TaskCompleted(result={"forged": True}, worker="w-evil", agent="echo"),
        ),
        (EventType.TASK_WAIT_ELAPSED, TaskWaitElapsed(due_ns=due)),
    ]
    if not target.secure:  # without keys nothing tells a worker from a coordinator
        attacks = attacks[:1]
    seqs = [
        await target.publish(
            forged(
                workflow_id,
                kind,
                data,
                source="w-evil",
                vclock=victim.vclock.increment("w-evil"),
                task_id="hold",
                attempt=1,
            ),
            as_="worker-2",
        )
        for kind, data in attacks
    ]
    codes = [(await target.rejection(seq)).code for seq in seqs]
    # (a worker may not even sign a task.wait_elapsed: the seal refuses it first)
    assert codes == ["not_dispatched", "forged_message"][: len(attacks)]
    state = await target.client.status(workflow_id)
    assert state.tasks["hold"].status == TaskStatus.WAITING
    await target.client.signal(workflow_id, "go", {"ok": True})
    done = await target.client.wait(workflow_id, timeout=60)
    assert done.status == WorkflowStatus.COMPLETED
    assert done.tasks["hold"].result == {"ok": True}

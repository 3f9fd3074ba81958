"""The reducer: the coordinator's pure ``(state, event) -> (state, commands)`` core.

Tests drive it with hand-made events. :class:`Sim` plays the rest of the system
around it: the workers (a dispatched task comes back as ``task.started`` and
``task.completed`` whose clock merges the dispatch clock and ticks the worker's
own entry) and the shell (a retry timer comes back as ``task.retry_due``, a
timeout timer as ``task.timed_out``). Like the real coordinator, whose durable
consumer reads every event subject, the simulated coordinator also folds the
events it emitted itself, in stream order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.coordinator.reducer import (
    COORDINATOR_NODE,
    SHELL_NODE,
    TIMEOUT_GRACE_NS,
    ArmTimer,
    Command,
    Dispatch,
    Emit,
    fold,
    pending_timers,
    reduce,
)
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.graph.dag import sinks
from agenticflow.shared.graph.workflow import RetryPolicy, WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.codec import TaskMessage
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    Payload,
    TaskCompleted,
    TaskFailed,
    TaskRetryDue,
    TaskRetryScheduled,
    TaskScheduled,
    TaskStarted,
    TaskTimedOut,
    TaskUnserved,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowStarted,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.vclock import Ordering, VectorClock

WF = "wf1"
T0 = 1_700_000_000_000_000_000
STEP_NS = 1_000_000
ERROR = ErrorInfo(type="ValueError", message="boom")
QUICK_RETRY = {"max_attempts": 3, "initial_interval_s": 0.25, "backoff": 2.0}
"""Back-off delays that are exact in binary: 0.25 s, then 0.5 s."""


# Builders -------------------------------------------------------------------


def definition(*tasks: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    """A definition from plain task mappings."""
    return parse_workflow({"name": "test", "tasks": list(tasks), **extra})


DIAMOND = definition(
    {"id": "a", "capability": "fetch", "params": {"url": "https://x"}},
    {"id": "b", "capability": "work", "depends_on": ["a"]},
    {"id": "c", "capability": "work", "depends_on": ["a"]},
    {"id": "d", "capability": "merge", "depends_on": ["b", "c"]},
)


def submitted(
    defn: WorkflowDefinition, *, workflow_input: dict[str, Any] | None = None, ts: int = T0
) -> Event:
    """The client's ``workflow.submitted`` event."""
    return Event(
        id=workflow_key(WF, "submitted"),
        type=EventType.WORKFLOW_SUBMITTED,
        workflow_id=WF,
        source="client-1",
        timestamp=ts,
        vclock=VectorClock({"client-1": 1}),
        data=WorkflowSubmitted(definition=defn, input=workflow_input or {}, submitted_by="me"),
    )


def completion(task: TaskMessage, result: Any, *, ts: int, worker: str = "w1") -> Event:
    """A bare ``task.completed`` for ``task`` (no simulator bookkeeping)."""
    return Event(
        id=task_key(task.workflow_id, task.task_id, task.attempt, "completed"),
        type=EventType.TASK_COMPLETED,
        workflow_id=task.workflow_id,
        source=worker,
        timestamp=ts,
        vclock=task.vclock.increment(worker),
        data=TaskCompleted(result=result, worker=worker, agent="agent"),
        task_id=task.task_id,
        attempt=task.attempt,
    )


def default_result(task: TaskMessage) -> Any:
    """What the simulated agent returns: who it was and what it was given."""
    return {"task": task.task_id, "attempt": task.attempt, "inputs": sorted(task.inputs)}


def emits(commands: Sequence[Command]) -> list[Event]:
    return [c.event for c in commands if isinstance(c, Emit)]


def dispatches(commands: Sequence[Command]) -> list[TaskMessage]:
    return [c.task for c in commands if isinstance(c, Dispatch)]


def timers(commands: Sequence[Command]) -> list[ArmTimer]:
    return [c for c in commands if isinstance(c, ArmTimer)]


def only_dispatch(commands: Sequence[Command]) -> TaskMessage:
    (task,) = dispatches(commands)
    return task


def only_timer(commands: Sequence[Command]) -> ArmTimer:
    (timer,) = timers(commands)
    return timer


# The simulator ---------------------------------------------------------------


class Sim:
    """The workers and the shell around the reducer, over one ordered stream."""

    def __init__(self, *, source: str = COORDINATOR_NODE) -> None:
        self.source = source
        self.state: WorkflowState | None = None
        self.log: list[Event] = []
        """The stream: every folded event (inputs and echoes), in order, with seq."""
        self.inputs: list[Event] = []
        """The events that came from outside the reducer, as stored."""
        self.history: list[tuple[Event, list[Command]]] = []
        """Each input event with the commands folding it returned."""
        self.emitted: list[Event] = []
        self.dispatched: list[TaskMessage] = []
        self.armed: list[ArmTimer] = []
        self.echo_commands: list[Command] = []
        self.now = T0
        self._clocks: dict[str, VectorClock] = {}
        self._shell_counter = 0

    @property
    def st(self) -> WorkflowState:
        assert self.state is not None
        return self.state

    def tick(self, at_least: int = 0) -> int:
        # Capped at the largest timestamp an event may carry (deadlines are too).
        self.now = min(max(self.now + STEP_NS, at_least), 2**63 - 1)
        return self.now

    # The coordinator's consumer ---------------------------------------------
    def _fold(self, event: Event, *, seq: int | None = None) -> tuple[Event, list[Command]]:
        stored = event.model_copy(update={"seq": seq or len(self.log) + 1})
        self.log.append(stored)
        self.state, commands = reduce(self.state, stored, source=self.source)
        return stored, commands

    def publish(self, event: Event) -> list[Command]:
        """Append ``event`` to the stream, fold it, execute the commands."""
        stored, commands = self._fold(event)
        self.inputs.append(stored)
        self.history.append((stored, commands))
        for command in commands:
            if isinstance(command, Emit):
                self.emitted.append(command.event)
            elif isinstance(command, Dispatch):
                self.dispatched.append(command.task)
            else:
                self.armed.append(command)
        # The shell stamps the publication time; the consumer then reads the event back.
        for event_out in emits(commands):
            _, echo = self._fold(event_out.model_copy(update={"timestamp": self.tick()}))
            self.echo_commands.extend(echo)
        return commands

    def redeliver(self, stored: Event) -> list[Command]:
        """JetStream delivers a stored event again (same seq)."""
        assert stored.seq is not None
        again, commands = self._fold(stored, seq=stored.seq)
        self.inputs.append(again)
        self.history.append((again, commands))
        return commands

    def submit(
        self, defn: WorkflowDefinition, *, workflow_input: dict[str, Any] | None = None
    ) -> list[Command]:
        return self.publish(submitted(defn, workflow_input=workflow_input, ts=self.tick()))

    # Workers -----------------------------------------------------------------
    def worker_event(
        self, task: TaskMessage, event_type: EventType, data: Payload, what: str, worker: str
    ) -> Event:
        clock = self._clocks.get(worker, VectorClock()).merge(task.vclock).increment(worker)
        self._clocks[worker] = clock
        return Event(
            id=task_key(task.workflow_id, task.task_id, task.attempt, what),
            type=event_type,
            workflow_id=task.workflow_id,
            source=worker,
            timestamp=self.tick(),
            vclock=clock,
            data=data,
            task_id=task.task_id,
            attempt=task.attempt,
        )

    def started(self, task: TaskMessage, worker: str = "w1") -> Event:
        data = TaskStarted(
            worker=worker, agent=f"agent-{task.capability}", instance=f"{worker}.agent.0"
        )
        return self.worker_event(task, EventType.TASK_STARTED, data, "started", worker)

    def completed(self, task: TaskMessage, result: Any, worker: str = "w1") -> Event:
        data = TaskCompleted(result=result, worker=worker, agent=f"agent-{task.capability}")
        return self.worker_event(task, EventType.TASK_COMPLETED, data, "completed", worker)

    def failed(self, task: TaskMessage, error: ErrorInfo = ERROR, worker: str = "w1") -> Event:
        data = TaskFailed(error=error, worker=worker, agent=f"agent-{task.capability}")
        return self.worker_event(task, EventType.TASK_FAILED, data, "failed", worker)

    # The shell ---------------------------------------------------------------
    def shell_event(
        self,
        event_type: EventType,
        data: Payload,
        *,
        task_id: str,
        attempt: int,
        what: str,
        at_least: int = 0,
    ) -> Event:
        base = self.st.vclock
        self._shell_counter = max(self._shell_counter, base.get(SHELL_NODE)) + 1
        return Event(
            id=task_key(WF, task_id, attempt, what),
            type=event_type,
            workflow_id=WF,
            source=self.source,
            timestamp=self.tick(at_least),
            vclock=base.merge({SHELL_NODE: self._shell_counter}),
            data=data,
            task_id=task_id,
            attempt=attempt,
        )

    def retry_due(self, timer: ArmTimer) -> Event:
        assert timer.kind == "retry"
        return self.shell_event(
            EventType.TASK_RETRY_DUE,
            TaskRetryDue(),
            task_id=timer.task_id,
            attempt=timer.attempt,
            what="retry_due",
            at_least=timer.due_ns,
        )

    def timed_out(self, timer: ArmTimer) -> Event:
        assert timer.kind == "timeout"
        assert self.st.definition is not None
        timeout = self.st.definition.timeout_of(self.st.spec(timer.task_id)) or 0.0
        return self.shell_event(
            EventType.TASK_TIMED_OUT,
            TaskTimedOut(timeout_s=timeout),
            task_id=timer.task_id,
            attempt=timer.attempt,
            what="timed_out",
            at_least=timer.due_ns,
        )

    def unserved(self, task: TaskMessage, *, attempt: int | None = None) -> Event:
        return self.shell_event(
            EventType.TASK_UNSERVED,
            TaskUnserved(capability=task.capability),
            task_id=task.task_id,
            attempt=attempt or task.attempt,
            what="unserved",
        )

    # Everything at once ------------------------------------------------------
    def respond(
        self,
        commands: Sequence[Command],
        results: Callable[[TaskMessage], Any] = default_result,
    ) -> list[Event]:
        """What the world sends back for these commands: outcomes and fired retry timers."""
        events: list[Event] = []
        for command in commands:
            if isinstance(command, Dispatch):
                events.append(self.started(command.task))
                events.append(self.completed(command.task, results(command.task)))
            elif isinstance(command, ArmTimer) and command.kind == "retry":
                events.append(self.retry_due(command))
        return events

    def run(
        self,
        commands: Sequence[Command],
        results: Callable[[TaskMessage], Any] = default_result,
    ) -> None:
        """Respond to ``commands`` and to everything that follows until quiet."""
        pending = list(commands)
        while pending:
            events = self.respond(pending, results)
            pending = [command for event in events for command in self.publish(event)]

    def scheduled_clock(self, task_id: str, attempt: int = 1) -> VectorClock:
        (event,) = [
            e
            for e in self.emitted
            if e.type == EventType.TASK_SCHEDULED and (e.task_id, e.attempt) == (task_id, attempt)
        ]
        return event.vclock

    def assert_ignored(self, event: Event) -> None:
        """Folding ``event`` issues nothing and changes nothing but vclock and last_seq."""
        before = self.st.model_dump(exclude={"vclock", "last_seq"})
        assert self.publish(event) == []
        assert self.st.model_dump(exclude={"vclock", "last_seq"}) == before


# Submission and the happy path -----------------------------------------------


def test_submission_starts_the_workflow_and_dispatches_only_the_roots() -> None:
    sim = Sim()
    commands = sim.submit(DIAMOND, workflow_input={"q": 1})

    assert len(commands) == 3
    started, scheduled, dispatch = commands
    assert isinstance(started, Emit)
    assert started.event.type == EventType.WORKFLOW_STARTED
    assert started.event.id == "wf1:started"
    assert started.event.data == WorkflowStarted(tasks=4)
    assert isinstance(scheduled, Emit)
    assert scheduled.event.type == EventType.TASK_SCHEDULED
    assert scheduled.event.id == "wf1:a:1:scheduled"
    assert (scheduled.event.task_id, scheduled.event.attempt) == ("a", 1)
    assert scheduled.event.data == TaskScheduled(capability="fetch")
    assert isinstance(dispatch, Dispatch)
    assert dispatch.task.msg_id == "wf1:a:1:task"
    assert dispatch.task.capability == "fetch"
    assert dispatch.task.params == {"url": "https://x"}
    assert dispatch.task.inputs == {}
    assert dispatch.task.workflow_input == {"q": 1}
    assert dispatch.task.timeout_s is None
    assert dispatch.task.source == COORDINATOR_NODE

    state = sim.st
    assert state.status == WorkflowStatus.RUNNING
    assert state.created_at == sim.inputs[0].timestamp
    assert state.input == {"q": 1}
    assert state.counts() == {"scheduled": 1, "pending": 3}
    assert state.tasks["a"].attempts == 1
    assert state.tasks["a"].scheduled_at == sim.inputs[0].timestamp
    assert [state.tasks[t].remaining_deps for t in "abcd"] == [0, 1, 1, 2]
    for event in emits(commands):
        assert event.workflow_id == WF
        assert event.source == COORDINATOR_NODE
        assert event.timestamp == sim.inputs[0].timestamp


def test_diamond_runs_in_dependency_order_and_completes() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))

    assert sim.publish(sim.started(a)) == []
    assert sim.st.tasks["a"].status == TaskStatus.RUNNING
    assert sim.st.tasks["a"].worker == "w1"
    commands = sim.publish(sim.completed(a, "A"))
    assert [e.id for e in emits(commands)] == ["wf1:b:1:scheduled", "wf1:c:1:scheduled"]
    b, c = dispatches(commands)
    assert (b.task_id, c.task_id) == ("b", "c")
    assert b.inputs == c.inputs == {"a": "A"}
    assert sim.st.completed == 1
    assert sim.st.tasks["a"].result == "A"

    assert sim.publish(sim.completed(c, "C")) == []  # d still waits for b
    assert sim.st.tasks["d"].status == TaskStatus.PENDING
    assert sim.st.tasks["d"].remaining_deps == 1
    d = only_dispatch(sim.publish(sim.completed(b, "B")))
    assert d.task_id == "d"
    assert d.inputs == {"b": "B", "c": "C"}

    commands = sim.publish(sim.completed(d, {"answer": 42}))
    (done,) = commands
    assert isinstance(done, Emit)
    assert done.event.type == EventType.WORKFLOW_COMPLETED
    assert done.event.id == "wf1:completed"
    assert done.event.data == WorkflowCompleted(output={"d": {"answer": 42}})

    state = sim.st
    assert state.status == WorkflowStatus.COMPLETED
    assert state.is_terminal
    assert state.output == {"d": {"answer": 42}}
    assert state.completed == 4
    assert state.finished_at == sim.inputs[-1].timestamp
    assert state.counts() == {"completed": 4}
    assert all(t.finished_at is not None and t.started_at is not None for t in state.tasks.values())

    # Nothing after completion: late outcomes, timers, hints.
    for event in [
        sim.completed(d, "again"),
        sim.started(a),
        sim.failed(b),
        sim.retry_due(ArmTimer("retry", WF, "c", 1, 0)),
        sim.timed_out(ArmTimer("timeout", WF, "d", 1, 0)),
        sim.unserved(a),
    ]:
        sim.assert_ignored(event)
    assert sim.echo_commands == []


def test_run_helper_completes_the_diamond_with_each_task_dispatched_once() -> None:
    sim = Sim()
    sim.run(sim.submit(DIAMOND))

    assert sim.st.status == WorkflowStatus.COMPLETED
    assert sorted(t.task_id for t in sim.dispatched) == ["a", "b", "c", "d"]
    assert sim.st.output == {"d": {"task": "d", "attempt": 1, "inputs": ["b", "c"]}}
    assert [e.type for e in sim.emitted][-1] == EventType.WORKFLOW_COMPLETED
    assert sim.echo_commands == []


def test_output_holds_the_result_of_every_sink() -> None:
    defn = definition(
        {"id": "root", "capability": "x"},
        {"id": "left", "capability": "x", "depends_on": ["root"]},
        {"id": "right", "capability": "x", "depends_on": ["root"]},
        {"id": "alone", "capability": "x"},
    )
    sim = Sim()
    sim.run(sim.submit(defn), results=lambda task: task.task_id.upper())

    assert sim.st.output == {"left": "LEFT", "right": "RIGHT", "alone": "ALONE"}
    assert list(sim.st.output) == sinks(defn)


def test_completion_without_a_started_event_still_counts() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    sim.publish(sim.completed(a, "A"))

    task = sim.st.tasks["a"]
    assert task.status == TaskStatus.COMPLETED
    assert task.started_at == task.finished_at == sim.inputs[-1].timestamp
    assert task.worker == "w1"


def test_workflow_default_timeout_reaches_the_task_message() -> None:
    defn = definition(
        {"id": "a", "capability": "x"},
        {"id": "b", "capability": "x", "timeout_s": 1.5},
        default_timeout_s=30,
    )
    sim = Sim()
    by_id = {t.task_id: t for t in dispatches(sim.submit(defn))}
    assert by_id["a"].timeout_s == 30
    assert by_id["b"].timeout_s == 1.5


# Rejection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "problem"),
    [
        pytest.param(
            [
                {"id": "a", "capability": "x", "depends_on": ["b"]},
                {"id": "b", "capability": "x", "depends_on": ["a"]},
            ],
            "dependency cycle: ",
            id="cycle",
        ),
        pytest.param(
            [
                {"id": "root", "capability": "x"},
                {"id": "p", "capability": "x", "depends_on": ["root", "r"]},
                {"id": "q", "capability": "x", "depends_on": ["p"]},
                {"id": "r", "capability": "x", "depends_on": ["q"]},
            ],
            "dependency cycle: ",
            id="cycle-behind-a-valid-root",
        ),
        pytest.param(
            [{"id": "a", "capability": "x", "depends_on": ["ghost"]}],
            "task 'a' depends on unknown task 'ghost'",
            id="unknown-dependency",
        ),
        pytest.param(
            [{"id": "a", "capability": "x"}, {"id": "a", "capability": "y"}],
            "duplicate task id 'a'",
            id="duplicate-id",
        ),
        pytest.param(
            [{"id": "a", "capability": "x", "depends_on": ["a"]}],
            "task 'a' depends on itself",
            id="self-dependency",
        ),
    ],
)
def test_invalid_graph_is_rejected_without_dispatching(
    tasks: list[dict[str, Any]], problem: str
) -> None:
    sim = Sim()
    commands = sim.submit(definition(*tasks))

    (rejected,) = commands
    assert isinstance(rejected, Emit)
    assert rejected.event.type == EventType.WORKFLOW_REJECTED
    assert rejected.event.id == "wf1:rejected"
    assert isinstance(rejected.event.data, WorkflowRejected)
    assert any(problem in p for p in rejected.event.data.problems)
    assert rejected.event.data.reason.startswith("invalid workflow graph: ")

    state = sim.st
    assert state.status == WorkflowStatus.REJECTED
    assert state.is_terminal
    assert state.problems == rejected.event.data.problems
    assert state.reason == rejected.event.data.reason
    assert state.finished_at == sim.inputs[0].timestamp
    assert state.tasks == {}
    assert sim.dispatched == []

    fake = TaskMessage(workflow_id=WF, task_id="a", attempt=1, capability="x")
    sim.assert_ignored(sim.completed(fake, "late"))
    assert sim.echo_commands == []


def test_cycle_problem_names_the_closed_path() -> None:
    defn = definition(
        {"id": "a", "capability": "x", "depends_on": ["b"]},
        {"id": "b", "capability": "x", "depends_on": ["a"]},
    )
    sim = Sim()
    sim.submit(defn)
    (problem,) = sim.st.problems
    assert problem in ("dependency cycle: a -> b -> a", "dependency cycle: b -> a -> b")


def test_every_problem_is_reported() -> None:
    defn = definition(
        {"id": "a", "capability": "x", "depends_on": ["ghost"]},
        {"id": "a", "capability": "x"},
    )
    sim = Sim()
    sim.submit(defn)
    assert len(sim.st.problems) == 2
    assert sim.st.reason is not None
    assert "unknown task 'ghost'" in sim.st.reason
    assert "duplicate task id 'a'" in sim.st.reason


def test_a_shell_rejection_of_an_unreadable_submission_is_recorded() -> None:
    event = Event(
        id="wf1:rejected",
        type=EventType.WORKFLOW_REJECTED,
        workflow_id=WF,
        source="coord-a",
        timestamp=T0,
        vclock=VectorClock({SHELL_NODE: 1}),
        data=WorkflowRejected(reason="the submission could not be read: x", problems=["x"]),
        seq=7,
    )
    state, commands = reduce(None, event)

    assert commands == []
    assert state is not None
    assert state.status == WorkflowStatus.REJECTED
    assert state.reason == "the submission could not be read: x"
    assert state.problems == ["x"]
    assert state.last_seq == 7
    assert state.finished_at == T0


def test_events_of_an_unknown_workflow_are_ignored() -> None:
    task = TaskMessage(workflow_id=WF, task_id="a", attempt=1, capability="x")
    assert reduce(None, completion(task, 1, ts=T0)) == (None, [])
    assert fold([completion(task, 1, ts=T0)]) is None


def test_a_second_submission_of_the_same_workflow_is_ignored() -> None:
    sim = Sim()
    sim.submit(DIAMOND)
    sim.assert_ignored(submitted(DIAMOND, ts=sim.tick()))
    assert len(sim.dispatched) == 1


# Retries ---------------------------------------------------------------------

RETRYING = definition(
    {"id": "done", "capability": "x"},
    {"id": "t", "capability": "flaky", "retry": QUICK_RETRY},
    {"id": "other", "capability": "x"},
    {"id": "child", "capability": "x", "depends_on": ["t", "done"]},
)


def start_retrying() -> tuple[Sim, dict[str, TaskMessage]]:
    """RETRYING submitted, ``done`` completed, ``t`` and ``other`` running."""
    sim = Sim()
    tasks = {task.task_id: task for task in dispatches(sim.submit(RETRYING))}
    sim.publish(sim.completed(tasks["done"], "D"))
    sim.publish(sim.started(tasks["t"]))
    sim.publish(sim.started(tasks["other"]))
    return sim, tasks


def test_retryable_failure_schedules_a_retry() -> None:
    sim, tasks = start_retrying()
    failure = sim.failed(tasks["t"])
    commands = sim.publish(failure)

    assert len(commands) == 2
    (event,) = emits(commands)
    delay = RetryPolicy(**QUICK_RETRY).delay_s(1)
    assert delay == 0.25
    due = failure.timestamp + 250_000_000
    assert event.type == EventType.TASK_RETRY_SCHEDULED
    assert event.id == "wf1:t:1:retry_scheduled"
    assert (event.task_id, event.attempt) == ("t", 1)
    assert event.data == TaskRetryScheduled(next_attempt=2, delay_s=delay, due_ns=due)
    assert only_timer(commands) == ArmTimer("retry", WF, "t", 1, due)

    task = sim.st.tasks["t"]
    assert task.status == TaskStatus.RETRY_WAIT
    assert task.retry_due_ns == due
    assert task.error == ERROR
    assert task.attempts == 1
    assert sim.st.status == WorkflowStatus.RUNNING


def test_retry_due_dispatches_the_next_attempt() -> None:
    sim, tasks = start_retrying()
    timer = only_timer(sim.publish(sim.failed(tasks["t"])))
    commands = sim.publish(sim.retry_due(timer))

    (scheduled,) = emits(commands)
    assert scheduled.id == "wf1:t:2:scheduled"
    assert scheduled.attempt == 2
    retry = only_dispatch(commands)
    assert retry.msg_id == "wf1:t:2:task"
    assert (retry.task_id, retry.attempt, retry.capability) == ("t", 2, "flaky")
    assert retry.vclock == scheduled.vclock

    task = sim.st.tasks["t"]
    assert task.status == TaskStatus.SCHEDULED
    assert task.attempts == 2
    assert task.retry_due_ns is None
    assert task.started_at is None
    assert task.worker is None

    sim.publish(sim.started(retry))
    child = only_dispatch(sim.publish(sim.completed(retry, "T2")))
    assert child.task_id == "child"
    assert child.inputs == {"t": "T2", "done": "D"}


def test_backoff_grows_per_attempt_and_is_capped() -> None:
    policy = {"max_attempts": 5, "initial_interval_s": 0.25, "backoff": 2.0, "max_interval_s": 0.75}
    sim = Sim()
    task = only_dispatch(sim.submit(definition({"id": "t", "capability": "x", "retry": policy})))
    delays: list[float] = []
    for attempt in range(1, 5):
        assert task.attempt == attempt
        failure = sim.failed(task)
        commands = sim.publish(failure)
        (event,) = emits(commands)
        assert isinstance(event.data, TaskRetryScheduled)
        delays.append(event.data.delay_s)
        assert event.data.delay_s == RetryPolicy(**policy).delay_s(attempt)
        timer = only_timer(commands)
        assert timer.due_ns == failure.timestamp + int(event.data.delay_s * 1e9)
        task = only_dispatch(sim.publish(sim.retry_due(timer)))
    assert delays == [0.25, 0.5, 0.75, 0.75]


def test_gives_up_after_max_attempts_and_cancels_the_rest() -> None:
    sim, tasks = start_retrying()
    task = tasks["t"]
    for _ in range(2):
        timer = only_timer(sim.publish(sim.failed(task)))
        task = only_dispatch(sim.publish(sim.retry_due(timer)))
    assert task.attempt == 3
    last = sim.failed(task)
    commands = sim.publish(last)

    (failed,) = commands
    assert isinstance(failed, Emit)
    assert failed.event.type == EventType.WORKFLOW_FAILED
    assert failed.event.id == "wf1:failed"
    assert isinstance(failed.event.data, WorkflowFailed)
    assert failed.event.data.task_id == "t"
    assert failed.event.data.error is not None
    assert failed.event.data.error.type == "ValueError"
    assert failed.event.data.error.message == "boom (gave up after 3 attempts)"

    state = sim.st
    assert state.status == WorkflowStatus.FAILED
    assert state.failed_task == "t"
    assert state.reason is not None
    assert "gave up after 3 attempts" in state.reason
    assert state.reason.startswith("task 't' failed: ValueError: boom")
    assert state.finished_at == last.timestamp
    assert state.tasks["t"].status == TaskStatus.FAILED
    assert state.tasks["t"].attempts == 3
    assert state.tasks["t"].error == failed.event.data.error
    assert state.tasks["done"].status == TaskStatus.COMPLETED
    for cancelled in ("other", "child"):
        assert state.tasks[cancelled].status == TaskStatus.CANCELLED
        assert state.tasks[cancelled].finished_at == last.timestamp
    assert state.output == {}

    sim.assert_ignored(sim.completed(tasks["other"], "late"))
    sim.assert_ignored(sim.failed(task))


def test_a_single_attempt_reads_gave_up_after_1_attempt() -> None:
    sim = Sim()
    defn = definition({"id": "t", "capability": "x", "retry": {"max_attempts": 1}})
    task = only_dispatch(sim.submit(defn))
    sim.publish(sim.failed(task))
    assert sim.st.status == WorkflowStatus.FAILED
    assert sim.st.reason is not None
    assert sim.st.reason.endswith("(gave up after 1 attempt)")


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        pytest.param(
            ErrorInfo(type="NonRetryableError", message="bad input", retryable=False),
            QUICK_RETRY,
            id="error-not-retryable",
        ),
        pytest.param(
            ErrorInfo(type="KeyError", message="'k'"),
            {**QUICK_RETRY, "non_retryable": ["KeyError"]},
            id="listed-in-policy",
        ),
    ],
)
def test_non_retryable_failure_fails_at_once(error: ErrorInfo, retry: dict[str, Any]) -> None:
    sim = Sim()
    defn = definition(
        {"id": "t", "capability": "x", "retry": retry}, {"id": "u", "capability": "x"}
    )
    task = dispatches(sim.submit(defn))[0]
    commands = sim.publish(sim.failed(task, error))

    assert [e.type for e in emits(commands)] == [EventType.WORKFLOW_FAILED]
    assert timers(commands) == []
    assert dispatches(commands) == []
    state = sim.st
    assert state.status == WorkflowStatus.FAILED
    assert state.tasks["t"].status == TaskStatus.FAILED
    assert state.tasks["t"].attempts == 1
    assert state.tasks["u"].status == TaskStatus.CANCELLED
    assert state.reason is not None
    assert "(not retryable)" in state.reason
    assert error.type in state.reason


def test_workflow_default_retry_applies_to_tasks_without_their_own() -> None:
    defn = definition({"id": "t", "capability": "x"}, default_retry={"max_attempts": 1})
    sim = Sim()
    sim.publish(sim.failed(only_dispatch(sim.submit(defn))))
    assert sim.st.status == WorkflowStatus.FAILED


def test_a_failure_while_still_queued_counts() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(definition({"id": "t", "capability": "x"})))
    before = sim.st.tasks["t"].status
    assert len(timers(sim.publish(sim.failed(task)))) == 1
    assert (before, sim.st.tasks["t"].status) == (TaskStatus.SCHEDULED, TaskStatus.RETRY_WAIT)


def test_a_failure_of_a_completed_task_is_ignored() -> None:
    sim, tasks = start_retrying()
    sim.assert_ignored(sim.failed(tasks["done"]))
    assert sim.st.tasks["done"].status == TaskStatus.COMPLETED


# Exactly once ----------------------------------------------------------------


def test_a_redelivered_completion_changes_nothing() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    sim.publish(sim.completed(a, "A"))
    stored = sim.inputs[-1]
    before = sim.st.model_dump()

    assert sim.redeliver(stored) == []
    assert sim.st.model_dump() == before
    assert sim.st.completed == 1
    assert [t.task_id for t in sim.dispatched] == ["a", "b", "c"]


def test_a_completion_of_another_attempt_after_success_is_ignored() -> None:
    sim, tasks = start_retrying()
    first = tasks["t"]
    timer = only_timer(sim.publish(sim.failed(first)))
    second = only_dispatch(sim.publish(sim.retry_due(timer)))
    sim.publish(sim.completed(second, "T2"))
    completed = sim.st.completed
    dispatched = len(sim.dispatched)

    sim.assert_ignored(sim.completed(first, "T1", worker="w2"))
    sim.assert_ignored(sim.completed(second, "T2 again", worker="w3"))
    assert sim.st.completed == completed
    assert sim.st.tasks["t"].result == "T2"
    assert len(sim.dispatched) == dispatched


def test_only_the_current_attempt_settles_a_task() -> None:
    # A superseded attempt (timed out, retried) finishing late changes nothing:
    # the attempt currently dispatched is the only one that may settle the task.
    defn = definition(
        {"id": "t", "capability": "x", "timeout_s": 1, "retry": QUICK_RETRY},
        {"id": "after", "capability": "x", "depends_on": ["t"]},
    )
    sim = Sim()
    first = only_dispatch(sim.submit(defn))
    timeout = only_timer(sim.publish(sim.started(first)))
    retry = only_timer(sim.publish(sim.timed_out(timeout)))
    second = only_dispatch(sim.publish(sim.retry_due(retry)))

    sim.assert_ignored(sim.completed(first, "slow but superseded", worker="w1"))
    assert sim.st.tasks["t"].result is None
    sim.publish(sim.started(second, worker="w2"))
    after = only_dispatch(sim.publish(sim.completed(second, "fine", worker="w2")))
    assert after.inputs == {"t": "fine"}
    assert sim.st.tasks["t"].status == TaskStatus.COMPLETED
    assert sim.st.completed == 1


def test_a_completion_of_a_failed_attempt_changes_nothing() -> None:
    # The attempt already reported its failure: a completion of it afterwards is
    # not one the runner of a dispatched attempt sends; the retry goes ahead.
    sim, tasks = start_retrying()
    timer = only_timer(sim.publish(sim.failed(tasks["t"])))
    sim.assert_ignored(sim.completed(tasks["t"], "T1"))
    assert sim.st.tasks["t"].status == TaskStatus.RETRY_WAIT
    assert only_dispatch(sim.publish(sim.retry_due(timer))).attempt == 2


def test_stale_and_duplicate_failures_are_ignored() -> None:
    sim, tasks = start_retrying()
    first_failure = sim.failed(tasks["t"])
    timer = only_timer(sim.publish(first_failure))
    sim.assert_ignored(sim.failed(tasks["t"]))  # another report of attempt 1
    assert sim.redeliver(sim.inputs[-2]) == []  # the stored failure again
    second = only_dispatch(sim.publish(sim.retry_due(timer)))
    sim.publish(sim.started(second))

    sim.assert_ignored(sim.failed(tasks["t"], worker="w9"))  # attempt 1, now stale
    sim.assert_ignored(sim.retry_due(timer))  # the old timer again
    sim.assert_ignored(sim.started(tasks["t"], worker="w9"))  # attempt 1 starting late
    assert sim.st.tasks["t"].status == TaskStatus.RUNNING
    assert sim.st.tasks["t"].attempts == 2
    assert [t.attempt for t in sim.dispatched if t.task_id == "t"] == [1, 2]


def test_a_duplicate_started_does_not_rearm_the_timeout() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(definition({"id": "t", "capability": "x", "timeout_s": 3})))
    assert len(timers(sim.publish(sim.started(task)))) == 1
    assert sim.redeliver(sim.inputs[-1]) == []
    sim.assert_ignored(sim.started(task, worker="w2"))
    assert sim.st.tasks["t"].worker == "w1"


def test_events_after_a_failed_workflow_issue_nothing() -> None:
    sim = Sim()
    defn = definition({"id": "t", "capability": "x", "retry": {"max_attempts": 1}})
    task = only_dispatch(sim.submit(defn))
    sim.publish(sim.failed(task))
    assert sim.st.status == WorkflowStatus.FAILED
    for event in [
        sim.completed(task, 1),
        sim.retry_due(ArmTimer("retry", WF, "t", 1, 0)),
        sim.timed_out(ArmTimer("timeout", WF, "t", 1, 0)),
        submitted(defn, ts=sim.tick()),
    ]:
        sim.assert_ignored(event)


# Timeouts --------------------------------------------------------------------

TIMED = definition({"id": "t", "capability": "x", "timeout_s": 2, "retry": QUICK_RETRY})


def test_started_arms_the_timeout_with_grace() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(TIMED))
    assert task.timeout_s == 2
    start = sim.started(task)
    commands = sim.publish(start)

    deadline = start.timestamp + 2_000_000_000 + TIMEOUT_GRACE_NS
    assert commands == [ArmTimer("timeout", WF, "t", 1, deadline)]
    assert sim.st.tasks["t"].deadline_ns == deadline
    assert sim.st.tasks["t"].started_at == start.timestamp
    assert sim.st.tasks["t"].agent == "agent-x"


def test_no_timeout_no_timer() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(definition({"id": "t", "capability": "x"})))
    assert sim.publish(sim.started(task)) == []
    assert sim.st.tasks["t"].deadline_ns is None


def test_timed_out_current_attempt_is_retried_as_a_task_timeout() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(TIMED))
    timer = only_timer(sim.publish(sim.started(task)))
    commands = sim.publish(sim.timed_out(timer))

    assert [e.type for e in emits(commands)] == [EventType.TASK_RETRY_SCHEDULED]
    assert only_timer(commands).kind == "retry"
    error = sim.st.tasks["t"].error
    assert error is not None
    assert error.type == "TaskTimeoutError"
    assert error.code == "task_timeout"
    assert "2s" in error.message
    assert sim.st.tasks["t"].status == TaskStatus.RETRY_WAIT
    assert sim.st.tasks["t"].deadline_ns is None


def test_timed_out_last_attempt_fails_the_workflow() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(TIMED))
    for _ in range(2):
        timeout = only_timer(sim.publish(sim.started(task)))
        retry = only_timer(sim.publish(sim.timed_out(timeout)))
        task = only_dispatch(sim.publish(sim.retry_due(retry)))
    timeout = only_timer(sim.publish(sim.started(task)))
    commands = sim.publish(sim.timed_out(timeout))

    (failed,) = emits(commands)
    assert isinstance(failed.data, WorkflowFailed)
    assert failed.data.error is not None
    assert failed.data.error.type == "TaskTimeoutError"
    assert sim.st.status == WorkflowStatus.FAILED
    assert sim.st.reason is not None
    assert "TaskTimeoutError" in sim.st.reason
    assert "gave up after 3 attempts" in sim.st.reason


def test_task_timeout_listed_as_non_retryable_fails_at_once() -> None:
    retry = {**QUICK_RETRY, "non_retryable": ["TaskTimeoutError"]}
    sim = Sim()
    task = only_dispatch(
        sim.submit(definition({"id": "t", "capability": "x", "timeout_s": 1, "retry": retry}))
    )
    sim.publish(sim.timed_out(only_timer(sim.publish(sim.started(task)))))
    assert sim.st.status == WorkflowStatus.FAILED
    assert "(not retryable)" in (sim.st.reason or "")


def test_a_stale_timeout_is_ignored() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(TIMED))
    timeout = only_timer(sim.publish(sim.started(task)))
    retry = only_timer(sim.publish(sim.failed(task)))
    sim.assert_ignored(sim.timed_out(timeout))  # attempt 1 in RETRY_WAIT
    second = only_dispatch(sim.publish(sim.retry_due(retry)))
    sim.publish(sim.started(second))
    sim.assert_ignored(sim.timed_out(timeout))  # attempt 1 while attempt 2 runs
    assert sim.st.tasks["t"].status == TaskStatus.RUNNING
    sim.publish(sim.completed(second, "ok"))
    assert sim.st.status == WorkflowStatus.COMPLETED


def test_a_timeout_after_completion_is_ignored() -> None:
    defn = definition(
        {"id": "t", "capability": "x", "timeout_s": 1}, {"id": "u", "capability": "x"}
    )
    sim = Sim()
    t, _ = dispatches(sim.submit(defn))
    timeout = only_timer(sim.publish(sim.started(t)))
    sim.publish(sim.completed(t, "ok"))
    sim.assert_ignored(sim.timed_out(timeout))
    assert sim.st.tasks["t"].status == TaskStatus.COMPLETED


# Unserved capabilities -------------------------------------------------------


def test_unserved_sets_a_note_that_started_clears() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    version = sim.st.version
    assert sim.publish(sim.unserved(a)) == []
    note = sim.st.tasks["a"].note
    assert note is not None
    assert "'fetch'" in note
    assert "no live worker" in note
    assert sim.st.version == version + 1
    assert sim.st.public_view()["tasks"]["a"]["note"] == note

    sim.publish(sim.started(a))
    assert sim.st.tasks["a"].note is None
    sim.assert_ignored(sim.unserved(a))  # running: no note any more
    assert sim.st.tasks["a"].note is None


def test_unserved_for_a_stale_attempt_is_ignored() -> None:
    sim = Sim()
    task = only_dispatch(sim.submit(TIMED))
    retry = only_timer(sim.publish(sim.failed(task)))
    sim.assert_ignored(sim.unserved(task))  # retry wait: not queued
    second = only_dispatch(sim.publish(sim.retry_due(retry)))
    sim.assert_ignored(sim.unserved(second, attempt=1))
    assert sim.st.tasks["t"].note is None
    sim.publish(sim.unserved(second))
    assert sim.st.tasks["t"].note is not None


# Vector clocks ---------------------------------------------------------------


def eventful_run() -> Sim:
    """A diamond whose tasks see an unserved hint, a failure, a timeout and a retry."""
    defn = definition(
        {"id": "a", "capability": "fetch"},
        {"id": "b", "capability": "work", "depends_on": ["a"], "retry": QUICK_RETRY},
        {"id": "c", "capability": "work", "depends_on": ["a"], "timeout_s": 1},
        {"id": "d", "capability": "merge", "depends_on": ["b", "c"], "retry": QUICK_RETRY},
    )
    sim = Sim()
    a = only_dispatch(sim.submit(defn, workflow_input={"n": 1}))
    sim.publish(sim.unserved(a))
    sim.publish(sim.started(a, worker="w1"))
    b, c = dispatches(sim.publish(sim.completed(a, "A", worker="w1")))
    sim.publish(sim.started(b, worker="w2"))
    retry_b = only_timer(sim.publish(sim.failed(b, worker="w2")))
    timeout_c = only_timer(sim.publish(sim.started(c, worker="w3")))
    retry_c = only_timer(sim.publish(sim.timed_out(timeout_c)))
    b2 = only_dispatch(sim.publish(sim.retry_due(retry_b)))
    c2 = only_dispatch(sim.publish(sim.retry_due(retry_c)))
    sim.publish(sim.completed(c2, "C", worker="w1"))
    sim.publish(sim.completed(c, "C-late", worker="w3"))  # attempt 1 after all: ignored
    d_commands = sim.publish(sim.completed(b2, "B", worker="w3"))
    sim.run(d_commands)
    assert sim.st.status == WorkflowStatus.COMPLETED
    assert sim.echo_commands == []
    return sim


def test_emitted_clocks_strictly_increase_the_coordinator_entry() -> None:
    sim = eventful_run()
    counters = [event.vclock.get(COORDINATOR_NODE) for event in sim.emitted]
    assert all(x < y for x, y in itertools.pairwise(counters))
    assert counters == list(range(1, len(counters) + 1))
    assert sim.st.vclock.get(COORDINATOR_NODE) == counters[-1]


def test_emitted_events_happen_after_what_triggered_them() -> None:
    sim = eventful_run()
    for trigger, commands in sim.history:
        for event in emits(commands):
            assert event.vclock.compare(trigger.vclock) == Ordering.AFTER
            assert event.vclock.dominates(trigger.vclock)


def test_dispatch_clock_is_the_scheduled_event_clock() -> None:
    sim = eventful_run()
    assert len(sim.dispatched) == 6
    for task in sim.dispatched:
        assert task.vclock == sim.scheduled_clock(task.task_id, task.attempt)


def first_completion(sim: Sim, task_id: str) -> Event:
    """The ``task.completed`` of ``task_id`` that counted: the first one folded."""
    return next(
        e for e in sim.inputs if e.type == EventType.TASK_COMPLETED and e.task_id == task_id
    )


def test_a_dependent_is_scheduled_after_its_dependencies_completed() -> None:
    sim = eventful_run()
    assert sim.st.definition is not None
    for spec in sim.st.definition.tasks:
        scheduled = sim.scheduled_clock(spec.id)
        for dep in spec.depends_on:
            completed = first_completion(sim, dep)
            assert isinstance(completed.data, TaskCompleted)
            assert completed.data.result == sim.st.tasks[dep].result
            assert scheduled.compare(completed.vclock) == Ordering.AFTER


# Determinism and replay ------------------------------------------------------


def test_folding_the_same_events_twice_gives_equal_states() -> None:
    sim = eventful_run()
    first = fold(sim.log)
    second = fold(list(sim.log))
    assert first is not None
    assert second is not None
    assert first is not second
    assert first.model_dump() == second.model_dump()


def test_replaying_the_full_log_rebuilds_the_live_state_exactly() -> None:
    sim = eventful_run()
    replayed = fold(sim.log)
    assert replayed is not None
    assert replayed.model_dump() == sim.st.model_dump()


def test_replaying_only_the_inputs_differs_only_in_last_seq() -> None:
    sim = eventful_run()
    replayed = fold(sim.inputs)
    assert replayed is not None
    exclude = {"last_seq"}
    assert replayed.model_dump(exclude=exclude) == sim.st.model_dump(exclude=exclude)
    # The live coordinator also folded its own workflow.completed, read back last.
    assert sim.inputs[-1].seq is not None
    assert replayed.last_seq == sim.inputs[-1].seq
    assert sim.st.last_seq == len(sim.log) > replayed.last_seq


def test_the_source_node_does_not_affect_state() -> None:
    sim = eventful_run()
    replayed = fold(sim.log, source="coord-host-1234-abcdef")
    assert replayed is not None
    assert replayed.model_dump() == sim.st.model_dump()


def test_replay_reissues_the_same_commands() -> None:
    sim = eventful_run()
    state: WorkflowState | None = None
    for event, commands in sim.history:
        state, again = reduce(state, event)
        assert again == commands


def test_a_deep_copy_keeps_the_state_before_the_event() -> None:
    sim = Sim()
    a = only_dispatch(sim.submit(DIAMOND))
    before = sim.st.model_copy(deep=True)
    dump = before.model_dump()
    sim.publish(sim.completed(a, "A"))
    assert before.model_dump() == dump
    assert sim.st.model_dump() != dump


# Recovery --------------------------------------------------------------------


def recoverable() -> tuple[Sim, dict[str, TaskMessage]]:
    """r waits for a retry, s runs with a timeout, q runs without one, p is queued.

    p has a timeout too, but its clock starts only when a worker picks it up.
    """
    defn = definition(
        {"id": "r", "capability": "x", "retry": QUICK_RETRY},
        {"id": "s", "capability": "x", "timeout_s": 5},
        {"id": "q", "capability": "x"},
        {"id": "p", "capability": "x", "timeout_s": 5},
        {"id": "child", "capability": "x", "depends_on": ["r", "s"]},
    )
    sim = Sim()
    tasks = {task.task_id: task for task in dispatches(sim.submit(defn))}
    sim.publish(sim.started(tasks["r"]))
    sim.publish(sim.failed(tasks["r"]))
    sim.publish(sim.started(tasks["s"]))
    sim.publish(sim.started(tasks["q"]))
    return sim, tasks


def test_pending_timers_of_a_recovered_state() -> None:
    sim, _ = recoverable()
    recovered = WorkflowState.from_snapshot(sim.st.to_snapshot())
    found = pending_timers(recovered)

    assert sorted(found, key=lambda t: t.task_id) == [
        ArmTimer("retry", WF, "r", 1, recovered.tasks["r"].retry_due_ns or 0),
        ArmTimer("timeout", WF, "s", 1, recovered.tasks["s"].deadline_ns or 0),
    ]
    assert sorted(found, key=lambda t: t.task_id) == sorted(sim.armed, key=lambda t: t.task_id)
    assert pending_timers(sim.st) == found


def test_a_recovered_state_carries_on_like_the_live_one() -> None:
    sim, _ = recoverable()
    recovered = WorkflowState.from_snapshot(sim.st.to_snapshot())
    (retry,) = [t for t in pending_timers(recovered) if t.kind == "retry"]
    event = sim.retry_due(retry)

    recovered_state, recovered_commands = reduce(recovered, event)
    live_state, live_commands = reduce(sim.st, event)
    assert recovered_commands == live_commands
    assert only_dispatch(live_commands).msg_id == "wf1:r:2:task"
    assert recovered_state is not None
    assert live_state is not None
    assert recovered_state.model_dump() == live_state.model_dump()


def test_no_timers_for_a_finished_workflow() -> None:
    sim, tasks = recoverable()
    sim.publish(sim.failed(tasks["q"], ErrorInfo(type="E", message="x", retryable=False)))
    assert sim.st.status == WorkflowStatus.FAILED
    assert pending_timers(sim.st) == []
    assert pending_timers(WorkflowState.from_snapshot(sim.st.to_snapshot())) == []


# Scale -----------------------------------------------------------------------


def test_wide_fan_out_and_gather_folds_completely() -> None:
    n = 10_000
    roots = [{"id": f"r{i}", "capability": "work"} for i in range(n)]
    gather = {"id": "gather", "capability": "merge", "depends_on": [f"r{i}" for i in range(n)]}
    defn = definition(*roots, gather)
    events = [submitted(defn)]
    state, commands = reduce(None, events[0])
    tasks = dispatches(commands)
    assert len(tasks) == n
    gathered: list[TaskMessage] = []
    for i, task in enumerate(tasks):
        events.append(completion(task, i, ts=T0 + i + 1))
        state, commands = reduce(state, events[-1])
        gathered.extend(dispatches(commands))
    (last,) = gathered
    assert last.task_id == "gather"
    assert last.inputs == {f"r{i}": i for i in range(n)}
    events.append(completion(last, "all", ts=T0 + n + 1))
    state, commands = reduce(state, events[-1])
    assert [e.type for e in emits(commands)] == [EventType.WORKFLOW_COMPLETED]

    replayed = fold(events)
    assert replayed is not None
    assert replayed.status == WorkflowStatus.COMPLETED
    assert replayed.completed == n + 1
    assert replayed.output == {"gather": "all"}


# Properties ------------------------------------------------------------------

PROPS = settings(
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[int, ...]]:
    """Dependencies of tasks 0..n-1, each only on lower indexes (so acyclic)."""
    n = draw(st.integers(min_value=1, max_value=30))
    return [
        tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 6))))) if i else ()
        for i in range(n)
    ]


def dag_definition(deps: list[tuple[int, ...]]) -> WorkflowDefinition:
    return definition(
        *(
            {"id": f"t{i}", "capability": f"c{i % 3}", "depends_on": [f"t{j}" for j in d]}
            for i, d in enumerate(deps)
        )
    )


def random_run(deps: list[tuple[int, ...]], data: st.DataObject) -> Sim:
    """Complete the DAG, picking the next task among those in flight at random."""
    sim = Sim()
    inflight: list[TaskMessage] = []
    done: dict[str, Any] = {}

    def take(commands: list[Command]) -> None:
        for task in dispatches(commands):
            spec = sim.st.spec(task.task_id)
            assert set(spec.depends_on) <= done.keys(), "dispatched before its dependencies"
            assert task.inputs == {dep: done[dep] for dep in spec.depends_on}
            inflight.append(task)

    take(sim.submit(dag_definition(deps)))
    while inflight:
        task = inflight.pop(data.draw(st.integers(0, len(inflight) - 1), label="next"))
        if data.draw(st.booleans(), label="report start"):
            take(sim.publish(sim.started(task, worker=f"w{len(inflight) % 4}")))
        done[task.task_id] = f"result of {task.task_id}"
        take(sim.publish(sim.completed(task, done[task.task_id])))
    return sim


@PROPS
@given(deps=dags(), data=st.data())
def test_random_dags_complete_with_each_task_dispatched_once(
    deps: list[tuple[int, ...]], data: st.DataObject
) -> None:
    sim = random_run(deps, data)
    state = sim.st
    assert state.status == WorkflowStatus.COMPLETED
    assert state.completed == len(deps)
    assert Counter(t.task_id for t in sim.dispatched) == {f"t{i}": 1 for i in range(len(deps))}
    assert state.definition is not None
    assert state.output == {t: f"result of {t}" for t in sinks(state.definition)}
    for i, d in enumerate(deps):
        scheduled = sim.scheduled_clock(f"t{i}")
        for j in d:
            (completed,) = [
                e for e in sim.inputs if e.type == EventType.TASK_COMPLETED and e.task_id == f"t{j}"
            ]
            assert scheduled.compare(completed.vclock) == Ordering.AFTER
    assert sim.echo_commands == []


@PROPS
@given(deps=dags(), data=st.data())
def test_duplicate_deliveries_never_change_the_final_state(
    deps: list[tuple[int, ...]], data: st.DataObject
) -> None:
    sim = random_run(deps, data)
    inputs = sim.inputs
    outcomes = [
        i
        for i, e in enumerate(inputs)
        if e.type in (EventType.TASK_COMPLETED, EventType.TASK_STARTED)
    ]
    noisy = list(inputs)
    for i in data.draw(st.lists(st.sampled_from(outcomes), max_size=15), label="duplicates"):
        first = noisy.index(inputs[i])
        noisy.insert(data.draw(st.integers(first + 1, len(noisy)), label="where"), inputs[i])

    state: WorkflowState | None = None
    dispatched: Counter[str] = Counter()
    for event in noisy:
        state, commands = reduce(state, event)
        dispatched.update(task.task_id for task in dispatches(commands))
    clean = fold(inputs)
    assert state is not None
    assert clean is not None
    assert state.model_dump() == clean.model_dump()
    assert state.status == WorkflowStatus.COMPLETED
    assert dispatched == {f"t{i}": 1 for i in range(len(deps))}

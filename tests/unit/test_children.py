"""Hierarchical workflows in the pure reducer: a task that is a child workflow.

:class:`World` plays a whole cluster around :func:`agenticflow.coordinator.reducer.reduce`:
one stream of events (JetStream's dedupe on the event id, which a test can
switch off to play a re-send after the window), one state per workflow id (the
coordinator folds every workflow's events in stream order), and workers that
answer dispatched tasks. The hierarchy lives entirely in the reducer's
commands, so these tests see the same messages a real coordinator publishes.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.coordinator import children
from agenticflow.coordinator.causality import causality_violations
from agenticflow.coordinator.reducer import SHELL_NODE, ArmTimer, Dispatch, Emit, fold, reduce
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.errors import (
    PayloadTooLargeError,
    WorkflowDefinitionError,
    WorkflowGraphError,
)
from agenticflow.shared.graph.dag import graph_problems, validate_graph
from agenticflow.shared.graph.hierarchy import (
    CHILD_CAPABILITY,
    MAX_DEPTH,
    ParentLink,
    child_workflow_id,
)
from agenticflow.shared.graph.workflow import WorkflowDefinition, load_workflow_file, parse_workflow
from agenticflow.shared.wire.codec import TaskMessage, decode_event, encode_event
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    InterventionRequested,
    Payload,
    TaskCompleted,
    TaskFailed,
    TaskRetryDue,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import ID_RE, task_key, workflow_key
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import Ordering, VectorClock

ROOT = "wf-root"
T0 = 1_700_000_000_000_000_000


def definition(*tasks: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    return parse_workflow({"name": "test", "tasks": list(tasks), **extra})


def child(*tasks: dict[str, Any], name: str = "child") -> dict[str, Any]:
    return {"name": name, "tasks": list(tasks)}


class World:
    """The stream, the coordinator's states and the workers, in one process."""

    def __init__(self, *, dedupe: bool = True) -> None:
        self.stream: list[Event] = []
        self.states: dict[str, WorkflowState] = {}
        self.queue: deque[Event] = deque()
        self.tasks: list[TaskMessage] = []
        self.timers: list[ArmTimer] = []
        self.dedupe = dedupe
        self.now = T0

    # The bus ------------------------------------------------------------
    def publish(self, event: Event) -> None:
        if self.dedupe and any(e.id == event.id for e in self.stream):
            return  # JetStream's dedupe window
        stored = event.model_copy(update={"seq": len(self.stream) + 1})
        self.stream.append(stored)
        self.queue.append(stored)

    def events(self, workflow_id: str) -> list[Event]:
        return [e for e in self.stream if e.workflow_id == workflow_id]

    # The coordinator ----------------------------------------------------
    def fold_next(self) -> list[Event]:
        event = self.queue.popleft()
        self.now += 1_000_000
        state, commands = reduce(self.states.get(event.workflow_id), event, source="coord-1")
        if state is not None:
            self.states[event.workflow_id] = state
        published = []
        for command in commands:
            if isinstance(command, Emit):
                self.publish(command.event)
                published.append(command.event)
            elif isinstance(command, Dispatch):
                self.tasks.append(command.task)
            else:
                self.timers.append(command)
        return published

    def settle(self, *, work: bool = True) -> None:
        """Fold everything; with ``work``, workers answer every dispatched task."""
        while self.queue or (work and (self.tasks or self.timers)):
            while self.queue:
                self.fold_next()
            if work and self.tasks:
                self.answer(self.tasks.pop(0))
            elif work and self.timers:
                self.fire(self.timers.pop(0))

    # Workers and timers -------------------------------------------------
    def answer(self, task: TaskMessage, worker: str = "w1") -> None:
        self.now += 1_000_000
        data: Payload
        if task.capability == "fail":
            kind = EventType.TASK_FAILED
            data = TaskFailed(error=ErrorInfo(type="ValueError", message="bad", retryable=False))
        else:
            kind = EventType.TASK_COMPLETED
            data = TaskCompleted(
                result={"task": task.task_id, "input": task.workflow_input, "inputs": task.inputs},
                worker=worker,
            )
        self.publish(
            Event(
                id=task_key(task.workflow_id, task.task_id, task.attempt, kind.value[5:]),
                type=kind,
                workflow_id=task.workflow_id,
                source=worker,
                timestamp=self.now,
                vclock=task.vclock.increment(worker),
                data=data,
                task_id=task.task_id,
                attempt=task.attempt,
            )
        )

    def fire(self, timer: ArmTimer) -> None:
        assert timer.kind == "retry"
        state = self.states[timer.workflow_id]
        self.publish(
            Event(
                id=task_key(timer.workflow_id, timer.task_id, timer.attempt, "retry_due"),
                type=EventType.TASK_RETRY_DUE,
                workflow_id=timer.workflow_id,
                source="coord-1",
                timestamp=timer.due_ns,
                vclock=state.vclock.increment(SHELL_NODE),
                data=TaskRetryDue(),
                task_id=timer.task_id,
                attempt=timer.attempt,
            )
        )

    def submit(
        self, defn: WorkflowDefinition, workflow_input: dict[str, Any] | None = None
    ) -> None:
        self.publish(
            Event(
                id=workflow_key(ROOT, "submitted"),
                type=EventType.WORKFLOW_SUBMITTED,
                workflow_id=ROOT,
                source="client-1",
                timestamp=self.now,
                vclock=VectorClock({"client-1": 1}),
                data=WorkflowSubmitted(definition=defn, input=workflow_input or {}),
            )
        )

    def intervene(self, workflow_id: str, action: str, n: int = 1) -> None:
        state = self.states[workflow_id]
        self.publish(
            Event(
                id=workflow_key(workflow_id, f"intervention:r{n}"),
                type=EventType.INTERVENTION_REQUESTED,
                workflow_id=workflow_id,
                source="client-1",
                timestamp=self.now,
                vclock=state.vclock.merge({"client-1": 1 + n}),
                data=InterventionRequested(request_id=f"r{n}", action=action, by="ann"),
            )
        )

    def check_histories(self) -> None:
        """Every workflow's stream re-folds to its state and keeps causality."""
        for workflow_id, state in self.states.items():
            events = self.events(workflow_id)
            assert causality_violations(events) == [], workflow_id
            replayed = fold(events)
            assert replayed is not None
            assert replayed.model_dump(exclude={"version"}) == state.model_dump(
                exclude={"version"}
            ), workflow_id


RESEARCH = definition(
    {"id": "plan", "capability": "echo"},
    {
        "id": "research",
        "workflow": child(
            {"id": "search", "capability": "echo"},
            {"id": "read", "capability": "echo", "depends_on": ["search"]},
        ),
        "depends_on": ["plan"],
        "params": {"topic": "nats"},
    },
    {"id": "report", "capability": "echo", "depends_on": ["research"]},
)
CHILD = child_workflow_id(ROOT, "research", 1)


# Definitions ------------------------------------------------------------------


def test_a_workflow_task_gets_the_reserved_capability_and_round_trips() -> None:
    spec = RESEARCH.tasks[1]
    assert spec.capability == CHILD_CAPABILITY
    assert spec.workflow is not None
    assert [t.id for t in spec.workflow.tasks] == ["search", "read"]
    assert WorkflowDefinition.model_validate(RESEARCH.model_dump()) == RESEARCH
    assert graph_problems(RESEARCH) == []


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"id": "x", "capability": "workflow"}, "tasks[0]: Value error, capability 'workflow' is"),
        (
            {"id": "x", "capability": "echo", "workflow": child({"id": "a", "capability": "b"})},
            "tasks[0]: Value error, a task runs either a capability or a child",
        ),
        (
            {"id": "x", "workflow": child({"id": "a"})},
            "tasks[0].workflow.tasks[0].capability: Field required",
        ),
        ({"id": "x"}, "tasks[0].capability: Field required"),
        (
            {"id": "x", "timeout_s": 5, "workflow": child({"id": "a", "capability": "b"})},
            "tasks[0]: Value error, timeouts do not apply to a task that runs a child workflow",
        ),
    ],
)
def test_field_errors_name_the_nested_path(task: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as caught:
        parse_workflow({"tasks": [task]}, source="flow.yaml")
    assert str(caught.value).startswith(f"flow.yaml: {message}"), str(caught.value)
    assert "Tuple should have at least 1 item" not in str(caught.value)


def test_graph_problems_of_children_are_reported_with_their_path() -> None:
    cyclic = definition(
        {"id": "a", "capability": "echo"},
        {
            "id": "b",
            "depends_on": ["a"],
            "workflow": child(
                {"id": "x", "capability": "echo", "depends_on": ["y"]},
                {"id": "y", "capability": "echo", "depends_on": ["x"]},
                {
                    "id": "z",
                    "workflow": child({"id": "p", "capability": "echo", "depends_on": ["nowhere"]}),
                },
            ),
        },
        {"id": "c", "capability": "echo", "depends_on": ["ghost"]},
    )
    assert graph_problems(cyclic) == [
        "task 'c' depends on unknown task 'ghost'",
        "tasks[1].workflow: dependency cycle: x -> y -> x",
        "tasks[1].workflow.tasks[2].workflow: task 'p' depends on unknown task 'nowhere'",
    ]


def nested(levels: int) -> WorkflowDefinition:
    """A definition whose workflows nest ``levels`` deep (the top level is 1)."""
    inner: dict[str, Any] = child({"id": "leaf", "capability": "echo"})
    for _ in range(levels - 1):
        inner = child({"id": "n", "workflow": inner})
    return parse_workflow(inner)


def test_nesting_is_limited() -> None:
    assert graph_problems(nested(MAX_DEPTH)) == []
    deep = ".".join(["tasks[0].workflow"] * MAX_DEPTH)
    assert graph_problems(nested(MAX_DEPTH + 1)) == [
        f"{deep}: child workflows nest deeper than {MAX_DEPTH} levels"
    ]


def test_the_reducer_rejects_a_workflow_with_a_bad_child() -> None:
    world = World()
    world.submit(nested(MAX_DEPTH + 1))
    world.settle()
    state = world.states[ROOT]
    assert state.status == WorkflowStatus.REJECTED
    assert "nest deeper" in (state.reason or "")
    assert len(world.stream) == 2  # submitted, rejected: no child started


@given(
    parent=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    task=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    attempt=st.integers(min_value=1, max_value=10_000),
)
def test_child_ids_are_valid_workflow_ids_and_derived(parent: str, task: str, attempt: int) -> None:
    made = child_workflow_id(parent, task, attempt)
    assert ID_RE.match(made)
    assert made == child_workflow_id(parent, task, attempt)
    assert made != child_workflow_id(parent, task, attempt + 1)


def test_the_guides_example_loads_and_a_cycle_in_its_child_names_the_path(
    tmp_path: Path,
) -> None:
    guide = Path(__file__).resolve().parents[2] / "docs" / "guides" / "workflows.md"
    readme = guide.read_text()
    block = next(
        m.group(1)
        for m in re.finditer(r"```yaml\n(.*?)```", readme, re.S)
        if m.group(1).startswith("# research.yaml")
    )
    flow = tmp_path / "research.yaml"
    flow.write_text(block)
    loaded = load_workflow_file(flow)
    research = loaded.tasks[1]
    assert research.capability == CHILD_CAPABILITY
    assert research.workflow is not None
    assert [t.id for t in research.workflow.tasks] == ["search", "read"]
    validate_graph(loaded)
    flow.write_text(
        block.replace(
            "{id: search, capability: search}",
            "{id: search, capability: search, depends_on: [read]}",
        )
    )
    with pytest.raises(WorkflowGraphError) as caught:
        validate_graph(load_workflow_file(flow))
    assert caught.value.problems == [
        "tasks[1].workflow: dependency cycle: search -> read -> search"
    ]


# Running ------------------------------------------------------------------------


def test_a_ready_workflow_task_starts_its_child_instead_of_dispatching() -> None:
    world = World()
    world.submit(RESEARCH, {"goal": "learn"})
    world.fold_next()  # submitted: plan dispatched
    world.answer(world.tasks.pop(0))
    world.fold_next()  # workflow.started
    world.fold_next()  # task.scheduled of plan
    published = world.fold_next()  # plan completed: research is ready
    assert [e.type for e in published] == [EventType.TASK_SCHEDULED, EventType.WORKFLOW_SUBMITTED]
    scheduled, start = published
    assert scheduled.task_id == "research"
    assert scheduled.workflow_id == ROOT
    assert start.workflow_id == CHILD
    # Not a client submission's id: one taken first does not swallow it as a
    # duplicate (the stream sequence of the event that made the task ready).
    assert start.id.startswith(f"{CHILD}:child_submitted:")
    assert world.tasks == []  # no task message for a worker
    data = start.data
    assert isinstance(data, WorkflowSubmitted)
    plan_result = world.states[ROOT].tasks["plan"].result
    assert data.input == {"goal": "learn", "topic": "nats", "inputs": {"plan": plan_result}}
    assert data.parent == ParentLink(
        workflow_id=ROOT, task_id="research", attempt=1, vclock=scheduled.vclock
    )
    assert start.vclock == scheduled.vclock
    task = world.states[ROOT].tasks["research"]
    assert (task.status, task.child, task.attempts) == (TaskStatus.RUNNING, CHILD, 1)
    assert world.states[ROOT].children == {"research": CHILD}


def test_the_child_submission_survives_the_codec() -> None:
    world = World()
    world.submit(RESEARCH)
    world.settle()
    start = next(e for e in world.stream if e.workflow_id == CHILD)
    names = Names("af")
    subject, headers, body = encode_event(start, names, max_payload=1 << 20)
    assert subject == f"af.evt.{CHILD}.workflow.submitted"
    back = decode_event(subject, headers, body, names)
    assert back.data == start.data


def test_parent_child_and_grandchild_complete_with_the_childs_output() -> None:
    defn = definition(
        {
            "id": "outer",
            "workflow": child(
                {"id": "x", "capability": "echo"},
                {"id": "inner", "workflow": child({"id": "y", "capability": "echo"})},
                name="middle",
            ),
        },
        {"id": "last", "capability": "echo", "depends_on": ["outer"]},
    )
    world = World()
    world.submit(defn, {"k": 1})
    world.settle()
    middle = child_workflow_id(ROOT, "outer", 1)
    leaf = child_workflow_id(middle, "inner", 1)
    assert set(world.states) == {ROOT, middle, leaf}
    assert all(s.status == WorkflowStatus.COMPLETED for s in world.states.values())
    leaf_state, middle_state, root = world.states[leaf], world.states[middle], world.states[ROOT]
    assert middle_state.output["inner"] == leaf_state.output
    assert root.tasks["outer"].result == middle_state.output
    assert root.output["last"]["inputs"] == {"outer": middle_state.output}
    # The grandchild's input is the child's input plus its own (empty) inputs.
    assert leaf_state.input == {"k": 1, "inputs": {}}
    assert leaf_state.parent is not None
    assert leaf_state.parent.workflow_id == middle
    assert root.children == {}
    assert middle_state.children == {}
    world.check_histories()
    # The parent's outcome of a child task is caused by (dominates) its dispatch.
    events = world.events(ROOT)
    scheduled = next(e for e in events if e.type == EventType.TASK_SCHEDULED)
    done = next(e for e in events if e.type == EventType.TASK_COMPLETED and e.task_id == "outer")
    assert done.source == middle
    assert done.vclock.compare(scheduled.vclock) == Ordering.AFTER


def test_a_failing_child_fails_the_parent_task_for_good() -> None:
    world = World()
    defn = definition(
        {"id": "c", "workflow": child({"id": "x", "capability": "fail"})},
        {"id": "after", "capability": "echo", "depends_on": ["c"]},
    )
    world.submit(defn)
    world.settle()
    root, kid = world.states[ROOT], world.states[child_workflow_id(ROOT, "c", 1)]
    assert kid.status == WorkflowStatus.FAILED
    assert root.status == WorkflowStatus.FAILED
    task = root.tasks["c"]
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 1
    assert task.error is not None
    assert task.error.type == "ChildWorkflowFailedError"
    assert task.error.code == "child_workflow_failed"
    assert kid.workflow_id in task.error.message
    assert "ValueError: bad" in task.error.message
    assert root.tasks["after"].status == TaskStatus.CANCELLED
    world.check_histories()


def test_a_task_with_its_own_retry_retries_a_failed_child_as_a_new_child() -> None:
    world = World()
    retry = {"max_attempts": 2, "initial_interval_s": 0.1}
    world.submit(
        definition(
            {"id": "c", "retry": retry, "workflow": child({"id": "x", "capability": "fail"})}
        )
    )
    world.settle()
    first, second = child_workflow_id(ROOT, "c", 1), child_workflow_id(ROOT, "c", 2)
    assert world.states[first].status == world.states[second].status == WorkflowStatus.FAILED
    root = world.states[ROOT]
    assert root.tasks["c"].attempts == 2
    assert root.tasks["c"].child == second
    assert root.tasks["c"].error is not None
    assert "gave up after 2 attempts" in root.tasks["c"].error.message
    world.check_histories()


def test_duplicate_child_outcomes_and_starts_change_nothing() -> None:
    world = World(dedupe=False)  # beyond the dedupe window: every re-send is stored
    world.submit(RESEARCH)
    world.settle()
    root = world.states[ROOT]
    assert root.status == WorkflowStatus.COMPLETED
    before = root.model_dump()
    report = next(e for e in world.stream if e.workflow_id == ROOT and e.source == CHILD)
    start = next(e for e in world.stream if e.workflow_id == CHILD)
    last = [
        e for e in world.stream if e.workflow_id == CHILD and e.type == EventType.TASK_COMPLETED
    ]
    kid_before = world.states[CHILD].model_dump()
    # A re-sent report, a re-sent start, and the child's last outcome redelivered.
    for again in (report, start, last[-1]):
        world.publish(again.model_copy(update={"seq": None}))
    stored = len(world.stream)
    world.settle()
    assert len(world.stream) == stored, "nothing more was published"
    assert world.states[ROOT].model_dump(exclude={"last_seq"}) == {
        k: v for k, v in before.items() if k != "last_seq"
    }
    assert world.states[CHILD].model_dump(exclude={"last_seq"}) == {
        k: v for k, v in kid_before.items() if k != "last_seq"
    }


def test_a_refold_after_a_crash_reissues_the_same_messages() -> None:
    """The shell re-folds unacked events after a crash: the same ids come out."""
    world = World()
    world.submit(RESEARCH)
    world.settle()
    for workflow_id in (ROOT, CHILD):
        events = world.events(workflow_id)
        first = _ids_of_commands(events)
        assert first == _ids_of_commands(events)
    ids = [e.id for e in world.stream]
    assert len(ids) == len(set(ids))
    assert _ids_of_commands(world.events(CHILD))[-1] == task_key(
        ROOT, "research", 1, "child_completed"
    )


def _ids_of_commands(events: list[Event]) -> list[str]:
    state: WorkflowState | None = None
    out: list[str] = []
    for event in events:
        state, commands = reduce(state, event)
        out.extend(c.event.id for c in commands if isinstance(c, Emit))
    return out


# Interventions ------------------------------------------------------------------


def test_aborting_the_parent_aborts_running_children_and_grandchildren() -> None:
    defn = definition(
        {
            "id": "outer",
            "workflow": child(
                {"id": "inner", "workflow": child({"id": "y", "capability": "echo"})},
            ),
        },
    )
    world = World()
    world.submit(defn)
    world.settle(work=False)
    middle = child_workflow_id(ROOT, "outer", 1)
    leaf = child_workflow_id(middle, "inner", 1)
    assert world.states[leaf].tasks["y"].status == TaskStatus.SCHEDULED
    world.intervene(ROOT, "abort")
    world.settle(work=False)
    assert {s.status for s in world.states.values()} == {WorkflowStatus.ABORTED}
    assert world.states[leaf].reason == (
        "aborted by coordinator: its parent was aborted: "
        "aborted by coordinator: its parent was aborted: aborted by ann"
    )
    # The aborted children reported back; their parents, finished, ignored it.
    reports = [e for e in world.stream if e.source in (middle, leaf) and e.task_id]
    assert [e.type for e in reports] == [EventType.TASK_FAILED, EventType.TASK_FAILED]
    assert world.states[ROOT].tasks["outer"].status == TaskStatus.CANCELLED
    world.check_histories()


def test_a_paused_parent_holds_its_child_and_relays_pause_and_resume() -> None:
    defn = definition(
        {"id": "a", "capability": "echo"},
        {"id": "c", "depends_on": ["a"], "workflow": child({"id": "x", "capability": "echo"})},
        {
            "id": "d",
            "workflow": child(
                {"id": "z", "capability": "echo"},
                {"id": "z2", "capability": "echo", "depends_on": ["z"]},
                name="running",
            ),
        },
    )
    world = World()
    world.submit(defn)
    world.settle(work=False)
    running = child_workflow_id(ROOT, "d", 1)
    assert world.states[running].tasks["z"].status == TaskStatus.SCHEDULED
    world.intervene(ROOT, "pause")
    world.settle(work=False)
    assert world.states[running].paused
    world.settle()  # the workers finish what was dispatched
    root = world.states[ROOT]
    assert root.tasks["c"].status == TaskStatus.PENDING, "held: no child started"
    assert child_workflow_id(ROOT, "c", 1) not in world.states
    assert world.states[running].tasks["z2"].status == TaskStatus.PENDING, "held in the child"
    world.intervene(ROOT, "resume", 2)
    world.settle()
    assert world.states[ROOT].status == WorkflowStatus.COMPLETED
    assert not world.states[running].paused
    world.check_histories()


def test_an_oversized_child_submission_fails_its_parent_task_instead() -> None:
    world = World()
    world.submit(RESEARCH)
    world.settle()
    start = next(e for e in world.stream if e.workflow_id == CHILD)
    failure = children.too_large(start, PayloadTooLargeError("too big"))
    assert failure is not None
    assert failure.id == task_key(ROOT, "research", 1, "child_failed")
    assert isinstance(failure.data, TaskFailed)
    assert not failure.data.error.retryable
    assert children.too_large(world.stream[0], PayloadTooLargeError("x")) is None


# Properties ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_delivery_order_and_resends_complete_the_parent_exactly_once(
    data: st.DataObject,
) -> None:
    """Workers answer in any order and anything may be re-sent after the dedupe
    window: every workflow completes once, its state is a re-fold of its stream,
    and each task's outcome is applied once."""
    defn = definition(
        {
            "id": "a",
            "workflow": child({"id": "x", "capability": "echo"}, {"id": "y", "capability": "echo"}),
        },
        {"id": "b", "capability": "echo"},
        {
            "id": "c",
            "depends_on": ["a", "b"],
            "workflow": child(
                {"id": "p", "capability": "echo"},
                {"id": "q", "workflow": child({"id": "r", "capability": "echo"})},
            ),
        },
    )
    world = World(dedupe=False)
    world.submit(defn)
    while world.queue or world.tasks:
        choices = (["fold"] if world.queue else []) + (["work"] if world.tasks else [])
        resend: bool = data.draw(st.booleans(), label="resend")
        if resend and world.queue:
            world.publish(data.draw(st.sampled_from(world.stream)).model_copy(update={"seq": None}))
        if data.draw(st.sampled_from(choices)) == "fold":
            world.fold_next()
        else:
            world.answer(world.tasks.pop(data.draw(st.integers(0, len(world.tasks) - 1))))
    assert len(world.states) == 4
    for workflow_id, state in world.states.items():
        assert state.status == WorkflowStatus.COMPLETED, workflow_id
        assert state.completed == len(state.tasks)
        terminal = Counter(
            e.id for e in world.events(workflow_id) if e.type == EventType.WORKFLOW_COMPLETED
        )
        assert set(terminal) == {workflow_key(workflow_id, "completed")}
        replayed = fold(world.events(workflow_id))
        assert replayed is not None
        assert replayed.output == state.output
    root = world.states[ROOT]
    assert root.tasks["c"].result == world.states[child_workflow_id(ROOT, "c", 1)].output


def test_cancelling_the_parent_cancels_its_children_and_waits_for_their_reports() -> None:
    defn = definition(
        {
            "id": "outer",
            "workflow": child(
                {"id": "inner", "workflow": child({"id": "y", "capability": "echo"})},
            ),
        },
        {"id": "later", "capability": "echo", "depends_on": ["outer"]},
    )
    world = World()
    world.submit(defn)
    world.settle(work=False)
    middle = child_workflow_id(ROOT, "outer", 1)
    leaf = child_workflow_id(middle, "inner", 1)
    world.intervene(ROOT, "cancel")
    world.settle(work=False)
    # Each level cancelled its queued task, then ended once its child had reported.
    assert {s.status for s in world.states.values()} == {WorkflowStatus.CANCELLED}
    assert world.states[leaf].reason == (
        "cancelled by coordinator: its parent was cancelled by coordinator"
    )
    assert world.states[ROOT].tasks["outer"].status == TaskStatus.CANCELLED
    assert world.states[ROOT].tasks["later"].status == TaskStatus.CANCELLED
    reports = [e for e in world.stream if e.source in (middle, leaf) and e.task_id]
    assert [e.type for e in reports] == [EventType.TASK_FAILED, EventType.TASK_FAILED]
    world.check_histories()

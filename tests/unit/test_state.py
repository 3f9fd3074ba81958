"""Workflow state: KV snapshots, the public view and the small helpers."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.coordinator.reducer import Dispatch, reduce
from agenticflow.coordinator.state import (
    SNAPSHOT_VERSION,
    TaskState,
    TaskStatus,
    WorkflowState,
    WorkflowStatus,
)
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.codec import TaskMessage, pack, unpack
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    Payload,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskUnserved,
    WorkflowRejected,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key
from agenticflow.shared.wire.vclock import VectorClock

WF = "wf1"
T0 = 1_700_000_000_000_000_000

DEFINITION = parse_workflow(
    {
        "name": "snap",
        "tasks": [
            {"id": "a", "capability": "fetch", "params": {"url": "https://x", "n": [1, 2]}},
            {"id": "b", "capability": "work", "depends_on": ["a"], "timeout_s": 5},
            {
                "id": "c",
                "capability": "work",
                "depends_on": ["a"],
                "retry": {"max_attempts": 4, "non_retryable": ["KeyError"]},
            },
            {"id": "d", "capability": "merge", "depends_on": ["b", "c"]},
            {"id": "e", "capability": "lonely"},
        ],
        "default_timeout_s": 60,
    }
)


class Run:
    """Feeds hand-made events to the reducer and keeps what it dispatched."""

    def __init__(self, defn: WorkflowDefinition = DEFINITION) -> None:
        self.now = T0
        self.seq = 0
        self.tasks: dict[str, TaskMessage] = {}
        self.state: WorkflowState | None = None
        self.feed(
            EventType.WORKFLOW_SUBMITTED,
            WorkflowSubmitted(definition=defn, input={"question": "why", "k": 3}),
            source="client",
        )

    @property
    def st(self) -> WorkflowState:
        assert self.state is not None
        return self.state

    def feed(
        self,
        event_type: EventType,
        data: Payload,
        *,
        task_id: str | None = None,
        source: str = "w1",
    ) -> None:
        self.now += 1_000_000
        self.seq += 1
        task = self.tasks.get(task_id or "")
        clock = (task.vclock if task else VectorClock()).increment(source)
        event = Event(
            id=task_key(WF, task_id or "-", task.attempt if task else 0, event_type.value),
            type=event_type,
            workflow_id=WF,
            source=source,
            timestamp=self.now,
            vclock=clock,
            data=data,
            task_id=task_id,
            attempt=task.attempt if task else None,
            seq=self.seq,
        )
        self.state, commands = reduce(self.state, event)
        for command in commands:
            if isinstance(command, Dispatch):
                self.tasks[command.task.task_id] = command.task

    def start(self, task_id: str) -> None:
        self.feed(
            EventType.TASK_STARTED,
            TaskStarted(worker="w1", agent="ag", instance="w1.ag.0"),
            task_id=task_id,
        )

    def complete(self, task_id: str, result: Any) -> None:
        data = TaskCompleted(result=result, worker="w1", agent="ag", duration_ms=1.5)
        self.feed(EventType.TASK_COMPLETED, data, task_id=task_id)

    def fail(self, task_id: str, error: ErrorInfo) -> None:
        self.feed(EventType.TASK_FAILED, TaskFailed(error=error, worker="w2"), task_id=task_id)


def just_submitted() -> WorkflowState:
    return Run().st


def mid_run() -> WorkflowState:
    """a completed, b running with a deadline, c waiting for a retry, e queued unserved."""
    run = Run()
    run.start("a")
    run.complete("a", {"rows": [{"id": 1, "v": 2.5}], "ok": True, "none": None, "raw": b"\x00"})
    run.start("b")
    run.start("c")
    run.fail("c", ErrorInfo(type="ValueError", message="boom", code="task_error"))
    run.feed(EventType.TASK_UNSERVED, TaskUnserved(capability="lonely"), task_id="e", source="sh")
    state = run.st
    assert state.tasks["b"].deadline_ns is not None
    assert state.tasks["c"].status == TaskStatus.RETRY_WAIT
    assert state.tasks["e"].note is not None
    return state


def completed() -> WorkflowState:
    run = Run()
    run.complete("a", 1)
    run.complete("b", [2, "two"])
    run.complete("c", "3")
    run.complete("d", {"sum": 6})
    run.complete("e", None)
    assert run.st.status == WorkflowStatus.COMPLETED
    return run.st


def failed() -> WorkflowState:
    run = Run()
    run.complete("a", 1)
    run.start("c")
    run.fail("c", ErrorInfo(type="KeyError", message="'k'"))
    assert run.st.status == WorkflowStatus.FAILED
    return run.st


def rejected() -> WorkflowState:
    defn = parse_workflow(
        {
            "tasks": [
                {"id": "a", "capability": "x", "depends_on": ["b"]},
                {"id": "b", "capability": "x", "depends_on": ["a", "ghost"]},
            ]
        }
    )
    state = Run(defn).st
    assert state.status == WorkflowStatus.REJECTED
    return state


def shell_rejected() -> WorkflowState:
    event = Event(
        id="wf1:rejected",
        type=EventType.WORKFLOW_REJECTED,
        workflow_id=WF,
        source="coord",
        timestamp=T0,
        vclock=VectorClock({"coord-shell": 1}),
        data=WorkflowRejected(reason="unreadable", problems=["body is not valid msgpack"]),
        seq=3,
    )
    state, _ = reduce(None, event)
    assert state is not None
    return state


def bare() -> WorkflowState:
    return WorkflowState(workflow_id="empty")


STATES = {
    "just-submitted": just_submitted,
    "mid-run": mid_run,
    "completed": completed,
    "failed": failed,
    "rejected": rejected,
    "shell-rejected": shell_rejected,
    "bare": bare,
}


# Snapshots -------------------------------------------------------------------


@pytest.mark.parametrize("make", list(STATES.values()), ids=list(STATES))
def test_snapshot_round_trip_preserves_the_state(make: Any) -> None:
    state: WorkflowState = make()
    data = state.to_snapshot()
    assert isinstance(data, bytes)
    restored = WorkflowState.from_snapshot(data)

    assert restored.model_dump() == state.model_dump()
    assert restored.to_snapshot() == data
    assert restored.vclock == state.vclock
    assert isinstance(restored.vclock, VectorClock)
    assert all(isinstance(t.status, TaskStatus) for t in restored.tasks.values())
    assert restored.public_view() == state.public_view()


def test_snapshot_carries_a_version() -> None:
    raw = unpack(mid_run().to_snapshot())
    assert raw["v"] == SNAPSHOT_VERSION
    assert raw["state"]["workflow_id"] == WF


def test_restored_state_rebuilds_its_indexes() -> None:
    restored = WorkflowState.from_snapshot(mid_run().to_snapshot())
    retry = restored.spec("c").retry
    assert retry is not None
    assert retry.non_retryable == ("KeyError",)
    assert restored.dependents("a") == ["b", "c"]
    assert restored.dependents("d") == []
    assert restored.name == "snap"


def test_restored_details_survive() -> None:
    state = mid_run()
    restored = WorkflowState.from_snapshot(state.to_snapshot())
    assert restored.tasks["a"].result["raw"] == b"\x00"
    assert restored.tasks["c"].error == ErrorInfo(type="ValueError", message="boom")
    assert restored.tasks["c"].retry_due_ns == state.tasks["c"].retry_due_ns
    assert restored.tasks["b"].deadline_ns == state.tasks["b"].deadline_ns
    assert restored.tasks["e"].note == state.tasks["e"].note
    assert restored.last_seq == state.last_seq == 7
    assert restored.version == state.version
    assert restored.input == {"question": "why", "k": 3}


GARBAGE = {
    "empty": b"",
    "reserved-byte": b"\xc1",
    "text": b"hello, world",
    "truncated": mid_run().to_snapshot()[:-5],
    "nil": pack(None),
    "list": pack([1, 2, 3]),
    "string": pack("state"),
    "no-state": pack({"v": 1}),
    "state-nil": pack({"v": 1, "state": None}),
    "state-string": pack({"v": 1, "state": "running"}),
    "state-list": pack({"v": 1, "state": [1]}),
    "no-workflow-id": pack({"v": 1, "state": {}}),
    "workflow-id-int": pack({"v": 1, "state": {"workflow_id": 5}}),
    "bad-status": pack({"v": 1, "state": {"workflow_id": "x", "status": "paused"}}),
    "bad-task-status": pack(
        {"v": 1, "state": {"workflow_id": "x", "tasks": {"a": {"status": "zombie"}}}}
    ),
    "tasks-list": pack({"v": 1, "state": {"workflow_id": "x", "tasks": ["a"]}}),
    "bad-vclock-node": pack({"v": 1, "state": {"workflow_id": "x", "vclock": {"a b": 1}}}),
    "negative-vclock": pack({"v": 1, "state": {"workflow_id": "x", "vclock": {"n": -1}}}),
    "vclock-list": pack({"v": 1, "state": {"workflow_id": "x", "vclock": [1, 2]}}),
    "no-tasks-definition": pack(
        {"v": 1, "state": {"workflow_id": "x", "definition": {"tasks": []}}}
    ),
    "bad-error": pack(
        {"v": 1, "state": {"workflow_id": "x", "tasks": {"a": {"error": {"type": 1}}}}}
    ),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_snapshot_raises_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        WorkflowState.from_snapshot(data)


def test_malformed_snapshot_says_why() -> None:
    with pytest.raises(MalformedMessageError, match="not a workflow snapshot"):
        WorkflowState.from_snapshot(pack([1]))
    with pytest.raises(MalformedMessageError, match="invalid workflow snapshot"):
        WorkflowState.from_snapshot(
            pack({"v": 1, "state": {"workflow_id": "x", "status": "paused"}})
        )
    with pytest.raises(MalformedMessageError, match="snapshot version 3 is not one"):
        WorkflowState.from_snapshot(pack({"v": 3, "state": {"workflow_id": "x"}}))
    with pytest.raises(MalformedMessageError, match="corrupt compressed snapshot"):
        WorkflowState.from_snapshot(pack({"v": 2, "z": b"not zlib"}))
    with pytest.raises(MalformedMessageError, match="not valid msgpack"):
        WorkflowState.from_snapshot(b"\xc1")


def test_unknown_fields_in_a_snapshot_are_ignored() -> None:
    raw = unpack(mid_run().to_snapshot())
    raw["state"]["added_in_v2"] = {"x": 1}
    raw["state"]["tasks"]["a"]["added_in_v2"] = 1
    restored = WorkflowState.from_snapshot(pack(raw))
    assert restored.model_dump() == mid_run().model_dump()


PROPS = settings(database=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

json_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
state_fields = st.sampled_from(sorted(WorkflowState.model_fields))
task_fields = st.sampled_from(sorted(TaskState.model_fields))
task_bodies = st.dictionaries(task_fields, json_values, max_size=4)


@PROPS
@given(st.binary(max_size=64))
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    try:
        state = WorkflowState.from_snapshot(data)
    except MalformedMessageError:
        return
    assert isinstance(state, WorkflowState)


@PROPS
@given(
    st.dictionaries(state_fields, json_values, max_size=4),
    st.dictionaries(st.text(max_size=4), task_bodies, max_size=3),
)
def test_random_structures_never_escape_as_another_error(
    state: dict[str, Any], tasks: dict[str, Any]
) -> None:
    body = {"workflow_id": "x", **state, "tasks": tasks}
    try:
        restored = WorkflowState.from_snapshot(pack({"v": 1, "state": body}))
    except MalformedMessageError:
        return
    assert isinstance(restored, WorkflowState)
    assert WorkflowState.from_snapshot(restored.to_snapshot()).model_dump() == (
        restored.model_dump()
    )


# The public view -------------------------------------------------------------

TASK_VIEW_KEYS = {"state", "attempts", "result", "error", "started_at", "finished_at"}


@pytest.mark.parametrize("make", list(STATES.values()), ids=list(STATES))
def test_public_view_has_the_documented_keys_and_is_json(make: Any) -> None:
    state: WorkflowState = make()
    view = state.public_view()
    assert {"workflow_id", "state", "tasks"} <= view.keys()
    assert view["workflow_id"] == state.workflow_id
    assert view["state"] == state.status.value
    assert set(view["tasks"]) == set(state.tasks)
    for task in view["tasks"].values():
        assert task.keys() >= TASK_VIEW_KEYS
    json.dumps(view, default=repr)


def test_public_view_of_a_mid_run_state() -> None:
    state = mid_run()
    view = state.public_view()
    assert view["state"] == "running"
    assert view["name"] == "snap"
    assert view["counts"] == {
        "completed": 1,
        "running": 1,
        "retry_wait": 1,
        "pending": 1,
        "scheduled": 1,
    }
    assert view["last_seq"] == 7
    assert view["vclock"] == state.vclock.to_dict()
    a, c = view["tasks"]["a"], view["tasks"]["c"]
    assert a["state"] == "completed"
    assert a["attempts"] == 1
    assert a["result"]["ok"] is True
    assert a["error"] is None
    assert a["started_at"] is not None
    assert a["finished_at"] is not None
    assert c["state"] == "retry_wait"
    assert c["error"] == {
        "type": "ValueError",
        "message": "boom",
        "code": "task_error",
        "retryable": True,
    }
    assert c["finished_at"] is None
    assert view["tasks"]["d"]["started_at"] is None
    assert view["tasks"]["e"]["note"] is not None


def test_public_view_of_finished_workflows() -> None:
    done = completed().public_view()
    assert done["state"] == "completed"
    assert done["output"] == {"d": {"sum": 6}, "e": None}
    assert done["finished_at"] is not None
    bad = failed().public_view()
    assert bad["state"] == "failed"
    assert bad["failed_task"] == "c"
    assert "(not retryable)" in bad["reason"]
    assert bad["tasks"]["c"]["error"]["type"] == "KeyError"
    assert bad["counts"] == {"completed": 1, "failed": 1, "cancelled": 3}
    refused = rejected().public_view()
    assert refused["state"] == "rejected"
    assert refused["tasks"] == {}
    assert len(refused["problems"]) == 1
    assert "ghost" in refused["problems"][0]


# Helpers ---------------------------------------------------------------------


def test_counts_and_terminal_flags() -> None:
    state = WorkflowState(
        workflow_id="x",
        tasks={
            "a": TaskState(status=TaskStatus.COMPLETED),
            "b": TaskState(status=TaskStatus.COMPLETED),
            "c": TaskState(),
        },
    )
    assert state.counts() == {"completed": 2, "pending": 1}
    assert not state.is_terminal
    for status in WorkflowStatus:
        assert WorkflowState(workflow_id="x", status=status).is_terminal == (
            status != WorkflowStatus.RUNNING
        )
    assert WorkflowState(workflow_id="x").name == ""


# Large snapshots ----------------------------------------------------------------


def _wide(n: int) -> WorkflowState:
    """A submitted workflow of ``n`` independent tasks (all dispatched)."""
    definition = parse_workflow(
        {"tasks": [{"id": f"task-{i}", "capability": "work", "params": {"i": i}} for i in range(n)]}
    )
    state, _ = reduce(
        None,
        Event(
            id="wide:submitted",
            type=EventType.WORKFLOW_SUBMITTED,
            workflow_id="wide",
            source="c",
            timestamp=1,
            vclock=VectorClock({"c": 1}),
            data=WorkflowSubmitted(definition=definition),
        ),
    )
    assert state is not None
    return state


def test_a_large_snapshot_is_compressed_and_reads_back() -> None:
    state = _wide(5_000)
    data = state.to_snapshot()
    assert "z" in unpack(data)
    # 5,000 tasks used to need ~1.5 MB, more than NATS's default max_payload.
    assert len(data) < 1024 * 1024 - 4096
    assert WorkflowState.from_snapshot(data).model_dump() == state.model_dump()


def test_a_version_1_snapshot_still_reads() -> None:
    state = mid_run()
    old = pack({"v": 1, "state": state.model_dump(mode="python")})
    assert WorkflowState.from_snapshot(old).model_dump() == state.model_dump()


def test_a_finished_workflow_too_large_is_trimmed_to_fit() -> None:
    state = _wide(3)
    for i, task in enumerate(state.tasks.values()):
        task.status, task.result = TaskStatus.COMPLETED, os.urandom(40_000).hex() + str(i)
    state.status = WorkflowStatus.COMPLETED
    full, dropped = state.snapshot_within(1_000_000)
    assert dropped is None
    assert WorkflowState.from_snapshot(full).tasks["task-0"].result is not None
    data, dropped = state.snapshot_within(100_000)
    assert len(data) <= 100_000
    assert dropped == "task results and output"
    trimmed = WorkflowState.from_snapshot(data)
    assert trimmed.status == WorkflowStatus.COMPLETED
    assert {t.result for t in trimmed.tasks.values()} == {None}
    assert "`agenticflow events` and `replay` still have them" in trimmed.problems[-1]
    tiny, dropped = state.snapshot_within(1_000)
    assert dropped == "definition, tasks, results and output"
    assert WorkflowState.from_snapshot(tiny).definition is None


def test_a_running_workflow_is_never_trimmed() -> None:
    state = _wide(2)
    for task in state.tasks.values():
        task.result = os.urandom(40_000).hex()
    data, dropped = state.snapshot_within(10_000)
    assert dropped is None
    assert len(data) > 10_000

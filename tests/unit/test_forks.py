"""Forks, re-executions and diffs as pure logic: the reducer's reuse, the
divergence finder and the side-effect recorder."""

from __future__ import annotations

from typing import Any

import pytest

from agenticflow.coordinator.forks import first_divergence, recorded_effects
from agenticflow.coordinator.reducer import Dispatch, Emit, fold, reduce
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.errors import RecordedEffectError, ReplayDivergedError
from agenticflow.shared.wire.codec import TaskMessage
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    Origin,
    RecordedEffect,
    TaskEffectRecorded,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.vclock import VectorClock
from agenticflow.worker.effects import Effects, params_hash
from tests.unit.test_reducer import DIAMOND, T0, WF, Sim, default_result, submitted


def fork_of(reuse: dict[str, Any], **extra: Any) -> Event:
    plain = submitted(DIAMOND)
    assert isinstance(plain.data, WorkflowSubmitted)
    data = plain.data.model_copy(
        update={"reuse": reuse, "origin": Origin(kind="fork", workflow_id="src", at_seq=7), **extra}
    )
    return plain.model_copy(update={"data": data})


def test_a_fork_dispatches_only_what_its_reused_results_make_ready() -> None:
    state, commands = reduce(None, fork_of({"a": 1, "b": 2}))
    assert state is not None
    dispatched = [c.task for c in commands if isinstance(c, Dispatch)]
    assert [t.task_id for t in dispatched] == ["c"]  # d still waits for c
    assert dispatched[0].inputs == {"a": 1}
    assert state.tasks["a"].status == state.tasks["b"].status == TaskStatus.COMPLETED
    assert state.tasks["b"].note == "reused from src (up to seq 7)"
    assert state.tasks["b"].attempts == 0
    assert state.completed == 2


def test_a_fork_that_reuses_everything_completes_at_once() -> None:
    state, commands = reduce(None, fork_of({"a": 1, "b": 2, "c": 3, "d": 4}))
    assert state is not None
    assert state.status == WorkflowStatus.COMPLETED
    assert state.output == {"d": 4}
    assert not [c for c in commands if isinstance(c, Dispatch)]


@pytest.mark.parametrize(
    ("reuse", "problem"),
    [
        ({"zz": 1}, "reused task 'zz' is not in the workflow"),
        ({"d": 4}, "reused task 'd' depends on 'b', 'c', which would run again"),
    ],
)
def test_a_fork_with_inconsistent_reuse_is_rejected(reuse: dict[str, Any], problem: str) -> None:
    state, commands = reduce(None, fork_of(reuse))
    assert state is not None
    assert state.status == WorkflowStatus.REJECTED
    assert any(problem in p for p in state.problems)
    assert [c.event.type for c in commands if isinstance(c, Emit)] == [EventType.WORKFLOW_REJECTED]


def test_a_bad_route_is_rejected() -> None:
    state, _ = reduce(None, fork_of({}, route="no.dots"))
    assert state is not None
    assert state.status == WorkflowStatus.REJECTED


def test_a_rerun_hands_each_attempt_its_recording_on_its_route() -> None:
    effect = RecordedEffect(call=0, name="search", params_hash="h", result=[1])
    _, commands = reduce(
        None, fork_of({}, recorded={"a": {1: [effect]}}, replay=True, route="dbg-1")
    )
    (task,) = [c.task for c in commands if isinstance(c, Dispatch)]
    assert task.recorded == [effect]
    assert task.replay is True
    assert task.queue == "fetch~dbg-1"


def run_diamond(results: dict[str, Any] | None = None, *, fail: str | None = None) -> list[Event]:
    sim = Sim()
    sim.submit(DIAMOND)
    while sim.st.status == WorkflowStatus.RUNNING:
        ready = [
            t for t in sim.dispatched if sim.st.tasks[t.task_id].status == TaskStatus.SCHEDULED
        ]
        task = ready[0]
        sim.publish(sim.started(task, worker=f"w-{task.task_id}"))
        if task.task_id == fail:
            bug = ErrorInfo(type="Bug", message="x", retryable=False)
            sim.publish(sim.failed(task, bug, worker=f"w-{task.task_id}"))
        else:
            value = (results or {}).get(task.task_id, default_result(task))
            sim.publish(sim.completed(task, value, worker=f"w-{task.task_id}"))
    return sim.log


def test_two_runs_doing_the_same_things_do_not_diverge() -> None:
    assert first_divergence(run_diamond(), run_diamond()) is None


def test_diff_names_the_first_different_result() -> None:
    found = first_divergence(run_diamond(), run_diamond({"b": "other"}))
    assert found is not None
    assert found.left is not None
    assert found.right is not None
    assert (found.left.type, found.left.task_id) == (EventType.TASK_COMPLETED, "b")
    assert "result" in found.why
    assert "'other'" in found.why


def test_diff_pairs_a_failure_with_a_success() -> None:
    found = first_divergence(run_diamond(fail="c"), run_diamond())
    assert found is not None
    assert found.left is not None
    assert found.right is not None
    assert found.left.type == EventType.TASK_FAILED
    assert found.right.type == EventType.TASK_COMPLETED
    assert "task.failed" in found.why


def test_diff_skips_the_tasks_a_fork_reused() -> None:
    source = run_diamond()
    forked = fold([fork_of({"a": source_result(source, "a")})])
    assert forked is not None
    only_submission = [e.model_copy(update={"data": fork_of({"a": 0}).data}) for e in source[:1]]
    found = first_divergence(source, only_submission + source[1:])
    assert found is None


def source_result(events: list[Event], task_id: str) -> Any:
    return next(
        e.data.model_dump()["result"]
        for e in events
        if e.type == EventType.TASK_COMPLETED and e.task_id == task_id
    )


def effect_event(task_id: str, attempt: int, call: int, result: Any) -> Event:
    effect = RecordedEffect(call=call, name="tool", params_hash="h", result=result)
    return Event(
        id=f"{WF}:{task_id}:{attempt}:effect:{call}",
        type=EventType.TASK_EFFECT_RECORDED,
        workflow_id=WF,
        source="w1",
        timestamp=T0,
        vclock=VectorClock({"w1": call + 1}),
        data=TaskEffectRecorded(effect=effect, key=f"{WF}:{task_id}:{call}:tool"),
        task_id=task_id,
        attempt=attempt,
    )


def test_recorded_effects_are_grouped_by_task_and_attempt_in_call_order() -> None:
    events = [
        effect_event("a", 1, 1, "second"),
        effect_event("a", 1, 0, "first"),
        effect_event("a", 1, 0, "a duplicate record loses"),
        effect_event("a", 2, 0, "retry"),
    ]
    found = recorded_effects(events)
    assert [e.result for e in found["a"][1]] == ["first", "second"]
    assert [e.result for e in found["a"][2]] == ["retry"]


# The recorder ---------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.stored: list[TaskEffectRecorded] = []

    async def __call__(self, data: TaskEffectRecorded, call: int) -> None:
        assert data.effect.call == call
        self.stored.append(data)


def effects(recorder: Recorder, **kwargs: Any) -> Effects:
    return Effects(key_prefix=f"{WF}:t", worker="w1", publish=recorder, **kwargs)


async def test_each_call_is_recorded_in_order_with_its_key() -> None:
    recorder = Recorder()
    fx = effects(recorder)

    async def fetch(url: str) -> str:
        return url.upper()

    assert await fx.call("fetch", fetch, "a") == "A"
    assert await fx.call("len", len, "abc") == 3
    assert [(d.effect.call, d.effect.name, d.effect.result) for d in recorder.stored] == [
        (0, "fetch", "A"),
        (1, "len", 3),
    ]
    assert recorder.stored[1].key == f"{WF}:t:1:len"
    assert recorder.stored[0].effect.params_hash == params_hash(("a",), {})


async def test_a_failed_call_is_recorded_and_raised() -> None:
    recorder = Recorder()

    def boom() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await effects(recorder).call("net", boom)
    assert recorder.stored[0].effect.error is not None
    assert recorder.stored[0].effect.error.type == "ConnectionError"


async def test_a_result_that_cannot_be_recorded_is_marked_not_stored() -> None:
    recorder = Recorder()

    async def publish(data: TaskEffectRecorded, call: int) -> None:
        if data.effect.stored:
            from agenticflow.shared.errors import MalformedMessageError

            raise MalformedMessageError("not msgpack")
        await recorder(data, call)

    fx = Effects(key_prefix="k", worker="w1", publish=publish)
    value = object()
    assert await fx.call("odd", lambda: value) is value
    assert recorder.stored[0].effect.stored is False


async def test_a_replay_serves_results_and_errors_without_calling() -> None:
    recorded = [
        RecordedEffect(call=0, name="fetch", params_hash=params_hash(("a",), {}), result="A"),
        RecordedEffect(
            call=1,
            name="net",
            params_hash=params_hash((), {}),
            error=ErrorInfo(type="ConnectionError", message="down", retryable=True),
        ),
    ]
    recorder = Recorder()
    fx = effects(recorder, recorded=recorded, replay=True)

    def never(*_: Any) -> None:
        raise AssertionError("called the outside world")

    assert await fx.call("fetch", never, "a") == "A"
    with pytest.raises(RecordedEffectError, match="ConnectionError: down"):
        await fx.call("net", never)
    assert all(d.replayed for d in recorder.stored)
    with pytest.raises(ReplayDivergedError, match=r"#2 \(extra\) was not made"):
        await fx.call("extra", never)


@pytest.mark.parametrize(
    ("name", "args", "what"), [("other", ("a",), "name"), ("fetch", ("b",), "parameters")]
)
async def test_a_replay_refuses_a_different_call(name: str, args: tuple[str], what: str) -> None:
    recorded = [RecordedEffect(call=0, name="fetch", params_hash=params_hash(("a",), {}))]
    fx = effects(Recorder(), recorded=recorded, replay=True)
    with pytest.raises(ReplayDivergedError, match=f"differs in {what}"):
        await fx.call(name, print, *args)


def test_task_messages_carry_their_queue() -> None:
    task = TaskMessage(workflow_id=WF, task_id="t", attempt=1, capability="echo")
    assert task.queue == "echo"
    assert task.model_copy(update={"route": "r1"}).queue == "echo~r1"

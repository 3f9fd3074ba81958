"""``agenticflow top``: building the view from readings and drawing it, no broker."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich.console import Console

from agenticflow.coordinator.state import TaskState, TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.wire.events import (
    ErrorInfo,
    Event,
    EventType,
    Payload,
    TaskCompleted,
    TaskFailed,
    WorkflowFailed,
)
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import VectorClock
from agenticflow.top import (
    FAILURES_SHOWN,
    WORKFLOWS_SHOWN,
    ClusterView,
    RateSample,
    Readings,
    advance,
    build_view,
    per_second,
    render,
)

NAMES = Names("tp")
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def consumer(
    queue: str, *, pending: int = 0, acks: int = 0, redelivered: int = 0, delivered: int = 0
) -> dict[str, Any]:
    """A consumer info as the JetStream API returns it."""
    return {
        "name": NAMES.task_consumer(queue),
        "config": {"filter_subject": NAMES.task_subject(queue)},
        "num_pending": pending,
        "num_ack_pending": acks,
        "num_redelivered": redelivered,
        "num_waiting": 1,
        "delivered": {"consumer_seq": delivered, "stream_seq": delivered},
    }


def entry(
    worker: str,
    agent: str,
    capabilities: list[str],
    states: list[str],
    *,
    done: int = 0,
    heartbeat: int = T0,
) -> dict[str, Any]:
    """A worker's registry entry for one agent; ``done`` tasks on its first instance."""
    return {
        "instance": f"{worker}.{agent}",
        "role": "worker",
        "worker": worker,
        "agent": agent,
        "capabilities": capabilities,
        "heartbeat": heartbeat,
        "agents": [
            {
                "id": f"{worker}.{agent}.{n}",
                "state": state,
                "since": T0 - 5 * S,
                "tasks_done": done if n == 0 else 0,
                "suspending": False,
            }
            for n, state in enumerate(states)
        ],
    }


COORDINATOR = {
    "instance": "c1.coordinator",
    "role": "coordinator",
    "coordinator": "c1",
    "state": "active",
    "load": 3,
    "events_folded": 120,
    "heartbeat": T0,
}


def state(
    workflow_id: str, *statuses: TaskStatus, created: int = T0, **extra: Any
) -> WorkflowState:
    tasks = {f"t{n}": TaskState(status=s, capability="echo") for n, s in enumerate(statuses)}
    done = sum(1 for s in statuses if s == TaskStatus.COMPLETED)
    return WorkflowState(
        workflow_id=workflow_id, tasks=tasks, completed=done, created_at=created, **extra
    )


def event(seq: int, event_type: EventType, data: Payload, *, task_id: str | None = "t0") -> Event:
    return Event(
        id=f"e{seq}",
        type=event_type,
        workflow_id="wf-bad",
        source="w1",
        timestamp=T0 + seq,
        vclock=VectorClock(),
        data=data,
        task_id=task_id,
        attempt=2 if task_id else None,
        seq=seq,
    )


def readings(**changes: Any) -> Readings:
    base = Readings(
        taken_at=T0,
        monotonic=10 * S,
        consumers=[
            consumer("echo", pending=4, acks=2, redelivered=1, delivered=10),
            consumer("add"),
            consumer("echo~fork-1", pending=3),
            {"name": "reader", "config": {"filter_subject": "tp.task.echo"}, "num_pending": 9},
        ],
        registry=[
            entry("w1", "echo", ["echo"], ["idle", "processing"], done=4),
            entry("w2", "echo", ["echo"], ["suspended", "idle"], done=6),
            entry("w1", "adder", ["add"], ["idle"]),
            COORDINATOR,
        ],
        events_last_seq=100,
        workflows=[
            state("wf-old", TaskStatus.COMPLETED, TaskStatus.RUNNING, created=T0 - 9 * S),
            state(
                "wf-new",
                TaskStatus.COMPLETED,
                TaskStatus.WAITING_APPROVAL,
                TaskStatus.PENDING,
                created=T0 - S,
                paused=True,
            ),
            state("wf-done", TaskStatus.COMPLETED, status=WorkflowStatus.COMPLETED),
        ],
        workflows_scanned=3,
        failures=[
            event(
                7,
                EventType.TASK_FAILED,
                TaskFailed(
                    error=ErrorInfo(type="ValueError", message="bad row", retryable=False),
                    worker="w1",
                ),
            ),
            event(
                8,
                EventType.WORKFLOW_FAILED,
                WorkflowFailed(
                    reason="task 't0' failed: ValueError: bad row",
                    task_id="t0",
                    error=ErrorInfo(type="ValueError", message="bad row"),
                ),
                task_id=None,
            ),
            event(9, EventType.TASK_COMPLETED, TaskCompleted(result=1)),
        ],
        failures_since=T0 - 600 * S,
    )
    return dataclasses.replace(base, **changes)


def test_per_second_needs_a_previous_value_time_and_a_counter_that_did_not_go_back() -> None:
    assert per_second(None, 10, S) is None
    assert per_second(10, 10, 0) is None
    assert per_second(10, 5, S) is None
    assert per_second(10, 30, 2 * S) == 10.0
    assert per_second(10, 10, S) == 0.0


def test_a_rate_is_measured_between_two_heartbeats_of_the_entry() -> None:
    first = advance(None, T0, 5)
    assert first == RateSample(T0, 5, None)
    assert advance(first, T0, 9) is first  # no new heartbeat: nothing to measure yet
    second = advance(first, T0 + 4 * S, 13)
    assert second == RateSample(T0 + 4 * S, 13, 2.0)
    assert advance(second, T0 + 4 * S, 40) is second  # the rate stands until the next heartbeat
    assert advance(second, T0 + 9 * S, 13).rate == 0.0
    # A worker that restarted under the same key starts over.
    assert advance(second, T0 + 9 * S, 2).rate is None
    assert advance(second, T0, 20).rate is None


def test_queues_are_the_task_consumers_with_their_lag_and_the_workers_serving_them() -> None:
    view = build_view(readings(), NAMES, None)
    queues = {q.queue: q for q in view.queues}
    assert set(queues) == {"echo", "add", "echo~fork-1"}  # "reader" is not a task consumer
    echo = queues["echo"]
    assert (echo.pending, echo.in_flight, echo.redelivered, echo.lag) == (4, 2, 1, 6)
    assert (echo.workers, echo.instances, echo.delivered_per_s) == (2, 4, None)
    assert (queues["add"].workers, queues["add"].instances, queues["add"].lag) == (1, 1, 0)
    assert (queues["echo~fork-1"].workers, queues["echo~fork-1"].lag) == (0, 3)
    assert [q.queue for q in view.queues] == ["echo", "echo~fork-1", "add"]  # most lag first
    assert view.lag == 9


def test_instances_agents_and_coordinators_come_from_the_registry() -> None:
    view = build_view(readings(), NAMES, None)
    assert view.states == {"idle": 3, "processing": 1, "suspended": 1}
    assert {i.id: i.state for i in view.instances}["w2.echo.0"] == "suspended"
    echo = next(a for a in view.agents if a.agent == "echo")
    assert (echo.workers, echo.instances, echo.tasks_done, echo.tasks_per_s) == (2, 4, 10, None)
    assert echo.states == {"idle": 2, "processing": 1, "suspended": 1}
    assert [(c.node, c.state, c.workflows_cached) for c in view.coordinators] == [
        ("c1", "active", 3)
    ]


def test_running_workflows_newest_first_with_their_progress() -> None:
    view = build_view(readings(), NAMES, None)
    assert [w.workflow_id for w in view.workflows] == ["wf-new", "wf-old"]
    new = view.workflows[0]
    assert (new.done, new.total, new.paused, new.waiting_approval) == (1, 3, True, ["t1"])
    assert (view.workflows[1].running, view.workflows[1].paused) == (1, False)
    assert view.running_workflows == 2


def test_running_workflows_are_capped() -> None:
    many = [
        state(f"wf-{n}", TaskStatus.RUNNING, created=T0 + n) for n in range(WORKFLOWS_SHOWN + 5)
    ]
    view = build_view(readings(workflows=many), NAMES, None)
    assert view.running_workflows == WORKFLOWS_SHOWN + 5
    assert len(view.workflows) == WORKFLOWS_SHOWN
    assert view.workflows[0].workflow_id == f"wf-{WORKFLOWS_SHOWN + 4}"


def test_failures_newest_first_with_their_error_other_events_left_out() -> None:
    view = build_view(readings(), NAMES, None)
    assert [(f.seq, f.type) for f in view.failures] == [(8, "workflow.failed"), (7, "task.failed")]
    workflow, task = view.failures
    assert (task.task_id, task.attempt, task.error_type, task.message) == (
        "t0",
        2,
        "ValueError",
        "bad row",
    )
    assert (task.retryable, task.worker) == (False, "w1")
    assert (workflow.task_id, workflow.error_type) == ("t0", "ValueError")
    assert workflow.message.startswith("task 't0' failed")
    lots = [
        event(n, EventType.TASK_FAILED, TaskFailed(error=ErrorInfo(type="E", message=str(n))))
        for n in range(1, FAILURES_SHOWN + 4)
    ]
    capped = build_view(readings(failures=lots), NAMES, None)
    assert [f.seq for f in capped.failures] == list(range(FAILURES_SHOWN + 3, 3, -1))


def test_rates_come_from_the_difference_with_the_previous_view() -> None:
    first = build_view(readings(), NAMES, None)
    assert (first.tasks_per_s, first.events_per_s) == (None, None)
    later = readings(
        taken_at=T0 + 2 * S,
        monotonic=12 * S,
        events_last_seq=150,
        consumers=[consumer("echo", delivered=30), consumer("add")],
        registry=[
            # w1 heartbeat 4 s later with 8 more tasks; w2 did not heartbeat since.
            entry("w1", "echo", ["echo"], ["idle", "idle"], done=12, heartbeat=T0 + 4 * S),
            entry("w2", "echo", ["echo"], ["idle", "idle"], done=6),
            entry("w1", "adder", ["add"], ["idle"], heartbeat=T0 + 4 * S),
        ],
    )
    second = build_view(later, NAMES, first)
    assert second.events_per_s == 25.0  # 50 events in 2 s
    assert second.tasks_per_s == 2.0  # 8 tasks between two heartbeats 4 s apart, + 0 for adder
    assert {q.queue: q.delivered_per_s for q in second.queues} == {"echo": 10.0, "add": 0.0}
    assert {a.agent: a.tasks_per_s for a in second.agents} == {"adder": 0.0, "echo": 2.0}


def test_to_dict_is_json() -> None:
    view = build_view(readings(), NAMES, None)
    data = json.loads(json.dumps(view.to_dict()))
    assert data["throughput"] == {"tasks_per_s": None, "events_per_s": None, "events_last_seq": 100}
    assert data["queues"][0] == {
        "queue": "echo",
        "consumer": "task_echo",
        "pending": 4,
        "in_flight": 2,
        "redelivered": 1,
        "waiting_pulls": 1,
        "delivered": 10,
        "workers": 2,
        "instances": 4,
        "delivered_per_s": None,
        "lag": 6,
    }
    assert data["states"] == {"idle": 3, "processing": 1, "suspended": 1}
    assert data["workflows"]["shown"][0]["workflow_id"] == "wf-new"
    assert data["failures"]["items"][1]["error_type"] == "ValueError"
    assert "samples" not in data


def text_of(view: ClusterView, **kwargs: Any) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render(view, **kwargs))
    return console.export_text()


def test_render_shows_every_part() -> None:
    text = text_of(build_view(readings(), NAMES, None))
    assert "prefix tp" in text
    assert "tasks/s \u2013" in text  # no rate yet
    for shown in ("echo~fork-1", "w2.echo.0", "suspended", "c1 (active", "wf-new", "1/3", "paused"):
        assert shown in text, shown
    assert "ValueError: bad row" in text
    assert "wf-done" not in text


def test_render_shows_a_failed_refresh() -> None:
    note = "refresh failed, retrying: no answer"
    empty = build_view(readings(consumers=[], registry=[], workflows=[], failures=[]), NAMES, None)
    text = text_of(empty, note=note)
    assert note in text
    assert "none registered" in text


def test_render_shows_user_text_as_text() -> None:
    """An error message holding ``[/b]`` once made ``top`` crash (MarkupError);
    ``[red]`` styled it, and an escape sequence reached the terminal."""
    message = "[/b] [red]alarm[/red] [high] \x1b[2J"
    failed = event(
        7,
        EventType.TASK_FAILED,
        TaskFailed(error=ErrorInfo(type="Boom", message=message, retryable=False), worker="w1"),
    )
    text = text_of(build_view(readings(failures=[failed]), NAMES, None), note="[/i] \x1b[0m")
    assert "Boom: [/b] [red]alarm[/red] [high] \\x1b[2J" in text
    assert "[/i] \\x1b[0m" in text
    assert "\x1b" not in text

"""Schedules: their validation, which ticks are due, and firing each tick once
on the in-process backend (two coordinators firing the same tick start one
workflow)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

import agenticflow.testing
from agenticflow import AgentApp, TaskContext
from agenticflow.coordinator.schedules import (
    STATE_PREFIX,
    Scheduler,
    ScheduleSpec,
    tick_workflow_id,
)
from agenticflow.shared.wire.codec import pack
from agenticflow.shared.wire.events import EventType

S = 1_000_000_000
T0 = 1_800_000_000 * S  # 2027-01-15T08:00:00Z
WORKFLOW = {"name": "w", "tasks": [{"id": "a", "capability": "hello"}]}


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"name": "s", "definition": WORKFLOW, "created_at": T0, **fields}
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "exactly one of 'cron' or 'every'"),
        ({"cron": "* * * * *", "every": "1m"}, "exactly one of"),
        ({"cron": "every monday"}, "is not a cron expression"),
        ({"every": "soon"}, "not a duration"),
        ({"every": 0.5}, "greater than or equal to 1"),
        ({"every": "1m", "timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"every": "1m", "name": "no spaces"}, "schedule name"),
        ({"every": "1m", "overlap": "queue"}, "skip"),
        ({"every": "1m", "catch_up": 101}, "less than or equal to 100"),
        ({"cron": "0 0 30 2 *"}, "never matches a date"),
        ({"every": "1m", "created_at": 10**21}, "less than or equal to"),
    ],
)
def test_a_bad_schedule_is_refused_with_a_reason(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        spec(**fields)


def test_an_interval_fires_its_latest_tick_and_catches_up_only_as_asked() -> None:
    every = spec(every="10s")
    assert every.due(0, T0 + 9 * S) == []
    assert every.due(0, T0 + 35 * S) == [T0 + 30 * S]  # missed 10 and 20: not run
    assert spec(every="10s", catch_up=2).due(0, T0 + 35 * S) == [
        T0 + 10 * S,
        T0 + 20 * S,
        T0 + 30 * S,
    ]
    assert every.due(T0 + 30 * S, T0 + 39 * S) == []  # handled already
    assert every.next_tick(T0 + 30 * S) == T0 + 40 * S
    # A year of missed ticks is not walked one by one.
    started = time.perf_counter()
    assert spec(every="1s", catch_up=1).due(0, T0 + 365 * 86400 * S) == [
        T0 + (365 * 86400 - 1) * S,
        T0 + 365 * 86400 * S,
    ]
    assert time.perf_counter() - started < 1


def test_a_cron_is_read_in_its_time_zone() -> None:
    # 09:00 in Paris is 08:00 UTC in winter.
    paris = spec(cron="0 9 * * *", timezone="Europe/Paris")
    tick = paris.next_tick(T0 - 3600 * S)
    assert datetime.fromtimestamp(tick / S, UTC).isoformat() == "2027-01-15T08:00:00+00:00"
    assert paris.due(0, T0 + 86400 * S) == [T0 + 86400 * S]  # the day after (created at 08:00)


def test_ticks_missed_while_paused_never_run() -> None:
    resumed = spec(every="10s", catch_up=5, resumed_at=T0 + 25 * S)
    assert resumed.due(0, T0 + 41 * S) == [T0 + 30 * S, T0 + 40 * S]


def test_a_tick_has_one_workflow_id() -> None:
    assert tick_workflow_id("nightly", T0 + 123) == "nightly-20270115T080000Z"


async def test_a_tick_fired_by_two_coordinators_starts_one_workflow() -> None:
    app = AgentApp("sched")
    runs: list[str] = []

    @app.agent("hello")
    async def hello(ctx: TaskContext) -> str:
        runs.append(ctx.workflow_id)
        return "hi"

    async with agenticflow.testing.cluster(app) as client:
        now = time.time_ns()
        # Created an hour and a second ago, every hour: one tick is due now.
        await client.put_schedule(spec(every="1h", created_at=now - 3601 * S))
        tick = now - S
        workflow_id = tick_workflow_id("s", tick)
        state = await client.wait_for(workflow_id, lambda s: s.is_terminal, timeout=30)
        assert state.status.value == "completed"
        # An owner that fired the tick but died before recording it: its
        # successor sees no state and fires the same tick again.
        store = await client.bus.kv(client.names.schedule_state_bucket)
        await store.delete(STATE_PREFIX + "s")
        successor = Scheduler(bus=client.bus, node_id="coordinator-successor")
        assert await successor.fire_due(time.time_ns()) == [workflow_id]
        again = await client.wait_for(workflow_id, lambda s: s.is_terminal, timeout=30)
        events = await client.events(workflow_id)
        info = await client.schedule("s")
    assert again.status.value == "completed"
    assert runs == [workflow_id]  # the task ran once
    assert [e.type for e in events].count(EventType.WORKFLOW_STARTED) == 1
    assert info.state.last_workflow_id == workflow_id
    assert info.state.fired == 1


async def test_overlap_skip_counts_a_tick_while_the_previous_run_runs() -> None:
    app = AgentApp("sched")

    @app.agent("hello")
    async def hello(ctx: TaskContext) -> str:
        await ctx.feedback.next(timeout=30)  # runs until told
        return "done"

    async with agenticflow.testing.cluster(app) as client:
        now = time.time_ns()
        await client.put_schedule(spec(every="1s", created_at=now - 1500 * S // 1000))
        first = await client.wait_for_schedule("s", lambda info: info.state.fired == 1)
        running = first.state.last_workflow_id
        assert running is not None
        info = await client.wait_for_schedule("s", lambda info: info.state.skipped >= 1)
        assert info.state.last_workflow_id == running
        assert "still runs" in (info.state.last_error or "")
        await client.handle(running).feedback("go")
        await client.handle(running).result(timeout=30)
        info = await client.wait_for_schedule("s", lambda info: info.state.fired >= 2)
        assert info.state.last_workflow_id != running
        await client.pause_schedule("s")
        paused = await client.schedule("s")
        assert paused.spec.paused
        assert paused.next_tick_ns is None
        await client.delete_schedule("s")
        assert await client.schedules() == []


async def test_a_schedule_that_does_not_read_stops_no_other() -> None:
    app = AgentApp("sched")

    @app.agent("hello")
    async def hello(ctx: TaskContext) -> str:
        return "hi"

    async with agenticflow.testing.cluster(app) as client:
        # Stored past the checks (by an older version, or by hand): never matches.
        store = await client.bus.kv(client.names.schedules_bucket)
        poison = spec(every="1m").model_dump(mode="json") | {
            "name": "a-poison",
            "every_s": None,
            "cron": "0 0 30 2 *",
        }
        await store.put("spec.a-poison", pack(poison))
        now = time.time_ns()
        await client.put_schedule(spec(every="1s", created_at=now - 1500 * S // 1000))
        info = await client.wait_for_schedule("s", lambda i: i.state.fired >= 1)
        assert info.state.last_workflow_id is not None
        assert [i.spec.name for i in await client.schedules()] == ["s"]  # it is left out
        await client.delete_schedule("a-poison")  # and can be deleted
        assert await client.bus.kv_read(store, "spec.a-poison") is None

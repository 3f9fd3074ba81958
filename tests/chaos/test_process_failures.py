"""Kill real worker and coordinator processes with SIGKILL; nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.lease import LEASE_KEY
from agenticflow.coordinator.schedules import ScheduleSpec, tick_workflow_id
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import node_pid
from tests.chaos.helpers import Observer, Report, assert_exactly_once, chain_workflow
from tests.conftest import CHAOS_APP, unique_prefix
from tests.integration.helpers import wf
from tests.support.acks import AckWatch

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

FAST = {"task_ack_wait_s": 2, "lease_ttl_s": 3, "coordinator_ack_wait_s": 2}
"""Short timers so each scenario runs in seconds (defaults are 30 s / 10 s / 15 s)."""


@asynccontextmanager
async def chaos_cluster(
    nats_server: NatsServer,
    log_dir: Path,
    name: str,
    *,
    settings: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[DevCluster, Client, Observer]]:
    """A dev cluster with FAST timers (and ``settings`` on top), a bus, a client
    and an observer of every event."""
    prefix = unique_prefix(name)
    async with (
        DevCluster(
            app=CHAOS_APP,
            nats_url=nats_server.url,
            prefix=prefix,
            settings={**FAST, **(settings or {})},
            log_dir=log_dir / prefix,
            **kwargs,
        ) as cluster,
        connected(cluster.settings, name=f"chaos-{name}") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        yield cluster, Client(bus=bus, node_id=f"chaos-{name}"), observer


def proc_by_node(procs: list[subprocess.Popen[bytes]], node_id: str) -> subprocess.Popen[bytes]:
    pid = node_pid(node_id)
    return next(p for p in procs if p.pid == pid)


def report(request: pytest.FixtureRequest, result: Report) -> None:
    for key, value in {**vars(result), **result.figures}.items():
        if key != "figures":
            request.node.user_properties.append((key, value))
    figures = ", ".join(f"{k}={v:.2f}s" for k, v in result.figures.items())
    print(
        f"\nCHAOS {request.node.name}: workflows={result.workflows} tasks={result.tasks} "
        f"lost={result.lost} applied_twice={result.applied_twice} "
        f"duplicate_outcomes_in_stream={result.duplicate_outcomes_in_stream} {figures}"
    )


async def test_worker_killed_holding_long_tasks(
    nats_server: NatsServer, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    async with chaos_cluster(nats_server, log_dir, "wkill", workers=2, concurrency=4) as (
        cluster,
        client,
        observer,
    ):
        ids = [
            await client.submit(wf({"id": "long", "capability": "slow", "params": {"seconds": 3}}))
            for _ in range(8)
        ]

        def both_busy(o: Observer) -> bool:
            started = [e for _, e in o.seen if e.type == EventType.TASK_STARTED]
            return len({e.source for e in started}) == 2

        await observer.until(both_busy)
        started = Counter(e.source for _, e in observer.seen if e.type == EventType.TASK_STARTED)
        victim = started.most_common(1)[0][0]
        held = {
            e.workflow_id
            for _, e in observer.seen
            if e.type == EventType.TASK_STARTED and e.source == victim
        }
        killed_at = time.monotonic()
        cluster.kill(proc_by_node(cluster.worker_procs, victim))

        result = await assert_exactly_once(client, ids)
        # Tasks the victim held were finished by the survivor after redelivery.
        finishers = {
            e.workflow_id: (at, e.source)
            for at, e in observer.seen
            if e.type == EventType.TASK_COMPLETED
        }
        delays = []
        for workflow_id in held:
            at, source = finishers[workflow_id]
            assert source != victim
            delays.append(at - killed_at - 3.0)  # minus the handler's own 3 s
        result.figures["redelivery_delay_max"] = max(delays)
        result.figures["ack_wait"] = float(FAST["task_ack_wait_s"])
        report(request, result)


async def test_worker_dies_after_outcome_before_ack(
    nats_server: NatsServer, log_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    marker = tmp_path / "crashed"
    async with chaos_cluster(nats_server, log_dir, "wack", workers=2) as (
        _cluster,
        client,
        observer,
    ):
        crash = {"crash_marker": str(marker)}
        definition = wf(
            {"id": "a", "capability": "add", "params": {"value": 1}},
            {"id": "b", "capability": "crash_once", "params": crash, "depends_on": ["a"]},
            {"id": "c", "capability": "add", "depends_on": ["b"]},
        )
        acks = await AckWatch(client.bus, "crash_once").start()
        workflow_id = await client.submit(definition)
        state = await client.wait(workflow_id, timeout=60)
        assert marker.exists(), "a worker died after storing b's outcome"
        died = marker.read_text()
        # The redelivered b runs again on the survivor; its duplicate outcome is absorbed.
        await acks.next("+ACK", min_delivered=2)
        await acks.stop()
        assert state.tasks["b"].worker == died
        result = await assert_exactly_once(client, [workflow_id])
        events = await client.events(workflow_id)
        assert [e.task_id for e in events if e.type == EventType.TASK_COMPLETED] == ["a", "b", "c"]
        assert observer.count(EventType.TASK_SCHEDULED) == 3
        report(request, result)


async def test_coordinator_killed_with_50_workflows_in_flight(
    nats_server: NatsServer, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    async with chaos_cluster(nats_server, log_dir, "ckill", workers=2, concurrency=16) as (
        cluster,
        client,
        observer,
    ):
        definition = chain_workflow(10, capability="slow", params={"seconds": 0.05})
        ids = await asyncio.gather(*(client.submit(definition) for _ in range(50)))
        await observer.until(lambda o: o.count(EventType.TASK_COMPLETED) >= 100)
        assert cluster.coordinator is not None
        old = cluster.coordinator
        cluster.kill(old)
        done_at_kill = observer.count(EventType.TASK_COMPLETED)
        assert done_at_kill < 500, "the kill landed mid-run"
        restarted_at = time.monotonic()
        new = cluster.add_coordinator()
        result = await assert_exactly_once(client, list(ids))
        resumed = observer.first_after(
            restarted_at,
            lambda e: e.type == EventType.TASK_SCHEDULED and node_pid(e.source) == new.pid,
        )
        assert resumed is not None
        result.figures["resume_after_restart"] = resumed - restarted_at
        report(request, result)


async def test_standby_coordinator_takes_over(
    nats_server: NatsServer, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    async with chaos_cluster(nats_server, log_dir, "cfail", workers=2, concurrency=16) as (
        cluster,
        client,
        observer,
    ):
        standby = cluster.add_coordinator()
        definition = chain_workflow(10, capability="slow", params={"seconds": 0.05})
        ids = await asyncio.gather(*(client.submit(definition) for _ in range(20)))
        await observer.until(lambda o: o.count(EventType.TASK_COMPLETED) >= 40)
        leases = await client.bus.kv(client.bus.names.leases_bucket)
        active_node = ((await leases.get(LEASE_KEY)).value or b"").decode()
        active = proc_by_node(cluster.coordinators, active_node)
        assert active is not standby
        killed_at = time.monotonic()
        cluster.kill(active)
        result = await assert_exactly_once(client, list(ids))
        took_over = observer.first_after(
            killed_at,
            lambda e: e.type == EventType.TASK_SCHEDULED and node_pid(e.source) == standby.pid,
        )
        assert took_over is not None, "the standby dispatched work after the kill"
        new_node = ((await leases.get(LEASE_KEY)).value or b"").decode()
        assert node_pid(new_node) == standby.pid
        result.figures["takeover"] = took_over - killed_at
        result.figures["lease_ttl"] = float(FAST["lease_ttl_s"])
        report(request, result)


async def test_vanished_worker_detected_by_missing_heartbeats(
    nats_server: NatsServer, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    # ack_wait is long here, so only the coordinator's heartbeat timeout can rescue the task.
    slow_redelivery = {"AGENTICFLOW_TASK_ACK_WAIT_S": "60"}
    async with chaos_cluster(
        nats_server, log_dir, "hbeat", workers=2, concurrency=1, env=slow_redelivery
    ) as (cluster, client, observer):
        definition = wf(
            {
                "id": "long",
                "capability": "slow",
                "params": {"seconds": 3},
                "heartbeat_timeout_s": 1.5,
                "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
            }
        )
        workflow_id = await client.submit(definition)
        await observer.until(lambda o: o.count(EventType.TASK_HEARTBEAT) >= 1)
        victim = next(e.source for _, e in observer.seen if e.type == EventType.TASK_STARTED)
        killed_at = time.monotonic()
        cluster.kill(proc_by_node(cluster.worker_procs, victim))
        result = await assert_exactly_once(client, [workflow_id], timeout=60)
        state = await client.status(workflow_id)
        assert state.tasks["long"].attempts == 2
        assert state.tasks["long"].worker != victim
        timed_out = observer.first_after(killed_at, lambda e: e.type == EventType.TASK_TIMED_OUT)
        assert timed_out is not None
        result.figures["vanished_worker_detected_after"] = timed_out - killed_at
        result.figures["heartbeat_timeout"] = 1.5
        report(request, result)


async def test_a_timer_and_a_signal_survive_a_coordinator_kill(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with chaos_cluster(nats_server, log_dir, "waitkill", workers=1) as (
        cluster,
        client,
        _observer,
    ):
        definition = wf(
            {"id": "timer", "wait": {"duration": 4}},
            {"id": "reply", "wait": {"signal": "reply"}},
            {"id": "done", "capability": "add", "depends_on": ["timer", "reply"]},
        )
        workflow_id = await client.submit(definition)
        await client.wait_for(
            workflow_id,
            lambda s: all(s.tasks[t].status.value == "waiting" for t in ("timer", "reply")),
            timeout=30,
        )
        assert cluster.coordinator is not None
        cluster.kill(cluster.coordinator)  # SIGKILL: its armed timer dies with it
        # The signal is stored while no coordinator runs; it applies when one does.
        sent = asyncio.create_task(client.signal(workflow_id, "reply", {"text": "yes"}, timeout=60))
        new = cluster.add_coordinator()
        await sent
        state = await client.wait(workflow_id, timeout=60)
        events = await client.events(workflow_id)
    assert state.status.value == "completed", state.reason
    assert state.tasks["reply"].result == {"text": "yes"}
    assert set(state.tasks["timer"].result) == {"waited_until"}
    completions = Counter(
        e.task_id for e in events if e.type == EventType.TASK_COMPLETED and e.task_id
    )
    assert completions == {"timer": 1, "reply": 1, "done": 1}
    (fired,) = [e for e in events if e.type == EventType.TASK_WAIT_ELAPSED]
    assert node_pid(fired.source) == new.pid  # re-armed by the successor, fired once


async def test_a_schedule_fires_once_per_tick_across_a_coordinator_kill(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with chaos_cluster(nats_server, log_dir, "schedkill", workers=1) as (
        cluster,
        client,
        observer,
    ):
        every = {"name": "tick", "every": 1, "definition": wf({"id": "a", "capability": "add"})}
        await client.put_schedule(ScheduleSpec.model_validate(every))
        await client.wait_for_schedule("tick", lambda i: i.state.fired >= 2, timeout=60)
        assert cluster.coordinator is not None
        cluster.kill(cluster.coordinator)  # SIGKILL, perhaps between firing and recording
        killed_at = time.time_ns()
        cluster.add_coordinator()
        await client.wait_for_schedule(
            "tick", lambda i: i.state.last_tick_ns > killed_at + 2_000_000_000, timeout=90
        )
        await client.delete_schedule("tick")
        runs = {e.workflow_id for _, e in observer.seen if e.workflow_id.startswith("tick-")}
        for run in runs:
            await client.wait(run, timeout=60)
        started = Counter(
            e.workflow_id for _, e in observer.seen if e.type == EventType.WORKFLOW_STARTED
        )
        completed = Counter(
            e.workflow_id for _, e in observer.seen if e.type == EventType.TASK_COMPLETED
        )
    after = [r for r in runs if r > tick_workflow_id("tick", killed_at)]
    assert len(runs) >= 3
    assert after, "the successor fired no tick"
    # One run per tick (its id is the tick), started once, its task run once.
    assert all(started[run] == 1 for run in runs), started
    assert all(completed[run] == 1 for run in runs), completed
    ticks = sorted(runs)
    assert len(set(ticks)) == len(ticks)

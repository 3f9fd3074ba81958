"""Kill nats-server itself: the events stream's leader in a 3-node cluster, and a
lone server with file storage. Nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_cluster import NatsCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.wire.events import EventType
from tests.chaos.helpers import Observer, Report, assert_exactly_once, chain_workflow
from tests.conftest import CHAOS_APP, unique_prefix
from tests.support.natsbus import connected

pytestmark = pytest.mark.chaos

T = TypeVar("T")

TIMERS = {"task_ack_wait_s": 5, "coordinator_ack_wait_s": 5}
"""A delivery whose ack died with a server comes back after 5 s, not 30 s / 15 s."""


async def poll(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Run the blocking ``check`` in a thread until it returns a value (not None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.05)  # polling a server's counters, bounded by the deadline


def stored_at(last_ts: str | None) -> float:
    """A stream's ``last_ts`` (RFC 3339, UTC) as a Unix time; 0 if absent."""
    if not last_ts or last_ts.startswith("0001-"):
        return 0.0
    return datetime.fromisoformat(last_ts).timestamp()


async def stored_since(bus: Bus, since: float) -> list[tuple[float, str]]:
    """``(stored at, event type)`` of every event the server stored after ``since``
    (Unix time), read back from the stream with the server's own timestamps."""
    names = bus.names
    sub = await bus.js.pull_subscribe(
        names.event_subjects,
        stream=names.events_stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(since, UTC),
            inactive_threshold=5,
            mem_storage=True,
        ),
    )
    try:
        total = (await sub.consumer_info()).num_pending or 0
        out: list[tuple[float, str]] = []
        while len(out) < total:
            for msg in await sub.fetch(min(500, total - len(out)), timeout=5):
                parsed = names.parse_event_subject(msg.subject)
                out.append((msg.metadata.timestamp.timestamp(), parsed[1] if parsed else "?"))
        return out
    finally:
        await sub.unsubscribe()


def last_completed(stored: list[tuple[float, str]], since: float) -> float:
    """Seconds from ``since`` to the last ``workflow.completed`` stored."""
    return max(at for at, kind in stored if kind == EventType.WORKFLOW_COMPLETED.value) - since


def first_stored(stored: list[tuple[float, str]], since: float, event_type: str = "") -> float:
    """Seconds from ``since`` to the first stored event (of ``event_type`` if given)."""
    times = [at for at, kind in stored if at > since and (not event_type or kind == event_type)]
    assert times, f"no {event_type or 'event'} was stored after the failure"
    return min(times) - since


def record(request: pytest.FixtureRequest, result: Report) -> None:
    """Attach the report to the test item and print it with the ``CHAOS`` prefix."""
    for key, value in {**vars(result), **result.figures}.items():
        if key != "figures":
            request.node.user_properties.append((key, value))
    figures = " ".join(f"{k}={v:.2f}s" for k, v in result.figures.items())
    print(
        f"\nCHAOS {request.node.name}: workflows={result.workflows} tasks={result.tasks} "
        f"lost={result.lost} applied_twice={result.applied_twice} "
        f"duplicate_outcomes_in_stream={result.duplicate_outcomes_in_stream} {figures}"
    )


def assert_processes_alive(cluster: DevCluster) -> None:
    """Coordinator and workers rode out the outage (they reconnect, never exit)."""
    for proc in [*cluster.coordinators, *cluster.worker_procs]:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"


@pytest.mark.timeout(180)
async def test_events_stream_leader_killed_in_a_3_node_cluster(
    log_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix("nleader")
    nats = NatsCluster(3, base_dir=tmp_path / "nats")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, nats.stop)
        await asyncio.to_thread(nats.start)
        cluster = await stack.enter_async_context(
            DevCluster(
                app=CHAOS_APP,
                nats_url=nats.urls,
                prefix=prefix,
                workers=2,
                concurrency=16,
                settings={"replicas": 3, **TIMERS},
                log_dir=log_dir / prefix,
            )
        )
        bus = await stack.enter_async_context(connected(cluster.settings, name="chaos-nleader"))
        client = Client(bus=bus, node_id="chaos-nleader")
        completions = Observer(bus)
        await completions.start()
        stream = cluster.settings.names.events_stream

        definition = chain_workflow(5, capability="slow", params={"seconds": 0.3})
        ids = list(await asyncio.gather(*(client.submit(definition) for _ in range(20))))
        await completions.until(lambda o: o.count(EventType.TASK_COMPLETED) >= 20)
        leader = await poll(lambda: nats.stream_leader(stream), timeout=10, what="a leader")
        was_meta_leader = await asyncio.to_thread(nats.meta_leader) == leader

        killed_at = time.monotonic()
        await asyncio.to_thread(nats.kill, leader)
        killed_wall = time.time()  # events the dead leader stored carry earlier timestamps
        assert completions.count(EventType.TASK_COMPLETED) < 100, "the kill landed mid-run"
        # A second wave, submitted while the stream has no leader: the client retries.
        late = asyncio.gather(*(client.submit(definition) for _ in range(10)))
        survivors = [i for i in range(3) if i != leader]

        def new_leader() -> int | None:
            found = nats.stream_leader(stream)
            return None if found is None or found == leader else found

        def stored_after_kill() -> bool | None:
            for i in survivors:
                with contextlib.suppress(Exception):
                    detail = nats.stream_report(i, stream)
                    if detail and stored_at(detail["state"].get("last_ts")) > killed_wall:
                        return True
            return None

        elected = await poll(new_leader, timeout=30, what="a new events leader")
        elected_at = time.monotonic()
        await poll(stored_after_kill, timeout=30, what="an event stored")
        ids += list(await late)

        restarted_at = time.monotonic()
        await asyncio.to_thread(nats.restart, leader)

        def caught_up() -> float | None:
            target = nats.stream_last_seq(elected, stream)
            mine = nats.stream_last_seq(leader, stream)
            if target is not None and mine is not None and mine >= target:
                return time.monotonic()
            return None

        caught_up_at = await poll(caught_up, timeout=30, what="the restarted node catching up")
        # API calls that need the meta leader (e.g. the watch behind client.wait) time out
        # until the meta group is whole again when the killed node was its leader.
        await asyncio.to_thread(nats.wait_ready, timeout=30)
        ready_at = time.monotonic()

        result = await assert_exactly_once(client, ids, timeout=45)

        def all_equal() -> int | None:
            seqs = {nats.stream_last_seq(i, stream) for i in range(3)}
            return seqs.pop() if len(seqs) == 1 and None not in seqs else None

        await poll(all_equal, timeout=20, what="every replica holding the same events")
        assert_processes_alive(cluster)
        stored = await stored_since(bus, killed_wall)
        result.figures["new_leader_elected"] = elected_at - killed_at
        result.figures["recovery"] = first_stored(stored, killed_wall)
        result.figures["dispatch_resumed"] = first_stored(
            stored, killed_wall, EventType.TASK_SCHEDULED.value
        )
        result.figures["catch_up"] = caught_up_at - restarted_at
        result.figures["cluster_ready"] = ready_at - restarted_at
        result.figures["all_completed"] = last_completed(stored, killed_wall)
        request.node.user_properties.append(("killed_meta_leader", was_meta_leader))
        print(f"\nCHAOS killed node n{leader}; it also led the meta group: {was_meta_leader}")
        record(request, result)


@pytest.mark.timeout(180)
async def test_single_server_killed_and_restarted_on_its_store(
    log_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix("nsingle")
    store = tmp_path / "store"
    servers = [NatsServer(store_dir=store)]
    async with contextlib.AsyncExitStack() as stack:
        url = await asyncio.to_thread(servers[0].start)

        def stop_server() -> None:
            servers[-1].stop()

        stack.callback(stop_server)
        cluster = await stack.enter_async_context(
            DevCluster(
                app=CHAOS_APP,
                nats_url=url,
                prefix=prefix,
                workers=2,
                concurrency=16,
                settings=TIMERS,
                log_dir=log_dir / prefix,
            )
        )
        bus = await stack.enter_async_context(connected(cluster.settings, name="chaos-nsingle"))
        client = Client(bus=bus, node_id="chaos-nsingle")
        completions = Observer(bus)
        await completions.start()

        definition = chain_workflow(5, capability="slow", params={"seconds": 0.3})
        ids = list(await asyncio.gather(*(client.submit(definition) for _ in range(20))))
        await completions.until(lambda o: o.count(EventType.TASK_COMPLETED) >= 20)

        killed_at = time.monotonic()
        await asyncio.to_thread(servers[0].kill)
        killed_wall = time.time()
        assert completions.count(EventType.TASK_COMPLETED) < 100, "the kill landed mid-run"
        late = asyncio.gather(*(client.submit(definition) for _ in range(10)))
        port = servers[0].port
        servers.append(NatsServer(port=port, store_dir=store))
        await asyncio.to_thread(servers[-1].start)
        restarted_at = time.monotonic()
        assert servers[-1].url == url

        ids += list(await late)

        result = await assert_exactly_once(client, ids, timeout=45)
        assert_processes_alive(cluster)
        stored = await stored_since(bus, killed_wall)
        result.figures["restart"] = restarted_at - killed_at
        result.figures["first_event_stored"] = first_stored(stored, killed_wall)
        result.figures["dispatch_resumed"] = first_stored(
            stored, killed_wall, EventType.TASK_SCHEDULED.value
        )
        result.figures["all_completed"] = last_completed(stored, killed_wall)
        record(request, result)

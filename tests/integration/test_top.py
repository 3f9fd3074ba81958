"""``agenticflow top`` against the session cluster: real coordinator and worker
processes on a real nats-server.

The scene: a workflow that failed, one paused with a task waiting for approval,
one whose task waits on a queue no worker serves, and a suspended agent
instance. :func:`snapshot` and ``agenticflow top --once --json`` must show each.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from rich.console import Console

from agenticflow import top
from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.nats_backend import FetchTimeout
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import AgenticFlowError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.codec import unpack
from agenticflow.top import ClusterView, run_top, snapshot
from tests.conftest import unique_prefix
from tests.integration.helpers import agenticflow, run, wf
from tests.support.app import app as test_app


@dataclass(frozen=True)
class Scene:
    failed: str
    """A workflow whose task failed for good."""
    gated: str
    """Paused, task ``a`` done, ``g`` waiting for approval, ``b`` pending."""
    stuck: str
    """Its only task waits on ``queue``, which no worker serves."""
    queue: str
    suspended: str
    """An echo instance suspended by the test."""
    marker: str
    """In the failed task's error message."""


@pytest.fixture
async def scene(cluster: DevCluster, bus: Bus, client: Client) -> AsyncIterator[Scene]:
    token = os.urandom(4).hex()
    marker = f"top-{token}"
    failed = await run(client, wf({"id": "f", "capability": "fatal", "params": {"item": marker}}))
    assert failed.status == WorkflowStatus.FAILED

    gated = await client.submit(
        wf(
            {"id": "a", "capability": "echo"},
            {"id": "g", "capability": "context", "depends_on": ["a"], "approval": {}},
            {"id": "b", "capability": "echo", "depends_on": ["g"]},
        )
    )
    await client.waiting_for_approval(gated, timeout=60)
    await client.pause(gated)
    await client.wait_for(gated, lambda state: state.paused, timeout=30)

    route = f"top{token}"
    stuck = await client.submit(wf({"id": "s", "capability": "echo"}), route=route)
    # The coordinator notes the task as unserved after publishing it: it is stored.
    await client.wait_for(stuck, lambda state: state.tasks["s"].note is not None, timeout=30)
    queue = f"echo~{route}"

    instance = next(
        row["id"]
        for info in await client.agents()
        if info.get("agent") == "echo"
        for row in info["agents"]
    )
    await client.set_suspended(instance, suspended=True)
    try:
        yield Scene(failed.workflow_id, gated, stuck, queue, instance, marker)
    finally:
        await client.set_suspended(instance, suspended=False)
        for workflow_id in (gated, stuck):
            with contextlib.suppress(AgenticFlowError):
                await client.abort(workflow_id, "test over")
        stream = bus.names.tasks_stream
        await bus.delete_consumer(stream, bus.names.task_consumer(queue))
        await bus.call(
            lambda: bus.js.purge_stream(stream, subject=bus.names.task_subject(queue)),
            what="purge",
        )


async def registered(bus: Bus, workers: int, timeout: float = 30) -> ClusterView:
    """The first snapshot in which every worker's registry entries are live.

    Entries are re-put on each heartbeat and expire after ``agent_ttl_s``; a
    read that raced a heartbeat once missed one (see ``Bus.kv_entries``), so
    this takes a new snapshot after each registry change until all are there."""
    store = await bus.kv(bus.names.agents_bucket)
    watcher = await store.watchall(inactive_threshold=5.0)
    try:
        async with asyncio.timeout(timeout):
            while True:
                view = await snapshot(bus)
                counts = {q.queue: q.workers for q in view.queues}
                if all(counts.get(c) == workers for c in test_app.capabilities):
                    return view
                with contextlib.suppress(*FetchTimeout):
                    await watcher.updates(timeout=timeout)
    finally:
        await watcher.stop()


def check_queues(queues: list[dict[str, Any]], scene: Scene, workers: int) -> None:
    by_name = {q["queue"]: q for q in queues}
    for capability in test_app.capabilities:
        assert by_name[capability]["workers"] == workers, capability
    stuck = by_name[scene.queue]
    assert (stuck["workers"], stuck["instances"]) == (0, 0)
    assert (stuck["pending"], stuck["in_flight"], stuck["lag"]) == (1, 0, 1)


def check_instances(data: dict[str, Any], scene: Scene, cluster: DevCluster) -> None:
    states = {row["id"]: row["state"] for row in data["instances"]}
    assert states[scene.suspended] == "suspended"
    assert sum(data["states"].values()) == len(data["instances"])
    echo = next(a for a in data["agents"] if a["agent"] == "echo")
    assert (echo["workers"], echo["instances"]) == (
        cluster.workers,
        cluster.workers * cluster.concurrency,
    )
    assert echo["states"]["suspended"] == 1
    assert any(c["state"] == "active" for c in data["coordinators"])


def check_workflows(workflows: dict[str, Any], scene: Scene) -> None:
    shown = {w["workflow_id"]: w for w in workflows["shown"]}
    gated = shown[scene.gated]
    assert (gated["status"], gated["paused"], gated["done"], gated["total"]) == (
        "running",
        True,
        1,
        3,
    )
    assert gated["waiting_approval"] == ["g"]
    stuck = shown[scene.stuck]
    assert (stuck["done"], stuck["total"], stuck["paused"], stuck["route"]) == (
        0,
        1,
        False,
        scene.queue.split("~")[1],
    )
    assert scene.failed not in shown
    assert workflows["running"] >= 2


def check_failures(failures: list[dict[str, Any]], scene: Scene) -> None:
    ours = {f["type"]: f for f in failures if f["workflow_id"] == scene.failed}
    task = ours["task.failed"]
    assert (task["task_id"], task["attempt"], task["error_type"], task["retryable"]) == (
        "f",
        1,
        "NonRetryableError",
        False,
    )
    assert task["message"] == f"cannot process {scene.marker}: bad input"
    assert task["worker"]
    assert ours["workflow.failed"]["task_id"] == "f"
    assert scene.marker in ours["workflow.failed"]["message"]


async def test_snapshot_shows_queues_instances_workflows_and_failures(
    cluster: DevCluster, bus: Bus, scene: Scene
) -> None:
    view = await registered(bus, cluster.workers)
    data = view.to_dict()
    check_queues(data["queues"], scene, cluster.workers)
    check_instances(data, scene, cluster)
    check_workflows(data["workflows"], scene)
    check_failures(data["failures"]["items"], scene)
    assert (view.tasks_per_s, view.events_per_s) == (None, None)
    assert view.lag >= 1
    json.dumps(data)


async def test_cli_top_once_json_and_text(cluster: DevCluster, scene: Scene) -> None:
    shown = agenticflow(cluster.settings, "top", "--once", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    check_queues(data["queues"], scene, cluster.workers)
    check_instances(data, scene, cluster)
    check_workflows(data["workflows"], scene)
    check_failures(data["failures"]["items"], scene)
    assert data["throughput"]["tasks_per_s"] is None

    drawn = agenticflow(cluster.settings, "top", "--once")
    assert drawn.returncode == 0, drawn.stderr
    for part in (scene.queue, scene.gated, scene.suspended, "paused", scene.marker):
        assert part in drawn.stdout, part


async def test_only_the_newest_failures_are_read_when_many_failed(
    client: Client, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small limits stand in for a storm of failures.
    monkeypatch.setattr(top, "FAILURE_SCAN", 3)
    monkeypatch.setattr(top, "FAILURES_SHOWN", 2)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    for _ in range(3):
        failed = await run(client, wf({"id": "f", "capability": "fatal"}))
        assert failed.status == WorkflowStatus.FAILED
    stored = await client.events_since(since, types="*.failed")
    assert len(stored) >= 6  # more than FAILURE_SCAN: only the newest are read

    view = await snapshot(bus)

    newest = sorted((e.seq or 0 for e in stored), reverse=True)[:2]
    assert [f.seq for f in view.failures] == newest
    assert view.failures[0].workflow_id == failed.workflow_id


async def wait_for_echo_done(bus: Bus, at_least: int, *, timeout: float) -> None:
    """Wait until the registry shows the echo agent with ``at_least`` tasks done
    (the counters reach it with the workers' heartbeats)."""
    store = await bus.kv(bus.names.agents_bucket)
    watcher = await store.watchall(inactive_threshold=5.0)
    done: dict[str, int] = {}
    try:
        async with asyncio.timeout(timeout):
            while sum(done.values()) < at_least:
                try:
                    entry = await watcher.updates(timeout=1.0)
                except FetchTimeout:
                    continue
                if entry is None or not entry.value:
                    continue
                info = unpack(entry.value)
                if isinstance(info, dict) and info.get("agent") == "echo":
                    done[entry.key] = sum(a["tasks_done"] for a in info["agents"])
    finally:
        await watcher.stop()


async def test_rates_come_from_two_snapshots_around_finished_work(bus: Bus, client: Client) -> None:
    first = await snapshot(bus)
    assert (first.tasks_per_s, first.events_per_s) == (None, None)
    before = {a.agent: a.tasks_done for a in first.agents}["echo"]
    final = await run(client, wf(*({"id": f"e{n}", "capability": "echo"} for n in range(6))))
    assert final.status == WorkflowStatus.COMPLETED
    stored = len(await client.events(final.workflow_id))

    await wait_for_echo_done(bus, before + 6, timeout=30)
    second = await snapshot(bus, first)

    assert second.events_last_seq - first.events_last_seq >= stored
    elapsed = (second.monotonic - first.monotonic) / 1e9
    expected = (second.events_last_seq - first.events_last_seq) / elapsed
    assert second.events_per_s == pytest.approx(expected)
    assert second.events_per_s is not None
    assert second.events_per_s > 0
    echo = {q.queue: q for q in second.queues}["echo"]
    delivered = echo.delivered - {q.queue: q for q in first.queues}["echo"].delivered
    assert delivered >= 6
    assert echo.delivered_per_s == pytest.approx(delivered / elapsed)
    assert second.tasks_per_s is not None
    assert second.tasks_per_s > 0
    assert {a.agent: a.tasks_done for a in second.agents}["echo"] >= before + 6
    check_rates_keep_until_next_heartbeat(second, await snapshot(bus, second))


def check_rates_keep_until_next_heartbeat(earlier: ClusterView, later: ClusterView) -> None:
    for key, sample in later.samples.items():
        previous = earlier.samples.get(key)
        if previous is not None and previous.heartbeat == sample.heartbeat:
            assert sample == previous


async def test_cli_top_exits_3_when_nats_is_unreachable_or_the_prefix_unknown(
    cluster: DevCluster,
) -> None:
    unreachable = agenticflow(
        Settings(nats_url="nats://127.0.0.1:1"),
        "top",
        "--once",
        env={"AGENTICFLOW_CONNECT_TIMEOUT_S": "0.5"},
    )
    assert unreachable.returncode == 3
    assert "cannot connect to NATS at nats://127.0.0.1:1" in unreachable.stderr
    assert unreachable.stdout == ""  # the client's connection warnings go to stderr
    status = agenticflow(Settings(nats_url="nats://127.0.0.1:1"), "status", "x", timeout=30)
    assert status.returncode == 3  # every command gives up: the first connect is bounded

    unknown = agenticflow(
        Settings(nats_url=cluster.url, prefix=unique_prefix("none")), "top", "--once", "--json"
    )
    assert unknown.returncode == 3
    assert "stream not found" in unknown.stderr
    assert unknown.stdout == ""


class Lines(io.StringIO):
    """A console file that hands each written line to the test."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.put_nowait(line)
        return len(text)


async def test_run_top_refreshes_until_cancelled(cluster: DevCluster) -> None:
    out = Lines()
    console = Console(file=out, width=200)
    top = asyncio.create_task(
        run_top(cluster.settings, interval=0.2, once=False, as_json=True, console=console)
    )
    try:
        async with asyncio.timeout(30):
            first = json.loads(await out.lines.get())
            second = json.loads(await out.lines.get())
    finally:
        top.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await top
    assert first["throughput"]["events_per_s"] is None
    assert second["throughput"]["events_per_s"] is not None  # measured over one interval
    assert second["taken_at"] > first["taken_at"]

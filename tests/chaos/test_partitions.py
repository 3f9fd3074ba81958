"""Two active coordinators share the workflows by partition; when one is
SIGKILLed the other takes its partitions over and nothing is lost or applied
twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.graph.hierarchy import child_workflow_id
from agenticflow.shared.wire.codec import unpack
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import node_pid
from agenticflow.shared.wire.names import partition_of
from tests.chaos.helpers import Observer, assert_exactly_once
from tests.chaos.test_process_failures import FAST, chaos_cluster
from tests.integration.helpers import wf

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

PARTITIONS = 4


class Owners:
    """Which coordinator process serves each partition, from the registry's watch."""

    def __init__(self) -> None:
        self.by_partition: dict[int, int] = {}
        self._keys: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def follow(self, bus: Bus) -> None:
        store = await bus.kv(bus.names.agents_bucket)
        watcher = await store.watchall()
        while True:
            try:
                entry = await watcher.updates(timeout=1.0)
            except TimeoutError:
                continue
            if entry is None:
                continue
            async with self.changed:
                if entry.value:
                    info = unpack(entry.value)
                    if info.get("role") == "coordinator" and "partition" in info:
                        pid = node_pid(str(info["coordinator"]))
                        assert pid
                        self._keys[entry.key] = int(info["partition"])
                        self.by_partition[int(info["partition"])] = pid
                elif entry.key in self._keys:  # handed over: its coordinator deleted it
                    partition = self._keys.pop(entry.key)
                    if partition not in self._keys.values():
                        self.by_partition.pop(partition, None)
                self.changed.notify_all()

    async def until(self, predicate: Any, timeout: float = 60) -> None:
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self.by_partition))

        await asyncio.wait_for(wait(), timeout)


@asynccontextmanager
async def partitioned(
    nats_server: NatsServer, log_dir: Path
) -> AsyncIterator[tuple[DevCluster, Client, Observer, Owners]]:
    async with chaos_cluster(
        nats_server,
        log_dir,
        "parts",
        settings={"partitions": PARTITIONS},
        workers=2,
        concurrency=16,
        coordinators=2,
    ) as (cluster, client, observer):
        owners = Owners()
        follower = asyncio.create_task(owners.follow(client.bus))
        try:
            yield cluster, client, observer, owners
        finally:
            follower.cancel()


def chain(seconds: float) -> Any:
    return wf(
        {"id": "a", "capability": "add", "params": {"x": 1}},
        {"id": "wait", "capability": "slow", "params": {"seconds": seconds}, "depends_on": ["a"]},
        {"id": "b", "capability": "add", "params": {"x": 2}, "depends_on": ["wait"]},
    )


async def test_two_active_coordinators_share_then_one_takes_over(
    nats_server: NatsServer, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    async with partitioned(nats_server, log_dir) as (cluster, client, observer, owners):
        pids = {proc.pid for proc in cluster.coordinators}

        # Both coordinator processes own partitions: two each.
        def shared(by: dict[int, int]) -> bool:
            counts = [list(by.values()).count(pid) for pid in pids]
            return len(by) == PARTITIONS and counts == [PARTITIONS // 2] * 2

        await owners.until(shared)
        before = dict(owners.by_partition)

        # Load: both carry it, each the workflows of its own partitions.
        first = [await client.submit(chain(0.05)) for _ in range(24)]
        report = await assert_exactly_once(client, first)
        folded_by: dict[str, set[int]] = {}
        for workflow_id in first:
            for event in await client.events(workflow_id):
                if event.type == EventType.WORKFLOW_COMPLETED:
                    pid = node_pid(event.source)
                    assert pid
                    folded_by.setdefault(workflow_id, set()).add(pid)
        assert all(len(p) == 1 for p in folded_by.values()), folded_by
        for workflow_id, (pid,) in folded_by.items():
            assert before[partition_of(workflow_id, PARTITIONS)] == pid
        assert {pid for (pid,) in folded_by.values()} == pids, "one coordinator carried no load"

        # A parent and its child workflow folded by different processes.
        parent_id = next(
            w
            for w in (f"wf-parent-{i}" for i in range(1000))
            if before[partition_of(w, PARTITIONS)]
            != before[partition_of(child_workflow_id(w, "c", 1), PARTITIONS)]
        )
        parent = wf(
            {"id": "first", "capability": "add", "params": {"value": 1}},
            {
                "id": "c",
                "depends_on": ["first"],
                "workflow": {"name": "inner", "tasks": [{"id": "s", "capability": "echo"}]},
            },
            {"id": "after", "capability": "echo", "depends_on": ["c"]},
        )
        await client.submit(parent, workflow_id=parent_id)
        done = await client.wait(parent_id, timeout=60)
        assert done.status == WorkflowStatus.COMPLETED, done.reason
        child = await client.wait(child_workflow_id(parent_id, "c", 1), timeout=10)
        assert child.status == WorkflowStatus.COMPLETED

        # Kill one while workflows of all partitions are in flight.
        second = [await client.submit(chain(1.0)) for _ in range(24)]
        await observer.until(
            lambda o: (
                sum(
                    1
                    for _, e in o.seen
                    if e.type == EventType.TASK_STARTED
                    and e.task_id == "wait"
                    and e.workflow_id in second
                )
                >= 12
            )
        )
        victim = next(p for p in cluster.coordinators if p.pid == before[0])
        survivor = (pids - {victim.pid}).pop()
        lost = {k for k, pid in before.items() if pid == victim.pid}
        killed_at = time.monotonic()
        cluster.kill(victim)
        await owners.until(lambda by: all(by.get(k) == survivor for k in range(PARTITIONS)))
        took_over_s = time.monotonic() - killed_at

        result = await assert_exactly_once(client, second)
        moved = [w for w in second if partition_of(w, PARTITIONS) in lost]
        assert moved, "no workflow of the victim's partitions was in flight"
        for workflow_id in moved:
            finished = [
                e
                for e in await client.events(workflow_id)
                if e.type == EventType.WORKFLOW_COMPLETED
            ]
            assert [node_pid(e.source) for e in finished] == [survivor]
        print(
            f"\nPARTITIONS: {report.workflows + result.workflows} workflows, "
            f"lost={result.lost} applied_twice={result.applied_twice}, "
            f"{len(lost)} partitions taken over in {took_over_s:.2f}s "
            f"(lease TTL {FAST['lease_ttl_s']}s)"
        )
        request.node.user_properties.append(("takeover_s", took_over_s))

"""Steering across process failures: an approval wait survives SIGKILL of the
coordinator and every worker, and a suspended agent instance pulls no task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.errors import NotFoundError
from agenticflow.shared.wire.events import EventType
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import agenticflow, of_type, wf

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

FAST = {"task_ack_wait_s": 2, "lease_ttl_s": 3, "coordinator_ack_wait_s": 2}


@asynccontextmanager
async def steering_cluster(
    nats_server: NatsServer, log_dir: Path, name: str, *, workers: int, concurrency: int
) -> AsyncIterator[tuple[DevCluster, Client]]:
    """A cluster of its own (processes to kill) and a client to steer it."""
    prefix = unique_prefix(name)
    async with (
        DevCluster(
            app=TEST_APP,
            workers=workers,
            concurrency=concurrency,
            nats_url=nats_server.url,
            prefix=prefix,
            settings=FAST,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name=f"chaos-{name}") as bus,
    ):
        yield cluster, Client(bus=bus, node_id=f"chaos-{name}")


async def test_an_approval_wait_survives_killing_every_process(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with steering_cluster(nats_server, log_dir, "approve", workers=1, concurrency=2) as (
        cluster,
        client,
    ):
        workflow_id = await client.submit(
            wf(
                {"id": "ask", "capability": "ask"},
                {"id": "gate", "capability": "context", "depends_on": ["ask"], "approval": {}},
            )
        )
        await client.wait_for(
            workflow_id,
            lambda s: s.tasks["ask"].status == TaskStatus.WAITING_APPROVAL,
            timeout=60,
        )
        for proc in [*cluster.coordinators, *cluster.worker_procs]:
            cluster.kill(proc)
        cluster.add_coordinator()
        cluster.add_worker()
        await cluster.wait_for_processes(1, coordinators=1, timeout=60)
        await client.approve(workflow_id, "ask", "after the restart", timeout=60)
        state = await client.wait_for(
            workflow_id,
            lambda s: s.tasks["gate"].status == TaskStatus.WAITING_APPROVAL or s.is_terminal,
            timeout=60,
        )
        assert state.tasks["ask"].result["decisions"][0]["comment"] == "after the restart"
        await client.approve(workflow_id, "gate")
        final = await client.wait(workflow_id, timeout=60)
        assert final.status == WorkflowStatus.COMPLETED
        # The handler ran once before the request and once after: no extra attempts.
        events = await client.events(workflow_id)
        started = [e.attempt for e in of_type(events, EventType.TASK_STARTED) if e.task_id == "ask"]
        assert started == [1, 2]


async def test_a_suspended_instance_pulls_no_task_until_resumed(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with steering_cluster(nats_server, log_dir, "suspend", workers=2, concurrency=32) as (
        cluster,
        client,
    ):
        solos = [a for a in await client.agents() if a.get("agent") == "solo"]
        assert len(solos) == 2
        target = solos[0]["agents"][0]["id"]  # `solo` has one instance per worker
        other_worker = solos[1]["worker"]
        shown = await asyncio.to_thread(
            agenticflow, cluster.settings, "agent", "suspend", target, "--by", "ops"
        )
        assert shown.returncode == 0, shown.stderr
        assert f"{target}: suspended" in shown.stdout
        listing = await asyncio.to_thread(agenticflow, cluster.settings, "agents")
        assert target in listing.stdout
        assert "suspended" in listing.stdout
        definition = wf(*({"id": f"s{i}", "capability": "solo"} for i in range(6)))
        final = await client.wait(await client.submit(definition), timeout=90)
        assert final.status == WorkflowStatus.COMPLETED
        assert {t.worker for t in final.tasks.values()} == {other_worker}
        # Resumed, it takes tasks again.
        await client.set_suspended(target, suspended=False)
        runs = await asyncio.gather(*(client.submit(definition) for _ in range(4)))
        workers = set()
        for workflow_id in runs:
            done = await client.wait(workflow_id, timeout=90)
            workers |= {t.worker for t in done.tasks.values()}
        assert workers == {other_worker, solos[0]["worker"]}
        events = await client.events("_system")
        moves = [
            (e.data.instance, e.data.trigger)  # type: ignore[attr-defined]
            for e in of_type(events, EventType.AGENT_STATE_CHANGED)
        ]
        assert moves == [(target, "suspend"), (target, "resume")]
        with pytest.raises(NotFoundError):
            await client.set_suspended("w-nowhere.solo.0", suspended=True)


async def test_a_task_longer_than_the_ack_wait_is_kept_alive_not_redelivered(
    nats_server: NatsServer, log_dir: Path
) -> None:
    """The worker's one keep-alive loop tells JetStream every held delivery is
    in progress: a 5 s task under a 2 s ack wait is delivered once."""
    # Slots for every capability of the app: a redelivery would find a pull request.
    async with steering_cluster(nats_server, log_dir, "alive", workers=2, concurrency=32) as (
        _cluster,
        client,
    ):
        definition = wf(
            {"id": "long", "capability": "slow", "params": {"seconds": 5}},
            {"id": "quick", "capability": "echo"},
        )
        workflow_id = await client.submit(definition)
        final = await client.wait(workflow_id, timeout=90)
        assert final.status == WorkflowStatus.COMPLETED
        assert final.tasks["long"].attempts == 1
        events = await client.events(workflow_id)
        started = [e for e in of_type(events, EventType.TASK_STARTED) if e.task_id == "long"]
        assert len(started) == 1, [e.data for e in started]
        # A second run's events would be deduplicated (same ids): ask the consumers.
        # (a consumer's sequence counts deliveries, redeliveries included).
        consumers = await client.bus.consumer_infos(client.names.tasks_stream)
        (slow,) = [c for c in consumers if c["name"] == client.names.task_consumer("slow")]
        assert slow["delivered"]["consumer_seq"] == 1, slow

"""The workflow index on a real server: a coordinator that starts on
workflows saved before the index existed (or whose record was lost) writes
their records, so ``Client.list`` sees every workflow after an upgrade; and a
running workflow's count of done tasks reaches its record even when nothing
else happens to it (progress-only records are held back, not dropped)."""

from __future__ import annotations

import asyncio

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.index import PROGRESS_EVERY_S
from agenticflow.coordinator.service import Coordinator
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.ops.config import Settings
from agenticflow.worker.runtime import Worker
from tests.conftest import unique_prefix
from tests.integration.helpers import run, wf
from tests.support.app import app
from tests.support.natsbus import connected, nats_of

pytestmark = pytest.mark.timeout(120)


async def test_a_starting_coordinator_indexes_workflows_the_index_lacks(
    nats_server: NatsServer,
) -> None:
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("backfill"))
    name = "backfilled"
    async with connected(settings, name="backfill-client") as bus:
        client = Client(bus=bus, node_id="backfill-client")
        async with (
            connected(settings, name="bf-coordinator", role="coordinator") as cbus,
            Coordinator(bus=cbus, node_id="coord-bf-1"),
            connected(settings, name="bf-worker", role="worker") as wbus,
            Worker(bus=wbus, app=app, node_id="w-bf", concurrency=8),
        ):
            done = [
                await run(client, wf({"id": "a", "capability": "echo"}, name=name))
                for _ in range(3)
            ]
        assert all(s.status == WorkflowStatus.COMPLETED for s in done)
        ids = {s.workflow_id for s in done}
        index = await bus.kv(bus.names.workflow_index_bucket)
        for workflow_id in ids:  # as if saved before the index existed
            await nats_of(bus).js.purge_stream(
                f"KV_{bus.names.workflow_index_bucket}",
                subject=f"$KV.{bus.names.workflow_index_bucket}.{workflow_id}",
            )
        assert await client.workflows(name=name) == []

        watcher = await index.watchall(inactive_threshold=5.0)
        try:
            async with (
                connected(settings, name="bf-coordinator-2", role="coordinator") as cbus,
                Coordinator(bus=cbus, node_id="coord-bf-2"),
            ):
                async with asyncio.timeout(30):
                    while {s.id for s in await client.workflows(name=name)} != ids:
                        await watcher.updates(timeout=30)
        finally:
            await watcher.stop()
        listed = await client.workflows(name=name)
        assert {(s.state, s.tasks_done, s.tasks_total) for s in listed} == {
            (WorkflowStatus.COMPLETED, 1, 1)
        }


async def test_a_running_workflows_progress_reaches_its_record(nats_server: NatsServer) -> None:
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("progress"))
    async with (
        connected(settings, name="progress-client") as bus,
        connected(settings, name="pr-coordinator", role="coordinator") as cbus,
        Coordinator(bus=cbus, node_id="coord-pr"),
        connected(settings, name="pr-worker", role="worker") as wbus,
        Worker(bus=wbus, app=app, node_id="w-pr", concurrency=8),
    ):
        client = Client(bus=bus, node_id="progress-client")
        index = await bus.kv(bus.names.workflow_index_bucket)
        watcher = await index.watchall(inactive_threshold=5.0)
        definition = wf(
            {"id": "a", "capability": "echo"},
            {"id": "b", "capability": "slow", "params": {"seconds": 60}, "depends_on": ["a"]},
            name="progress",
        )
        workflow_id = await client.submit(definition)
        try:
            # `a` is done within the first PROGRESS_EVERY_S, so its record is held
            # back; then nothing happens to the workflow for a minute.
            await client.wait_for(
                workflow_id, lambda s: s.tasks["b"].status == TaskStatus.RUNNING, timeout=30
            )
            async with asyncio.timeout(PROGRESS_EVERY_S + 30):
                while True:
                    (shown,) = await client.workflows(name="progress")
                    if shown.tasks_done == 1:
                        break
                    await watcher.updates(timeout=PROGRESS_EVERY_S + 30)
            assert (shown.state, shown.tasks_total) == (WorkflowStatus.RUNNING, 2)
        finally:
            await watcher.stop()
            await client.terminate(workflow_id, reason="test over")

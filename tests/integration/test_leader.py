"""An active/standby coordinator whose start fails (NATS with no stream leader
for a moment, after a server died) stands by again and serves on its next
term, instead of ending the process and leaving no coordinator at all."""

from __future__ import annotations

import asyncio

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.leader import LeaderElected
from agenticflow.coordinator.service import Coordinator
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.ops.config import Settings
from agenticflow.worker.runtime import Worker
from tests.conftest import unique_prefix
from tests.integration.helpers import run, wf
from tests.support.app import app

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_start_stands_by_again_then_serves(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = Coordinator.start
    calls = 0

    async def start(self: Coordinator) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("injected: no stream leader")
        await real_start(self)

    monkeypatch.setattr(Coordinator, "start", start)
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("leader"))
    async with (
        connected(settings, name="leader-coordinator", role="coordinator") as cbus,
        connected(settings, name="leader-worker", role="worker") as wbus,
        Worker(bus=wbus, app=app, node_id="w-leader", concurrency=4),
        connected(settings, name="leader-client") as bus,
    ):
        leader = LeaderElected(bus=cbus, node_id="coord-leader")
        serving = asyncio.create_task(leader.run())
        try:
            state = await run(
                Client(bus=bus, node_id="leader-client"),
                wf({"id": "a", "capability": "echo"}),
                timeout=30,
            )
            assert state.status == WorkflowStatus.COMPLETED
            assert (calls, leader.terms) == (2, 2)
            assert not serving.done()
        finally:
            await leader.shutdown()
            await asyncio.wait_for(serving, timeout=15)

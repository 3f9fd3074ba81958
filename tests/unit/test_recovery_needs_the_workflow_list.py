"""A coordinator that cannot list the workflows bucket at start does not start
(its owner retries it: the partition balance next second, a standby after
one). It used to start with nothing recovered: listing failed with a timeout
during a NATS fail-over in a chaos run of test_localcluster, and a partition's
new owner went on without re-arming the timers of its running workflows (a
retry's back-off, a task's timeout), which no event would ever wake again."""

from __future__ import annotations

import os

import pytest

from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.errors import PublishTimeoutError
from agenticflow.shared.ops.config import Settings


async def test_a_coordinator_that_cannot_list_the_workflows_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(url=f"memory://no-workflow-list-{os.getpid()}")
    bus = await Bus.connect(settings, name="coord", role="coordinator")
    try:
        await bus.ensure_topology()
        workflows = await bus.kv(bus.names.workflows_bucket)

        async def no_answer() -> list[str]:
            raise PublishTimeoutError("list keys: no answer from the server")

        monkeypatch.setattr(workflows, "keys", no_answer)
        coordinator = Coordinator(bus=bus, node_id="coord-no-list")
        with pytest.raises(PublishTimeoutError):
            await coordinator.start()  # was: started, with nothing recovered
        assert coordinator.runner is None
        await coordinator.shutdown()
    finally:
        await bus.close()

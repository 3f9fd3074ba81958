"""The three example workflows run on a real cluster
(agenticflow.examples.apps, 2 worker processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agenticflow import causality_violations
from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.graph.workflow import load_workflow_file
from agenticflow.shared.wire.events import EventType, TaskToolCalled
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_every_example_completes_with_causal_clocks(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with (
        DevCluster(
            app="agenticflow.examples.apps:app",
            workers=2,
            nats_url=nats_server.url,
            prefix=unique_prefix("ex"),
            log_dir=log_dir / "examples",
        ) as cluster,
        connected(cluster.settings, name="examples-test") as bus,
    ):
        client = Client(bus=bus, node_id="examples-test")
        names = ["customer_service", "content_pipeline", "trading"]
        ids = [
            await client.submit(load_workflow_file(EXAMPLES / name / "workflow.yaml"))
            for name in names
        ]
        # The content pipeline's edit waits for a reviewer's approval of the draft.
        waiting = await client.waiting_for_approval(ids[1], timeout=60)
        assert waiting.tasks["edit"].waiting is not None
        await client.approve(ids[1], "edit", "tighten the intro", by="reviewer")
        states = await asyncio.gather(*(client.wait(i, timeout=60) for i in ids))
        for name, state in zip(names, states, strict=True):
            assert state.status == WorkflowStatus.COMPLETED, (name, state.reason)
            events = await client.events(state.workflow_id)
            assert causality_violations(events) == [], name
        edited = states[1].output["edit"]
        assert (edited["reviewed_by"], edited["editor_notes"]) == (
            "reviewer",
            ["tighten the intro"],
        )
        escalation = states[0].output["escalation"]
        assert escalation["escalate"] is True
        assert escalation["open_tickets"] == 2  # looked up with the sql_query tool
        assert escalation["page_id"].endswith(":tool:page_manager")
        tool_calls = of_type(await client.events(ids[0]), EventType.TASK_TOOL_CALLED)
        assert sorted(e.data.tool for e in tool_calls if isinstance(e.data, TaskToolCalled)) == [
            "file_write",
            "page_manager",
            "sql_query",
        ]
        assert states[2].output["sizing"]["max_loss"] <= 100000 * 0.01

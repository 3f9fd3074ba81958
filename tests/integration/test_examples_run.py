"""The three example workflows run on a real cluster
(agenticflow.examples.apps, 2 worker processes), each with its scripted model
served by the workers themselves; the content pipeline's reviewer approves
through the HTTP gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import agenticflow.testing
from agenticflow import causality_violations
from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.llm_stub import LLMStubProcess
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.examples.demo import demo
from agenticflow.examples.trading.app import app as trading
from agenticflow.gateway import GatewayServer, GatewaySettings, new_token
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.graph.workflow import load_workflow_file
from agenticflow.shared.wire.events import EventType, TaskToolCalled
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type
from tests.support.llm import llm_stub

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

__all__ = ["llm_stub"]  # the fixture, imported for pytest


async def test_every_example_completes_with_causal_clocks(
    nats_server: NatsServer, log_dir: Path
) -> None:
    token = new_token()
    async with (
        DevCluster(
            app="agenticflow.examples.apps:app",
            workers=2,
            nats_url=nats_server.url,
            prefix=unique_prefix("ex"),
            log_dir=log_dir / "examples",
        ) as cluster,
        connected(cluster.settings, name="examples-test") as bus,
        GatewayServer(cluster.settings, GatewaySettings(port=0, tokens=f"reviewer={token}")) as gw,
        httpx.AsyncClient(
            base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http,
    ):
        client = Client(bus=bus, node_id="examples-test")
        names = ["customer_service", "content_pipeline", "trading"]
        ids = [
            await client.submit(load_workflow_file(EXAMPLES / name / "workflow.yaml"))
            for name in names
        ]
        # The content pipeline's edit waits for a reviewer's approval of the
        # draft, which arrives through the gateway.
        waiting = await client.waiting_for_approval(ids[1], timeout=60)
        assert waiting.tasks["edit"].waiting is not None
        approved = await http.post(
            f"/workflows/{ids[1]}/approve", json={"task": "edit", "comment": "tighten the intro"}
        )
        assert approved.status_code == 200, approved.text
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
        # Each example's model wrote a draft, streamed token by token.
        for workflow_id, task, start in [
            (ids[0], "resolution", "This looks like a service outage"),
            (ids[1], "write", "Here is what our research found about honeybees."),
            (ids[2], "sizing", "Long: "),
        ]:
            tokens = [c.text async for c in client.stream(workflow_id, task=task, kinds=["token"])]
            assert len(tokens) > 10, task
            assert "".join(tokens).startswith(start), task
        resolution = states[0].tasks["resolution"].result
        assert resolution["article_id"] == "KB-101"  # found through the kb MCP server
        assert resolution["draft"].startswith("This looks like a service outage")
        escalation = states[0].output["escalation"]
        assert escalation["escalate"] is True
        assert escalation["open_tickets"] == 2  # looked up with the sql_query tool
        assert escalation["page_id"].endswith(":tool:page_manager")
        tool_calls = of_type(await client.events(ids[0]), EventType.TASK_TOOL_CALLED)
        called = [e.data for e in tool_calls if isinstance(e.data, TaskToolCalled)]
        assert sorted((c.tool, c.agent, c.outcome) for c in called) == [
            ("file_write", "manager_escalation", "ok"),
            ("kb__search_articles", "technical_resolution", "ok"),
            ("page_manager", "manager_escalation", "ok"),
            ("sql_query", "manager_escalation", "ok"),
        ]
        sizing = states[2].output["sizing"]
        assert sizing["max_loss"] <= 100000 * 0.01
        assert sizing["note"].startswith("Long: ")


async def test_a_configured_model_takes_over_from_the_scripted_one(
    llm_stub: LLMStubProcess,
) -> None:
    # What AGENTICFLOW_LLM_BASE_URL and AGENTICFLOW_LLM_MODEL give the workers.
    settings = {"llm_base_url": llm_stub.url, "llm_model": "real-model"}
    await llm_stub.aload({"rules": [{"match": "Direction: long", "content": "Long, says it."}]})
    given = {"symbol": "ACME", "capital": 100000}
    async with agenticflow.testing.cluster(trading, settings=settings) as client:
        result = await client.run(EXAMPLES / "trading" / "workflow.yaml", input=given, timeout=60)
    assert result["note"] == "Long, says it."
    assert [r["body"]["model"] for r in await llm_stub.arequests()] == ["real-model"]


async def test_the_demo_prints_the_draft_as_written_and_approves_through_the_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await demo("content_pipeline", workers=2) == 0
    printed = " ".join(capsys.readouterr().out.split())  # as one line: rich wraps at its width
    draft = printed.index("Here is what our research found about honeybees.")
    approved = printed.index("approves it through the gateway: POST http://127.0.0.1:")
    assert draft < approved < printed.index("causality holds")
    assert "model usage: 1 call" in printed
    assert '"reviewed_by": "demo-reviewer"' in printed

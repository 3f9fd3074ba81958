"""One trace per workflow across processes: the client's submission span is the
root; the coordinator's dispatch spans and the workers' task spans (and the
effect spans inside them) join it through the messages' traceparent headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.ops.telemetry import TRACE_FILE_ENV, configure_tracing
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import spans_in, wf


async def test_one_trace_crosses_client_coordinator_and_worker_processes(
    nats_server: NatsServer, log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRACE_FILE_ENV, str(tmp_path / "spans-{pid}.jsonl"))
    assert configure_tracing("tests-client")
    prefix = unique_prefix("trace")
    async with (
        DevCluster(
            app=TEST_APP,
            workers=2,
            concurrency=2,
            nats_url=nats_server.url,
            prefix=prefix,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="tracing-test") as bus,
    ):
        client = Client(bus=bus, node_id="tracing-test")
        workflow_id = await client.submit(
            wf(
                {"id": "a", "capability": "research", "params": {"q": "bees"}},
                {"id": "b", "capability": "echo", "depends_on": ["a"]},
            )
        )
        final = await client.wait(workflow_id, timeout=60)
        assert final.status == WorkflowStatus.COMPLETED
    # The processes have stopped: every span they made is in their files.
    spans = [s for s in spans_in(tmp_path) if s["attributes"].get("workflow.id") == workflow_id]
    by_name = {s["name"]: s for s in spans}
    root = by_name["workflow workflow"]
    assert root["parent_id"] is None
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    for task_id, capability in (("a", "research"), ("b", "echo")):
        dispatch = by_name[f"dispatch {task_id}"]
        run = by_name[f"task {capability}"]
        assert dispatch["service"] == "agenticflow-coordinator"
        assert dispatch["parent_id"] == root["span_id"]
        assert run["service"] == "agenticflow-worker"
        assert run["parent_id"] == dispatch["span_id"]
        assert run["pid"] != dispatch["pid"] != root["pid"]
    effects = [
        s
        for s in spans_in(tmp_path)
        if s["name"].startswith("effect ") and s["trace_id"] == root["trace_id"]
    ]
    assert sorted(s["name"] for s in effects) == ["effect llm.complete", "effect search"]
    assert {s["parent_id"] for s in effects} == {by_name["task research"]["span_id"]}

"""The README's tools example works as printed; the tools benchmark runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.wire.events import EventType, TaskToolCalled
from agenticflow.worker.app import AgentApp
from agenticflow.worker.runtime import Worker
from agenticflow.worker.tools import cluster_state
from tests.integration.helpers import ROOT, of_type, wf
from tests.integration.test_readme import _block


async def test_readme_tools_example_runs(bus: Bus, client: Client, tmp_path: Path) -> None:
    app_file = tmp_path / "tools_example.py"
    app_file.write_text(_block("python", "# tools_example.py"))
    spec = importlib.util.spec_from_file_location("tools_example", app_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    assert isinstance(app, AgentApp)
    assert module.refund.schema()["parameters"]["properties"]["cents"]["maximum"] == 50_000

    try:
        async with Worker(bus=bus, app=app, node_id="readme-tools", concurrency=2):
            wid = await client.submit(
                wf({"id": "r", "capability": "refund", "params": {"order": "ord-7"}})
            )
            state = await client.wait(wid, timeout=30)
    finally:
        await cluster_state(bus).aclose()
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["r"].result == {"first": 1500, "batch": [True, False, True]}
    assert sorted(module.REFUNDS) == [f"{wid}:r:{i}:tool:refund" for i in (0, 1, 3)]
    records = [
        e.data
        for e in of_type(await client.events(wid), EventType.TASK_TOOL_CALLED)
        if isinstance(e.data, TaskToolCalled)
    ]
    assert sorted((r.call, r.outcome) for r in records) == [
        (0, "ok"),
        (1, "ok"),
        (2, "invalid"),
        (3, "ok"),
    ]


def test_tools_benchmark_reports_the_overhead() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tools", "--calls", "50", "--no-save"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for path in ("bare", "registry, in memory", "registry, cluster", "rate limit"):
        assert path in done.stdout
    assert "CPUs" in done.stdout

"""The README's agent app and workflow file work as printed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.graph.workflow import load_workflow_file
from agenticflow.worker.app import AgentApp
from agenticflow.worker.runtime import Worker

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(language: str, first_line: str) -> str:
    for match in re.finditer(rf"```{language}\n(.*?)```", README.read_text(), re.S):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"no {language} block starting with {first_line!r} in the README")


async def test_readme_app_and_workflow_run(bus: Bus, client: Client, tmp_path: Path) -> None:
    app_file = tmp_path / "readme_app.py"
    app_file.write_text(_block("python", "# myapp.py"))
    flow = tmp_path / "support.yaml"
    flow.write_text(_block("yaml", "# support.yaml"))
    spec = importlib.util.spec_from_file_location("readme_app", app_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    assert isinstance(app, AgentApp)

    async with Worker(bus=bus, app=app, node_id="readme-worker", concurrency=2):
        definition = load_workflow_file(flow)
        down = await client.submit(definition, input={"message": "the site is down"})
        state = await client.wait(down, timeout=30)
        assert state.status == WorkflowStatus.COMPLETED
        assert state.output == {"reply": "[high] we are on it"}
        empty = await client.submit(definition, input={"message": ""})
        failed = await client.wait(empty, timeout=30)
        assert failed.status == WorkflowStatus.FAILED
        assert failed.tasks["triage"].error is not None
        assert failed.tasks["triage"].error.type == "NonRetryableError"

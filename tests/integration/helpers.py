"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowState
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import Event, EventType


def wf(*tasks: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    """A definition from task dicts."""
    return parse_workflow({"tasks": list(tasks), **extra})


async def run(
    client: Client, definition: WorkflowDefinition, *, timeout: float = 60, **kwargs: Any
) -> WorkflowState:
    """Submit and wait for the end."""
    workflow_id = await client.submit(definition, **kwargs)
    return await client.wait(workflow_id, timeout=timeout)


def of_type(events: list[Event], event_type: EventType) -> list[Event]:
    """Events of one type, in stream order."""
    return [e for e in events if e.type == event_type]


def by_task(events: list[Event], event_type: EventType) -> dict[tuple[str, int], Event]:
    """Events of one type keyed by (task id, attempt)."""
    return {(e.task_id or "", e.attempt or 0): e for e in of_type(events, event_type)}


ROOT = Path(__file__).resolve().parents[2]


def spans_in(folder: Path) -> list[dict[str, Any]]:
    """The spans written by AGENTICFLOW_TRACE_FILE=folder/spans-{pid}.jsonl."""
    return [
        json.loads(line)
        for file in sorted(folder.glob("spans-*.jsonl"))
        for line in file.read_text().splitlines()
    ]


def agenticflow(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``agenticflow ARGS`` against the deployment ``settings`` names."""
    return subprocess.run(
        [sys.executable, "-m", "agenticflow", *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "AGENTICFLOW_NATS_URL": settings.nats_url,
            "AGENTICFLOW_PREFIX": settings.prefix,
            "COLUMNS": "200",
            **(env or {}),
        },
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )

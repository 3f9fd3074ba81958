"""Draw docs/images/top.svg: ``agenticflow top`` on a realistic cluster.

Run it again when the view changes: ``.venv/bin/python docs/_scripts/top_screenshot.py``.
The readings are made up (three workers serving the examples, two
coordinators, a few workflows of the trading and content examples, one
failure) and go through the real ``build_view`` and ``render`` twice, so the
rates are filled in as on a live terminal.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from agenticflow.coordinator.state import TaskState, TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.wire.events import ErrorInfo, Event, EventType, TaskFailed
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import VectorClock
from agenticflow.top import Readings, build_view, render

OUT = Path(__file__).resolve().parents[1] / "images" / "top.svg"
NAMES = Names("af")
S = 1_000_000_000
T0 = 1_765_000_000 * S
AGENTS = {
    "sentiment": ["sentiment_analysis"],
    "technical": ["technical_analysis"],
    "risk": ["risk_assessment"],
    "sizing": ["position_sizing"],
    "researcher": ["research"],
    "writer": ["write"],
}


def consumer(
    queue: str, pending: int, acks: int, redelivered: int = 0, delivered: int = 1000
) -> dict[str, Any]:
    return {
        "name": NAMES.task_consumer(queue),
        "config": {"filter_subject": NAMES.task_subject(queue)},
        "num_pending": pending,
        "num_ack_pending": acks,
        "num_redelivered": redelivered,
        "num_waiting": 1,
        "delivered": {"consumer_seq": delivered, "stream_seq": delivered},
    }


def entry(worker: str, agent: str, states: list[str], done: int, at: int) -> dict[str, Any]:
    return {
        "instance": f"{worker}.{agent}",
        "role": "worker",
        "worker": worker,
        "agent": agent,
        "capabilities": AGENTS[agent],
        "heartbeat": at,
        "agents": [
            {
                "id": f"{worker}.{agent}.{n}",
                "state": state,
                "since": at - 3 * S,
                "tasks_done": done if n == 0 else 0,
                "suspending": False,
            }
            for n, state in enumerate(states)
        ],
    }


def coordinator(name: str, partitions: list[int], at: int) -> dict[str, Any]:
    return {
        "instance": f"{name}.coordinator",
        "role": "coordinator",
        "coordinator": name,
        "state": "active",
        "partitions": partitions,
        "load": 7,
        "events_folded": 48_210,
        "heartbeat": at,
    }


TASKS = {
    "trading": ["sentiment", "technical", "risk", "sizing"],
    "content-pipeline": ["research", "write", "fact_check", "edit"],
}
AGES = {"trade-0201": 4, "trade-0202": 2, "article-bees": 95, "article-coffee": 310}


def workflow(wid: str, name: str, statuses: list[TaskStatus], **extra: Any) -> WorkflowState:
    tasks = {
        task: TaskState(status=s, capability="x")
        for task, s in zip(TASKS[name], statuses, strict=True)
    }
    definition = WorkflowDefinition.model_validate(
        {"name": name, "tasks": [{"id": t, "capability": "x"} for t in tasks]}
    )
    return WorkflowState(
        workflow_id=wid,
        definition=definition,
        tasks=tasks,
        completed=sum(s == TaskStatus.COMPLETED for s in statuses),
        created_at=T0 - AGES.get(wid, 40) * S,
        **extra,
    )


def readings(at: int, done: int, events: int) -> Readings:
    workers = ["w-node1-4242-1a2b3c", "w-node2-4317-9f8e7d", "w-node3-4401-5c6d7e"]
    registry: list[dict[str, Any]] = []
    for n, worker in enumerate(workers):
        registry += [
            entry(worker, "sentiment", ["processing", "processing", "idle", "idle"], done + n, at),
            entry(worker, "technical", ["processing", "idle", "idle", "idle"], done + 2 * n, at),
            entry(worker, "risk", ["idle", "idle"], done // 2, at),
            entry(worker, "sizing", ["idle", "idle"], done // 2, at),
            entry(worker, "researcher", ["processing", "idle"], done // 3, at),
            entry(worker, "writer", ["waiting_approval" if n == 0 else "idle", "idle"], 9, at),
        ]
    registry += [coordinator("c-node1", [0, 1, 2, 3], at), coordinator("c-node2", [4, 5, 6, 7], at)]
    running = TaskStatus.RUNNING
    ok = TaskStatus.COMPLETED
    failure = Event(
        id="e1",
        type=EventType.TASK_FAILED,
        workflow_id="trade-0193",
        source=workers[1],
        timestamp=at - 95 * S,
        vclock=VectorClock(),
        data=TaskFailed(
            error=ErrorInfo(type="TimeoutError", message="price feed did not answer in 5 s"),
            worker=workers[1],
        ),
        task_id="technical",
        attempt=1,
        seq=events - 400,
    )
    return Readings(
        taken_at=at,
        monotonic=at,
        consumers=[
            consumer("sentiment_analysis", 14, 6, delivered=done * 3),
            consumer("technical_analysis", 9, 3, redelivered=1, delivered=done * 3),
            consumer("risk_assessment", 0, 0, delivered=done * 3 // 2),
            consumer("position_sizing", 0, 0, delivered=done * 3 // 2),
            consumer("research", 2, 3, delivered=done),
            consumer("write", 0, 0, delivered=27),
        ],
        registry=registry,
        events_last_seq=events,
        workflows=[
            workflow(
                "trade-0201", "trading", [ok, running, TaskStatus.PENDING, TaskStatus.PENDING]
            ),
            workflow(
                "trade-0202", "trading", [running, running, TaskStatus.PENDING, TaskStatus.PENDING]
            ),
            workflow(
                "article-bees",
                "content-pipeline",
                [ok, ok, ok, TaskStatus.WAITING_APPROVAL],
            ),
            workflow(
                "article-coffee",
                "content-pipeline",
                [ok, running, running, TaskStatus.PENDING],
                paused=True,
            ),
            workflow("trade-0190", "trading", [ok, ok, ok, ok], status=WorkflowStatus.COMPLETED),
        ],
        workflows_scanned=5,
        failures=[failure],
        failures_since=at - 600 * S,
    )


def main() -> None:
    first = build_view(readings(T0, 400, 90_000), NAMES, None)
    second_readings = readings(T0 + 2 * S, 452, 90_620)
    view = build_view(dataclasses.replace(second_readings), NAMES, first)
    console = Console(
        record=True, width=118, force_terminal=True, color_system="truecolor", file=io.StringIO()
    )
    console.print(render(view))
    svg = console.export_svg(title="agenticflow top")
    # No fetch from a CDN when the page is viewed: the terminal font falls back locally.
    svg = re.sub(r',?\s*url\("https?://[^"]+"\)\s*format\("[^"]+"\)', "", svg)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(svg, encoding="utf-8")
    print(f"wrote {OUT} ({len(svg):,} bytes)")


if __name__ == "__main__":
    main()

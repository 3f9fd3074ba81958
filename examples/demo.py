"""``make demo``: a real cluster on this machine runs one example workflow.

Starts an embedded nats-server, a coordinator and two worker processes (one
task at a time each, so parallel tasks land on different workers), submits the
trading workflow, and prints the result and the event timeline with vector
clocks. Run another example with ``python -m agenticflow.examples.demo customer_service``,
on another backend with ``--backend redis`` (an embedded redis-server) or
``--backend memory`` (everything in this process: workers are services of it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console

from agenticflow import (
    Client,
    DevCluster,
    WorkflowState,
    causality_violations,
    connect,
    load_workflow_file,
    render,
)

EXAMPLES = ("trading", "customer_service", "content_pipeline")
BACKENDS = ("nats", "redis", "memory")


@contextlib.asynccontextmanager
async def _cluster(example: str, workers: int, backend: str) -> AsyncIterator[tuple[Client, str]]:
    """A client of a cluster serving the example, and what the cluster is."""
    spec = f"agenticflow.examples.{example}.app"
    if backend == "memory":
        from agenticflow.testing import cluster

        app = importlib.import_module(spec).app
        async with cluster(app, workers=workers, concurrency=4) as client:
            yield client, f"in this process (memory backend): 1 coordinator, {workers} workers"
        return
    async with DevCluster(
        app=f"{spec}:app", workers=workers, concurrency=4, backend=backend
    ) as dev:
        server = "redis-server" if backend == "redis" else "nats-server"
        async with connect(settings=dev.settings, name="demo", node_id="demo-client") as client:
            url = render.esc(dev.url)
            yield (
                client,
                f"{server} at [bold]{url}[/bold], 1 coordinator, {workers} worker processes",
            )


async def demo(example: str, workers: int, backend: str = "nats") -> int:
    """Run one example end to end; returns the process exit code."""
    console = Console(width=max(Console().width, 140))
    folder = Path(__file__).parent / example
    definition = load_workflow_file(folder / "workflow.yaml")
    data = json.loads((folder / "input.json").read_text())
    started = time.perf_counter()
    console.rule(f"[bold]AgenticFlow demo: {definition.name}")
    async with _cluster(example, workers, backend) as (client, what):
        console.print(f"{what} (up in {time.perf_counter() - started:.1f}s)")
        workflow_id = (await client.start(definition, input=data)).id
        console.print(f"submitted [bold]{workflow_id}[/bold] with input {render.to_json(data)}")
        state = await _approve_gates(console, client, workflow_id)
        events = await client.events(workflow_id)
        console.rule("result")
        render.print_state(console, state)
        console.print_json(render.to_json(state.output))
        console.rule("event timeline (stream order, vector clocks)")
        render.print_timeline(console, events)
        workers_used = sorted({t.worker for t in state.tasks.values() if t.worker})
        violations = causality_violations(events)
        console.print(
            f"tasks ran on {len(workers_used)} worker process(es): {', '.join(workers_used)}"
        )
        if violations:
            console.print("[red]causality violations:[/red]")
            for violation in violations:
                console.print(f"  {violation}")
        else:
            console.print(
                "[green]causality holds[/green]: every outcome's clock dominates its dispatch, "
                "every dispatch dominates its dependencies' outcomes"
            )
    console.print(f"done in {time.perf_counter() - started:.1f}s")
    return 0 if state.status.value == "completed" and not violations else 1


async def _approve_gates(console: Console, client: Client, workflow_id: str) -> WorkflowState:
    """Wait for the end; approve each approval gate met on the way, as a
    reviewer would with ``agenticflow approve ID TASK``."""
    approved: set[str] = set()

    def waits(state: WorkflowState) -> list[str]:
        return [t for t, task in state.tasks.items() if task.waiting and t not in approved]

    while True:
        state = await client.wait_for(
            workflow_id, lambda s: s.is_terminal or bool(waits(s)), timeout=60
        )
        if state.is_terminal:
            return state
        for task_id in waits(state):
            reason = state.tasks[task_id].waiting.reason  # type: ignore[union-attr]
            console.print(
                f"[magenta]{task_id} waits for approval[/magenta] ({reason}); the demo "
                f"approves it, as `agenticflow approve {workflow_id} {task_id}` would"
            )
            await client.approve(
                workflow_id, task_id, "approved by the demo reviewer", by="demo-reviewer"
            )
            approved.add(task_id)


def main() -> None:
    """Entry point of ``python -m agenticflow.examples.demo``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("example", nargs="?", default="trading", choices=EXAMPLES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", default="nats", choices=BACKENDS)
    args = parser.parse_args()
    sys.exit(asyncio.run(demo(args.example, args.workers, args.backend)))


if __name__ == "__main__":
    main()

"""``make demo``: a real cluster on this machine runs one example workflow.

Starts an embedded nats-server, a coordinator and two worker processes (one
task at a time each, so parallel tasks land on different workers), submits the
trading workflow, prints what its model writes as it writes it (the tokens
its tasks stream), then the result, the model usage and the event timeline
with vector clocks. Run another example with ``python -m agenticflow.examples.demo
customer_service`` (or ``content_pipeline``, whose draft a reviewer approves
through the HTTP gateway), on another backend with ``--backend redis`` (an
embedded redis-server) or ``--backend memory`` (everything in this process:
workers are services of it).

The model is each example's scripted one, served by every worker (see
:mod:`agenticflow.examples.local_model`); with ``AGENTICFLOW_LLM_BASE_URL``,
``AGENTICFLOW_LLM_MODEL`` and ``AGENTICFLOW_LLM_API_KEY`` set, a real one.
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

import httpx
from rich.console import Console

from agenticflow import (
    Client,
    DevCluster,
    Settings,
    WorkflowState,
    causality_violations,
    connect,
    load_workflow_file,
    render,
)

EXAMPLES = ("trading", "customer_service", "content_pipeline")
BACKENDS = ("nats", "redis", "memory")


@contextlib.asynccontextmanager
async def _cluster(
    example: str, workers: int, backend: str
) -> AsyncIterator[tuple[Client, str, Settings | None]]:
    """A client of a cluster serving the example, what the cluster is, and its
    settings (None: in this process only, no other client can reach it)."""
    spec = f"agenticflow.examples.{example}.app"
    if backend == "memory":
        from agenticflow.testing import cluster

        app = importlib.import_module(spec).app
        async with cluster(app, workers=workers, concurrency=4) as client:
            what = f"in this process (memory backend): 1 coordinator, {workers} workers"
            yield client, what, None
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
                dev.settings,
            )


async def demo(example: str, workers: int, backend: str = "nats") -> int:
    """Run one example end to end; returns the process exit code."""
    console = Console(width=max(Console().width, 140))
    folder = Path(__file__).parent / example
    definition = load_workflow_file(folder / "workflow.yaml")
    data = json.loads((folder / "input.json").read_text())
    started = time.perf_counter()
    console.rule(f"[bold]AgenticFlow demo: {definition.name}")
    async with (
        _cluster(example, workers, backend) as (client, what, settings),
        _reviewer(settings) as reviewer,
    ):
        console.print(f"{what} (up in {time.perf_counter() - started:.1f}s)")
        workflow_id = (await client.start(definition, input=data)).id
        console.print(f"submitted [bold]{workflow_id}[/bold] with input {render.to_json(data)}")
        console.rule("what the model writes, as it writes it (ctx.stream tokens)")
        async with asyncio.TaskGroup() as group:
            group.create_task(_print_tokens(console, client, workflow_id))
            done = group.create_task(_approve_gates(console, client, workflow_id, reviewer))
        state = done.result()
        events = await client.events(workflow_id)
        console.rule("result")
        render.print_state(console, state)
        console.print_json(render.to_json(state.output))
        render.print_usage(console, await client.usage(workflow_id))
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


async def _print_tokens(console: Console, client: Client, workflow_id: str) -> None:
    """Print the tokens the workflow's tasks stream, as they come, until it ends;
    as text (a model's escape sequences are shown, never obeyed)."""
    inline = False
    async for chunk in client.stream(workflow_id, kinds=["token"]):
        console.file.write(render.safe_text(chunk.text))
        console.file.flush()
        inline = not chunk.text.endswith("\n")
    if inline:
        console.file.write("\n")


@contextlib.asynccontextmanager
async def _reviewer(settings: Settings | None) -> AsyncIterator[httpx.AsyncClient | None]:
    """An HTTP client of a gateway to the cluster (``agenticflow gateway``,
    here served in this process), with the reviewer's bearer token; None for
    a cluster no other process can reach (the memory backend)."""
    if settings is None:
        yield None
        return
    from agenticflow.gateway import GatewayServer, GatewaySettings, new_token

    token = new_token()
    config = GatewaySettings(port=0, tokens=f"demo-reviewer={token}")
    async with (
        GatewayServer(settings, config) as gateway,
        httpx.AsyncClient(
            base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http,
    ):
        yield http


async def _approve_gates(
    console: Console, client: Client, workflow_id: str, reviewer: httpx.AsyncClient | None
) -> WorkflowState:
    """Wait for the end; approve each approval gate met on the way, as a
    reviewer would: through the gateway (``POST /workflows/ID/approve``) when
    there is one, else as ``agenticflow approve ID TASK`` does."""
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
            reason = render.esc(state.tasks[task_id].waiting.reason)  # type: ignore[union-attr]
            comment = "approved by the demo reviewer"
            if reviewer is None:
                console.print(
                    f"\n[magenta]{task_id} waits for approval[/magenta] ({reason}); the demo "
                    f"approves it, as `agenticflow approve {workflow_id} {task_id}` would"
                )
                await client.approve(workflow_id, task_id, comment, by="demo-reviewer")
            else:
                console.print(
                    f"\n[magenta]{task_id} waits for approval[/magenta] ({reason}); the demo "
                    f"approves it through the gateway: POST {reviewer.base_url}"
                    f"/workflows/{workflow_id}/approve"
                )
                answer = await reviewer.post(
                    f"/workflows/{workflow_id}/approve", json={"task": task_id, "comment": comment}
                )
                answer.raise_for_status()
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

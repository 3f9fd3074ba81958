"""Hostile sandboxed tools in a real worker process: each is stopped, reported as
a clear tool error in its task's events, and the worker goes on serving.

One worker process with one slot (so every task runs in that process, one after
the other), a coordinator and the session's nats-server, serving
``tests.support.tools_app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.wire.events import EventType, TaskFailed, TaskToolCalled
from tests.conftest import unique_prefix
from tests.integration.helpers import by_task, run, wf

pytestmark = pytest.mark.timeout(120)


@dataclass
class SandboxCluster:
    cluster: DevCluster
    client: Client


@pytest.fixture(scope="module")
async def sc(nats_server: NatsServer, log_dir: Path) -> AsyncIterator[SandboxCluster]:
    prefix = unique_prefix("sandbox")
    async with (
        DevCluster(
            app="tests.support.tools_app:app",
            workers=1,
            concurrency=1,
            nats_url=nats_server.url,
            prefix=prefix,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="sandbox-tests") as bus,
    ):
        yield SandboxCluster(cluster, Client(bus=bus, node_id="sandbox-tests"))


@pytest.fixture
async def closed_port() -> AsyncIterator[int]:
    """A listener on 127.0.0.1 the sandboxed tool must not reach (it would
    answer if it could)."""
    connections: list[asyncio.StreamWriter] = []

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert connections == []


def task(task_id: str, tool: str, **args: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "capability": "use_tool",
        "params": {"tool": tool, "args": args},
        "timeout_s": 60,
        "retry": {"max_attempts": 1},
    }


def descendants(pid: int) -> list[int]:
    """Live descendants of a process (zombies left out)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if state != "Z":
                parents[int(entry)] = int(ppid)
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


async def test_hostile_tools_fail_clearly_and_the_worker_goes_on_serving(
    sc: SandboxCluster, closed_port: int
) -> None:
    (worker,) = sc.cluster.worker_procs
    hostile = {
        "bomb": (task("bomb", "fork_bomb"), "SandboxError", "hit its process limit (8 processes)"),
        "hog": (task("hog", "hog", mb=2048), "SandboxError", "ran out of memory (limit 400 MiB)"),
        "loop": (task("loop", "spin"), "SandboxError", "used up its CPU time limit (1s)"),
        "nap": (task("nap", "nap"), "ToolTimeoutError", "ran longer than 1s and was killed"),
        "read": (
            task("read", "snoop", path="/etc/passwd"),
            "SandboxError",
            "sees only its own working directory",
        ),
        "net": (
            task("net", "connect_out", port=closed_port),
            "SandboxError",
            "Network is unreachable (the sandbox has no network",
        ),
    }
    # A workflow each (a failed task ends its workflow), all submitted at once:
    # the worker's one slot runs them one after the other.
    states = await asyncio.gather(
        *(run(sc.client, wf(spec), timeout=90) for spec, _, _ in hostile.values())
    )
    workers = set()
    for state, (task_id, (_, error_type, words)) in zip(states, hostile.items(), strict=True):
        assert state.status == WorkflowStatus.FAILED, task_id
        error = state.tasks[task_id].error
        assert error is not None, task_id
        assert (error.type, error.code) == (error_type, error_code(error_type))
        assert words in error.message, (task_id, error.message)
        events = await sc.client.events(state.workflow_id)
        failed = by_task(events, EventType.TASK_FAILED)[(task_id, 1)].data
        assert isinstance(failed, TaskFailed)
        assert failed.error.type == error_type
        assert words in failed.error.message
        audit = by_task(events, EventType.TASK_TOOL_CALLED)[(task_id, 1)].data
        assert isinstance(audit, TaskToolCalled)
        assert audit.outcome == ("timeout" if error_type == "ToolTimeoutError" else "error")
        assert audit.error is not None
        assert words in audit.error.message
        workers.add(failed.worker)
    assert len(workers) == 1
    assert worker.poll() is None  # the same worker process, alive
    assert descendants(worker.pid) == []  # and no process of any sandbox is left

    after = await run(sc.client, wf(task("sum", "sandboxed_add", path="-", value=1)), timeout=60)
    assert after.status == WorkflowStatus.COMPLETED, after.reason
    assert after.tasks["sum"].result["value"] == 2
    assert after.tasks["sum"].worker in workers
    assert worker.poll() is None
    assert descendants(worker.pid) == []


def error_code(error_type: str) -> str:
    return {"SandboxError": "sandbox_error", "ToolTimeoutError": "tool_timeout"}[error_type]

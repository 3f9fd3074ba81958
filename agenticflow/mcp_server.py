"""The cluster as an MCP server (``agenticflow mcp serve``): other agents start
workflows and read their results through MCP tools.

Tools: ``start_workflow`` (a template by name, or a workflow definition, with
its input), ``workflow_status``, ``workflow_result`` (waits up to a timeout)
and ``list_templates``. Every call goes through one :class:`agenticflow.Client`
connected with the command's settings, so it acts as the CLI's principal: with
keys, its submissions are signed by that principal and admitted by the same
RBAC (``workflow:submit:<capability>``...) as ``agenticflow submit``.

Failures come back as MCP tool errors (``isError``) with our message: an
unknown template or workflow, an invalid definition, a refused submission, a
failed or cancelled workflow, a wait that timed out.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agenticflow.client import Client, connect
from agenticflow.shared.errors import AgenticFlowError
from agenticflow.shared.wire.ids import new_node_id

if TYPE_CHECKING:
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.coordinator.supervisor import Templates
    from agenticflow.shared.ops.config import Settings

T = TypeVar("T")

DEFAULT_RESULT_TIMEOUT_S = 60.0
MAX_RESULT_TIMEOUT_S = 3600.0


def plain(value: T) -> T:
    """``value`` as JSON data (bytes, times and other odd values become strings)."""
    return cast(T, json.loads(json.dumps(value, default=str)))


def summary(state: WorkflowState) -> dict[str, Any]:
    """What ``workflow_status`` answers: the workflow's and each task's status."""
    return {
        "workflow_id": state.workflow_id,
        "name": state.name,
        "status": state.status.value,
        "paused": state.paused,
        "reason": state.reason,
        "tasks": {
            task_id: {
                "status": task.status.value,
                "capability": task.capability,
                "attempts": task.attempts,
                **({"error": task.error.message} if task.error is not None else {}),
            }
            for task_id, task in state.tasks.items()
        },
    }


async def _answer(work: Awaitable[T]) -> T:
    """Our errors as MCP tool errors (the caller sees the message)."""
    try:
        return await work
    except (AgenticFlowError, TimeoutError) as exc:
        raise ToolError(str(exc) or type(exc).__name__) from exc


def build(client: Client, templates: Callable[[], Templates]) -> MCPServer:
    """The MCP server over ``client``; ``templates`` loads the templates (at
    each call, so a new template file is seen)."""
    server: MCPServer = MCPServer(
        "agenticflow",
        instructions="Start AgenticFlow workflows (from a template or a definition) and "
        "read their status and results.",
        log_level="WARNING",
    )

    @server.tool()
    async def start_workflow(
        template: str | None = None,
        workflow: dict[str, Any] | None = None,
        input: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        """Start a workflow: a template by name (see list_templates; input fills
        its parameters) or a workflow definition ({"name": ..., "tasks": [...]}),
        with its input. An id makes the start idempotent. Returns the workflow id
        without waiting (see workflow_result)."""
        if (template is None) == (workflow is None):
            raise ToolError("give a template name or a workflow definition (one of them)")
        what: Any = template if template is not None else workflow
        handle = await _answer(client.start(what, input=input, id=id))
        return {"workflow_id": handle.id}

    @server.tool()
    async def workflow_status(workflow_id: str) -> dict[str, Any]:
        """The workflow's status and each task's (pending, running, completed,
        failed...), without waiting."""
        state = await _answer(client.handle(workflow_id).status())
        return plain(summary(state))

    @server.tool()
    async def workflow_result(
        workflow_id: str, timeout_s: float = DEFAULT_RESULT_TIMEOUT_S
    ) -> dict[str, Any]:
        """Wait up to timeout_s seconds (at most 3600) for the workflow to end;
        returns its output (the result of its last task, or the results by task
        id). A failed or cancelled workflow, or no end in time, is an error."""
        wait = min(max(timeout_s, 0.0), MAX_RESULT_TIMEOUT_S)
        output = await _answer(client.handle(workflow_id).result(timeout=wait))
        return {"workflow_id": workflow_id, "status": "completed", "output": plain(output)}

    @server.tool()
    async def list_templates() -> list[dict[str, Any]]:
        """The workflow templates start_workflow can run, with their parameters."""
        return plain(await _answer(_describe(templates)))

    return server


async def _describe(templates: Callable[[], Templates]) -> list[dict[str, Any]]:
    return templates().describe()


async def serve(
    settings: Settings, *, http_port: int | None = None, host: str = "127.0.0.1"
) -> None:
    """Connect with ``settings`` and serve MCP over stdio, or over streamable
    HTTP on ``host:http_port`` (path ``/mcp``) until stopped. Raises
    ConnectionLostError when the cluster is unreachable."""
    from agenticflow.coordinator.supervisor import Templates

    async with connect(
        settings=settings, name="agenticflow-mcp", node_id=new_node_id("mcp")
    ) as client:
        server = build(client, Templates.load)
        if http_port is None:
            await server.run_stdio_async()
        else:
            await server.run_streamable_http_async(host=host, port=http_port)


__all__ = ["build", "plain", "serve", "summary"]

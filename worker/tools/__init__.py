"""Agent tools: declared, validated, permission-checked, rate-limited and audited.

- :mod:`~agenticflow.worker.tools.spec`: :func:`tool` declares a :class:`Tool` (input
  model, permissions, timeout, rate limit, breaker, sandbox);
- :mod:`~agenticflow.worker.tools.registry`: an agent's :class:`ToolRegistry`;
- :mod:`~agenticflow.worker.tools.toolbox`: :class:`ToolBox`, the registry bound to one
  task (``ctx.tools``): every call is validated, checked, guarded and audited;
- :mod:`~agenticflow.worker.tools.state` / :mod:`~agenticflow.worker.tools.cluster`: breakers, rate
  limits and cached results, in memory or cluster-wide in KV;
- :mod:`~agenticflow.worker.tools.sandbox`: tools run in a limited process;
- :mod:`~agenticflow.worker.tools.pool`: bounded resource pools with metrics;
- built-ins: :func:`file_tools`, :func:`http_tool`, :func:`sql_tool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agenticflow.worker.tools.cluster import (
    ClusterToolState,
    breaker_states,
    cluster_state,
    read_states,
)
from agenticflow.worker.tools.files import file_tools
from agenticflow.worker.tools.pool import Pool, live_pools
from agenticflow.worker.tools.registry import ToolRegistry
from agenticflow.worker.tools.spec import (
    BreakerPolicy,
    RateLimit,
    SandboxLimits,
    Tool,
    ToolCall,
    make_tool,
    tool,
)
from agenticflow.worker.tools.sql import sql_tool
from agenticflow.worker.tools.state import MemoryToolState, ToolState
from agenticflow.worker.tools.toolbox import AuditPublish, ToolBox, ToolOutcome
from agenticflow.worker.tools.web import http_tool

if TYPE_CHECKING:
    from agenticflow.shared.bus.transport import Bus
    from agenticflow.shared.security.rbac import SecurityContext
    from agenticflow.shared.wire.codec import TaskMessage
    from agenticflow.worker.effects import Effects


def task_toolbox(
    bus: Bus,
    registry: ToolRegistry,
    task: TaskMessage,
    *,
    agent: str,
    instance: str,
    worker: str,
    effects: Effects | None,
    publish: AuditPublish,
    security: SecurityContext | None = None,
    allow_weak_sandbox: bool = False,
) -> ToolBox:
    """The worker runtime's ToolBox for one task attempt (cluster-wide state)."""
    return ToolBox(
        registry,
        state=cluster_state(bus, worker=worker),
        workflow_id=task.workflow_id,
        task_id=task.task_id,
        attempt=task.attempt,
        agent=agent,
        instance=instance,
        worker=worker,
        effects=effects,
        publish=publish,
        security=security,
        allow_weak_sandbox=allow_weak_sandbox,
    )


def describe(registry: ToolRegistry) -> list[dict[str, Any]]:
    """Every tool of a registry with everything declared about it."""
    return [item.info() for item in registry]


__all__ = [
    "AuditPublish",
    "BreakerPolicy",
    "ClusterToolState",
    "MemoryToolState",
    "Pool",
    "RateLimit",
    "SandboxLimits",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolOutcome",
    "ToolRegistry",
    "ToolState",
    "breaker_states",
    "cluster_state",
    "describe",
    "file_tools",
    "http_tool",
    "live_pools",
    "make_tool",
    "read_states",
    "sql_tool",
    "task_toolbox",
    "tool",
]

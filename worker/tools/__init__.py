"""Agent tools: declared, validated, permission-checked, rate-limited and audited.

- :mod:`~worker.tools.spec`: :func:`tool` declares a :class:`Tool` (input
  model, permissions, timeout, rate limit, breaker, sandbox);
- :mod:`~worker.tools.registry`: an agent's :class:`ToolRegistry`;
- :mod:`~worker.tools.toolbox`: :class:`ToolBox`, the registry bound to one
  task (``ctx.tools``): every call is validated, checked, guarded and audited;
- :mod:`~worker.tools.state` / :mod:`~worker.tools.cluster`: breakers, rate
  limits and cached results, in memory or cluster-wide in KV;
- :mod:`~worker.tools.sandbox`: tools run in a limited process;
- :mod:`~worker.tools.pool`: bounded resource pools with metrics;
- built-ins: :func:`file_tools`, :func:`http_tool`, :func:`sql_tool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.tools.cluster import ClusterToolState, breaker_states, cluster_state, read_states
from worker.tools.files import file_tools
from worker.tools.pool import Pool, live_pools
from worker.tools.registry import ToolRegistry
from worker.tools.spec import (
    BreakerPolicy,
    RateLimit,
    SandboxLimits,
    Tool,
    ToolCall,
    make_tool,
    tool,
)
from worker.tools.sql import sql_tool
from worker.tools.state import MemoryToolState, ToolState
from worker.tools.toolbox import AuditPublish, ToolBox, ToolOutcome
from worker.tools.web import http_tool

if TYPE_CHECKING:
    from shared.codec import TaskMessage
    from shared.rbac import SecurityContext
    from shared.transport import Bus
    from worker.effects import Effects


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

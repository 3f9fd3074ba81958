"""AgenticFlow: a multi-agent framework on a NATS JetStream worker cluster.

Users import from here only; the list below is the public API (pinned by
``tests/unit/test_public_api.py``).

Names load on first use (PEP 562): ``import agenticflow`` is cheap, so the CLI
starts fast and a worker process never loads the coordinator's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenticflow.client import (
        Client,
        WorkflowHandle,
        connect,
        connected,
    )
    from agenticflow.cluster.dev import DevCluster
    from agenticflow.cluster.nats_server import NatsServer
    from agenticflow.coordinator.causality import causality_violations
    from agenticflow.coordinator.index import WorkflowSummary
    from agenticflow.coordinator.reducer import fold
    from agenticflow.coordinator.service import Coordinator
    from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
    from agenticflow.coordinator.streams import StreamChunk
    from agenticflow.coordinator.supervisor import (
        Catalog,
        Plan,
        PlanStep,
        RulesPlanner,
        Supervisor,
        Template,
        Templates,
    )
    from agenticflow.coordinator.supervisor.llm import LlmPlanner
    from agenticflow.shared.bus.transport import Bus
    from agenticflow.shared.errors import (
        AgenticFlowError,
        ApprovalRejectedError,
        ApprovalTimeoutError,
        CircuitOpenError,
        ConfigError,
        ConnectionLostError,
        IllegalTransitionError,
        InterventionRefusedError,
        InvalidPlanError,
        MalformedMessageError,
        MessageError,
        NonRetryableError,
        NotFoundError,
        PayloadTooLargeError,
        PlannerUnavailableError,
        PlanningError,
        PublishTimeoutError,
        RateLimitedError,
        ResultValidationError,
        SandboxError,
        StateConflictError,
        TaskCancelledError,
        TaskError,
        TaskTimeoutError,
        ToolError,
        ToolPermissionError,
        ToolRefusedError,
        ToolTimeoutError,
        ToolValidationError,
        TransportError,
        UnknownToolError,
        UnservedCapabilityError,
        WorkflowCancelledError,
        WorkflowDefinitionError,
        WorkflowFailedError,
        WorkflowGraphError,
    )
    from agenticflow.shared.graph.workflow import (
        ApprovalGate,
        AuctionPolicy,
        RetryPolicy,
        TaskSpec,
        WorkflowDefinition,
        load_workflow_file,
        parse_workflow,
    )
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.resilience import (
        BreakerState,
        CircuitBreaker,
        retry_async,
        retry_policy,
    )
    from agenticflow.shared.wire.events import ApprovalDecision, Event, EventType, Modification
    from agenticflow.shared.wire.vclock import Ordering, VectorClock
    from agenticflow.worker.app import AgentApp, load_app
    from agenticflow.worker.bidding import AgentLoad, AuctionCall
    from agenticflow.worker.context import Cancellation, Feedback, TaskContext
    from agenticflow.worker.fsm import AgentState
    from agenticflow.worker.runtime import Worker
    from agenticflow.worker.tools import (
        BreakerPolicy,
        Pool,
        RateLimit,
        SandboxLimits,
        Tool,
        ToolBox,
        ToolCall,
        ToolOutcome,
        ToolRegistry,
        file_tools,
        http_tool,
        sql_tool,
        tool,
    )

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AgentApp": "agenticflow.worker.app",
    "AgentLoad": "agenticflow.worker.bidding",
    "AgentState": "agenticflow.worker.fsm",
    "AgenticFlowError": "agenticflow.shared.errors",
    "ApprovalDecision": "agenticflow.shared.wire.events",
    "ApprovalGate": "agenticflow.shared.graph.workflow",
    "ApprovalRejectedError": "agenticflow.shared.errors",
    "ApprovalTimeoutError": "agenticflow.shared.errors",
    "AuctionCall": "agenticflow.worker.bidding",
    "AuctionPolicy": "agenticflow.shared.graph.workflow",
    "BreakerPolicy": "agenticflow.worker.tools",
    "BreakerState": "agenticflow.shared.resilience",
    "Bus": "agenticflow.shared.bus.transport",
    "Catalog": "agenticflow.coordinator.supervisor",
    "CircuitBreaker": "agenticflow.shared.resilience",
    "CircuitOpenError": "agenticflow.shared.errors",
    "Cancellation": "agenticflow.worker.context",
    "Client": "agenticflow.client",
    "ConfigError": "agenticflow.shared.errors",
    "ConnectionLostError": "agenticflow.shared.errors",
    "Coordinator": "agenticflow.coordinator.service",
    "DevCluster": "agenticflow.cluster.dev",
    "Event": "agenticflow.shared.wire.events",
    "EventType": "agenticflow.shared.wire.events",
    "Feedback": "agenticflow.worker.context",
    "IllegalTransitionError": "agenticflow.shared.errors",
    "InterventionRefusedError": "agenticflow.shared.errors",
    "InvalidPlanError": "agenticflow.shared.errors",
    "LlmPlanner": "agenticflow.coordinator.supervisor.llm",
    "MalformedMessageError": "agenticflow.shared.errors",
    "MessageError": "agenticflow.shared.errors",
    "Modification": "agenticflow.shared.wire.events",
    "NatsServer": "agenticflow.cluster.nats_server",
    "NonRetryableError": "agenticflow.shared.errors",
    "NotFoundError": "agenticflow.shared.errors",
    "Ordering": "agenticflow.shared.wire.vclock",
    "PayloadTooLargeError": "agenticflow.shared.errors",
    "Plan": "agenticflow.coordinator.supervisor",
    "PlanStep": "agenticflow.coordinator.supervisor",
    "PlannerUnavailableError": "agenticflow.shared.errors",
    "PlanningError": "agenticflow.shared.errors",
    "Pool": "agenticflow.worker.tools",
    "PublishTimeoutError": "agenticflow.shared.errors",
    "RateLimit": "agenticflow.worker.tools",
    "RateLimitedError": "agenticflow.shared.errors",
    "ResultValidationError": "agenticflow.shared.errors",
    "RetryPolicy": "agenticflow.shared.graph.workflow",
    "RulesPlanner": "agenticflow.coordinator.supervisor",
    "SandboxError": "agenticflow.shared.errors",
    "SandboxLimits": "agenticflow.worker.tools",
    "Settings": "agenticflow.shared.ops.config",
    "StateConflictError": "agenticflow.shared.errors",
    "Supervisor": "agenticflow.coordinator.supervisor",
    "TaskCancelledError": "agenticflow.shared.errors",
    "TaskContext": "agenticflow.worker.context",
    "TaskError": "agenticflow.shared.errors",
    "TaskSpec": "agenticflow.shared.graph.workflow",
    "TaskStatus": "agenticflow.coordinator.state",
    "TaskTimeoutError": "agenticflow.shared.errors",
    "Template": "agenticflow.coordinator.supervisor",
    "Templates": "agenticflow.coordinator.supervisor",
    "Tool": "agenticflow.worker.tools",
    "ToolBox": "agenticflow.worker.tools",
    "ToolCall": "agenticflow.worker.tools",
    "ToolError": "agenticflow.shared.errors",
    "ToolOutcome": "agenticflow.worker.tools",
    "ToolPermissionError": "agenticflow.shared.errors",
    "ToolRefusedError": "agenticflow.shared.errors",
    "ToolRegistry": "agenticflow.worker.tools",
    "StreamChunk": "agenticflow.coordinator.streams",
    "ToolTimeoutError": "agenticflow.shared.errors",
    "ToolValidationError": "agenticflow.shared.errors",
    "TransportError": "agenticflow.shared.errors",
    "UnknownToolError": "agenticflow.shared.errors",
    "UnservedCapabilityError": "agenticflow.shared.errors",
    "VectorClock": "agenticflow.shared.wire.vclock",
    "Worker": "agenticflow.worker.runtime",
    "WorkflowCancelledError": "agenticflow.shared.errors",
    "WorkflowDefinition": "agenticflow.shared.graph.workflow",
    "WorkflowDefinitionError": "agenticflow.shared.errors",
    "WorkflowFailedError": "agenticflow.shared.errors",
    "WorkflowGraphError": "agenticflow.shared.errors",
    "WorkflowHandle": "agenticflow.client",
    "WorkflowState": "agenticflow.coordinator.state",
    "WorkflowStatus": "agenticflow.coordinator.state",
    "WorkflowSummary": "agenticflow.coordinator.index",
    "causality_violations": "agenticflow.coordinator.causality",
    "connect": "agenticflow.client",
    "connected": "agenticflow.client",
    "file_tools": "agenticflow.worker.tools",
    "fold": "agenticflow.coordinator.reducer",
    "http_tool": "agenticflow.worker.tools",
    "load_app": "agenticflow.worker.app",
    "load_workflow_file": "agenticflow.shared.graph.workflow",
    "parse_workflow": "agenticflow.shared.graph.workflow",
    "retry_async": "agenticflow.shared.resilience",
    "retry_policy": "agenticflow.shared.resilience",
    "sql_tool": "agenticflow.worker.tools",
    "tool": "agenticflow.worker.tools",
}

__all__ = [
    "AgentApp",
    "AgentLoad",
    "AgentState",
    "AgenticFlowError",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalRejectedError",
    "ApprovalTimeoutError",
    "AuctionCall",
    "AuctionPolicy",
    "BreakerPolicy",
    "BreakerState",
    "Bus",
    "Cancellation",
    "Catalog",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ConfigError",
    "ConnectionLostError",
    "Coordinator",
    "DevCluster",
    "Event",
    "EventType",
    "Feedback",
    "IllegalTransitionError",
    "InterventionRefusedError",
    "InvalidPlanError",
    "LlmPlanner",
    "MalformedMessageError",
    "MessageError",
    "Modification",
    "NatsServer",
    "NonRetryableError",
    "NotFoundError",
    "Ordering",
    "PayloadTooLargeError",
    "Plan",
    "PlanStep",
    "PlannerUnavailableError",
    "PlanningError",
    "Pool",
    "PublishTimeoutError",
    "RateLimit",
    "RateLimitedError",
    "ResultValidationError",
    "RetryPolicy",
    "RulesPlanner",
    "SandboxError",
    "SandboxLimits",
    "Settings",
    "StateConflictError",
    "StreamChunk",
    "Supervisor",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskSpec",
    "TaskStatus",
    "TaskTimeoutError",
    "Template",
    "Templates",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolError",
    "ToolOutcome",
    "ToolPermissionError",
    "ToolRefusedError",
    "ToolRegistry",
    "ToolTimeoutError",
    "ToolValidationError",
    "TransportError",
    "UnknownToolError",
    "UnservedCapabilityError",
    "VectorClock",
    "Worker",
    "WorkflowCancelledError",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowFailedError",
    "WorkflowGraphError",
    "WorkflowHandle",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowSummary",
    "__version__",
    "causality_violations",
    "connect",
    "connected",
    "file_tools",
    "fold",
    "http_tool",
    "load_app",
    "load_workflow_file",
    "parse_workflow",
    "retry_async",
    "retry_policy",
    "sql_tool",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agenticflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""AgenticFlow: a multi-agent framework on a NATS JetStream worker cluster.

Users import from here only; the list below is the public API (pinned by
``tests/unit/test_public_api.py``).
"""

from __future__ import annotations

from agenticflow.devcluster import DevCluster
from agenticflow.server import NatsServer
from coordinator.causality import causality_violations
from coordinator.client import Client
from coordinator.reducer import fold
from coordinator.service import Coordinator
from coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from shared.config import Settings
from shared.errors import (
    AgenticFlowError,
    ApprovalRejectedError,
    ApprovalTimeoutError,
    ConfigError,
    ConnectionLostError,
    IllegalTransitionError,
    InterventionRefusedError,
    MalformedMessageError,
    MessageError,
    NonRetryableError,
    NotFoundError,
    PayloadTooLargeError,
    PublishTimeoutError,
    RateLimitedError,
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
    WorkflowDefinitionError,
    WorkflowGraphError,
)
from shared.events import ApprovalDecision, Event, EventType, Modification
from shared.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    retry_async,
    retry_policy,
)
from shared.transport import Bus, connected
from shared.vclock import Ordering, VectorClock
from shared.workflow import (
    ApprovalGate,
    RetryPolicy,
    TaskSpec,
    WorkflowDefinition,
    load_workflow_file,
    parse_workflow,
)
from worker.app import AgentApp, load_app
from worker.context import Feedback, TaskContext
from worker.fsm import AgentState
from worker.runtime import Worker
from worker.tools import (
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

__all__ = [
    "AgentApp",
    "AgentState",
    "AgenticFlowError",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalRejectedError",
    "ApprovalTimeoutError",
    "BreakerPolicy",
    "BreakerState",
    "Bus",
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
    "MalformedMessageError",
    "MessageError",
    "Modification",
    "NatsServer",
    "NonRetryableError",
    "NotFoundError",
    "Ordering",
    "PayloadTooLargeError",
    "Pool",
    "PublishTimeoutError",
    "RateLimit",
    "RateLimitedError",
    "RetryPolicy",
    "SandboxError",
    "SandboxLimits",
    "Settings",
    "StateConflictError",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskSpec",
    "TaskStatus",
    "TaskTimeoutError",
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
    "VectorClock",
    "Worker",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowGraphError",
    "WorkflowState",
    "WorkflowStatus",
    "__version__",
    "causality_violations",
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

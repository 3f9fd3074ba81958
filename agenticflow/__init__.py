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
from coordinator.supervisor import (
    Catalog,
    Plan,
    PlanStep,
    RulesPlanner,
    Supervisor,
    Template,
    Templates,
)
from coordinator.supervisor.llm import LlmPlanner
from shared.config import Settings
from shared.errors import (
    AgenticFlowError,
    ApprovalRejectedError,
    ApprovalTimeoutError,
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
    AuctionPolicy,
    RetryPolicy,
    TaskSpec,
    WorkflowDefinition,
    load_workflow_file,
    parse_workflow,
)
from worker.app import AgentApp, load_app
from worker.bidding import AgentLoad, AuctionCall
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
    "RetryPolicy",
    "RulesPlanner",
    "SandboxError",
    "SandboxLimits",
    "Settings",
    "StateConflictError",
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

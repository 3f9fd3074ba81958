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
    StateConflictError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    TransportError,
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

__version__ = "0.1.0"

__all__ = [
    "AgentApp",
    "AgentState",
    "AgenticFlowError",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalRejectedError",
    "ApprovalTimeoutError",
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
    "PublishTimeoutError",
    "RetryPolicy",
    "Settings",
    "StateConflictError",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskSpec",
    "TaskStatus",
    "TaskTimeoutError",
    "TransportError",
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
    "fold",
    "load_app",
    "load_workflow_file",
    "parse_workflow",
    "retry_async",
    "retry_policy",
]

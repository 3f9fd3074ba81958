"""AgenticFlow: a multi-agent framework on NATS JetStream.

Users import from here only.
"""

from __future__ import annotations

from shared.errors import (
    AgenticFlowError,
    ConfigError,
    MalformedMessageError,
    NonRetryableError,
    NotFoundError,
    PayloadTooLargeError,
    TaskError,
    TaskTimeoutError,
    TransportError,
    WorkflowDefinitionError,
    WorkflowGraphError,
)
from shared.workflow import RetryPolicy, TaskSpec, WorkflowDefinition, load_workflow_file
from worker.app import AgentApp
from worker.context import TaskContext

__version__ = "0.1.0"

__all__ = [
    "AgentApp",
    "AgenticFlowError",
    "ConfigError",
    "MalformedMessageError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RetryPolicy",
    "TaskContext",
    "TaskError",
    "TaskSpec",
    "TaskTimeoutError",
    "TransportError",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowGraphError",
    "__version__",
    "load_workflow_file",
]

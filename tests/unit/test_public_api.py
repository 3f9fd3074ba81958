"""The public surface is deliberate: adding or removing a name is a decision."""

from __future__ import annotations

import agenticflow

EXPECTED = {
    "AgentApp", "AgenticFlowError", "Bus", "Client", "ConfigError", "ConnectionLostError",
    "Coordinator", "DevCluster", "Event", "EventType", "MalformedMessageError", "MessageError",
    "NatsServer", "NonRetryableError", "NotFoundError", "Ordering", "PayloadTooLargeError",
    "PublishTimeoutError", "RetryPolicy", "Settings", "StateConflictError", "TaskContext",
    "TaskError", "TaskSpec", "TaskStatus", "TaskTimeoutError", "TransportError", "VectorClock",
    "Worker", "WorkflowDefinition", "WorkflowDefinitionError", "WorkflowGraphError",
    "WorkflowState", "WorkflowStatus", "__version__", "causality_violations", "connected",
    "fold", "load_app", "load_workflow_file", "parse_workflow",
    "BreakerState", "CircuitBreaker", "CircuitOpenError", "retry_async", "retry_policy",
    "AgentState", "ApprovalDecision", "ApprovalGate", "ApprovalRejectedError",
    "ApprovalTimeoutError", "Feedback", "IllegalTransitionError", "InterventionRefusedError",
    "Modification", "TaskCancelledError",
    "BreakerPolicy", "Pool", "RateLimit", "RateLimitedError", "SandboxError", "SandboxLimits",
    "Tool", "ToolBox", "ToolCall", "ToolError", "ToolOutcome", "ToolPermissionError",
    "ToolRefusedError", "ToolRegistry", "ToolTimeoutError", "ToolValidationError",
    "UnknownToolError", "file_tools", "http_tool", "sql_tool", "tool",
    "Catalog", "InvalidPlanError", "LlmPlanner", "Plan", "PlanStep", "PlannerUnavailableError",
    "PlanningError", "RulesPlanner", "Supervisor", "Template", "Templates",
    "UnservedCapabilityError",
    "AgentLoad", "AuctionCall", "AuctionPolicy",
    "Cancellation", "ResultValidationError", "WorkflowCancelledError", "WorkflowFailedError",
    "WorkflowHandle", "WorkflowSummary", "connect",
    "StreamChunk",
    "AgentLoopError", "AgentResult", "LLM", "LLMError", "LLMRequestError", "LLMResponse",
    "LLMResponseError", "LLMUnavailableError",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(agenticflow.__all__) == EXPECTED
    assert len(agenticflow.__all__) == len(EXPECTED)


def test_every_exported_name_exists() -> None:
    for name in agenticflow.__all__:
        assert hasattr(agenticflow, name), name


def test_errors_share_one_root_with_stable_codes() -> None:
    errors = [
        getattr(agenticflow, n)
        for n in agenticflow.__all__
        if isinstance(getattr(agenticflow, n), type)
        and issubclass(getattr(agenticflow, n), Exception)
    ]
    assert len(errors) >= 10
    codes = set()
    for error in errors:
        assert issubclass(error, agenticflow.AgenticFlowError)
        codes.add(error.code)
    assert len(codes) == len(errors), "every error class has its own code"
    assert issubclass(agenticflow.TaskTimeoutError, TimeoutError)
    assert issubclass(agenticflow.PublishTimeoutError, TimeoutError)

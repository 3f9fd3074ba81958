"""One error tree for AgenticFlow.

Every error the framework raises derives from :class:`AgenticFlowError`, and
each class carries a stable ``code`` used in logs and in events. Foreign errors
(nats-py, msgpack, pydantic) are wrapped at the boundary with ``raise ... from``.

::

    AgenticFlowError
    ├── ConfigError                      settings or command-line options are invalid
    │   └── ClusterRunningError          `cluster up` finds a cluster running in that directory
    ├── WorkflowDefinitionError          a workflow file or definition is invalid
    │   └── WorkflowGraphError           cycle, unknown dependency, duplicate id
    ├── MessageError                     a message on the bus cannot be accepted
    │   ├── MalformedMessageError        undecodable body or header, wrong schema
    │   │   ├── UnknownSchemaVersionError  a payload version this node cannot read
    │   │   ├── ForgedMessageError       unsigned, wrongly signed or by a role that may not send it
    │   │   │   └── ReplayedMessageError   signed long before it was stored: a replay
    │   │   └── UndecryptableMessageError  unknown data key, altered ciphertext
    │   └── PayloadTooLargeError         headers + body exceed the server's limit
    ├── PermissionDeniedError            RBAC: the principal's roles do not grant it
    ├── TransportError                   the bus failed (wraps nats.errors)
    │   ├── ConnectionLostError
    │   ├── PublishTimeoutError          (also a TimeoutError)
    │   └── StateConflictError           a KV compare-and-set lost the race
    ├── NotFoundError                    no such workflow, app or attribute
    ├── WorkflowFailedError              result(): the workflow failed or was rejected
    │   └── WorkflowCancelledError       result(): it was cancelled or terminated
    ├── ResultValidationError            result(type=): the output is not that type (a ValueError)
    ├── CircuitOpenError                 a circuit breaker refused the call; retryable
    ├── InterventionRefusedError         the coordinator refused an intervention (``code`` says why)
    ├── IllegalTransitionError           a move the agent state machine forbids
    ├── PlanningError                    a query cannot be turned into a workflow
    │   ├── InvalidPlanError             a planner's plan fails validation (after one repair)
    │   ├── PlannerUnavailableError      the LLM endpoint is down, slow or refuses
    │   └── UnservedCapabilityError      no live agent serves a planned task's capability
    └── TaskError                        raised by handlers; decides retries
        ├── NonRetryableError            never retried
        │   ├── ReplayDivergedError      a re-execution made a call the recording lacks
        │   ├── TaskCancelledError       the workflow was aborted while the handler ran
        │   ├── ApprovalRejectedError    a person (or the gate's policy) rejected it
        │   └── ApprovalTimeoutError     nobody decided in time (``on_timeout: fail``)
        ├── RecordedEffectError          a side effect's recorded failure, served again
        ├── TaskTimeoutError             (also a TimeoutError); retryable
        ├── LLMError                     a model call through ``ctx.llm`` failed
        │   ├── LLMUnavailableError      down, slow, 429 or 5xx after every try; retryable
        │   ├── LLMRequestError          the provider refused the request (4xx; non-retryable)
        │   └── LLMResponseError         the answer breaks the chat-completions protocol
        ├── AgentLoopError               ``ctx.run_agent`` gave up (max_steps; non-retryable)
        └── ToolError                    a call through an agent's tool registry failed
            ├── UnknownToolError         no such tool in the agent's registry (non-retryable)
            ├── ToolValidationError      params fail the tool's input model (non-retryable)
            ├── ToolPermissionError      the agent lacks a permission (non-retryable)
            ├── ToolRefusedError         a built-in tool's safety rule (non-retryable)
            ├── ToolTimeoutError         (also a TimeoutError); retryable
            ├── RateLimitedError         no rate-limit slot within the wait; retryable
            ├── SandboxError             the sandboxed process failed or was killed
            │   └── SandboxIsolationError  not run: the kernel cannot isolate it (non-retryable)
            └── MCPToolError             an MCP server's tool answered isError, or an error
                └── MCPUnavailableError  the MCP server would not start, or went away

The tool errors marked non-retryable also subclass :class:`NonRetryableError`.

A handler may raise any exception: it becomes a retryable failure unless it is a
:class:`NonRetryableError` or its class name is listed in the task's retry
policy as non-retryable. Retry decisions go by class, never by message text.
:func:`error_info` is how any exception travels on the bus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenticflow.shared.wire.events import ErrorInfo


class AgenticFlowError(Exception):
    """Base class of every AgenticFlow error."""

    code = "agenticflow_error"


class ConfigError(AgenticFlowError):
    """Settings or command-line options are invalid."""

    code = "config_error"


class ClusterRunningError(ConfigError):
    """A cluster is already running in that state directory."""

    code = "cluster_running"


class WorkflowDefinitionError(AgenticFlowError):
    """A workflow definition is invalid; ``problems`` lists each issue."""

    code = "invalid_workflow"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class WorkflowGraphError(WorkflowDefinitionError):
    """The task graph is not a DAG or names unknown tasks."""

    code = "invalid_graph"


class MessageError(AgenticFlowError):
    """A message on the bus cannot be accepted."""

    code = "message_error"


class MalformedMessageError(MessageError):
    """A body or header cannot be decoded or does not match its schema."""

    code = "malformed_message"


class UnknownSchemaVersionError(MalformedMessageError):
    """A payload's schema version is newer than this node's, or older than any
    migration in :mod:`agenticflow.shared.wire.schemas` reaches."""

    code = "unknown_schema_version"


class ForgedMessageError(MalformedMessageError):
    """A message is unsigned, wrongly signed, signed by an unknown key, or signed
    by a key whose role may not send it: never applied."""

    code = "forged_message"


class ReplayedMessageError(ForgedMessageError):
    """A correctly signed message was stored long after it was signed: a replay."""

    code = "replayed_message"


class UndecryptableMessageError(MalformedMessageError):
    """A message's body cannot be decrypted (unknown data key, altered ciphertext,
    or plaintext where encryption is required)."""

    code = "undecryptable_message"


class WorkflowFailedError(AgenticFlowError):
    """The workflow ended without a result: it failed or was rejected
    (``handle.result()``, ``client.run()``).

    ``workflow_id``, ``state`` (its ``WorkflowStatus``), ``reason``,
    ``failed_task`` and ``status`` (the whole ``WorkflowState``) say why.
    """

    code = "workflow_failed"

    def __init__(self, message: str, *, status: Any) -> None:
        super().__init__(message)
        self.status = status
        self.workflow_id: str = status.workflow_id
        self.state = status.status
        self.reason: str | None = status.reason
        self.failed_task: str | None = status.failed_task


class WorkflowCancelledError(WorkflowFailedError):
    """The workflow was cancelled (cooperatively) or terminated before it completed."""

    code = "workflow_cancelled"


class ResultValidationError(AgenticFlowError, ValueError):
    """``result(type=...)``: the workflow's output does not validate as that type
    (the pydantic error is the ``__cause__``)."""

    code = "result_invalid"


class PermissionDeniedError(AgenticFlowError):
    """A principal's roles do not grant what it asked for (RBAC)."""

    code = "forbidden"


class PayloadTooLargeError(MessageError):
    """A message would exceed the server's maximum payload."""

    code = "payload_too_large"


class TransportError(AgenticFlowError):
    """The message bus failed."""

    code = "transport_error"


class ConnectionLostError(TransportError):
    """The connection to NATS is closed and will not come back."""

    code = "connection_lost"


class PublishTimeoutError(TransportError, TimeoutError):
    """The server did not acknowledge a publish in time."""

    code = "publish_timeout"


class StateConflictError(TransportError):
    """A compare-and-set on a KV entry lost to another writer."""

    code = "state_conflict"


class CircuitOpenError(AgenticFlowError):
    """A circuit breaker refused a call; try again after ``retry_after_s`` seconds."""

    code = "circuit_open"
    retryable = True

    def __init__(self, name: str, *, retry_after_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry after {retry_after_s:.3f}s")
        self.name = name
        self.retry_after_s = retry_after_s


class NotFoundError(AgenticFlowError):
    """The named workflow, app or attribute does not exist."""

    code = "not_found"


class TaskError(AgenticFlowError):
    """A task failed; retried according to the task's retry policy."""

    code = "task_error"
    retryable = True


class NonRetryableError(TaskError):
    """A task failed in a way that retrying cannot fix."""

    code = "non_retryable"
    retryable = False


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than its timeout."""

    code = "task_timeout"


class ReplayDivergedError(NonRetryableError):
    """A re-execution (``agenticflow rerun``) made a side-effect call that the
    recorded run did not make, or made it with other parameters."""

    code = "replay_diverged"


class RecordedEffectError(TaskError):
    """A side effect failed in the recorded run; a re-execution raises it again
    (as this class: the original exception's class is in ``error_type``)."""

    code = "recorded_effect_error"

    def __init__(self, error_type: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.retryable = retryable


class TaskCancelledError(NonRetryableError):
    """The task's workflow was aborted while its handler ran."""

    code = "task_cancelled"


class ApprovalRejectedError(NonRetryableError):
    """A person (or the gate's timeout policy) rejected the task's approval gate."""

    code = "approval_rejected"


class ApprovalTimeoutError(NonRetryableError):
    """Nobody decided an approval in time and its policy is ``on_timeout: fail``."""

    code = "approval_timeout"


class InterventionRefusedError(AgenticFlowError):
    """The coordinator refused an intervention and changed nothing.

    ``code`` says why: ``unknown_workflow``, ``workflow_finished``,
    ``not_waiting`` (no approval pending on that task), ``unknown_task``,
    ``invalid_modification``, ``not_paused``, ``already_paused``, ``invalid``.
    """

    code = "intervention_refused"

    def __init__(self, message: str, *, code: str = "intervention_refused") -> None:
        super().__init__(message)
        self.code = code


class PlanningError(AgenticFlowError):
    """A query cannot be turned into a workflow (empty, meaningless, unplannable)."""

    code = "planning_error"


class InvalidPlanError(PlanningError):
    """A planner produced a plan that fails validation; ``problems`` lists each issue."""

    code = "invalid_plan"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class PlannerUnavailableError(PlanningError):
    """The planner's backend (an LLM endpoint) is down, too slow, or refuses."""

    code = "planner_unavailable"


class UnservedCapabilityError(PlanningError):
    """No live agent serves a capability the plan needs; ``capabilities`` names them."""

    code = "unserved_capability"

    def __init__(self, message: str, *, capabilities: list[str] | None = None) -> None:
        super().__init__(message)
        self.capabilities: list[str] = capabilities or []


class IllegalTransitionError(AgenticFlowError):
    """An agent instance was asked to make a move its state machine forbids."""

    code = "illegal_transition"


class ToolError(TaskError):
    """A call through an agent's tool registry failed; ``tool`` names the tool.

    A tool's own exception reaches the handler unchanged; these are the
    registry's verdicts (and a sandboxed tool's failure, which cannot carry
    the original class across the process boundary).
    """

    code = "tool_error"

    def __init__(self, message: str, *, tool: str = "") -> None:
        super().__init__(message)
        self.tool = tool


class UnknownToolError(ToolError, NonRetryableError):
    """The agent's registry has no tool of that name."""

    code = "tool_unknown"


class ToolValidationError(ToolError, NonRetryableError):
    """The params do not match the tool's input model; ``errors`` lists each field."""

    code = "tool_invalid"

    def __init__(self, message: str, *, tool: str = "", errors: list[str] | None = None) -> None:
        super().__init__(message, tool=tool)
        self.errors: list[str] = errors if errors is not None else [message]


class ToolPermissionError(ToolError, NonRetryableError):
    """The agent was not granted a permission the tool requires; ``missing`` lists them."""

    code = "tool_denied"

    def __init__(self, message: str, *, tool: str = "", missing: list[str] | None = None) -> None:
        super().__init__(message, tool=tool)
        self.missing: list[str] = missing or []


class ToolRefusedError(ToolError, NonRetryableError):
    """A built-in tool refused the request by its safety rules (a path outside
    its directory, a host not allowed, a write in a read-only database, too big)."""

    code = "tool_refused"


class ToolTimeoutError(ToolError, TimeoutError):
    """A tool ran longer than its timeout."""

    code = "tool_timeout"


class RateLimitedError(ToolError):
    """No rate-limit slot became free within the wait; retry after ``retry_after_s``."""

    code = "rate_limited"

    def __init__(self, message: str, *, tool: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(message, tool=tool)
        self.retry_after_s = retry_after_s


class SandboxError(ToolError):
    """A sandboxed tool failed: it raised (``error_type`` names the class), hit a
    resource limit, or its process died."""

    code = "sandbox_error"

    def __init__(self, message: str, *, tool: str = "", error_type: str = "") -> None:
        super().__init__(message, tool=tool)
        self.error_type = error_type


class SandboxIsolationError(SandboxError, NonRetryableError):
    """A sandboxed tool was not run: the kernel here cannot give it the isolation
    it declares (``missing`` says what is missing) and the operator did not
    accept less (``agenticflow worker --allow-weak-sandbox``), or the tool
    requires it anyway (``SandboxLimits(require_isolation=True)``)."""

    code = "sandbox_isolation"

    def __init__(self, message: str, *, tool: str = "", missing: list[str] | None = None) -> None:
        super().__init__(message, tool=tool, error_type="IsolationUnavailable")
        self.missing: list[str] = list(missing or [])


class MCPToolError(ToolError):
    """An MCP server's tool failed: it answered ``isError``, or the server sent
    an error response; ``server`` names the server. Retryable, like any tool's
    own exception."""

    code = "mcp_tool_error"

    def __init__(self, message: str, *, tool: str = "", server: str = "") -> None:
        super().__init__(message, tool=tool)
        self.server = server


class MCPUnavailableError(MCPToolError):
    """The MCP server would not start (after every attempt), or went away
    during the call; retryable (the next call restarts it)."""

    code = "mcp_unavailable"


class LLMError(TaskError):
    """A model call through ``ctx.llm`` failed; ``provider`` names the endpoint
    (its host), ``status`` the HTTP status when there was one."""

    code = "llm_error"

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class LLMUnavailableError(LLMError):
    """The provider was unreachable, too slow, overloaded (429) or failing (5xx)
    on every try; retryable (``retry_after_s``: what the provider asked for)."""

    code = "llm_unavailable"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s


class LLMRequestError(LLMError, NonRetryableError):
    """The provider refused the request itself (a 4xx other than 408/409/425/429:
    a wrong key, an unknown model, a request too long): a retry cannot help."""

    code = "llm_refused"


class LLMResponseError(LLMError):
    """The provider answered with something that is not a chat completion (not
    JSON, no ``choices``, tool-call arguments that are not a JSON object);
    retryable, as a model may answer well the next time."""

    code = "llm_malformed"


class AgentLoopError(NonRetryableError):
    """``ctx.run_agent`` stopped without an answer: the model still asked for
    tools after ``max_steps`` steps."""

    code = "agent_loop"


MAX_ERROR_MESSAGE = 8 * 1024
"""Characters of an exception's message that travel on the bus (the rest is cut):
the coordinator repeats it in the workflow's failure, which must fit a message."""


def error_info(exc: BaseException) -> ErrorInfo:
    """How an exception travels on the bus; retryability by class."""
    # Imported here: the wire models import this module (for their own errors).
    from agenticflow.shared.wire.events import ErrorInfo

    if isinstance(exc, TaskError):
        code, retryable = exc.code, exc.retryable
    elif isinstance(exc, AgenticFlowError):
        code = exc.code
        retryable = not isinstance(exc, MalformedMessageError | PayloadTooLargeError)
    else:
        code, retryable = "exception", True
    message = str(exc) or repr(exc) if code == "exception" else str(exc)
    if len(message) > MAX_ERROR_MESSAGE:
        message = f"{message[:MAX_ERROR_MESSAGE]}... ({len(message)} characters, cut)"
    return ErrorInfo(type=type(exc).__name__, message=message, code=code, retryable=retryable)


__all__ = [
    "AgentLoopError",
    "AgenticFlowError",
    "ApprovalRejectedError",
    "ApprovalTimeoutError",
    "CircuitOpenError",
    "ClusterRunningError",
    "ConfigError",
    "ConnectionLostError",
    "ForgedMessageError",
    "IllegalTransitionError",
    "InterventionRefusedError",
    "InvalidPlanError",
    "LLMError",
    "LLMRequestError",
    "LLMResponseError",
    "LLMUnavailableError",
    "MCPToolError",
    "MCPUnavailableError",
    "MalformedMessageError",
    "MessageError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PlannerUnavailableError",
    "PlanningError",
    "PublishTimeoutError",
    "RateLimitedError",
    "RecordedEffectError",
    "ReplayDivergedError",
    "ReplayedMessageError",
    "ResultValidationError",
    "SandboxError",
    "SandboxIsolationError",
    "StateConflictError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "ToolError",
    "ToolPermissionError",
    "ToolRefusedError",
    "ToolTimeoutError",
    "ToolValidationError",
    "TransportError",
    "UndecryptableMessageError",
    "UnknownSchemaVersionError",
    "UnknownToolError",
    "UnservedCapabilityError",
    "WorkflowCancelledError",
    "WorkflowDefinitionError",
    "WorkflowFailedError",
    "WorkflowGraphError",
    "error_info",
]

"""One error tree for AgenticFlow.

Every error the framework raises derives from :class:`AgenticFlowError`, and
each class carries a stable ``code`` used in logs and in events. Foreign errors
(nats-py, msgpack, pydantic) are wrapped at the boundary with ``raise ... from``.

::

    AgenticFlowError
    ├── ConfigError
    ├── WorkflowDefinitionError          a workflow file or definition is invalid
    │   └── WorkflowGraphError           cycle, unknown dependency, duplicate id
    ├── MessageError                     a message on the bus cannot be accepted
    │   ├── MalformedMessageError        undecodable body or header, wrong schema
    │   │   └── UnknownSchemaVersionError  a payload version this node cannot read
    │   └── PayloadTooLargeError         headers + body exceed the server's limit
    ├── TransportError                   the bus failed (wraps nats.errors)
    │   ├── ConnectionLostError
    │   ├── PublishTimeoutError          (also a TimeoutError)
    │   └── StateConflictError           a KV compare-and-set lost the race
    ├── NotFoundError                    no such workflow, app or attribute
    └── TaskError                        raised by handlers; decides retries
        ├── NonRetryableError            never retried
        │   └── ReplayDivergedError      a re-execution made a call the recording lacks
        ├── RecordedEffectError          a side effect's recorded failure, served again
        └── TaskTimeoutError             (also a TimeoutError); retryable

A handler may raise any exception: it becomes a retryable failure unless it is a
:class:`NonRetryableError` or its class name is listed in the task's retry
policy as non-retryable. Retry decisions go by class, never by message text.
"""

from __future__ import annotations


class AgenticFlowError(Exception):
    """Base class of every AgenticFlow error."""

    code = "agenticflow_error"


class ConfigError(AgenticFlowError):
    """Settings or command-line options are invalid."""

    code = "config_error"


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
    migration in :mod:`shared.schemas` reaches."""

    code = "unknown_schema_version"


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


__all__ = [
    "AgenticFlowError",
    "ConfigError",
    "ConnectionLostError",
    "MalformedMessageError",
    "MessageError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PublishTimeoutError",
    "RecordedEffectError",
    "ReplayDivergedError",
    "StateConflictError",
    "TaskError",
    "TaskTimeoutError",
    "TransportError",
    "UnknownSchemaVersionError",
    "WorkflowDefinitionError",
    "WorkflowGraphError",
]

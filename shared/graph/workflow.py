"""The workflow definition: a DAG of tasks, each served by a capability.

A definition is plain data (YAML or JSON on disk, msgpack on the wire). Field
checks live here; graph checks (cycles, unknown or duplicate ids) live in
:mod:`agenticflow.shared.graph.dag` so the coordinator can reject a bad graph with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agenticflow.shared.errors import WorkflowDefinitionError
from agenticflow.shared.graph.hierarchy import CHILD_CAPABILITY
from agenticflow.shared.resilience import backoff_delay
from agenticflow.shared.wire.ids import ID_RE, TASK_ID_RE


class RetryPolicy(BaseModel):
    """How a failed task is retried: attempts, exponential backoff, exceptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval_s: float = Field(default=0.5, ge=0, le=3600)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval_s: float = Field(default=60.0, ge=0, le=86400)
    non_retryable: tuple[str, ...] = ()
    """Exception class names that fail the task at once."""

    def delay_s(self, attempt: int) -> float:
        """Delay before the attempt after ``attempt`` (1-based)."""
        return backoff_delay(
            attempt,
            initial_s=self.initial_interval_s,
            backoff=self.backoff,
            max_s=self.max_interval_s,
            jitter=False,
        )


class ApprovalGate(BaseModel):
    """A person must approve before the task runs (``approval:`` on a task).

    While it waits the task holds no worker slot; the wait survives restarts.
    Approved: the task runs and its handler sees ``ctx.approval``. Rejected:
    the task fails (not retried) and so does the workflow, with the comment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = True
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    """Seconds to wait for a decision; None waits until someone decides."""
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    """What the expired wait means: a rejection, an approval, or a failure."""
    reason: str = ""
    """What the approver is asked (default: approve task X)."""

    @model_validator(mode="before")
    @classmethod
    def _timeout_text(cls, data: Any) -> Any:
        # ``timeout: 1h`` / ``30m`` / ``45s`` / a number of seconds.
        if isinstance(data, dict) and "timeout" in data:
            data = dict(data)
            data["timeout_s"] = parse_duration(data.pop("timeout"))
        return data


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"1h"`` or ``"2d"``; raises ValueError."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    text = str(value).strip()
    unit = _UNITS.get(text[-1:].lower())
    try:
        return float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration like 90, 45s, 15m, 1h or 2d") from None


class AuctionPolicy(BaseModel):
    """How an ``allocation: auction`` task is auctioned (``auction:`` on a task).

    The task is announced to every agent instance serving its capability; they
    bid within ``window_s`` (lower is better) and the best bid gets it. With no
    bid it goes to the shared queue; a winner that has not started it within
    ``claim_timeout_s`` loses it to the shared queue too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(default=0.5, gt=0, le=60)
    """How long bids are collected."""
    claim_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """How long the winner has to start the task (and, while it runs, between heartbeats)."""


class TaskSpec(BaseModel):
    """One node of the workflow graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    capability: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    heartbeat_timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """The worker sends a heartbeat every third of this while the task runs; the
    coordinator retries the attempt if none arrives for this long (the worker
    vanished). Without it, a vanished worker's task is redelivered after ack_wait."""
    optional: bool = False
    """If its message is dead-lettered, skip it (dependents get None) instead of
    failing the workflow."""
    approval: ApprovalGate | None = None
    """A person must approve before the task runs (see :class:`ApprovalGate`)."""
    allocation: Literal["queue", "auction"] = "queue"
    """``queue``: any worker serving the capability takes it from the shared
    queue. ``auction``: the capability's agents bid for it (see :class:`AuctionPolicy`)."""
    auction: AuctionPolicy | None = None
    """Settings of ``allocation: auction`` (default: :class:`AuctionPolicy`'s)."""
    description: str = ""
    workflow: WorkflowDefinition | None = None
    """A child workflow that runs as this task (see :mod:`agenticflow.shared.graph.hierarchy`): no
    capability; the task's result is the child's output."""

    @model_validator(mode="before")
    @classmethod
    def _child_capability(cls, data: Any) -> Any:
        # A task running a child workflow needs no capability: it gets the reserved one.
        if isinstance(data, dict) and data.get("workflow") is not None and "capability" not in data:
            data = {**data, "capability": CHILD_CAPABILITY}
        return data

    @model_validator(mode="after")
    def _check_child(self) -> TaskSpec:
        if self.workflow is None and self.capability == CHILD_CAPABILITY:
            raise ValueError(
                f"capability {CHILD_CAPABILITY!r} is reserved for tasks that run a child "
                "workflow (give the task a 'workflow:')"
            )
        if self.workflow is not None and self.capability != CHILD_CAPABILITY:
            raise ValueError("a task runs either a capability or a child 'workflow:', not both")
        if self.workflow is not None and (self.timeout_s or self.heartbeat_timeout_s):
            raise ValueError(
                "timeouts do not apply to a task that runs a child workflow: "
                "set them on the child's tasks"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _auction_heartbeats(cls, data: Any) -> Any:
        # An auctioned task runs on one chosen worker, whose death nobody else
        # would notice: it heartbeats every third of its claim timeout by default.
        if (
            isinstance(data, dict)
            and data.get("allocation") == "auction"
            and data.get("workflow") is None
            and data.get("heartbeat_timeout_s") is None
        ):
            policy = data.get("auction")
            if isinstance(policy, dict):
                policy = AuctionPolicy.model_validate(policy)
            claim = policy.claim_timeout_s if isinstance(policy, AuctionPolicy) else None
            data = {**data, "heartbeat_timeout_s": claim or AuctionPolicy().claim_timeout_s}
        return data

    @model_validator(mode="after")
    def _check_auction(self) -> TaskSpec:
        if self.auction is not None and self.allocation != "auction":
            raise ValueError("'auction' settings need 'allocation: auction'")
        if self.allocation == "auction" and self.workflow is not None:
            raise ValueError("a task that runs a child workflow cannot be auctioned")
        return self

    @property
    def auction_policy(self) -> AuctionPolicy:
        """The task's auction settings (defaults when it gave none)."""
        return self.auction or AuctionPolicy()

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not TASK_ID_RE.match(value):
            raise ValueError(
                "task id must be 1-64 letters, digits, '_', '-' or '.' (no ':' or spaces)"
            )
        return value

    @field_validator("capability")
    @classmethod
    def _check_capability(cls, value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError("capability must be 1-64 letters, digits, '_' or '-'")
        return value


class WorkflowDefinition(BaseModel):
    """A named DAG of tasks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="workflow", min_length=1, max_length=200)
    description: str = ""
    tasks: tuple[TaskSpec, ...] = Field(min_length=1, max_length=100_000)
    default_retry: RetryPolicy = RetryPolicy()
    default_timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    input: dict[str, Any] = Field(default_factory=dict)
    """Default workflow input; keys submitted with the workflow override it."""

    def retry_of(self, task: TaskSpec) -> RetryPolicy:
        """The task's retry policy, or the workflow default."""
        return task.retry or self.default_retry

    def timeout_of(self, task: TaskSpec) -> float | None:
        """The task's timeout in seconds, or the workflow default."""
        return task.timeout_s if task.timeout_s is not None else self.default_timeout_s


TaskSpec.model_rebuild()  # ``workflow:`` refers to WorkflowDefinition, defined after it


def _describe(errors: ValidationError, source: str) -> list[str]:
    problems = []
    found = errors.errors()
    for err in found:
        loc = err["loc"]
        if (
            err["type"] == "too_short"
            and loc[-1:] == ("tasks",)
            and any(
                other["loc"][: len(loc)] == loc and len(other["loc"]) > len(loc) for other in found
            )
        ):
            continue  # pydantic's echo of the invalid tasks themselves
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"]
        ).lstrip(".")
        problems.append(f"{source}: {where or '(top level)'}: {err['msg']}")
    return problems


def parse_workflow(data: Any, *, source: str = "workflow") -> WorkflowDefinition:
    """Validate plain data as a definition; raises WorkflowDefinitionError."""
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(f"{source}: a workflow must be a mapping with 'tasks'")
    try:
        return WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc, source)
        raise WorkflowDefinitionError("; ".join(problems), problems=problems) from exc


def load_workflow_file(path: str | Path) -> WorkflowDefinition:
    """Read a YAML or JSON workflow file; raises WorkflowDefinitionError naming file and field."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowDefinitionError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise WorkflowDefinitionError(f"{file}: not UTF-8 text: {exc}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise WorkflowDefinitionError(f"{file}: not valid {file.suffix or 'YAML'}: {exc}") from exc
    return parse_workflow(data, source=str(file))


__all__ = [
    "ApprovalGate",
    "AuctionPolicy",
    "RetryPolicy",
    "TaskSpec",
    "WorkflowDefinition",
    "load_workflow_file",
    "parse_duration",
    "parse_workflow",
]

"""The workflow definition: a DAG of tasks, each served by a capability.

A definition is plain data (YAML or JSON on disk, msgpack on the wire). Field
checks live here; graph checks (cycles, unknown or duplicate ids) live in
:mod:`agenticflow.shared.graph.dag` so the coordinator can reject a bad graph with a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(2200, 1, 1, tzinfo=UTC)

WAIT_CAPABILITY = "wait"
"""The capability of a ``wait:`` node (reserved: the coordinator handles it, no worker)."""

MAX_WAIT_S = 366 * 86400
"""Longest a ``wait:`` node waits (a duration, a signal's timeout; a time
further ahead is waited for this long)."""


class WaitSpec(BaseModel):
    """What a ``wait:`` node waits for; the coordinator handles it, no worker is held.

    Exactly one of: ``duration`` (``90``, ``45s``, ``15m``, ``2h``, ``3d``: from
    when the node became ready), ``until`` (an ISO 8601 time with its time
    zone, e.g. ``2026-12-24T09:00:00+01:00``; a past time fires at once) or
    ``signal`` (a name: the node completes with the data of that signal, sent
    by ``agenticflow signal`` or ``handle.signal()``; one sent before the node
    was ready is kept for it). A signal wait may have a ``timeout``, after
    which it fails the task (``on_timeout: fail``) or completes it with no
    data (``continue``). The node's result: ``{"waited_until": ISO time}`` for
    a timer, the signal's data for a signal.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration_s: float | None = Field(default=None, ge=0, le=MAX_WAIT_S)
    until: str | None = None
    """An ISO 8601 time with a time zone, normalized to UTC."""
    signal: str | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_WAIT_S)
    """How long a signal wait waits (None: until the signal comes)."""
    on_timeout: Literal["fail", "continue"] = "fail"

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            data = {"duration": data}  # ``wait: 2h``
        if isinstance(data, dict):
            data = dict(data)
            if "duration" in data:
                data["duration_s"] = parse_duration(data.pop("duration"))
            if "timeout" in data:
                data["timeout_s"] = parse_duration(data.pop("timeout"))
        return data

    @field_validator("until", mode="before")
    @classmethod
    def _check_until(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                raise ValueError(
                    f"until: {value!r} is not an ISO 8601 time like 2026-12-24T09:00:00Z"
                ) from None
        if moment.tzinfo is None:
            raise ValueError(
                f"until: {value!s} has no time zone; say which, e.g. "
                f"{moment.isoformat()}Z or {moment.isoformat()}+01:00"
            )
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"until: {value!s} is out of range") from None
        if not _EPOCH <= moment <= _LAST:
            raise ValueError(f"until: {value!s} is out of range (1970 to 2200)")
        return moment.isoformat()

    @field_validator("signal")
    @classmethod
    def _check_signal(cls, value: str | None) -> str | None:
        if value is not None and not ID_RE.match(value):
            raise ValueError("signal name must be 1-64 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _one_thing(self) -> WaitSpec:
        chosen = [k for k in ("duration_s", "until", "signal") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("wait: give exactly one of 'duration', 'until' or 'signal'")
        if self.signal is None and (self.timeout_s is not None or self.on_timeout != "fail"):
            raise ValueError("wait: 'timeout' and 'on_timeout' apply to a signal wait only")
        return self

    def due_ns(self, ready_ns: int) -> int | None:
        """When the wait ends by time for a node ready at ``ready_ns`` (None: a
        signal wait without a timeout)."""
        if self.duration_s is not None:
            return ready_ns + int(self.duration_s * 1e9)
        if self.until is not None:
            return int(datetime.fromisoformat(self.until).timestamp() * 1e9)
        if self.timeout_s is not None:
            return ready_ns + int(self.timeout_s * 1e9)
        return None

    def describe(self) -> str:
        """What it waits for, in words (``for 2h``, ``until …``, ``for signal 'x'``)."""
        if self.duration_s is not None:
            return f"for {self.duration_s:g}s"
        if self.until is not None:
            return f"until {self.until}"
        limit = f" (at most {self.timeout_s:g}s)" if self.timeout_s is not None else ""
        return f"for signal {self.signal!r}{limit}"


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
    wait: WaitSpec | None = None
    """A node the coordinator handles itself: it waits for a time or a signal
    (see :class:`WaitSpec`); no capability, no worker."""

    @model_validator(mode="before")
    @classmethod
    def _child_capability(cls, data: Any) -> Any:
        # A task running a child workflow or a wait needs no capability: it gets
        # the reserved one.
        if isinstance(data, dict) and "capability" not in data:
            if data.get("workflow") is not None:
                data = {**data, "capability": CHILD_CAPABILITY}
            elif data.get("wait") is not None:
                data = {**data, "capability": WAIT_CAPABILITY}
        return data

    @model_validator(mode="after")
    def _check_wait(self) -> TaskSpec:
        if self.wait is None:
            if self.capability == WAIT_CAPABILITY:
                raise ValueError(
                    f"capability {WAIT_CAPABILITY!r} is reserved for 'wait:' nodes "
                    "(give the task a 'wait:')"
                )
            return self
        if self.capability != WAIT_CAPABILITY or self.workflow is not None:
            raise ValueError(
                "a task runs a capability, a child 'workflow:' or a 'wait:', only one of them"
            )
        extra = [
            name
            for name, set_ in (
                ("timeout_s", self.timeout_s is not None),
                ("heartbeat_timeout_s", self.heartbeat_timeout_s is not None),
                ("approval", self.approval is not None),
                ("retry", self.retry is not None),
                ("allocation: auction", self.allocation != "queue"),
            )
            if set_
        ]
        if extra:
            raise ValueError(
                f"a 'wait:' node takes no {', '.join(extra)} (a signal wait has its own 'timeout')"
            )
        return self

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
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Its version once registered (``agenticflow workflow register``), or as the file says."""
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
    "MAX_WAIT_S",
    "WAIT_CAPABILITY",
    "ApprovalGate",
    "AuctionPolicy",
    "RetryPolicy",
    "TaskSpec",
    "WaitSpec",
    "WorkflowDefinition",
    "load_workflow_file",
    "parse_duration",
    "parse_workflow",
]

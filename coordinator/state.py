"""Workflow state: what the reducer folds events into, and what KV snapshots hold."""

from __future__ import annotations

import enum
import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from agenticflow.coordinator.auction import AuctionState
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.graph.dag import dependents_index
from agenticflow.shared.graph.hierarchy import ParentLink
from agenticflow.shared.graph.workflow import TaskSpec, WorkflowDefinition
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.shared.wire.events import ApprovalDecision, ErrorInfo, Origin, RecordedEffect
from agenticflow.shared.wire.vclock import COORDINATOR_NODE, VectorClock

SNAPSHOT_VERSION = 2
"""2: large snapshots are zlib-compressed (``{"v": 2, "z": bytes}``); version 1
snapshots (always plain) are still read."""
COMPRESS_OVER = 16 * 1024
"""Snapshots larger than this (msgpack bytes) are stored compressed."""


_TRIMMED = (
    "the snapshot left out the {} to fit NATS's max_payload ({} > {} bytes); "
    "`agenticflow events` and `replay` still have them"
)


class TaskStatus(enum.StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    """Waiting for dependencies."""
    SCHEDULED = "scheduled"
    """Dispatched to its capability's queue, not yet picked up."""
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    WAITING_APPROVAL = "waiting_approval"
    """A person must decide (a gate, or the handler asked); no worker slot is held."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """An optional task whose message was dead-lettered; dependents ran without it."""
    AUCTION = "auction"
    """Announced to the capability's agents (``allocation: auction``): bids are collected."""
    WAITING = "waiting"
    """A ``wait:`` node waiting for its time or its signal; no worker is involved."""


TERMINAL_TASK = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}
)
DONE_TASK = frozenset({TaskStatus.COMPLETED, TaskStatus.SKIPPED})
"""Statuses that let dependents run."""
ACTIVE_TASK = frozenset({TaskStatus.SCHEDULED, TaskStatus.RUNNING})


class WorkflowStatus(enum.StrEnum):
    """Where a workflow is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    ABORTED = "aborted"
    """Terminated (``terminate``, or its older name ``abort``): ended at once."""
    CANCELLED = "cancelled"
    """Cancelled cooperatively: ended once its running tasks had finished."""


TERMINAL_WORKFLOW = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.REJECTED,
        WorkflowStatus.ABORTED,
        WorkflowStatus.CANCELLED,
    }
)


class PendingApproval(BaseModel):
    """The approval a waiting task asks for."""

    model_config = ConfigDict(extra="ignore")

    reason: str
    data: Any = None
    gate: bool = False
    index: int = 0
    requested_at: int = 0
    due_ns: int | None = None
    on_timeout: str = "reject"


class KeptSignal(BaseModel):
    """A signal that no task waited for yet: the next one to wait for it takes it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    data: Any = None
    by: str = ""
    at: int = 0
    task: str | None = None
    """The only task that may take it (None: the first to wait for its name)."""


MAX_KEPT_SIGNALS = 100
"""Most signals a workflow keeps for nodes not ready yet; more are refused."""


class TaskState(BaseModel):
    """One task's state inside a workflow."""

    model_config = ConfigDict(extra="ignore")

    status: TaskStatus = TaskStatus.PENDING
    capability: str = ""
    attempts: int = 0
    attempt_base: int = 0
    """Attempts made before the last resume: the retry policy counts from here."""
    remaining_deps: int = 0
    """Dependencies not yet completed: readiness is O(1) per completion."""
    result: Any = None
    error: ErrorInfo | None = None
    worker: str | None = None
    agent: str | None = None
    instance: str | None = None
    scheduled_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    deadline_ns: int | None = None
    retry_due_ns: int | None = None
    note: str | None = None
    """A human-readable hint, e.g. that no live worker serves the capability."""
    waiting: PendingApproval | None = None
    """The approval the task waits for (status ``waiting_approval``)."""
    gate: ApprovalDecision | None = None
    """The decision of the task's approval gate."""
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    """Decisions of the handler's approval requests, in order."""
    auction: AuctionState | None = None
    """The auction of its latest auctioned attempt (``allocation: auction``)."""
    child: str | None = None
    """The child workflow its latest attempt started (a task with ``workflow:``)."""
    dispatch_coord: int = 0
    """The coordinator's clock entry when its current attempt was dispatched: an
    outcome's clock must reach it (see :mod:`agenticflow.coordinator.admission`)."""
    claimed_by: str | None = None
    """The principal whose signed ``task.started`` claimed the current attempt."""
    alive_ns: int | None = None
    """Server time of the claimant's last sign of life (started, heartbeat)."""


class WorkflowState(BaseModel):
    """A workflow's state: the reducer's input and output."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: str
    status: WorkflowStatus = WorkflowStatus.RUNNING
    definition: WorkflowDefinition | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    tasks: dict[str, TaskState] = Field(default_factory=dict)
    vclock: VectorClock = Field(default_factory=VectorClock)
    created_at: int = 0
    finished_at: int | None = None
    reason: str | None = None
    problems: list[str] = Field(default_factory=list)
    failed_task: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    completed: int = 0
    """Tasks completed or skipped: the workflow is done when all are."""
    resumes: int = 0
    origin: Origin | None = None
    """The workflow this one forks or re-runs."""
    route: str | None = None
    """Its tasks go to the workers serving this route only."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Agent versions its tasks are pinned to, by capability."""
    recorded: dict[str, dict[int, list[RecordedEffect]]] = Field(default_factory=dict)
    """Side effects to serve from a recording, by task and attempt (a rerun)."""
    replay: bool = False
    traceparent: str | None = None
    """The workflow's trace (W3C ``traceparent`` of its submission)."""
    paused: bool = False
    """Paused by a person: no new task is dispatched; running ones finish."""
    cancelling: bool = False
    """Cancelled by a person while tasks ran: no new task is dispatched; the
    workflow ends ``cancelled`` once none runs."""
    cancelled_by: str | None = None
    parent: ParentLink | None = None
    """A child workflow's parent task, told this workflow's outcome."""
    children: dict[str, str] = Field(default_factory=dict)
    """Running child workflows by the task that started them."""
    feedback: list[str] = Field(default_factory=list)
    """Feedback people sent; every later task gets it, running handlers too."""
    signals: list[KeptSignal] = Field(default_factory=list)
    """Signals sent before a ``wait:`` node was ready for them, oldest first."""
    interventions: int = 0
    """Interventions applied (pause, resume, cancel, terminate, modify, feedback, decisions)."""
    last_seq: int = 0
    """Stream sequence of the last event folded into this state."""
    version: int = 0
    """Bumped by the reducer on every meaningful change."""

    _specs: dict[str, TaskSpec] | None = PrivateAttr(default=None)
    _dependents: dict[str, list[str]] | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        """The workflow's name from its definition."""
        return self.definition.name if self.definition else ""

    def spec(self, task_id: str) -> TaskSpec:
        """The definition of one task."""
        if self._specs is None:
            assert self.definition is not None
            self._specs = {task.id: task for task in self.definition.tasks}
        return self._specs[task_id]

    def reset_indexes(self) -> None:
        """Forget the indexes built from the definition (after it changed)."""
        self._specs = None
        self._dependents = None

    def dependents(self, task_id: str) -> list[str]:
        """Tasks that depend on ``task_id`` (index built once, not persisted)."""
        if self._dependents is None:
            assert self.definition is not None
            self._dependents = dependents_index(self.definition)
        return self._dependents[task_id]

    @property
    def is_terminal(self) -> bool:
        """True once the workflow completed, failed, was rejected, cancelled or terminated."""
        return self.status in TERMINAL_WORKFLOW

    def counts(self) -> dict[str, int]:
        """Number of tasks in each status."""
        out: dict[str, int] = {}
        for task in self.tasks.values():
            out[task.status.value] = out.get(task.status.value, 0) + 1
        return out

    # Snapshots ----------------------------------------------------------
    def to_snapshot(self) -> bytes:
        """msgpack bytes for KV ``<prefix>_workflows`` (compressed when large)."""
        plain = pack({"v": SNAPSHOT_VERSION, "state": self.model_dump(mode="python")})
        if len(plain) <= COMPRESS_OVER:
            return plain
        return pack({"v": SNAPSHOT_VERSION, "z": zlib.compress(plain, 1)})

    def snapshot_within(self, limit: int) -> tuple[bytes, str | None]:
        """The snapshot, made to fit in ``limit`` bytes if it must, and what was
        left out to make it fit (None: nothing).

        Only a finished workflow is trimmed (nothing more will read its
        results from the snapshot): first its task results and output, then
        its definition and tasks. The events keep everything. A running
        workflow's snapshot is returned whole: the caller must not store it
        when it is too large (the coordinator aborts such a workflow).
        """
        data = self.to_snapshot()
        if len(data) <= limit or not self.is_terminal:
            return data, None
        trimmed = self.model_copy(deep=True)
        for task in trimmed.tasks.values():
            task.result = None
            task.waiting = None
        trimmed.output = {}
        left_out = "task results and output"
        trimmed.problems = [*self.problems, _TRIMMED.format(left_out, len(data), limit)]
        data = trimmed.to_snapshot()
        if len(data) <= limit:
            return data, left_out
        left_out = "definition, tasks, results and output"
        trimmed.definition, trimmed.tasks, trimmed.recorded = None, {}, {}
        trimmed.problems = [*self.problems[:20], _TRIMMED.format(left_out, len(data), limit)]
        return trimmed.to_snapshot(), left_out

    @classmethod
    def from_snapshot(cls, data: bytes) -> WorkflowState:
        """Rebuild from KV bytes; raises MalformedMessageError."""
        raw = unpack(data)
        if isinstance(raw, dict) and isinstance(raw.get("z"), bytes):
            try:
                raw = unpack(zlib.decompress(raw["z"]))
            except zlib.error as exc:
                raise MalformedMessageError(f"corrupt compressed snapshot: {exc}") from exc
        if not isinstance(raw, dict) or "state" not in raw:
            raise MalformedMessageError("not a workflow snapshot")
        version = raw.get("v")
        if not isinstance(version, int) or version > SNAPSHOT_VERSION:
            raise MalformedMessageError(
                f"snapshot version {version!r} is not one this node understands "
                f"(up to {SNAPSHOT_VERSION}); upgrade the coordinator"
            )
        try:
            return cls.model_validate(raw["state"])
        except ValueError as exc:
            raise MalformedMessageError(f"invalid workflow snapshot: {exc}") from exc

    def public_view(self) -> dict[str, Any]:
        """The JSON-friendly form shown by ``agenticflow status --json``."""
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "state": self.status.value,
            "reason": self.reason,
            "problems": self.problems,
            "failed_task": self.failed_task,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "output": self.output,
            "resumes": self.resumes,
            "origin": self.origin.model_dump() if self.origin else None,
            "route": self.route,
            "parent": self.parent.model_dump(exclude={"vclock"}) if self.parent else None,
            "counts": self.counts(),
            "vclock": self.vclock.to_dict(),
            "last_seq": self.last_seq,
            "tasks": {
                task_id: {
                    "state": task.status.value,
                    "capability": task.capability,
                    "attempts": task.attempts,
                    "result": task.result,
                    "error": task.error.model_dump() if task.error else None,
                    "worker": task.worker,
                    "agent": task.agent,
                    "instance": task.instance,
                    "scheduled_at": task.scheduled_at,
                    "started_at": task.started_at,
                    "finished_at": task.finished_at,
                    "note": task.note,
                    "child": task.child,
                }
                for task_id, task in self.tasks.items()
            },
        }


SNAPSHOT_WRITERS = ("coordinator",)
"""The role whose signature a workflow snapshot must carry when keys are configured."""


def open_snapshot(
    seal: Seal, bucket: str, workflow_id: str, blob: bytes, *, stored_ns: int | None
) -> WorkflowState:
    """The state in a stored snapshot (a record of
    :meth:`~agenticflow.shared.security.seal.Seal.seal_record`): signed by a coordinator for this
    workflow's key, decrypted. Raises MalformedMessageError (or its
    ForgedMessageError, ReplayedMessageError, UndecryptableMessageError)."""
    plain, _ = seal.open_record(
        bucket, workflow_id, blob, roles=SNAPSHOT_WRITERS, stored_ns=stored_ns
    )
    return WorkflowState.from_snapshot(plain)


__all__ = [
    "ACTIVE_TASK",
    "COORDINATOR_NODE",
    "DONE_TASK",
    "MAX_KEPT_SIGNALS",
    "SNAPSHOT_WRITERS",
    "TERMINAL_TASK",
    "TERMINAL_WORKFLOW",
    "KeptSignal",
    "TaskState",
    "TaskStatus",
    "WorkflowState",
    "WorkflowStatus",
    "open_snapshot",
]

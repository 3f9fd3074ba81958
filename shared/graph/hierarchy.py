"""Hierarchical workflows: a task that is itself a child workflow.

A task with ``workflow:`` (a nested definition) is not served by a worker: the
coordinator starts a child workflow for it, with its own id, events and
snapshot, and the task's outcome is the child's. This module holds the wire
pieces both sides need: the reserved capability of such tasks, the nesting
limit, the child's derived id and its link back to the parent.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict

from agenticflow.shared.wire.vclock import VectorClock

CHILD_CAPABILITY = "workflow"
"""The capability of a task that runs a child workflow (reserved: no worker serves it)."""

MAX_DEPTH = 4
"""Workflows nest at most this deep; the top-level workflow counts as level 1."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DIGEST_HEX = 12
_MAX_ID = 64


def child_workflow_id(parent_id: str, task_id: str, attempt: int) -> str:
    """The derived id of the child workflow run by ``task_id``'s ``attempt``.

    Readable (parent, task and attempt, shortened to fit 64 characters) and
    unique: a digest of the three, which no two different triples share in
    practice, ends it. A retry (the next attempt) gets a new child; a re-sent
    start command the same one.
    """
    digest = hashlib.sha256(f"{parent_id}:{task_id}:{attempt}".encode()).hexdigest()
    head = _UNSAFE.sub("_", f"{parent_id}-{task_id}-{attempt}")
    return f"{head[: _MAX_ID - _DIGEST_HEX - 1]}-{digest[:_DIGEST_HEX]}"


class ParentLink(BaseModel):
    """Where a child workflow reports its outcome: its parent's task and attempt."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: str
    task_id: str
    attempt: int
    vclock: VectorClock = VectorClock()
    """The parent's clock when it started the child: the outcome reported to
    the parent dominates it (and so the task's ``task.scheduled``)."""
    retryable: bool = False
    """Whether the child's failure may be retried (the task has its own ``retry:``);
    an aborted or rejected child is never retried."""


__all__ = ["CHILD_CAPABILITY", "MAX_DEPTH", "ParentLink", "child_workflow_id"]

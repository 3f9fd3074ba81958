"""The workflow index: one small record per workflow, for listing them.

KV ``<prefix>_workflow_index``, key = workflow id, written by the coordinator
that owns the workflow each time it saves a snapshot whose summary changed
(state, task counts); never by anyone else. A record is a sealed record
(:meth:`~agenticflow.shared.security.seal.Seal.seal_record`): with keys it is
signed by a coordinator and bound to its key, with data keys encrypted, so a
client lists what coordinators wrote and nothing else.

Why an index and not the event stream or the snapshots: listing from the
stream reads every event (or only the N most recent ones); listing from the
snapshots reads every workflow's whole state (up to ``max_payload`` each). A
summary is about 150 bytes, read through one consumer over the bucket; it is
written alongside the snapshot the coordinator saves anyway (snapshot writes
are already batched: see ``Settings.snapshot_*``), concurrently with it, and
only when the summary changed.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from agenticflow.coordinator.state import DONE_TASK, WorkflowState, WorkflowStatus
from agenticflow.shared.errors import ConfigError, MalformedMessageError
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import pack, unpack

INDEX_WRITERS = ("coordinator",)
"""The role whose signature an index record must carry when keys are configured."""


class WorkflowSummary(BaseModel):
    """One workflow as listed: what ``client.list()`` returns."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    state: WorkflowStatus
    created_at: datetime
    updated_at: datetime
    """When the coordinator last recorded a change (at snapshot granularity)."""
    tasks_done: int = 0
    """Tasks completed or skipped."""
    tasks_total: int = 0
    paused: bool = False
    reason: str | None = None
    """Why it failed, was rejected, cancelled or terminated."""
    input_preview: str = ""
    """The start of its input as JSON (at most :data:`PREVIEW_CHARS`): what a
    text search (``q``) matches besides the id."""

    def record(self) -> dict[str, object]:
        """The plain data stored (times in nanoseconds)."""
        return {
            "v": 1,
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "created_at": _ns(self.created_at),
            "updated_at": _ns(self.updated_at),
            "tasks_done": self.tasks_done,
            "tasks_total": self.tasks_total,
            "paused": self.paused,
            "reason": self.reason,
            "input_preview": self.input_preview,
        }


def summary_of(state: WorkflowState, *, now_ns: int) -> WorkflowSummary:
    """The summary of a workflow's state, as of ``now_ns``."""
    return WorkflowSummary(
        id=state.workflow_id,
        name=state.name,
        state=state.status,
        created_at=_time(state.created_at),
        updated_at=_time(now_ns),
        tasks_done=sum(1 for t in state.tasks.values() if t.status in DONE_TASK),
        tasks_total=len(state.tasks),
        paused=state.paused,
        reason=(state.reason or "")[:500] or None,
        input_preview=input_preview(state.input),
    )


PREVIEW_CHARS = 200
"""How much of a workflow's input its index record keeps."""


def input_preview(value: dict[str, Any]) -> str:
    """The start of ``value`` as compact JSON (anything JSON lacks as its repr)."""
    if not value:
        return ""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text[:PREVIEW_CHARS]


PROGRESS_EVERY_S = 2.0
"""While a workflow runs, a record that would change only its count of done
tasks is written at most this often: every completed task would otherwise
cost a second KV write beside the snapshot (W2 and W3 measured 8-14% slower)."""


def listed_fields(state: WorkflowState) -> tuple[object, ...]:
    """What a record shows of a state, but its update time (see :func:`due`)."""
    done = sum(1 for t in state.tasks.values() if t.status in DONE_TASK)
    return (state.status, state.name, done, len(state.tasks), state.paused, state.reason)


def due(now: tuple[object, ...], shown: tuple[object, ...] | None, age_s: float) -> bool:
    """Whether to write a record showing ``now`` where the index shows ``shown``
    (None: nothing yet), written ``age_s`` seconds ago: at once for any change
    but the count of done tasks (state, pause, reason, the task count), and for
    that count at most every :data:`PROGRESS_EVERY_S`."""
    if shown is None:
        return True
    if now == shown:
        return False
    only_progress = now[:2] + now[3:] == shown[:2] + shown[3:]
    return not only_progress or age_s >= PROGRESS_EVERY_S


def seal_summary(seal: Seal, bucket: str, summary: WorkflowSummary) -> bytes:
    """The stored form of a summary (signed and encrypted as configured)."""
    return seal.seal_record(bucket, summary.id, pack(summary.record()))


def open_summary(
    seal: Seal, bucket: str, key: str, blob: bytes, *, stored_ns: int | None
) -> WorkflowSummary:
    """A stored summary; raises MalformedMessageError (or ForgedMessageError...)
    for one that is not a coordinator's record of this key."""
    plain, _ = seal.open_record(bucket, key, blob, roles=INDEX_WRITERS, stored_ns=stored_ns)
    raw = unpack(plain)
    if not isinstance(raw, dict) or raw.get("id") != key:
        raise MalformedMessageError(f"{bucket}/{key} is not a workflow summary")
    try:
        return WorkflowSummary(
            id=key,
            name=str(raw.get("name", "")),
            state=WorkflowStatus(raw["state"]),
            created_at=_time(int(raw["created_at"])),
            updated_at=_time(int(raw.get("updated_at") or stored_ns or raw["created_at"])),
            tasks_done=int(raw.get("tasks_done", 0)),
            tasks_total=int(raw.get("tasks_total", 0)),
            paused=bool(raw.get("paused", False)),
            reason=raw.get("reason"),
            input_preview=str(raw.get("input_preview") or "")[:PREVIEW_CHARS],
        )
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        # (OverflowError, OSError: a time no datetime holds, such as 1e300 or inf)
        raise MalformedMessageError(f"{bucket}/{key} is not a valid summary: {exc}") from exc


States = str | WorkflowStatus | Iterable[str | WorkflowStatus] | None
"""A state filter: one state, several (any of them), or None (all)."""


def parse_state(state: States) -> frozenset[WorkflowStatus] | None:
    """The states a filter accepts (None: all); raises ConfigError for an unknown one."""
    if state is None:
        return None
    given = [state] if isinstance(state, str) else list(state)
    return frozenset(_one_state(one) for one in given)


def _one_state(state: str | WorkflowStatus) -> WorkflowStatus:
    if isinstance(state, WorkflowStatus):
        return state
    try:
        return WorkflowStatus(state.lower())
    except ValueError:
        known = ", ".join(s.value for s in WorkflowStatus)
        raise ConfigError(f"unknown workflow state {state!r} (one of {known})") from None


def select(
    summaries: Iterable[WorkflowSummary],
    *,
    state: States = None,
    name: str | None = None,
    since: datetime | timedelta | None = None,
    until: datetime | timedelta | None = None,
    text: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    now: datetime | None = None,
) -> list[WorkflowSummary]:
    """The summaries that pass the filters, newest (``created_at``) first, the
    first ``offset`` left out, at most ``limit``. ``state`` is one state or
    several; ``name`` a glob; ``since`` and ``until`` (created at or after,
    before) a time or an age; ``text`` a case-insensitive substring of the id
    or the input's preview. Raises ConfigError for an unknown state or a
    negative limit or offset."""
    wanted = parse_state(state)
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be 0 or more, not {limit}")
    if offset < 0:
        raise ConfigError(f"offset must be 0 or more, not {offset}")
    start, end = _moment(since, now), _moment(until, now)
    needle = text.casefold() if text else None
    found = [
        s
        for s in summaries
        if (wanted is None or s.state in wanted)
        and (name is None or fnmatch.fnmatchcase(s.name, name))
        and (start is None or s.created_at >= start)
        and (end is None or s.created_at < end)
        and (needle is None or needle in s.id.casefold() or needle in s.input_preview.casefold())
    ]
    found.sort(key=lambda s: (s.created_at, s.id), reverse=True)
    return found[offset:] if limit is None else found[offset : offset + limit]


def _moment(when: datetime | timedelta | None, now: datetime | None) -> datetime | None:
    """``when`` as an aware time: an age counts back from ``now``."""
    if isinstance(when, timedelta):
        return (now or datetime.now(UTC)) - when
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


__all__ = [
    "INDEX_WRITERS",
    "PROGRESS_EVERY_S",
    "States",
    "WorkflowSummary",
    "due",
    "listed_fields",
    "open_summary",
    "parse_state",
    "seal_summary",
    "select",
    "summary_of",
]

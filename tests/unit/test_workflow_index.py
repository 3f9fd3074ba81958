"""The workflow index's records and filters, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agenticflow.coordinator.index import (
    WorkflowSummary,
    open_summary,
    seal_summary,
    select,
    summary_of,
)
from agenticflow.coordinator.state import TaskState, TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.errors import ConfigError, ForgedMessageError, MalformedMessageError
from agenticflow.shared.security.seal import Seal, init_keys
from tests.unit.test_reducer import DIAMOND

BUCKET = "af_workflow_index"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def summary(n: int, *, state: str = "completed", name: str = "report") -> WorkflowSummary:
    at = T0 + timedelta(minutes=n)
    return WorkflowSummary(
        id=f"wf-{n}",
        name=name,
        state=WorkflowStatus(state),
        created_at=at,
        updated_at=at,
        tasks_done=1,
        tasks_total=2,
    )


def test_summary_of_a_state_counts_done_tasks() -> None:
    state = WorkflowState(
        workflow_id="wf-1",
        definition=DIAMOND,
        created_at=int(T0.timestamp() * 1e9),
        tasks={
            "a": TaskState(status=TaskStatus.COMPLETED),
            "b": TaskState(status=TaskStatus.SKIPPED),
            "c": TaskState(status=TaskStatus.RUNNING),
            "d": TaskState(),
        },
    )
    found = summary_of(state, now_ns=int((T0 + timedelta(seconds=5)).timestamp() * 1e9))
    assert (found.id, found.name, found.state) == ("wf-1", "test", WorkflowStatus.RUNNING)
    assert (found.tasks_done, found.tasks_total) == (2, 4)
    assert found.created_at == T0
    assert found.updated_at - found.created_at == timedelta(seconds=5)


def test_select_filters_and_orders_newest_first() -> None:
    rows = [
        summary(1),
        summary(2, state="failed"),
        summary(3, name="daily-digest"),
        summary(4, state="running", name="daily-news"),
    ]
    assert [s.id for s in select(rows)] == ["wf-4", "wf-3", "wf-2", "wf-1"]
    assert [s.id for s in select(rows, state="failed")] == ["wf-2"]
    assert [s.id for s in select(rows, state=WorkflowStatus.RUNNING)] == ["wf-4"]
    assert [s.id for s in select(rows, state=["failed", WorkflowStatus.RUNNING])] == [
        "wf-4",
        "wf-2",
    ]
    assert [s.id for s in select(rows, name="daily-*")] == ["wf-4", "wf-3"]
    assert [s.id for s in select(rows, since=T0 + timedelta(minutes=3))] == ["wf-4", "wf-3"]
    now = T0 + timedelta(minutes=5)
    assert [s.id for s in select(rows, since=timedelta(minutes=2.5), now=now)] == ["wf-4", "wf-3"]
    naive = (T0 + timedelta(minutes=2)).replace(tzinfo=None)
    assert len(select(rows, since=naive)) == 3  # a naive time is UTC
    assert [s.id for s in select(rows, limit=2)] == ["wf-4", "wf-3"]
    assert select(rows, limit=0) == []
    with pytest.raises(ConfigError, match="unknown workflow state 'done'"):
        select(rows, state="done")
    with pytest.raises(ConfigError):
        select(rows, limit=-1)


def test_a_record_round_trips_in_default_mode() -> None:
    seal = Seal()
    row = summary(7, state="cancelled")
    blob = seal_summary(seal, BUCKET, row)
    assert open_summary(seal, BUCKET, "wf-7", blob, stored_ns=None) == row
    with pytest.raises(MalformedMessageError):
        open_summary(seal, BUCKET, "wf-8", blob, stored_ns=None)  # moved to another key


def test_with_keys_only_a_coordinators_record_is_listed(tmp_path: Path) -> None:
    init_keys(tmp_path, [("coordinator", "coordinator"), ("worker", "worker"), ("c", "client")])
    coordinator, client = Seal.from_dir(tmp_path, "coordinator"), Seal.from_dir(tmp_path, "c")
    row = summary(1)
    blob = seal_summary(coordinator, BUCKET, row)
    assert open_summary(client, BUCKET, "wf-1", blob, stored_ns=None) == row
    forged = seal_summary(Seal.from_dir(tmp_path, "worker"), BUCKET, row)
    with pytest.raises(ForgedMessageError):
        open_summary(client, BUCKET, "wf-1", forged, stored_ns=None)
    with pytest.raises(ForgedMessageError):
        open_summary(client, BUCKET, "wf-1", seal_summary(Seal(), BUCKET, row), stored_ns=None)


def test_a_record_is_due_at_once_but_for_progress_which_waits() -> None:
    from agenticflow.coordinator.index import PROGRESS_EVERY_S, due

    shown = ("running", "w", 1, 4, False, None)
    assert due(shown, None, 0.0), "the first record"
    assert not due(shown, shown, 3600.0), "nothing changed"
    progressed = ("running", "w", 2, 4, False, None)
    assert not due(progressed, shown, 0.1)
    assert due(progressed, shown, PROGRESS_EVERY_S)
    for changed in (
        ("completed", "w", 2, 4, False, None),  # its state, with progress
        ("running", "w", 1, 4, True, None),  # paused
        ("running", "w", 1, 5, False, None),  # a task added
        ("running", "w", 1, 4, False, "why"),  # a reason
    ):
        assert due(changed, shown, 0.0), changed

"""The CLI package without a cluster: its modules import on their own (no
cycle), its copies of the local cluster's defaults agree, the pure parts of
live progress and output formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agenticflow.cli import _common, _live
from agenticflow.cli import cluster as cluster_cli
from agenticflow.cluster import local
from agenticflow.coordinator.state import TaskState, TaskStatus, WorkflowState, WorkflowStatus

MODULES = sorted(
    p.stem for p in (Path(_common.__file__).parent).glob("*.py") if p.stem != "__init__"
)


def test_every_module_imports_first_without_a_cycle() -> None:
    """Each command module imported first, in a fresh interpreter: a cycle
    through ``agenticflow.cli`` would fail one of them."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    for module in MODULES:
        subprocess.run(
            [sys.executable, "-c", code, f"agenticflow.cli.{module}", "agenticflow.cli"],
            check=True,
            capture_output=True,
        )


def test_the_cluster_defaults_are_the_local_clusters() -> None:
    assert cluster_cli.DEFAULT_DIR == local.DEFAULT_DIR
    assert cluster_cli.DEFAULT_APP == local.DEFAULT_APP


def _state(status: WorkflowStatus, **tasks: TaskStatus) -> WorkflowState:
    return WorkflowState(
        workflow_id="wf-1",
        status=status,
        tasks={k: TaskState(capability="x", status=v) for k, v in tasks.items()},
    )


def test_progress_lines_are_the_changes_between_two_states() -> None:
    first = _state(WorkflowStatus.RUNNING, a=TaskStatus.RUNNING, b=TaskStatus.PENDING)
    assert _live.changes(None, first) == ["a: running", "b: pending", "workflow running"]
    second = _state(WorkflowStatus.RUNNING, a=TaskStatus.COMPLETED, b=TaskStatus.PENDING)
    assert _live.changes(first, second) == ["a: running -> completed"]
    third = _state(WorkflowStatus.CANCELLED, a=TaskStatus.COMPLETED, b=TaskStatus.CANCELLED)
    assert _live.changes(second, third) == ["b: pending -> cancelled", "workflow cancelled"]
    odd = WorkflowState(
        workflow_id="wf-2",
        tasks={"[red]\x1b[2J": TaskState(capability="x", status=TaskStatus.RUNNING)},
    )
    assert _live.changes(None, odd)[0] == "[red]\\x1b[2J: running"


def test_output_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert _common.output_of(None, False) is _common.Output.table
    assert _common.output_of(None, True) is _common.Output.json
    assert _common.output_of(None, True, legacy=_common.Output.jsonl) is _common.Output.jsonl
    assert _common.output_of(_common.Output.jsonl, True) is _common.Output.jsonl
    rows = [{"a": 1, "t": "é"}, {"a": 2}]
    _common.emit(rows, _common.Output.json)
    _common.emit(rows, _common.Output.jsonl)
    _common.emit({"one": [1, 2]}, _common.Output.jsonl)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ['[{"a":1,"t":"é"},{"a":2}]', '{"a":1,"t":"é"}', '{"a":2}', '{"one":[1,2]}']
    assert [json.loads(line) for line in lines[1:3]] == rows

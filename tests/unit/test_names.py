"""Subject, stream, consumer and bucket names derived from one prefix."""

from __future__ import annotations

import dataclasses

import pytest

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import ID_RE
from agenticflow.shared.wire.names import SYSTEM_WORKFLOW, Names


def test_default_prefix() -> None:
    assert Names().prefix == "af"
    assert Names() == Names("af")


def test_streams() -> None:
    names = Names("af")
    assert names.tasks_stream == "AF_TASKS"
    assert names.events_stream == "AF_EVENTS"


def test_subjects() -> None:
    names = Names("af")
    assert names.task_subject("http") == "af.task.http"
    assert names.task_subjects == "af.task.*"
    assert names.event_subject("wf-1", "task.completed") == "af.evt.wf-1.task.completed"
    assert names.workflow_events("wf-1") == "af.evt.wf-1.>"
    assert names.event_subjects == "af.evt.>"


def test_consumers_and_buckets() -> None:
    names = Names("af")
    assert names.task_consumer("http") == "task_http"
    assert names.coordinator_consumer == "coordinator"
    assert names.workflows_bucket == "af_workflows"
    assert names.agents_bucket == "af_agents"


def test_custom_prefix() -> None:
    names = Names("test_42")
    assert names.tasks_stream == "TEST_42_TASKS"
    assert names.events_stream == "TEST_42_EVENTS"
    assert names.task_subject("gpu") == "test_42.task.gpu"
    assert names.event_subject("w", "workflow.started") == "test_42.evt.w.workflow.started"
    assert names.workflows_bucket == "test_42_workflows"
    assert names.agents_bucket == "test_42_agents"
    assert names.parse_event_subject("test_42.evt.w.task.started") == ("w", "task.started")
    assert names.parse_event_subject("af.evt.w.task.started") is None


@pytest.mark.parametrize("event_type", list(EventType))
def test_parse_event_subject_round_trip(event_type: EventType) -> None:
    names = Names("af")
    subject = names.event_subject("wf-abc_1", event_type.value)
    assert names.parse_event_subject(subject) == ("wf-abc_1", event_type.value)


def test_parse_event_subject_system_workflow() -> None:
    names = Names()
    subject = names.event_subject(SYSTEM_WORKFLOW, EventType.MESSAGE_REJECTED.value)
    assert names.parse_event_subject(subject) == (SYSTEM_WORKFLOW, "message.rejected")
    assert ID_RE.match(SYSTEM_WORKFLOW)


def test_parse_event_subject_keeps_dotted_type() -> None:
    assert Names().parse_event_subject("af.evt.w.a.b.c") == ("w", "a.b.c")


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "af",
        "af.evt",
        "af.evt.",
        "af.evt.wf",
        "af.evt.wf.",
        "af.evt..task.started",
        "af.task.http",
        "afx.evt.wf.task.started",
        "xaf.evt.wf.task.started",
        "AF.evt.wf.task.started",
        "other.evt.wf.task.started",
    ],
)
def test_parse_event_subject_rejects(subject: str) -> None:
    assert Names("af").parse_event_subject(subject) is None


def test_capability_of() -> None:
    names = Names("af")
    assert names.capability_of("af.task.http") == "http"
    assert names.capability_of(names.task_subject("gpu-1")) == "gpu-1"
    assert names.capability_of("af.task.") is None
    assert names.capability_of("af.evt.wf.task.started") is None
    assert names.capability_of("zz.task.http") is None


@pytest.mark.parametrize(
    "prefix", ["", "AF", "Af", "1af", "_af", "a.b", "a-b", "a b", "a*", "a>", "é", "a" * 33]
)
def test_invalid_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError, match="subject prefix"):
        Names(prefix)


@pytest.mark.parametrize("prefix", ["a", "af", "af_2", "test_run_7", "a" * 32])
def test_valid_prefix(prefix: str) -> None:
    assert Names(prefix).prefix == prefix


def test_prefix_with_trailing_newline_rejected() -> None:
    with pytest.raises(ConfigError):
        Names("af\n")


def test_names_is_frozen_and_hashable() -> None:
    names = Names("af")
    with pytest.raises(dataclasses.FrozenInstanceError):
        names.prefix = "other"  # type: ignore[misc]
    assert len({Names("af"), Names("af"), Names("b")}) == 2


def test_config_error_code() -> None:
    with pytest.raises(ConfigError) as info:
        Names("BAD")
    assert info.value.code == "config_error"

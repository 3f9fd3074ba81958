"""Coordinator partitions: stored subjects, the hash, fair shares."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow.coordinator.partitions import fair_share, lease_key, preference
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import ID_RE
from agenticflow.shared.wire.names import (
    MAX_PARTITIONS,
    Names,
    check_partitions,
    partition_of,
    partitions_of_transform,
)

NAMES = Names("af")
workflow_ids = st.from_regex(ID_RE, fullmatch=True)
event_types = st.sampled_from([t.value for t in EventType])


def stored(workflow_id: str, partition: int, event_type: str) -> str:
    """What the events stream's transform makes of a published subject."""
    return f"af.evt.{workflow_id}.{partition}.{event_type}"


def test_transform_is_the_nats_partition_function() -> None:
    source, destination = NAMES.event_transform(8)
    assert source == "af.evt.*.>"
    assert destination == "af.evt.{{wildcard(1)}}.{{partition(8,1)}}.>"
    assert partitions_of_transform(destination) == 8
    assert partitions_of_transform("af.evt.{{wildcard(1)}}.>") is None


def test_partition_of_known_values() -> None:
    # Seen on nats-server 2.15 with partition(8,1): the stored subjects'
    # partition tokens for these ids (tests/integration/test_partitions.py
    # checks many more against the server).
    assert [partition_of(w, 8) for w in ("wf-1", "wf-2", "abc", "_system", "x")] == [2, 7, 3, 7, 7]
    assert partition_of("wf-1", 1) == 0


@given(workflow_ids, st.integers(1, MAX_PARTITIONS))
def test_partition_of_is_in_range(workflow_id: str, partitions: int) -> None:
    assert 0 <= partition_of(workflow_id, partitions) < partitions


@given(workflow_ids, event_types, st.integers(0, MAX_PARTITIONS - 1))
def test_stored_and_published_subjects_parse_alike(
    workflow_id: str, event_type: str, partition: int
) -> None:
    published = NAMES.event_subject(workflow_id, event_type)
    kept = stored(workflow_id, partition, event_type)
    assert NAMES.parse_event_subject(kept) == NAMES.parse_event_subject(published)
    assert NAMES.parse_event_subject(kept) == (workflow_id, event_type)
    assert NAMES.published_subject(kept) == published
    assert NAMES.published_subject(published) == published


def test_published_subject_leaves_other_subjects_alone() -> None:
    for subject in ("af.task.add", "af.evt.lonely", "xx.evt.w.1.task.started"):
        assert NAMES.published_subject(subject) == subject
    # A digit that is the whole rest is not a partition token.
    assert NAMES.parse_event_subject("af.evt.w.7") == ("w", "7")


def test_filters() -> None:
    assert NAMES.partition_events(0) == ["af.evt.*.0.>", "af.evt.*"]
    assert NAMES.partition_events(3) == ["af.evt.*.3.>"]
    assert NAMES.stored_events_of_type("task.failed") == "af.evt.*.*.task.failed"
    assert NAMES.stored_events_of_type("*.failed", "wf-1") == "af.evt.wf-1.*.*.failed"
    assert NAMES.partition_consumer(0, 1) == "coordinator"
    assert NAMES.partition_consumer(3, 8) == "coordinator_p3"
    assert NAMES.coordinator_consumers(3) == ["coordinator_p0", "coordinator_p1", "coordinator_p2"]
    assert lease_key(5) == "coordinator.p5"


@pytest.mark.parametrize("bad", [0, -1, MAX_PARTITIONS + 1])
def test_partition_count_is_checked(bad: int) -> None:
    with pytest.raises(ConfigError, match="partitions must be"):
        check_partitions(bad)
    with pytest.raises(ConfigError):
        NAMES.event_transform(bad)


@given(st.integers(1, MAX_PARTITIONS), st.integers(1, 20))
def test_fair_shares_cover_every_partition(partitions: int, members: int) -> None:
    share = fair_share(partitions, members)
    assert share * members >= partitions
    assert (share - 1) * members < partitions  # no bigger than needed


@given(st.text(min_size=1, max_size=40), st.integers(1, MAX_PARTITIONS))
def test_preference_is_a_rotation_of_every_partition(node: str, partitions: int) -> None:
    order = preference(node, partitions)
    assert sorted(order) == list(range(partitions))
    assert all((b - a) % partitions == 1 for a, b in itertools.pairwise(order))


def test_health_shows_the_partitions_a_coordinator_owns() -> None:
    from agenticflow.render import _work

    active = {"role": "active", "partitions": 4, "owned": [0, 2], "workflows_running": 3}
    assert _work({"coordinator": active}).endswith("partitions 0,2 of 4")
    waiting = {"role": "standby", "partitions": 4, "owned": []}
    assert _work({"coordinator": waiting}) == "standby (no partition of 4)"
    assert _work({"coordinator": {"role": "standby"}}) == "standby"

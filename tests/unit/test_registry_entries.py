"""Registry entries are typed, versioned records: a reader refuses one that is
not a worker's or coordinator's entry, or of a schema newer than it reads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow.shared.bus.registry import (
    REGISTRY_SCHEMA,
    CoordinatorEntry,
    WorkerEntry,
    entry_model,
    open_entry,
    seal_entry,
)
from agenticflow.shared.errors import MalformedMessageError, UnknownSchemaVersionError
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import pack

WORKER = WorkerEntry(instance="w1.echo", worker="w1", agent="echo", capabilities=["echo"], load=2)


def test_an_entry_round_trips_through_its_record_with_its_schema() -> None:
    seal = Seal()
    blob = seal_entry(seal, "agents", "w1.echo", WORKER)
    opened = open_entry(seal, "agents", "w1.echo", blob)
    assert opened is not None
    assert opened["schema"] == REGISTRY_SCHEMA
    assert entry_model(opened) == WORKER
    coordinator = CoordinatorEntry(instance="c1", coordinator="c1", partitions=4, partition=3)
    assert entry_model(coordinator.record()) == coordinator


@pytest.mark.parametrize(
    "info",
    [
        {"role": "worker", "instance": "x"},  # no worker
        {"role": "coordinator", "instance": "c"},  # no coordinator
        {"role": "worker", "instance": "x", "worker": "w", "load": -1},
        {"role": "worker", "instance": "x", "worker": "w", "capabilities": "echo"},
        {"role": "worker", "instance": "x", "worker": "w", "agents": [{"state": "idle"}]},
    ],
)
def test_a_record_that_is_not_an_entry_is_refused(info: dict[str, Any]) -> None:
    seal = Seal()
    with pytest.raises(MalformedMessageError):
        entry_model(info)
    assert open_entry(seal, "agents", "k", seal.seal_record("agents", "k", pack(info))) is None


def test_a_newer_schema_is_refused_as_unknown() -> None:
    record = {**WORKER.record(), "schema": REGISTRY_SCHEMA + 1}
    with pytest.raises(UnknownSchemaVersionError):
        entry_model(record)


def test_fields_a_later_version_adds_are_kept() -> None:
    entry = entry_model({**WORKER.record(), "gpu": "a100"})
    assert entry.model_extra == {"gpu": "a100"}


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=8)))
def test_any_decoded_map_is_an_entry_or_a_malformed_message(info: dict[str, Any]) -> None:
    try:
        entry = entry_model(info)
    except MalformedMessageError:
        return
    assert entry.role in ("worker", "coordinator")

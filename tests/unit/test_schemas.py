"""The schema registry: versions, migration chains and refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agenticflow.shared.errors import MalformedMessageError, UnknownSchemaVersionError
from agenticflow.shared.wire.schemas import SchemaRegistry


class Reading(BaseModel):
    """Version 3: a temperature in kelvin, with its unit spelled out."""

    kelvin: float
    unit: str


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    reg.register("reading", Reading, version=3)

    @reg.migration("reading", 1)
    def _celsius_to_kelvin(data: dict[str, Any]) -> dict[str, Any]:
        return {"kelvin": data.pop("celsius") + 273.15}

    @reg.migration("reading", 2)
    def _unit(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "unit": "K"}

    return reg


def test_migrations_run_one_step_at_a_time_up_to_the_current_version() -> None:
    reg = registry()
    assert reg.read("reading", 1, {"celsius": 20.0}) == Reading(kelvin=293.15, unit="K")
    assert reg.read("reading", 2, {"kelvin": 1.0}) == Reading(kelvin=1.0, unit="K")
    assert reg.read("reading", 3, {"kelvin": 1.0, "unit": "K"}) == Reading(kelvin=1.0, unit="K")
    assert reg.oldest("reading") == 1


@given(st.integers(min_value=4, max_value=10**6))
def test_a_newer_version_is_refused(version: int) -> None:
    with pytest.raises(UnknownSchemaVersionError, match=f"version {version}, newer"):
        registry().read("reading", version, {})


def test_a_version_older_than_the_migrations_is_refused() -> None:
    with pytest.raises(UnknownSchemaVersionError, match="older than any this node migrates from"):
        registry().read("reading", 0, {})


def test_a_migration_that_cannot_apply_is_a_malformed_message() -> None:
    with pytest.raises(MalformedMessageError, match="version 1 cannot be migrated: KeyError"):
        registry().read("reading", 1, {"fahrenheit": 3})


def test_migrated_data_is_still_validated() -> None:
    with pytest.raises(ValidationError):
        registry().read("reading", 2, {"kelvin": "hot"})

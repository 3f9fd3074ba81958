"""The Bloom filter of workflow ids that may have a snapshot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow.coordinator.known import KnownIds

ids = st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=64)


@given(st.lists(ids, max_size=300))
def test_never_forgets_an_id(added: list[str]) -> None:
    known = KnownIds(capacity=100)
    known.update(added)
    assert all(key in known for key in added)
    assert known.count == len(added)


def test_false_positives_stay_near_the_rate_within_capacity() -> None:
    known = KnownIds(capacity=10_000, error_rate=0.01)
    known.update(f"wf-{i}" for i in range(10_000))
    false = sum(f"other-{i}" in known for i in range(10_000))
    assert false < 300, f"{false} false positives in 10,000 (1% expected)"
    assert known.nbytes < 16_000, "about 1.2 bytes per id at 1%"


def test_an_empty_filter_knows_nothing() -> None:
    known = KnownIds()
    assert "wf-1" not in known
    assert 42 not in known


@pytest.mark.parametrize(("capacity", "rate"), [(0, 0.01), (10, 0.0), (10, 1.0)])
def test_bad_sizes_are_refused(capacity: int, rate: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        KnownIds(capacity=capacity, error_rate=rate)

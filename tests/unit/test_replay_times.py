"""``--since`` and ``--until``: the times replay takes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow.coordinator.replay import parse_since, parse_until
from agenticflow.shared.errors import ConfigError

NOW_NS = 1_800_000_000 * 10**9


@given(st.integers(min_value=0, max_value=10**5), st.sampled_from(["s", "m", "h", "d"]))
def test_a_span_counts_back_from_now(amount: int, unit: str) -> None:
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    since = parse_since(f"{amount}{unit}", now_ns=NOW_NS)
    assert since.timestamp() == pytest.approx(NOW_NS / 1e9 - seconds)


def test_an_iso_time_is_taken_as_is() -> None:
    since = parse_since("2026-11-24T17:02:03.5Z", now_ns=NOW_NS)
    assert since == datetime(2026, 11, 24, 17, 2, 3, 500000, tzinfo=UTC)
    assert parse_until("2026-11-24T17:02:03.5Z")[1] == int(since.timestamp() * 1e9)
    assert parse_until("42") == (42, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday", "--since 'yesterday' is neither an ISO 8601 time nor a span"),
        ("2026-11-24T17:02:03", "needs a time zone"),
        ("-5m", "neither an ISO 8601 time nor a span"),
        ("99999999d", "reaches back too far"),
    ],
)
def test_a_bad_since_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_since(text, now_ns=NOW_NS)

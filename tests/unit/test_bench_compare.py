"""benchmarks.compare's verdict: worse only beyond the noise either side showed."""

from __future__ import annotations

import pytest

from benchmarks.compare import Figure


def figure(base: list[float], head: list[float], *, higher_is_better: bool) -> Figure:
    return Figure("w1", "m", "m", higher_is_better, base, head)


@pytest.mark.parametrize(
    ("base", "head", "higher_is_better", "worse"),
    [
        ([100, 101, 99], [90, 91, 89], True, True),  # 10% fewer tasks/s, tight rounds
        ([100, 101, 99], [110, 111, 109], True, False),  # faster
        ([100, 130, 80], [90, 95, 85], True, False),  # 10% fewer, but the base spread 50%
        ([5.0, 5.1, 4.9], [6.0, 6.1, 5.9], False, True),  # latency up 20%
        ([5.0, 5.1, 4.9], [5.1, 5.2, 5.0], False, False),  # up 2%: under the 5% tolerance
    ],
)
def test_worse_means_beyond_the_noise(
    base: list[float], head: list[float], higher_is_better: bool, worse: bool
) -> None:
    assert figure(base, head, higher_is_better=higher_is_better).worse(0.05) is worse


def test_the_noise_is_the_widest_spread_or_the_tolerance() -> None:
    assert figure([100, 100], [100, 100], higher_is_better=True).noise(0.05) == 0.05
    assert figure([80, 100, 120], [100, 100], higher_is_better=True).noise(0.05) == 0.4

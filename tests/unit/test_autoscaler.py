"""The autoscaler's decision (a pure function of lag, worker count, bounds and
time), its properties, and the options of a local cluster."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.cluster.autoscaler import (
    Decision,
    ScaleMemory,
    ScalePolicy,
    decide,
    workers_needed,
)
from agenticflow.cluster.local import ClusterSpec, parse_autoscale
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.wire.ids import node_pid

PROPS = settings(database=None, max_examples=300, deadline=None)

quarters = st.integers(0, 240).map(lambda n: n / 4)
"""Seconds in quarters: sums of them are exact, so cooldown arithmetic is too."""


@st.composite
def policies(draw: st.DrawFn) -> ScalePolicy:
    low = draw(st.integers(0, 6))
    high = draw(st.integers(max(low, 1), 12))
    concurrency = draw(st.integers(1, 16))
    pools = draw(st.lists(st.sampled_from("abcd"), unique=True, max_size=3))
    return ScalePolicy(
        minimum=low,
        maximum=high,
        concurrency=concurrency,
        slots={p: draw(st.integers(1, concurrency)) for p in pools},
        up_cooldown_s=draw(st.integers(0, 40).map(lambda n: n / 4)),
        down_cooldown_s=draw(quarters),
    )


lags = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 500), max_size=4)
memories = st.builds(
    ScaleMemory,
    last_up=st.none() | st.floats(0, 1000),
    last_down=st.none() | st.floats(0, 1000),
    surplus_since=st.none() | st.floats(0, 1000),
)


def run(policy: ScalePolicy, lag: dict[str, int], current: int, times: list[float]) -> list[int]:
    """Worker counts over successive decisions, each carried out at once."""
    memory, counts = ScaleMemory(), []
    for now in times:
        decision = decide(policy, lag, current=current, now=now, memory=memory)
        memory, current = decision.memory, decision.desired
        counts.append(current)
    return counts


# Properties -------------------------------------------------------------------


@PROPS
@given(policies(), lags, st.integers(0, 20), st.floats(1000, 2000), memories)
def test_never_below_min_nor_above_max(
    policy: ScalePolicy, lag: dict[str, int], current: int, now: float, memory: ScaleMemory
) -> None:
    decision = decide(policy, lag, current=current, now=now, memory=memory)
    assert policy.minimum <= decision.desired <= policy.maximum


@PROPS
@given(policies(), lags, st.integers(0, 20), st.floats(1000, 2000), memories)
def test_scales_up_at_once_to_what_the_lag_needs(
    policy: ScalePolicy, lag: dict[str, int], current: int, now: float, memory: ScaleMemory
) -> None:
    cooled = ScaleMemory(last_down=memory.last_down)  # no recent scale-up
    decision = decide(policy, lag, current=current, now=now, memory=cooled)
    target = min(max(workers_needed(lag, policy), policy.minimum), policy.maximum)
    if current < target:
        assert decision.desired == target
        assert decision.memory.last_up == now


@PROPS
@given(policies(), lags, st.data(), st.floats(1000, 2000), memories)
def test_never_scales_down_while_the_lag_needs_the_workers(
    policy: ScalePolicy, lag: dict[str, int], data: st.DataObject, now: float, memory: ScaleMemory
) -> None:
    current = data.draw(st.integers(policy.minimum, policy.maximum))
    decision = decide(policy, lag, current=current, now=now, memory=memory)
    if workers_needed(lag, policy) >= current:
        assert decision.desired >= current
    assert decision.desired >= current - 1, "down one worker at a time"


@PROPS
@given(policies(), lags, lags, st.integers(0, 20), st.floats(1000, 2000), memories)
def test_more_lag_never_means_fewer_workers(
    policy: ScalePolicy,
    lag: dict[str, int],
    more: dict[str, int],
    current: int,
    now: float,
    memory: ScaleMemory,
) -> None:
    bigger = {k: lag.get(k, 0) + more.get(k, 0) for k in {*lag, *more}}
    low = decide(policy, lag, current=current, now=now, memory=memory)
    high = decide(policy, bigger, current=current, now=now, memory=memory)
    assert high.desired >= low.desired


@PROPS
@given(policies(), lags)
def test_enough_slots_for_every_task_unless_capped(
    policy: ScalePolicy, lag: dict[str, int]
) -> None:
    needed = workers_needed(lag, policy)
    assert needed * policy.concurrency >= sum(lag.values())
    for pool, n in lag.items():
        slots = min(policy.slots.get(pool, policy.concurrency), policy.concurrency)
        assert needed * slots >= n
    assert (
        needed == 0
        or (needed - 1) * policy.concurrency < sum(lag.values())
        or any(
            (needed - 1) * min(policy.slots.get(p, policy.concurrency), policy.concurrency) < n
            for p, n in lag.items()
        )
    ), "not more than needed"


@PROPS
@given(policies(), st.data(), st.integers(1, 20).map(lambda n: n / 4))
def test_idle_workers_go_one_by_one_after_the_cooldown(
    policy: ScalePolicy, data: st.DataObject, tick: float
) -> None:
    start = data.draw(st.integers(policy.minimum, policy.maximum))
    times = [1000 + tick * i for i in range(int((start + 2) * (policy.down_cooldown_s / tick + 2)))]
    counts = run(policy, {}, start, times)
    assert counts[-1] == policy.minimum, "idle long enough, it reaches MIN"
    changes = [times[i] for i in range(len(counts)) if counts[i] != (counts[i - 1] if i else start)]
    assert all(b - a >= policy.down_cooldown_s for a, b in itertools.pairwise(changes))
    if changes:
        assert changes[0] - times[0] >= policy.down_cooldown_s
    steps = [(counts[i - 1] if i else start) - counts[i] for i in range(len(counts))]
    assert max(steps) <= 1


@PROPS
@given(policies(), st.integers(1, 400), st.integers(1, 12).map(lambda n: n / 4))
def test_a_burst_then_quiet_goes_up_then_back_to_min(
    policy: ScalePolicy, burst: int, tick: float
) -> None:
    memory, current, now = ScaleMemory(), policy.minimum, 1000.0
    up = decide(policy, {"a": burst}, current=current, now=now, memory=memory)
    assert up.desired == min(
        max(
            policy.minimum,
            math.ceil(burst / policy.concurrency),
            math.ceil(burst / min(policy.slots.get("a", policy.concurrency), policy.concurrency)),
        ),
        policy.maximum,
    )
    memory, current = up.memory, up.desired
    for _ in range(int((current + 2) * (policy.down_cooldown_s / tick + 2))):
        now += tick
        decision = decide(policy, {}, current=current, now=now, memory=memory)
        memory, current = decision.memory, decision.desired
    assert current == policy.minimum


# Examples ---------------------------------------------------------------------


def test_scale_up_cooldown_holds_a_second_step() -> None:
    policy = ScalePolicy(minimum=1, maximum=10, concurrency=2, up_cooldown_s=5)
    first = decide(policy, {"a": 6}, current=1, now=100, memory=ScaleMemory())
    assert first.desired == 3
    held = decide(policy, {"a": 12}, current=3, now=102, memory=first.memory)
    assert (held.desired, held.reason) == (3, "scale-up cooldown")
    later = decide(policy, {"a": 12}, current=3, now=105, memory=held.memory)
    assert later.desired == 6


def test_below_min_is_repaired_at_once_even_in_cooldown() -> None:
    policy = ScalePolicy(minimum=2, maximum=4, up_cooldown_s=60)
    decision = decide(policy, {}, current=1, now=10, memory=ScaleMemory(last_up=9))
    assert (decision.desired, decision.reason) == (2, "below the minimum")


def test_above_max_is_cut_at_once() -> None:
    policy = ScalePolicy(minimum=1, maximum=2)
    decision = decide(policy, {"a": 100}, current=5, now=10, memory=ScaleMemory())
    assert (decision.desired, decision.reason) == (2, "above the maximum")


def test_surplus_waits_for_the_cooldown_and_says_when() -> None:
    policy = ScalePolicy(minimum=1, maximum=3, down_cooldown_s=10)
    first = decide(policy, {}, current=3, now=100, memory=ScaleMemory())
    assert first.desired == 3
    assert first.reason == "lag 0: 2 surplus; one fewer in 10s"
    again = decide(policy, {}, current=3, now=110, memory=first.memory)
    assert again.desired == 2
    busy = decide(policy, {"a": 20}, current=2, now=111, memory=again.memory)
    assert busy.desired == 3, "lag again: up at once"
    assert busy.memory.surplus_since is None


def test_a_single_slot_pool_counts_one_task_per_worker() -> None:
    policy = ScalePolicy(minimum=0, maximum=10, concurrency=8, slots={"solo": 1})
    assert workers_needed({"solo": 3}, policy) == 3
    assert workers_needed({"other": 3}, policy) == 1
    assert workers_needed({"solo": 3, "other": 20}, policy) == 3


def test_zero_minimum_scales_from_nothing() -> None:
    policy = ScalePolicy(minimum=0, maximum=2)
    decision = decide(policy, {"a": 1}, current=0, now=1, memory=ScaleMemory())
    assert isinstance(decision, Decision)
    assert (decision.desired, decision.delta) == (1, 1)


# Options ----------------------------------------------------------------------


def test_parse_autoscale() -> None:
    assert parse_autoscale("1:3") == (1, 3)
    assert parse_autoscale("0:1") == (0, 1)
    for bad in ("3:1", "0:0", "x", "1", "-1:2", "1:3:4", ""):
        with pytest.raises(ConfigError):
            parse_autoscale(bad)


def test_spec_validation_and_defaults() -> None:
    spec = ClusterSpec.build(nodes=3, coordinators=2, cwd="/tmp")
    assert (spec.replicas, spec.effective_partitions, spec.initial_workers) == (3, 8, 2)
    single = ClusterSpec.build(nodes=1, coordinators=1, autoscale=(2, 4), cwd="/tmp")
    assert (single.replicas, single.effective_partitions, single.initial_workers) == (1, 1, 2)
    assert ClusterSpec.build(nodes=2, partitions=4, cwd="/tmp").cluster_env("u") == {
        "AGENTICFLOW_NATS_URL": "u",
        "AGENTICFLOW_REPLICAS": "1",
        "AGENTICFLOW_PREFIX": "af",
        "AGENTICFLOW_PARTITIONS": "4",
    }
    for bad in (
        {"nodes": 0},
        {"coordinators": 0},
        {"workers": -1},
        {"autoscale": (3, 1)},
        {"workers": 5, "autoscale": (1, 3)},
        {"prefix": "Not-Valid"},
        {"concurrency": 0},
    ):
        with pytest.raises(ConfigError):
            ClusterSpec.build(cwd="/tmp", **bad)


def test_node_pid() -> None:
    assert node_pid("w-host-42-a1b2c3") == 42
    assert node_pid("coord-my-host-7-a1b2c3-p3") == 7
    assert node_pid("nonsense") == 0

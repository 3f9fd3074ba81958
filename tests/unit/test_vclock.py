"""Vector clock algebra, header encoding and pydantic integration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.wire.vclock import Ordering, VectorClock

NODES = ["a", "b", "c", "n1", "node-2", "x.y", "Z_9"]

nodes = st.sampled_from(NODES)
clocks = st.dictionaries(nodes, st.integers(min_value=0, max_value=20), max_size=len(NODES)).map(
    VectorClock
)

PROPS = settings(database=None, max_examples=200)


# Algebra ---------------------------------------------------------------------


@PROPS
@given(clocks, clocks)
def test_merge_is_commutative(a: VectorClock, b: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)


@PROPS
@given(clocks, clocks, clocks)
def test_merge_is_associative(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@PROPS
@given(clocks)
def test_merge_is_idempotent(a: VectorClock) -> None:
    assert a.merge(a) == a
    assert a.merge(VectorClock()) == a


@PROPS
@given(clocks, clocks)
def test_merge_dominates_both(a: VectorClock, b: VectorClock) -> None:
    merged = a.merge(b)
    assert merged.dominates(a)
    assert merged.dominates(b)
    for node in set(a) | set(b):
        assert merged.get(node) == max(a.get(node), b.get(node))


@PROPS
@given(clocks, clocks)
def test_merge_accepts_plain_mapping(a: VectorClock, b: VectorClock) -> None:
    assert a.merge(b.to_dict()) == a.merge(b)


@PROPS
@given(clocks, nodes)
def test_increment_is_strictly_after(a: VectorClock, node: str) -> None:
    bumped = a.increment(node)
    assert bumped.compare(a) is Ordering.AFTER
    assert a.compare(bumped) is Ordering.BEFORE
    assert bumped.dominates(a)
    assert not a.dominates(bumped)
    assert bumped.get(node) == a.get(node) + 1
    # Every other entry is unchanged, and the original is untouched (immutable).
    assert {k: v for k, v in bumped.items() if k != node} == {
        k: v for k, v in a.items() if k != node
    }
    assert bumped != a


@PROPS
@given(clocks, clocks)
def test_compare_is_antisymmetric(a: VectorClock, b: VectorClock) -> None:
    forward, backward = a.compare(b), b.compare(a)
    assert (forward is Ordering.BEFORE) == (backward is Ordering.AFTER)
    assert (forward is Ordering.AFTER) == (backward is Ordering.BEFORE)
    assert (forward is Ordering.CONCURRENT) == (backward is Ordering.CONCURRENT)
    assert (forward is Ordering.EQUAL) == (backward is Ordering.EQUAL)


@PROPS
@given(clocks, clocks)
def test_compare_equal_iff_eq(a: VectorClock, b: VectorClock) -> None:
    assert (a.compare(b) is Ordering.EQUAL) == (a == b)
    if a == b:
        assert hash(a) == hash(b)


@PROPS
@given(clocks, clocks)
def test_dominates_matches_compare(a: VectorClock, b: VectorClock) -> None:
    assert a.dominates(b) == (a.compare(b) in (Ordering.AFTER, Ordering.EQUAL))
    if a.dominates(b) and b.dominates(a):
        assert a == b


@PROPS
@given(clocks)
def test_encode_decode_round_trip(a: VectorClock) -> None:
    text = a.encode()
    assert VectorClock.decode(text) == a
    assert text.isascii()
    # Sorted by node id, so equal clocks have one header form.
    assert [part.split(":")[0] for part in text.split(",") if part] == sorted(a)


@PROPS
@given(clocks)
def test_to_dict_round_trip(a: VectorClock) -> None:
    copy = a.to_dict()
    assert VectorClock(copy) == a
    copy["extra"] = 1
    assert "extra" not in a


def test_concurrent_example() -> None:
    base = VectorClock({"a": 1, "b": 1})
    left = base.increment("a")
    right = base.increment("b")
    assert left.compare(right) is Ordering.CONCURRENT
    assert right.compare(left) is Ordering.CONCURRENT
    assert not left.dominates(right)
    assert not right.dominates(left)
    joined = left.merge(right)
    assert joined == VectorClock({"a": 2, "b": 2})
    assert joined.compare(left) is Ordering.AFTER
    assert joined.compare(right) is Ordering.AFTER
    assert joined.increment("c").compare(joined) is Ordering.AFTER


def test_disjoint_clocks_are_concurrent() -> None:
    assert VectorClock({"a": 1}).compare(VectorClock({"b": 1})) is Ordering.CONCURRENT


def test_empty_clocks_are_equal() -> None:
    assert VectorClock().compare(VectorClock()) is Ordering.EQUAL
    assert VectorClock() == VectorClock({})
    assert VectorClock().encode() == ""
    assert VectorClock({"a": 1}).compare(VectorClock()) is Ordering.AFTER


def test_compare_with_plain_dict() -> None:
    clock = VectorClock({"a": 2, "b": 1})
    assert clock.compare({"a": 2, "b": 1}) is Ordering.EQUAL
    assert clock.compare({"a": 3}) is Ordering.CONCURRENT
    assert clock.compare({"a": 1}) is Ordering.AFTER
    assert clock.compare({"a": 2, "b": 1, "c": 1}) is Ordering.BEFORE


def test_mapping_protocol() -> None:
    clock = VectorClock({"b": 2, "a": 1})
    assert list(clock) == ["a", "b"]
    assert len(clock) == 2
    assert clock["a"] == 1
    assert clock.get("missing") == 0
    assert clock.get("missing", 5) == 5
    assert "a" in clock
    with pytest.raises(KeyError):
        clock["missing"]
    assert repr(clock) == "VectorClock('a:1,b:2')"


def test_equality_with_other_types() -> None:
    clock = VectorClock({"a": 1})
    assert clock != "a:1"
    assert clock != 1
    assert len({VectorClock({"a": 1}), VectorClock({"a": 1, "b": 0})}) == 1


# Construction ----------------------------------------------------------------


def test_zero_entries_are_dropped() -> None:
    clock = VectorClock({"a": 0, "b": 3})
    assert "a" not in clock
    assert len(clock) == 1
    assert clock == VectorClock({"b": 3})
    assert clock.encode() == "b:3"
    assert VectorClock.decode("a:0,b:3") == clock
    assert VectorClock({"a": 0}) == VectorClock()


@pytest.mark.parametrize("counter", [-1, -100])
def test_negative_counters_rejected(counter: int) -> None:
    with pytest.raises(MalformedMessageError, match="counter"):
        VectorClock({"a": counter})


@pytest.mark.parametrize("counter", [True, False, 1.0, "1", None])
def test_non_int_counters_rejected(counter: object) -> None:
    with pytest.raises(MalformedMessageError, match="counter"):
        VectorClock({"a": counter})  # type: ignore[dict-item]


@pytest.mark.parametrize("node", ["", "a b", "a:b", "a,b", "ü", "x" * 129, 1])
def test_invalid_node_ids_rejected(node: object) -> None:
    with pytest.raises(MalformedMessageError, match="node id"):
        VectorClock({node: 1})  # type: ignore[dict-item]


def test_longest_node_id_accepted() -> None:
    assert VectorClock({"x" * 128: 1}).get("x" * 128) == 1


def test_too_many_entries_rejected() -> None:
    VectorClock({f"n{i}": 1 for i in range(4096)})
    with pytest.raises(MalformedMessageError, match="more than"):
        VectorClock({f"n{i}": 1 for i in range(4097)})


def test_too_many_entries_counts_after_dropping_zeros() -> None:
    entries = {f"n{i}": 1 for i in range(4096)} | {f"z{i}": 0 for i in range(10)}
    assert len(VectorClock(entries)) == 4096


# Decoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "a:x",
        "a:1,a:2",
        "a b:1",
        ":1",
        "a:",
        "a:-1",
        "a:1.5",
        "a:1:2",
        "a:1,",
        ",a:1",
        "a:1,,b:2",
        "a: 1",
        "a:+1",
        "a:1;b:2",
    ],
)
def test_decode_malformed(text: str) -> None:
    with pytest.raises(MalformedMessageError):
        VectorClock.decode(text)


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_decode_blank_is_empty(text: str) -> None:
    assert VectorClock.decode(text) == VectorClock()


def test_decode_strips_outer_whitespace() -> None:
    assert VectorClock.decode("  a:1,b:2 ") == VectorClock({"a": 1, "b": 2})


def test_decode_counters_up_to_two_to_the_63() -> None:
    assert VectorClock.decode(f"a:{2**63 - 1}").get("a") == 2**63 - 1
    for text in (f"a:{2**63}", f"a:{2**70}", "a:" + "9" * 4400, "a:" + "0" * 20):
        with pytest.raises(MalformedMessageError):
            VectorClock.decode(text)
    with pytest.raises(MalformedMessageError):
        VectorClock({"a": 2**64})


def test_decode_unicode_digit_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        VectorClock.decode("a:²")


def test_node_id_with_trailing_newline_rejected() -> None:
    with pytest.raises(MalformedMessageError):
        VectorClock({"a\n": 1})


# Pydantic --------------------------------------------------------------------


class _Model(BaseModel):
    clock: VectorClock = Field(default_factory=VectorClock)


def test_pydantic_accepts_dict() -> None:
    model = _Model.model_validate({"clock": {"a": 1, "b": 2}})
    assert isinstance(model.clock, VectorClock)
    assert model.clock == VectorClock({"a": 1, "b": 2})


def test_pydantic_accepts_str() -> None:
    model = _Model.model_validate({"clock": "a:1,b:2"})
    assert model.clock == VectorClock({"a": 1, "b": 2})


def test_pydantic_accepts_instance() -> None:
    clock = VectorClock({"a": 3})
    assert _Model(clock=clock).clock is clock


def test_pydantic_default_is_empty() -> None:
    assert _Model().clock == VectorClock()


def test_pydantic_dumps_to_dict() -> None:
    model = _Model(clock=VectorClock({"b": 2, "a": 1}))
    assert model.model_dump() == {"clock": {"a": 1, "b": 2}}
    assert model.model_dump(mode="json") == {"clock": {"a": 1, "b": 2}}
    assert _Model.model_validate(model.model_dump()) == model


def test_pydantic_json_round_trip() -> None:
    model = _Model(clock=VectorClock({"a": 1, "n-2": 7}))
    text = model.model_dump_json()
    assert text == '{"clock":{"a":1,"n-2":7}}'
    assert _Model.model_validate_json(text) == model


@pytest.mark.parametrize("value", ["a:x", {"a": -1}, {"a b": 1}, 5, ["a", 1], None])
def test_pydantic_rejects_bad_values(value: object) -> None:
    with pytest.raises(ValidationError):
        _Model.model_validate({"clock": value})


@PROPS
@given(clocks)
def test_pydantic_round_trip_property(a: VectorClock) -> None:
    model = _Model(clock=a)
    assert _Model.model_validate(model.model_dump()).clock == a
    assert _Model.model_validate_json(model.model_dump_json()).clock == a
    assert _Model.model_validate({"clock": a.encode()}).clock == a

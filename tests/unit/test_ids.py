"""Time-ordered ids and derived idempotency keys."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from agenticflow.shared.wire import ids
from agenticflow.shared.wire.ids import (
    ID_RE,
    TASK_ID_RE,
    new_node_id,
    new_workflow_id,
    task_key,
    uuid7,
    workflow_key,
)
from agenticflow.shared.wire.vclock import VectorClock

_UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _fake_clock(monkeypatch: pytest.MonkeyPatch, millis: list[int]) -> None:
    """Make ``agenticflow.shared.wire.ids`` see ``millis`` (one value per call) as the time."""
    values: Iterator[int] = iter(ms * 1_000_000 + 123 for ms in millis)
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(values)))


# uuid7 -----------------------------------------------------------------------


def test_uuid7_version_and_variant() -> None:
    for _ in range(200):
        text = uuid7()
        value = uuid.UUID(text)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10
        assert str(value) == text
        assert _UUID_TEXT.match(text)


def test_uuid7_timestamp_is_now() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_uuid7_timestamp_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    ms = 1_700_000_000_123
    _fake_clock(monkeypatch, [ms])
    assert uuid.UUID(uuid7()).int >> 80 == ms


def test_uuid7_sorts_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = [1_700_000_000_000 + step for step in (0, 1, 2, 50, 1000, 86_400_000)]
    _fake_clock(monkeypatch, millis)
    generated = [uuid7() for _ in millis]
    assert sorted(generated) == generated
    assert sorted(generated, key=lambda t: uuid.UUID(t).int) == generated
    assert [uuid.UUID(t).int >> 80 for t in generated] == millis


def test_uuid7_out_of_order_time_sorts_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = [1_700_000_000_500, 1_700_000_000_001, 1_700_000_000_250]
    _fake_clock(monkeypatch, millis)
    generated = [uuid7() for _ in millis]
    assert [generated[i] for i in (1, 2, 0)] == sorted(generated)


def test_uuid7_random_bits_differ_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, [1_700_000_000_000] * 500)
    generated = {uuid7() for _ in range(500)}
    assert len(generated) == 500
    assert {uuid.UUID(t).int >> 80 for t in generated} == {1_700_000_000_000}


def test_uuid7_unique() -> None:
    assert len({uuid7() for _ in range(5000)}) == 5000


# Workflow and node ids -------------------------------------------------------


def test_new_workflow_id_format() -> None:
    for _ in range(100):
        wid = new_workflow_id()
        assert ID_RE.match(wid)
        assert wid.startswith("wf-")
        assert len(wid) == 35
        hex_part = wid.removeprefix("wf-")
        assert uuid.UUID(hex=hex_part).version == 7
        assert "." not in wid


def test_new_workflow_id_sorts_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = [1_700_000_000_000, 1_700_000_000_001, 1_700_000_003_000]
    _fake_clock(monkeypatch, millis)
    generated = [new_workflow_id() for _ in millis]
    assert sorted(generated) == generated


def test_new_workflow_id_unique() -> None:
    assert len({new_workflow_id() for _ in range(2000)}) == 2000


def test_new_node_id() -> None:
    node = new_node_id("worker")
    assert node.startswith("worker-")
    role, *_, pid, suffix = node.split("-")
    assert role == "worker"
    assert pid.isdigit()
    assert re.fullmatch(r"[0-9a-f]{6}", suffix)
    assert new_node_id("worker") != node
    # A node id must be usable as a vector clock entry.
    assert VectorClock({node: 1}).get(node) == 1


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("box.example.com", "box-example-com"),
        ("héllo wörld!", "h-llo-w-rld-"),
        ("", "host"),
        ("x" * 100, "x" * 32),
    ],
)
def test_new_node_id_sanitises_hostname(
    monkeypatch: pytest.MonkeyPatch, hostname: str, expected: str
) -> None:
    monkeypatch.setattr(ids, "socket", SimpleNamespace(gethostname=lambda: hostname))
    node = new_node_id("coordinator")
    assert node.startswith(f"coordinator-{expected}-")
    assert VectorClock({node: 1})


# Derived keys ----------------------------------------------------------------


def test_task_key() -> None:
    assert task_key("wf-1", "fetch", 2, "completed") == "wf-1:fetch:2:completed"
    assert task_key("wf-1", "a.b", 1, "task") == "wf-1:a.b:1:task"


def test_task_key_is_deterministic_and_distinct() -> None:
    assert task_key("w", "t", 1, "x") == task_key("w", "t", 1, "x")
    keys = {task_key("w", t, a, what) for t in ("t", "u") for a in (1, 2) for what in ("s", "c")}
    assert len(keys) == 8


def test_task_key_is_unambiguous_for_valid_ids() -> None:
    """Task ids cannot hold ':' so a key splits back into its parts."""
    key = task_key("wf-9", "step.one", 3, "failed")
    assert key.split(":") == ["wf-9", "step.one", "3", "failed"]
    assert not TASK_ID_RE.match("a:b")
    assert not ID_RE.match("a:b")


def test_workflow_key() -> None:
    assert workflow_key("wf-1", "submitted") == "wf-1:submitted"


# Id patterns -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "wf-1", "A_b-9", "x" * 64])
def test_id_re_accepts(value: str) -> None:
    assert ID_RE.match(value)
    assert TASK_ID_RE.match(value)


@pytest.mark.parametrize("value", ["", "a.b", "a:b", "a b", "a*", "a>", "x" * 65, "é"])
def test_id_re_rejects(value: str) -> None:
    assert not ID_RE.match(value)


@pytest.mark.parametrize("value", ["", "a:b", "a b", "a*", "x" * 65, "é"])
def test_task_id_re_rejects(value: str) -> None:
    assert not TASK_ID_RE.match(value)


def test_task_id_re_allows_dots() -> None:
    assert TASK_ID_RE.match("a.b.c")


@pytest.mark.parametrize("pattern", [ID_RE, TASK_ID_RE], ids=["ID_RE", "TASK_ID_RE"])
def test_id_patterns_reject_trailing_newline(pattern: re.Pattern[str]) -> None:
    assert not pattern.match("abc\n")

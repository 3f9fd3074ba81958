"""Vector clocks: causality between events published by different nodes.

Rules (DESIGN section 7): a node increments its own entry before it publishes,
and merges (element-wise max) the clock of every event it acts on. Clocks are
scoped to one workflow so they stay small.

The header form is compact ASCII, ``n1:12,n2:7``, sorted by node id.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from agenticflow.shared.errors import MalformedMessageError

_NODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
_MAX_ENTRIES = 4096
"""Most entries any clock may hold (the coordinator admits far fewer, see
:mod:`agenticflow.coordinator.admission`); a bound on the work a received clock can cause."""
MAX_COUNTER = 2**63 - 1
"""Largest counter: every clock fits a signed 64-bit integer (msgpack, snapshots)."""
_MAX_DIGITS = 19
COORDINATOR_NODE = "coord"
"""Vector clock entry of the coordinator role. Leadership is exclusive and the
counter lives in the workflow state, so a coordinator that takes over continues
the same entry monotonically; ``AF-Source`` still names the process. Every task
message a coordinator dispatches carries it."""


class Ordering(enum.Enum):
    """How two clocks relate."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VectorClock(Mapping[str, int]):
    """An immutable vector clock; absent entries count as zero."""

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        for node, counter in (entries or {}).items():
            if not isinstance(node, str) or not _NODE_RE.match(node):
                raise MalformedMessageError(f"invalid vector clock node id {_short(node)}")
            if (
                not isinstance(counter, int)
                or isinstance(counter, bool)
                or not 0 <= counter <= MAX_COUNTER
            ):
                raise MalformedMessageError(
                    f"invalid vector clock counter {_short(counter)} (0 to 2^63-1)"
                )
            if counter:
                clean[node] = counter
        if len(clean) > _MAX_ENTRIES:
            raise MalformedMessageError(f"vector clock has more than {_MAX_ENTRIES} entries")
        self._entries = dict(sorted(clean.items()))
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, entries: dict[str, int]) -> VectorClock:
        """A clock of entries that are valid already (taken from clocks, or a
        node id that was checked): no second check on the hot path."""
        if len(entries) > _MAX_ENTRIES:
            raise MalformedMessageError(f"vector clock has more than {_MAX_ENTRIES} entries")
        clock = cls.__new__(cls)
        clock._entries = dict(sorted(entries.items())) if len(entries) > 1 else entries
        clock._hash = None
        return clock

    # Mapping protocol -------------------------------------------------
    def __getitem__(self, node: str) -> int:
        return self._entries[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> ItemsView[str, int]:
        """``(node, counter)`` pairs (the dict's own view: no Mapping detour)."""
        return self._entries.items()

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def get(self, node: str, default: int = 0) -> int:  # type: ignore[override]
        """Counter of ``node`` (zero when absent)."""
        return self._entries.get(node, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VectorClock):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VectorClock({self.encode()!r})"

    # Operations ---------------------------------------------------------
    def increment(self, node: str) -> VectorClock:
        """A new clock with ``node``'s entry one higher."""
        entries = dict(self._entries)
        counter = entries.get(node, 0) + 1
        if counter > MAX_COUNTER or (node not in entries and not _NODE_RE.match(node)):
            return VectorClock({**entries, node: counter})  # raises MalformedMessageError
        entries[node] = counter
        return VectorClock._trusted(entries)

    def merge(self, other: Mapping[str, int]) -> VectorClock:
        """Element-wise maximum of the two clocks."""
        if not isinstance(other, VectorClock):
            other = VectorClock(other)  # checked once
        entries = dict(self._entries)
        for node, counter in other._entries.items():
            if counter > entries.get(node, 0):
                entries[node] = counter
        return VectorClock._trusted(entries)

    def compare(self, other: Mapping[str, int]) -> Ordering:
        """How ``self`` relates to ``other``: before, after, equal or concurrent."""
        less = greater = False
        for node in set(self._entries) | set(other):
            mine, theirs = self._entries.get(node, 0), other.get(node, 0)
            if mine < theirs:
                less = True
            elif mine > theirs:
                greater = True
            if less and greater:
                return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True when ``self`` is after or equal to ``other``."""
        return self.compare(other) in (Ordering.AFTER, Ordering.EQUAL)

    # Encoding -----------------------------------------------------------
    def encode(self) -> str:
        """Compact ASCII header form, e.g. ``n1:12,n2:7``."""
        return ",".join(f"{node}:{counter}" for node, counter in self._entries.items())

    @classmethod
    def decode(cls, text: str) -> VectorClock:
        """Parse the header form; raises MalformedMessageError (bounded work:
        at most 4,096 entries, counters of at most 19 digits, checked before
        any number is converted)."""
        text = text.strip()
        if not text:
            return cls()
        if text.count(",") >= _MAX_ENTRIES:
            raise MalformedMessageError(f"vector clock has more than {_MAX_ENTRIES} entries")
        entries: dict[str, int] = {}
        for part in text.split(","):
            node, sep, counter = part.partition(":")
            if (
                not sep
                or not 0 < len(counter) <= _MAX_DIGITS
                or not (counter.isascii() and counter.isdigit())
                or node in entries
            ):
                raise MalformedMessageError(f"invalid vector clock {_short(text)}")
            entries[node] = int(counter)
        return cls(entries)

    def to_dict(self) -> dict[str, int]:
        """A plain dict copy."""
        return dict(self._entries)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> VectorClock:
            if isinstance(value, VectorClock):
                return value
            try:
                if isinstance(value, str):
                    return cls.decode(value)
                if isinstance(value, Mapping):
                    return cls(value)
            except MalformedMessageError as exc:
                raise ValueError(str(exc)) from exc
            raise ValueError("a vector clock is a mapping of node id to counter")

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda clock: clock.to_dict()
            ),
        )


def _short(value: object) -> str:
    """``repr`` of a received value, cut to a length fit for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (Python refuses over 4,300 digits)
        return "<a number too long to print>"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


class ClockBook:
    """One node's vector clock per workflow (DESIGN section 7), the most
    recently used ``keep`` of them: merge what you act on, then tick."""

    def __init__(self, node_id: str, *, keep: int = 10_000) -> None:
        self.node_id = node_id
        self.keep = keep
        self._clocks: OrderedDict[str, VectorClock] = OrderedDict()

    def tick(self, workflow_id: str, seen: VectorClock | None = None) -> VectorClock:
        """Merge ``seen`` into the workflow's clock, increment our entry, return it."""
        return self.observe(workflow_id, seen, increment=True)

    def observe(
        self, workflow_id: str, seen: VectorClock | None, *, increment: bool = False
    ) -> VectorClock:
        """Merge ``seen`` into the workflow's clock (without publishing anything)."""
        clock = self._clocks.pop(workflow_id, VectorClock())
        if seen is not None:
            clock = clock.merge(seen)
        if increment:
            clock = clock.increment(self.node_id)
        self._clocks[workflow_id] = clock
        while len(self._clocks) > self.keep:
            self._clocks.popitem(last=False)
        return clock


__all__ = ["COORDINATOR_NODE", "MAX_COUNTER", "ClockBook", "Ordering", "VectorClock"]

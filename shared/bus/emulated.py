"""What the backends that emulate JetStream share (memory and redis): the
topology's limits (the NATS backend's too), subject matching and transforms, stored
times, the message and metadata types they deliver, a stream's configuration
and a KV entry. Pure code: no client library, no I/O."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agenticflow.shared.errors import TransportError
from agenticflow.shared.wire.names import partition_of

DIRECT_MAX_AGE_S = 3600.0
"""How long a direct task message (to an auction's winner) is kept at most."""
DIRECT_INACTIVE_S = 30.0
"""How long a worker's direct consumer outlives its last listener."""
ANCHORS_KEPT = 16
"""Anchors (signed chain heads) kept per audit chain."""
ANCHORS_MAX_MSGS = 1_000_000
"""Most anchors kept in all (a count: a byte limit would be reserved on the server)."""

H_EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
H_EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
H_EXPECTED_SEQ = "Nats-Expected-Last-Sequence"
H_ROLLUP = "Nats-Rollup"
H_KV_OP = "KV-Operation"
_FN_RE = re.compile(r"^\{\{\s*(\w+)\(([^)]*)\)\s*\}\}$")
NS = 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Subjects --------------------------------------------------------------------
@functools.lru_cache(maxsize=65_536)
def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches ``pattern`` (``*``: one token, ``>``: the rest)."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part not in ("*", have[i])):
            return False
    return len(want) == len(have)


def overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x, y = (ta[i] if i < len(ta) else None), (tb[i] if i < len(tb) else None)
        if ">" in (x, y):
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if "*" not in (x, y) and x != y:
            return False
    return True


def transform(source: str, destination: str, subject: str) -> str:
    """A JetStream subject transform (``wildcard(i)``, ``partition(n, i...)``
    and ``>`` in the destination) applied to ``subject``; unchanged if it does
    not match ``source``."""
    if not subject_matches(source, subject):
        return subject
    tokens, wild, rest = subject.split("."), [], []
    for i, part in enumerate(source.split(".")):
        if part == "*":
            wild.append(tokens[i])
        elif part == ">":
            rest = tokens[i:]
    out: list[str] = []
    for part in destination.split("."):
        fn = _FN_RE.match(part)
        if part == ">":
            out.extend(rest)
        elif fn is None:
            out.append(part)
        else:
            args = [int(a) for a in fn.group(2).split(",") if a.strip()]
            if fn.group(1) == "wildcard":
                out.append(wild[args[0] - 1])
            else:  # partition(n, i...): FNV-1a of the wildcards' tokens, concatenated
                out.append(str(partition_of("".join(wild[i - 1] for i in args[1:]), args[0])))
    return ".".join(out)


def utc(ns: int) -> datetime:
    """A stored time as a datetime, cut (not rounded) to the microsecond: reading
    from a message's own time then includes it."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def iso(ns: int) -> str:
    return utc(ns).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Sequence:
    stream: int
    consumer: int


@dataclass(frozen=True, slots=True)
class Metadata:
    sequence: Sequence
    num_delivered: int
    timestamp: datetime
    stream: str
    consumer: str
    num_pending: int = 0
    """Not tracked (counting would cost a scan per delivery): consumer_infos has it."""


class Publishing(Protocol):
    """What a core message needs of its bus: publishing its reply."""

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None: ...


class CoreMessage:
    """A core message as one subscription received it."""

    __slots__ = ("_bus", "_sid", "data", "headers", "reply", "subject")

    def __init__(
        self,
        bus: Publishing,
        sid: int,
        subject: str,
        *,
        reply: str,
        data: bytes,
        headers: dict[str, str] | None,
    ) -> None:
        self._bus, self._sid = bus, sid
        self.subject, self.reply, self.data, self.headers = subject, reply, data, headers

    @property
    def sid(self) -> int:
        return self._sid

    @property
    def metadata(self) -> Metadata:
        raise TransportError(f"a core message on {self.subject} has no stream metadata")

    async def ack(self) -> None:
        """Nothing to settle: a core message is not stored."""

    async def nak(self, delay: float | None = None) -> None:
        """Nothing to settle: a core message is not stored."""

    async def term(self) -> None:
        """Nothing to settle: a core message is not stored."""

    async def in_progress(self) -> None:
        """Nothing to settle: a core message is not stored."""

    async def respond(self, data: bytes) -> None:
        if not self.reply:
            raise TransportError(f"the message on {self.subject} asks for no reply")
        await self._bus.publish(self.reply, data)


@dataclass(slots=True)
class StreamConfig:
    """A stream's configuration (what JetStream's API calls it, times in seconds)."""

    name: str
    subjects: list[str]
    work_queue: bool = False
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: float = 0.0
    max_msgs_per_subject: int = -1
    max_msg_size: int = -1
    discard_new: bool = False
    duplicate_window: float = 120.0
    transform: tuple[str, str] | None = None
    allow_direct: bool = False
    deny_delete: bool = False
    deny_purge: bool = False

    def api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "subjects": list(self.subjects),
            "retention": "workqueue" if self.work_queue else "limits",
            "max_consumers": -1,
            "max_msgs": self.max_msgs,
            "max_bytes": self.max_bytes,
            "max_age": int(self.max_age * NS),
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "max_msg_size": self.max_msg_size,
            "discard": "new" if self.discard_new else "old",
            "storage": "memory",
            "num_replicas": 1,
            "duplicate_window": int(self.duplicate_window * NS),
            "allow_direct": self.allow_direct,
            "deny_delete": self.deny_delete,
            "deny_purge": self.deny_purge,
            "allow_rollup_hdrs": True,
        }
        if self.transform is not None:
            out["subject_transform"] = {"src": self.transform[0], "dest": self.transform[1]}
        return out


@dataclass(slots=True)
class Entry:
    """A KV entry (the fields of nats-py's ``KeyValue.Entry``)."""

    bucket: str
    key: str
    value: bytes | None
    revision: int | None
    delta: int | None
    created: datetime | None
    operation: str | None


__all__ = [
    "ANCHORS_KEPT",
    "ANCHORS_MAX_MSGS",
    "DIRECT_INACTIVE_S",
    "DIRECT_MAX_AGE_S",
    "EPOCH",
    "H_EXPECTED_SEQ",
    "H_EXPECTED_SUBJECT",
    "H_EXPECTED_SUBJECT_SEQ",
    "H_KV_OP",
    "H_ROLLUP",
    "NS",
    "CoreMessage",
    "Entry",
    "Metadata",
    "Publishing",
    "Sequence",
    "StreamConfig",
    "iso",
    "overlap",
    "subject_matches",
    "transform",
    "utc",
]

"""The ``memory`` backend: a small JetStream inside one asyncio event loop.

For tests and notebooks: a coordinator, workers and a client in one process
connect to the same :class:`MemoryServer` by URL (``memory://<name>``) and get
what the NATS backend gives them, with no server or client library:

- streams with a sequence, ``Nats-Msg-Id`` dedupe within the window, limits
  (age, count, per subject, bytes; discard old or new) or work-queue retention,
  ``Nats-Expected-Last-Subject-Sequence`` fencing and the events stream's
  partitioning subject transform;
- durable consumers with filters, competing pullers, ack / nak(delay) / term /
  in_progress, redelivery after ``ack_wait``, ``max_ack_pending`` and
  ``max_deliver`` (then JetStream's max-deliveries advisory, stored as it is);
- KV buckets as streams ``KV_<bucket>`` on ``$KV.<bucket>.>``, like JetStream's;
- core publish / subscribe (queue groups), request / reply and the micro
  services' ``$SRV.STATS`` discovery.

Everything runs on the event loop: server state changes synchronously, handlers
run as tasks (one at a time per subscription, so in order), and every delay is
a ``loop.call_later`` timer, so a virtual-time loop can fast-forward it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import structlog

from agenticflow.shared.bus.base import (
    Bus,
    ConsumerSpec,
    KeyValue,
    KVEntry,
    Message,
    MessageHandler,
    Outgoing,
    ServiceInfo,
    StoredValue,
    Subscription,
)
from agenticflow.shared.bus.emulated import (
    ANCHORS_KEPT,
    ANCHORS_MAX_MSGS,
    DIRECT_INACTIVE_S,
    DIRECT_MAX_AGE_S,
    H_EXPECTED_SEQ,
    H_EXPECTED_SUBJECT,
    H_EXPECTED_SUBJECT_SEQ,
    H_KV_OP,
    H_ROLLUP,
    CoreMessage,
    Entry,
    StreamConfig,
    subject_matches,
)
from agenticflow.shared.bus.emulated import EPOCH as _EPOCH
from agenticflow.shared.bus.emulated import NS as _NS
from agenticflow.shared.bus.emulated import Metadata as _Metadata
from agenticflow.shared.bus.emulated import Sequence as _Sequence
from agenticflow.shared.bus.emulated import iso as _iso
from agenticflow.shared.bus.emulated import overlap as _overlap
from agenticflow.shared.bus.emulated import transform as _transform
from agenticflow.shared.bus.emulated import utc as _utc
from agenticflow.shared.errors import (
    ConnectionLostError,
    NotFoundError,
    StateConflictError,
    TransportError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import DEFAULT_MAX_PAYLOAD, H_MSG_ID, check_size
from agenticflow.shared.wire.events import Event
from agenticflow.shared.wire.names import partitions_of_transform

log = structlog.get_logger("agenticflow.bus.memory")

_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER"


# Messages --------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    time_ns: int
    """Wall-clock time of storing (what the message's metadata says)."""
    at: float
    """Loop time of storing (what max_age and the dedupe window count from)."""

    @property
    def size(self) -> int:
        return (
            len(self.subject)
            + len(self.data)
            + sum(len(k) + len(v) for k, v in self.headers.items())
        )

    @property
    def operation(self) -> str | None:
        return self.headers.get(H_KV_OP)


class StreamMessage(CoreMessage):
    """A stored message as a consumer (or a read) delivered it; settled by seq,
    so a late ack of a delivery that timed out is accepted, as JetStream does."""

    __slots__ = ("_consumer", "_meta", "_settled")
    _bus: MemoryBus

    def __init__(
        self, bus: MemoryBus, sid: int, stored: _Stored, meta: _Metadata, consumer: _Consumer | None
    ) -> None:
        super().__init__(
            bus, sid, stored.subject, reply="", data=stored.data, headers=dict(stored.headers)
        )
        self._meta, self._consumer, self._settled = meta, consumer, consumer is None

    @property
    def metadata(self) -> _Metadata:
        return self._meta

    def _settle(self) -> _Consumer | None:
        self._bus.check()
        if self._settled:
            return None
        self._settled = True
        return self._consumer

    async def ack(self) -> None:
        if (consumer := self._settle()) is not None:
            consumer.ack(self._meta.sequence.stream)

    async def nak(self, delay: float | None = None) -> None:
        if (consumer := self._settle()) is not None:
            consumer.nak(self._meta.sequence.stream, delay or 0.0)

    async def term(self) -> None:
        if (consumer := self._settle()) is not None:
            consumer.term(self._meta.sequence.stream)

    async def in_progress(self) -> None:
        self._bus.check()
        if not self._settled and self._consumer is not None:
            self._consumer.in_progress(self._meta.sequence.stream)


# Streams ---------------------------------------------------------------------


class _Stream:
    """Stored messages by sequence, with limits and the consumers reading them."""

    def __init__(self, server: MemoryServer, config: StreamConfig) -> None:
        self.server, self.config = server, config
        self.created_ns = time.time_ns()
        self.messages: dict[int, _Stored] = {}
        self.seqs: list[int] = []
        """Live sequences, ascending."""
        self.by_subject: dict[str, list[int]] = {}
        self.bytes = 0
        self.last_seq = 0
        self.last_ns = 0
        self.msg_ids: dict[str, tuple[int, float]] = {}
        """Msg-Id -> (seq, loop time), oldest first: the dedupe window."""
        self.consumers: dict[str, _Consumer] = {}
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self.config.name

    # Storing
    def store(self, subject: str, headers: dict[str, str], data: bytes) -> tuple[int, bool]:
        """Store a message (JetStream's checks, then its limits); returns
        ``(seq, duplicate)``. Raises StateConflictError, TransportError."""
        c, now = self.config, self.server.loop.time()
        while self.msg_ids:
            oldest = next(iter(self.msg_ids))
            if now - self.msg_ids[oldest][1] < c.duplicate_window:
                break
            del self.msg_ids[oldest]
        msg_id = headers.get(H_MSG_ID)
        if msg_id and msg_id in self.msg_ids:
            return self.msg_ids[msg_id][0], True
        if c.transform is not None:
            subject = _transform(*c.transform, subject)
        self._check_expected(subject, headers)
        stored = _Stored(self.last_seq + 1, subject, dict(headers), data, time.time_ns(), now)
        if c.max_msg_size >= 0 and stored.size > c.max_msg_size:
            raise TransportError(f"{self.name}: message size exceeds maximum allowed")
        if c.discard_new and (
            (c.max_msgs >= 0 and len(self.messages) >= c.max_msgs)
            or (c.max_bytes >= 0 and self.bytes + stored.size > c.max_bytes)
        ):
            raise TransportError(f"{self.name}: maximum messages or bytes exceeded")
        self.last_seq, self.last_ns = stored.seq, stored.time_ns
        self.messages[stored.seq] = stored
        self.seqs.append(stored.seq)
        self.by_subject.setdefault(subject, []).append(stored.seq)
        self.bytes += stored.size
        if msg_id:
            self.msg_ids[msg_id] = (stored.seq, now)
        self._apply_limits(stored)
        self._arm_expiry()
        for consumer in self.consumers.values():
            if consumer.wants(subject):
                consumer.wake()
        self.server.stored(self, stored)
        return stored.seq, False

    def _check_expected(self, subject: str, headers: dict[str, str]) -> None:
        if (expected := headers.get(H_EXPECTED_SEQ)) is not None and int(expected) != self.last_seq:
            raise StateConflictError(f"wrong last sequence: {self.last_seq}")
        if (expected := headers.get(H_EXPECTED_SUBJECT_SEQ)) is None:
            return
        last = self.last_on(headers.get(H_EXPECTED_SUBJECT) or subject)
        found = last.seq if last is not None else 0
        if int(expected) != found:
            raise StateConflictError(f"wrong last sequence on {subject}: {found}, not {expected}")

    def _apply_limits(self, stored: _Stored) -> None:
        c = self.config
        same = self.by_subject[stored.subject]
        if stored.headers.get(H_ROLLUP) == "sub":
            for seq in same[:-1]:
                self.remove(seq)
        while c.max_msgs_per_subject > 0 and len(same) > c.max_msgs_per_subject:
            self.remove(same[0])
        while c.max_msgs >= 0 and len(self.messages) > c.max_msgs:
            self.remove(self.seqs[0])
        while c.max_bytes >= 0 and self.bytes > c.max_bytes and self.seqs:
            self.remove(self.seqs[0])

    def _arm_expiry(self) -> None:
        if self.config.max_age <= 0 or self._expiry is not None or not self.seqs:
            return
        due = self.messages[self.seqs[0]].at + self.config.max_age - self.server.loop.time()
        self._expiry = self.server.loop.call_later(max(due, 0.0), self._expire)

    def _expire(self) -> None:
        """Remove what is older than max_age (a timer: nobody needs to read)."""
        self._expiry = None
        horizon = self.server.loop.time() - self.config.max_age
        while self.seqs and self.messages[self.seqs[0]].at <= horizon:
            self.remove(self.seqs[0])
        self._arm_expiry()

    # Removing
    def remove(self, seq: int) -> bool:
        stored = self.messages.pop(seq, None)
        if stored is None:
            return False
        del self.seqs[bisect.bisect_left(self.seqs, seq)]
        same = self.by_subject[stored.subject]
        same.remove(seq)
        if not same:
            del self.by_subject[stored.subject]
        self.bytes -= stored.size
        for consumer in self.consumers.values():
            consumer.forget(seq)
        return True

    def purge(self, subject: str | None = None) -> None:
        for seq in [s for s in self.seqs if subject is None or self.matches(s, (subject,))]:
            self.remove(seq)

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for consumer in list(self.consumers.values()):
            consumer.delete()

    # Reading
    def matches(self, seq: int, filters: Sequence[str]) -> bool:
        subject = self.messages[seq].subject
        return not filters or any(subject_matches(f, subject) for f in filters)

    def after(self, seq: int, filters: Sequence[str] = ()) -> Iterator[_Stored]:
        """Stored messages from ``seq`` on, in order, matching ``filters`` (all if empty)."""
        for s in self.seqs[bisect.bisect_left(self.seqs, seq) :]:
            if self.matches(s, filters):
                yield self.messages[s]

    def last_on(self, subject: str) -> _Stored | None:
        """The last message on ``subject`` (a wildcard: on any matching one)."""
        if "*" not in subject and ">" not in subject:
            seqs = self.by_subject.get(subject)
            return self.messages[seqs[-1]] if seqs else None
        lasts = [s[-1] for subj, s in self.by_subject.items() if subject_matches(subject, subj)]
        return self.messages[max(lasts)] if lasts else None

    def info(self) -> dict[str, Any]:
        first = self.seqs[0] if self.seqs else (self.last_seq + 1 if self.last_seq else 0)
        deleted = [s for s in range(first, self.last_seq + 1) if s not in self.messages]
        state = {
            "messages": len(self.messages),
            "bytes": self.bytes,
            "first_seq": first,
            "first_ts": _iso(self.messages[self.seqs[0]].time_ns) if self.seqs else _iso(0),
            "last_seq": self.last_seq,
            "last_ts": _iso(self.last_ns),
            "num_subjects": len(self.by_subject),
            "num_deleted": len(deleted),
            "deleted": deleted,
            "consumer_count": len(self.consumers),
        }
        return {"config": self.config.api(), "created": _iso(self.created_ns), "state": state}


# Consumers -------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class _Waiter:
    """A puller, a fetch or a push target: takes deliveries while it has room."""

    sid: int
    room: Callable[[], int]
    take: Callable[[StreamMessage], None]
    bus: MemoryBus


@dataclass(slots=True)
class _Pending:
    deliveries: int
    consumer_seq: int
    timer: asyncio.TimerHandle | None = None
    """The ack_wait (or nak delay) timer; None while queued for redelivery."""


class _Consumer:
    """A durable consumer: delivers its stream's matching messages to waiters,
    tracks acknowledgements and redelivers what is not acknowledged in time."""

    def __init__(
        self,
        stream: _Stream,
        spec: ConsumerSpec,
        *,
        deliver_subject: str = "",
        inactive_threshold: float | None = None,
    ) -> None:
        self.stream, self.spec, self.server = stream, spec, stream.server
        self.deliver_subject = deliver_subject
        self.inactive_threshold = inactive_threshold
        self.created_ns = time.time_ns()
        self.cursor = stream.last_seq + 1 if spec.deliver_new else 1
        """The next stream sequence never delivered yet."""
        self.pending: dict[int, _Pending] = {}
        self.redeliver: list[int] = []
        """Pending sequences due for redelivery, ascending."""
        self.waiters: deque[_Waiter] = deque()
        self.delivered_seq = 0
        self.ack_floor = 0
        self.deleted = False
        self._scheduled = False
        self._idle: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def wants(self, subject: str) -> bool:
        filters = self.spec.filter_subjects
        return not filters or any(subject_matches(f, subject) for f in filters)

    # Delivering
    def wake(self) -> None:
        """Deliver what can be delivered, soon (coalesced; never inside a publish)."""
        if not self._scheduled and not self.deleted:
            self._scheduled = True
            self.server.loop.call_soon(self.dispatch)

    def dispatch(self) -> None:
        """Hand messages to waiters with room, round robin, redeliveries first."""
        self._scheduled = False
        while not self.deleted and (waiter := self._waiter_with_room()) is not None:
            stored = self._next()
            if stored is None:
                return
            self.waiters.rotate(-1)
            try:
                waiter.take(self._delivery(stored, waiter))
            except Exception:
                log.exception("a delivery handler failed", consumer=self.name)

    def _waiter_with_room(self) -> _Waiter | None:
        for waiter in list(self.waiters):
            try:
                room = waiter.room()
            except Exception:
                log.exception("a credit function failed", consumer=self.name)
                room = 0
            if room > 0:
                while self.waiters[0] is not waiter:
                    self.waiters.rotate(-1)
                return waiter
        return None

    def _next(self) -> _Stored | None:
        while self.redeliver:
            seq = self.redeliver.pop(0)
            if seq in self.stream.messages and seq in self.pending:
                return self.stream.messages[seq]
            self.pending.pop(seq, None)
        limit = self.spec.max_ack_pending
        if limit > 0 and len(self.pending) >= limit:
            return None
        stored = next(self.stream.after(self.cursor, self.spec.filter_subjects), None)
        self.cursor = stored.seq + 1 if stored is not None else self.stream.last_seq + 1
        return stored

    def _delivery(self, stored: _Stored, waiter: _Waiter) -> StreamMessage:
        self.delivered_seq += 1
        pending = self.pending.get(stored.seq)
        if pending is None:
            pending = self.pending[stored.seq] = _Pending(0, self.delivered_seq)
        pending.deliveries += 1
        pending.consumer_seq = self.delivered_seq
        self._arm(stored.seq, pending, self.spec.ack_wait_s)
        meta = _Metadata(
            _Sequence(stored.seq, self.delivered_seq),
            pending.deliveries,
            _utc(stored.time_ns),
            self.stream.name,
            self.name,
        )
        return StreamMessage(waiter.bus, waiter.sid, stored, meta, self)

    def _arm(self, seq: int, pending: _Pending, delay: float) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        pending.timer = self.server.loop.call_later(delay, self._due, seq)

    def _due(self, seq: int) -> None:
        """Its ack_wait (or nak delay) ran out: redeliver, or give up after max_deliver."""
        pending = self.pending.get(seq)
        if pending is None:
            return
        pending.timer = None
        if 0 < self.spec.max_deliver <= pending.deliveries:
            del self.pending[seq]
            self._advance_floor()
            self.server.advisory(
                f"{_ADVISORY}.MAX_DELIVERIES.{self.stream.name}.{self.name}",
                "io.nats.jetstream.advisory.v1.max_deliver",
                self,
                seq,
                pending.deliveries,
            )
        else:
            bisect.insort(self.redeliver, seq)
        self.wake()

    # Settling (by stream sequence)
    def _settle(self, seq: int) -> _Pending | None:
        pending = self.pending.pop(seq, None)
        if pending is None:
            return None
        if pending.timer is not None:
            pending.timer.cancel()
        with contextlib.suppress(ValueError):
            self.redeliver.remove(seq)
        self._advance_floor()
        if self.stream.config.work_queue:
            self.stream.remove(seq)
        self.wake()
        return pending

    def ack(self, seq: int) -> None:
        self._settle(seq)

    def term(self, seq: int) -> None:
        pending = self._settle(seq)
        if pending is not None:
            self.server.advisory(
                f"{_ADVISORY}.MSG_TERMINATED.{self.stream.name}.{self.name}",
                "io.nats.jetstream.advisory.v1.terminated",
                self,
                seq,
                pending.deliveries,
            )

    def nak(self, seq: int, delay: float) -> None:
        pending = self.pending.get(seq)
        if pending is not None and pending.timer is not None:
            self._arm(seq, pending, max(delay, 0.0))

    def in_progress(self, seq: int) -> None:
        pending = self.pending.get(seq)
        if pending is not None and pending.timer is not None:
            self._arm(seq, pending, self.spec.ack_wait_s)

    def forget(self, seq: int) -> None:
        """The stream removed ``seq``: it is no longer pending here."""
        pending = self.pending.pop(seq, None)
        if pending is not None:
            if pending.timer is not None:
                pending.timer.cancel()
            with contextlib.suppress(ValueError):
                self.redeliver.remove(seq)
            self._advance_floor()
            self.wake()

    def _advance_floor(self) -> None:
        floor = min(self.pending, default=self.cursor) - 1
        self.ack_floor = max(self.ack_floor, min(floor, self.cursor - 1))

    # Lifecycle
    def interest_changed(self) -> None:
        """Push consumers: deliver to a new listener; go once nobody listens for a while."""
        if not self.deliver_subject or self.deleted:
            return
        if self.server.has_interest(self.deliver_subject):
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            self.wake()
        elif self._idle is None and self.inactive_threshold is not None:
            self._idle = self.server.loop.call_later(self.inactive_threshold, self._inactive)

    def _inactive(self) -> None:
        self._idle = None
        if not self.server.has_interest(self.deliver_subject):
            self.delete()

    def delete(self) -> None:
        self.deleted = True
        for pending in self.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        if self._idle is not None:
            self._idle.cancel()
        self.pending.clear()
        self.waiters.clear()
        self.stream.consumers.pop(self.name, None)

    def num_pending(self) -> int:
        return sum(1 for _ in self.stream.after(self.cursor, self.spec.filter_subjects))

    def info(self) -> dict[str, Any]:
        spec = self.spec
        config: dict[str, Any] = {
            "name": spec.name,
            "durable_name": "" if self.deliver_subject else spec.name,
            "ack_policy": "explicit",
            "ack_wait": int(spec.ack_wait_s * _NS),
            "max_deliver": spec.max_deliver,
            "max_ack_pending": spec.max_ack_pending,
            "deliver_policy": "new" if spec.deliver_new else "all",
        }
        if len(spec.filter_subjects) == 1:
            config["filter_subject"] = spec.filter_subjects[0]
        elif spec.filter_subjects:
            config["filter_subjects"] = list(spec.filter_subjects)
        if self.deliver_subject:
            config["deliver_subject"] = self.deliver_subject
            config["inactive_threshold"] = int((self.inactive_threshold or 0) * _NS)
        last = max((p.consumer_seq for p in self.pending.values()), default=self.delivered_seq)
        return {
            "stream_name": self.stream.name,
            "name": spec.name,
            "created": _iso(self.created_ns),
            "config": config,
            "delivered": {"consumer_seq": self.delivered_seq, "stream_seq": self.cursor - 1},
            "ack_floor": {
                "consumer_seq": min(last, self.delivered_seq),
                "stream_seq": self.ack_floor,
            },
            "num_ack_pending": len(self.pending),
            "num_redelivered": sum(1 for p in self.pending.values() if p.deliveries > 1),
            "num_waiting": 0 if self.deliver_subject else len(self.waiters),
            "num_pending": self.num_pending(),
            "push_bound": bool(self.deliver_subject)
            and self.server.has_interest(self.deliver_subject),
        }


# Core subscriptions -----------------------------------------------------------
class _Runner:
    """Runs a handler for each queued message, one at a time (so in order),
    logging what it raises."""

    def __init__(self, handler: MessageHandler, what: str) -> None:
        self.handler, self.what = handler, what
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.closed = False
        self.task = asyncio.create_task(self._run(), name=f"memory-sub-{what}")

    def put(self, msg: Message) -> None:
        if not self.closed:
            self.queue.put_nowait(msg)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def _run(self) -> None:
        while (msg := await self.queue.get()) is not None and not self.closed:
            try:
                await self.handler(msg)
            except Exception:
                log.exception("message handler failed", subject=self.what)


class _Sub:
    """A core subscription, or a follow of stored messages: then either run as
    messages by ``handler`` or handed over at once to ``on_stored`` (KV watches)."""

    def __init__(
        self,
        bus: MemoryBus,
        sid: int,
        subject: str,
        handler: MessageHandler | None = None,
        *,
        queue: str = "",
        on_stored: Callable[[_Stored], None] | None = None,
    ) -> None:
        self.bus, self.sid, self.subject, self.queue = bus, sid, subject, queue
        self.runner = _Runner(handler, subject) if handler is not None else None
        self.on_stored = on_stored

    def put(self, msg: Message) -> None:
        if self.runner is not None:
            self.runner.put(msg)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    async def unsubscribe(self, limit: int = 0) -> None:
        self.bus.forget(self)


# KV ----------------------------------------------------------------------------


def _entry(bucket: str, stored: _Stored, *, delta: int = 0, meta_only: bool = False) -> Entry:
    deleted = stored.operation in ("DEL", "PURGE")
    value = None if deleted else (b"" if meta_only else stored.data)
    key = stored.subject.removeprefix(f"$KV.{bucket}.")
    return Entry(bucket, key, value, stored.seq, delta, _utc(stored.time_ns), stored.operation)


class Watcher:
    """A KV watch: current values, then None, then changes as they are stored.
    Iterating ends once it is stopped."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self.sub: _Sub | None = None
        self._queue: asyncio.Queue[tuple[KVEntry | None] | tuple[()]] = asyncio.Queue()
        """Updates, each in a 1-tuple; an empty tuple: stopped."""
        self._stopped = False

    def put(self, entry: KVEntry | None) -> None:
        if not self._stopped:
            self._queue.put_nowait((entry,))

    async def _next(self) -> tuple[KVEntry | None] | tuple[()]:
        if self._stopped and self._queue.empty():
            return ()
        return await self._queue.get()

    async def updates(self, timeout: float = 5.0) -> KVEntry | None:
        try:
            async with asyncio.timeout(timeout):
                while not (update := await self._next()):
                    await asyncio.Event().wait()  # stopped: nothing comes any more
        except TimeoutError:
            raise TimeoutError(f"no KV update within {timeout:g}s") from None
        return update[0]

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put_nowait(())  # wakes an iteration
        if self.sub is not None:
            self._bus.forget(self.sub)

    def __aiter__(self) -> AsyncIterator[KVEntry | None]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KVEntry | None]:
        while update := await self._next():
            yield update[0]


class MemoryKV:
    """A KV bucket on stream ``KV_<bucket>``, subjects ``$KV.<bucket>.<key>``."""

    def __init__(self, bus: MemoryBus, bucket: str) -> None:
        self.bus, self.bucket = bus, bucket
        self.stream_name, self.prefix = f"KV_{bucket}", f"$KV.{bucket}."

    def _stream(self) -> _Stream:
        return self.bus.stream(self.stream_name)

    def _last(self, key: str) -> _Stored | None:
        return self._stream().last_on(self.prefix + key)

    async def _write(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        seq, _ = await self.bus.publish_raw(self.prefix + key, value, headers)
        return seq

    async def get(self, key: str) -> KVEntry:
        stored = self._last(key)
        if stored is None or stored.operation is not None:
            raise NotFoundError(f"key {key!r} not found in bucket {self.bucket}")
        return _entry(self.bucket, stored)

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, {})

    async def create(self, key: str, value: bytes) -> int:
        stored = self._last(key)
        if stored is not None and stored.operation is None:
            raise StateConflictError(f"key {key!r} exists in bucket {self.bucket}")
        return await self.update(key, value, last=stored.seq if stored is not None else 0)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        return await self._write(key, value, {H_EXPECTED_SUBJECT_SEQ: str(last or 0)})

    async def delete(self, key: str, last: int | None = None) -> bool:
        headers = {H_KV_OP: "DEL"}
        if last is not None:
            headers[H_EXPECTED_SUBJECT_SEQ] = str(last)
        await self._write(key, b"", headers)
        return True

    async def purge(self, key: str) -> bool:
        """Delete with every earlier revision."""
        await self._write(key, b"", {H_KV_OP: "PURGE", H_ROLLUP: "sub"})
        return True

    async def keys(self) -> list[str]:
        stream = self._stream()
        return [
            subject.removeprefix(self.prefix)
            for subject, seqs in stream.by_subject.items()
            if stream.messages[seqs[-1]].operation is None
        ]

    async def watch(
        self,
        keys: str,
        *,
        ignore_deletes: bool = False,
        meta_only: bool = False,
        inactive_threshold: float | None = None,
    ) -> Watcher:
        stream, pattern = self._stream(), self.prefix + keys
        current = sorted(
            (
                stream.messages[seqs[-1]]
                for subj, seqs in stream.by_subject.items()
                if subject_matches(pattern, subj)
            ),
            key=lambda s: s.seq,
        )
        if ignore_deletes:
            current = [s for s in current if s.operation is None]

        watcher = Watcher(self.bus)

        def changed(stored: _Stored) -> None:
            if not (ignore_deletes and stored.operation is not None):
                watcher.put(_entry(self.bucket, stored, meta_only=meta_only))

        # No await between the snapshot and the follow: nothing missed, nothing twice.
        watcher.sub = self.bus.follow_now(pattern, on_stored=changed)
        for i, stored in enumerate(current):
            watcher.put(
                _entry(self.bucket, stored, delta=len(current) - i - 1, meta_only=meta_only)
            )
        watcher.put(None)
        return watcher

    async def watchall(self, *, inactive_threshold: float | None = None) -> Watcher:
        return await self.watch(">", inactive_threshold=inactive_threshold)


# The server --------------------------------------------------------------------
class MemoryServer:
    """The streams, consumers and subscriptions every :class:`MemoryBus` of one
    URL shares (one event loop)."""

    _servers: ClassVar[dict[str, MemoryServer]] = {}

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url, self.loop = url, loop
        self.streams: dict[str, _Stream] = {}
        self.subs: dict[int, _Sub] = {}
        self.follows: dict[int, _Sub] = {}
        self.sids = itertools.count(1)
        self.changed = asyncio.Event()
        """Set (and replaced) whenever a stream is added: what a waiting process waits on."""
        self._turns: dict[tuple[str, str], int] = {}
        self._stream_of: dict[str, _Stream | None] = {}
        self._exact: dict[str, dict[int, _Sub]] = {}
        """Subscriptions to a literal subject (most: inboxes), by subject."""
        self._wild: dict[int, _Sub] = {}

    @classmethod
    def get(cls, url: str) -> MemoryServer:
        """The server of ``url`` (created on first use, or anew in another event loop)."""
        loop = asyncio.get_running_loop()
        server = cls._servers.get(url)
        if server is None or server.loop is not loop:
            server = cls._servers[url] = cls(url, loop)
        return server

    @classmethod
    def discard(cls, url: str) -> None:
        """Drop the server of ``url`` and everything it stores (tests)."""
        server = cls._servers.pop(url, None)
        if server is not None:
            for stream in list(server.streams.values()):
                stream.close()
            for sub in [*server.subs.values(), *server.follows.values()]:
                sub.close()

    # Streams
    def add_stream(self, config: StreamConfig) -> _Stream:
        """Create a stream, or update an existing one's configuration."""
        stream = self.streams.get(config.name)
        if stream is not None:
            stream.config = config
        else:
            stream = self.streams[config.name] = _Stream(self, config)
            self.changed.set()
            self.changed = asyncio.Event()
        self._stream_of.clear()
        return stream

    def stream_for(self, subject: str) -> _Stream | None:
        """The stream that captures messages published on ``subject``."""
        if subject not in self._stream_of:
            if len(self._stream_of) > 10_000:  # inboxes: each subject once
                self._stream_of.clear()
            self._stream_of[subject] = next(
                (
                    s
                    for s in self.streams.values()
                    if any(subject_matches(p, subject) for p in s.config.subjects)
                ),
                None,
            )
        return self._stream_of[subject]

    def stored(self, stream: _Stream, stored: _Stored) -> None:
        """Push a newly stored message to every follow of its subject."""
        meta = _Metadata(_Sequence(stored.seq, 0), 1, _utc(stored.time_ns), stream.name, "")
        for sub in list(self.follows.values()):
            if not subject_matches(sub.subject, stored.subject):
                continue
            if sub.on_stored is not None:
                sub.on_stored(stored)
            else:
                sub.put(StreamMessage(sub.bus, sub.sid, stored, meta, None))

    # Core messages
    def add_sub(self, sub: _Sub) -> None:
        self.subs[sub.sid] = sub
        literal = "*" not in sub.subject and ">" not in sub.subject
        (self._exact.setdefault(sub.subject, {}) if literal else self._wild)[sub.sid] = sub
        self.interest_changed()

    def drop_sub(self, sub: _Sub) -> None:
        if self.subs.pop(sub.sid, None) is None:
            return
        self._wild.pop(sub.sid, None)
        exact = self._exact.get(sub.subject, {})
        exact.pop(sub.sid, None)
        if not exact:
            self._exact.pop(sub.subject, None)
        self.interest_changed()

    def _matching(self, subject: str) -> list[_Sub]:
        found = list(self._exact.get(subject, {}).values())
        return found + [s for s in self._wild.values() if subject_matches(s.subject, subject)]

    def has_interest(self, subject: str) -> bool:
        return bool(self._matching(subject))

    def route(self, subject: str, make: Callable[[_Sub], Message]) -> int:
        """Hand a message to every matching subscriber (one per queue group);
        returns how many took it."""
        groups: dict[str, list[_Sub]] = {}
        taken = 0
        for sub in self._matching(subject):
            if sub.queue:
                groups.setdefault(sub.queue, []).append(sub)
            else:
                sub.put(make(sub))
                taken += 1
        for queue, members in groups.items():
            turn = self._turns.get((subject, queue), 0)
            self._turns[(subject, queue)] = turn + 1
            member = members[turn % len(members)]
            member.put(make(member))
            taken += 1
        return taken

    def publish(
        self,
        bus: MemoryBus | None,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        reply: str = "",
    ) -> int:
        """A core message: stored by a stream that captures it (as JetStream
        does), and routed to subscribers; returns how many took it."""
        stream = self.stream_for(subject)
        if stream is not None:
            try:
                stream.store(subject, headers or {}, data)
            except TransportError as exc:
                log.debug("core message not stored", subject=subject, error=str(exc))
        return self.route(
            subject,
            lambda sub: CoreMessage(
                sub.bus, sub.sid, subject, reply=reply, data=data, headers=headers
            ),
        )

    def advisory(
        self, subject: str, kind: str, consumer: _Consumer, seq: int, deliveries: int
    ) -> None:
        """A JetStream advisory (stored by a stream capturing it)."""
        body = {
            "type": kind,
            "id": uuid.uuid4().hex,
            "timestamp": _iso(time.time_ns()),
            "stream": consumer.stream.name,
            "consumer": consumer.name,
            "stream_seq": seq,
            "deliveries": deliveries,
        }
        self.publish(None, subject, json.dumps(body).encode(), None)

    def interest_changed(self) -> None:
        for stream in self.streams.values():
            for consumer in list(stream.consumers.values()):
                consumer.interest_changed()


# The bus ----------------------------------------------------------------------
class MemoryBus(Bus):
    """One process's connection to the in-process :class:`MemoryServer` of its URL."""

    backend: ClassVar[str] = "memory"

    def __init__(
        self, *, settings: Settings, seal: Seal | None = None, server: MemoryServer, name: str
    ) -> None:
        super().__init__(settings=settings, seal=seal)
        self.server, self.name = server, name
        self._subs: dict[int, _Sub] = {}
        self._kv: dict[str, MemoryKV] = {}
        self._stats = dict.fromkeys(("in_msgs", "out_msgs", "in_bytes", "out_bytes"), 0)

    @classmethod
    async def open(cls, settings: Settings, *, seal: Seal, name: str) -> MemoryBus:
        return cls(
            settings=settings, seal=seal, server=MemoryServer.get(settings.bus_url), name=name
        )

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        for sub in list(self._subs.values()):
            self.forget(sub)
        for stream in self.server.streams.values():
            for consumer in stream.consumers.values():
                for waiter in [w for w in consumer.waiters if w.bus is self]:
                    consumer.waiters.remove(waiter)
        self.closed.set()

    def check(self) -> None:
        """Raise ConnectionLostError once closed."""
        if self.closing:
            raise ConnectionLostError("the memory bus connection is closed")

    @property
    def max_payload(self) -> int:
        return DEFAULT_MAX_PAYLOAD

    @property
    def is_connected(self) -> bool:
        return not self.closing

    def connection_report(self) -> dict[str, Any]:
        return {
            "connected": self.is_connected,
            "reconnecting": False,
            "closed": self.closing,
            "server": self.server.url,
            "reconnects": 0,
            **self._stats,
            "buffered_bytes": 0,
            "max_payload": self.max_payload,
        }

    # Topology
    def stream(self, name: str) -> _Stream:
        """A stream by name; raises NotFoundError."""
        self.check()
        stream = self.server.streams.get(name)
        if stream is None:
            raise NotFoundError(f"stream {name} does not exist")
        return stream

    async def _created(self, name: str) -> _Stream:
        """Stream ``name`` once it exists (a coordinator creates it), waiting up
        to ``topology_wait_s``; raises NotFoundError after that."""
        try:
            async with asyncio.timeout(self.settings.topology_wait_s):
                while (stream := self.server.streams.get(name)) is None:
                    await self.server.changed.wait()
        except TimeoutError:
            raise NotFoundError(
                f"stream {name} does not exist: a coordinator of prefix {self.names.prefix!r} "
                "creates it; start one (or check AGENTICFLOW_PREFIX)"
            ) from None
        return stream

    async def ensure_topology(self) -> None:
        self.check()
        s, n = self.settings, self.names
        if not s.manage_topology:
            for stream in (n.tasks_stream, n.events_stream):
                await self._created(stream)
            return
        wq = functools.partial(
            StreamConfig,
            work_queue=True,
            discard_new=True,
            max_msgs=1_000_000,
            duplicate_window=s.dedupe_window_s,
        )
        self.server.add_stream(wq(name=n.tasks_stream, subjects=[n.task_subjects]))
        partitions = await self.event_partitions() or s.partitions
        self.server.add_stream(
            StreamConfig(
                name=n.events_stream,
                subjects=[n.event_subjects],
                duplicate_window=min(s.dedupe_window_s, s.events_max_age_s),
                max_age=s.events_max_age_s,
                max_bytes=s.events_max_bytes,
                transform=n.event_transform(partitions),
            )
        )
        self.server.add_stream(
            wq(name=n.direct_stream, subjects=[n.direct_subjects], max_age=DIRECT_MAX_AGE_S)
        )
        self.server.add_stream(
            StreamConfig(
                name=n.advisories_stream,
                subjects=[n.max_deliveries_subject],
                max_age=s.events_max_age_s,
            )
        )
        audit = functools.partial(
            StreamConfig,
            max_msg_size=s.audit_max_msg_size,
            allow_direct=True,
            deny_delete=True,
            deny_purge=True,
        )
        self.server.add_stream(
            audit(
                name=n.audit_stream,
                subjects=[n.audit_subjects],
                duplicate_window=s.dedupe_window_s,
                max_age=s.audit_max_age_s,
                max_msgs=s.audit_max_msgs,
                max_bytes=s.audit_max_bytes,
            )
        )
        self.server.add_stream(
            audit(
                name=n.anchor_stream,
                subjects=[n.anchor_subjects],
                max_msgs_per_subject=ANCHORS_KEPT,
                max_msgs=ANCHORS_MAX_MSGS,
            )
        )
        for bucket in (
            n.workflows_bucket,
            n.workflow_index_bucket,
            n.control_bucket,
            n.breakers_bucket,
            n.ratelimits_bucket,
            n.schedules_bucket,
            n.schedule_state_bucket,
            n.definitions_bucket,
        ):
            await self.kv(bucket)
        await self.kv(n.agents_bucket, ttl=float(s.agent_ttl_s))
        await self.kv(n.tool_results_bucket, ttl=s.tool_results_ttl_s)

    async def event_partitions(self) -> int | None:
        self.check()
        stream = self.server.streams.get(self.names.events_stream)
        if stream is None or stream.config.transform is None:
            return None
        return partitions_of_transform(stream.config.transform[1])

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        self.check()
        name = f"KV_{bucket}"
        if name not in self.server.streams:
            if not self.settings.manage_topology:
                await self._created(name)
            else:
                self.server.add_stream(
                    StreamConfig(
                        name=name,
                        subjects=[f"$KV.{bucket}.>"],
                        max_msgs_per_subject=history,
                        max_age=ttl or 0.0,
                        discard_new=True,
                        duplicate_window=min(120.0, ttl) if ttl else 120.0,
                        allow_direct=True,
                    )
                )
        return self._kv.setdefault(bucket, MemoryKV(self, bucket))

    async def ensure_task_consumer(self, capability: str) -> str:
        s, name = self.settings, self.names.task_consumer(capability)
        spec = ConsumerSpec(
            name=name,
            filter_subjects=(self.names.task_subject(capability),),
            ack_wait_s=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=s.task_max_ack_pending,
        )
        await self.ensure_consumer(self.names.tasks_stream, spec)
        return name

    async def ensure_consumer(self, stream: str, spec: ConsumerSpec) -> None:
        found = self.stream(stream)
        if spec.name not in found.consumers:
            found.consumers[spec.name] = _Consumer(found, spec)

    def _consumer(self, stream: str, name: str) -> _Consumer:
        consumer = self.stream(stream).consumers.get(name)
        if consumer is None:
            raise NotFoundError(f"consumer {name} of stream {stream} does not exist")
        return consumer

    async def delete_consumer(self, stream: str, name: str) -> None:
        self.check()
        found = self.server.streams.get(stream)
        consumer = found.consumers.get(name) if found is not None else None
        if consumer is not None:
            consumer.delete()

    async def open_direct(
        self, queue: str, node: str, *, deliver_subject: str, max_ack_pending: int
    ) -> str:
        s, stream = self.settings, self.stream(self.names.direct_stream)
        name = self.names.direct_consumer(queue, node)
        spec = ConsumerSpec(
            name=name,
            filter_subjects=(self.names.direct_subject(queue, node),),
            ack_wait_s=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=max_ack_pending,
        )
        consumer = stream.consumers.get(name)
        if consumer is None:
            consumer = stream.consumers[name] = _Consumer(
                stream, spec, deliver_subject=deliver_subject, inactive_threshold=DIRECT_INACTIVE_S
            )
        else:  # JetStream lets a push consumer's deliver subject and limits be updated
            consumer.spec, consumer.deliver_subject = spec, deliver_subject
            consumer.waiters.clear()
        server = self.server

        def push(msg: StreamMessage) -> None:
            stored = stream.messages[msg.metadata.sequence.stream]
            server.route(
                deliver_subject,
                lambda sub: StreamMessage(sub.bus, sub.sid, stored, msg.metadata, consumer),
            )

        def room() -> int:
            return 1 << 30 if server.has_interest(deliver_subject) else 0

        consumer.waiters.append(_Waiter(0, room, push, self))
        consumer.interest_changed()
        return name

    def puller(
        self,
        *,
        stream: str,
        consumer: str,
        on_message: Callable[[Message], None],
        credit: Callable[[], int],
        max_batch: int = 64,
        max_open: int = 8,
        expires_s: float = 5.0,
        on_end: Callable[[str], None] | None = None,
    ) -> Puller:
        return Puller(
            self,
            stream=stream,
            consumer=consumer,
            on_message=on_message,
            credit=credit,
            on_end=on_end,
        )

    async def fetcher(self, stream: str, spec: ConsumerSpec) -> Fetcher:
        await self.ensure_consumer(stream, spec)
        return Fetcher(self, self._consumer(stream, spec.name))

    # Streams
    async def publish_raw(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bool]:
        self.check()
        check_size(headers or {}, body, self.max_payload)
        return self._store(subject, body, headers)

    def _store(self, subject: str, body: bytes, headers: dict[str, str] | None) -> tuple[int, bool]:
        stream = self.server.stream_for(subject)
        if stream is None:
            raise TransportError(f"publish to {subject} failed: no stream stores it")
        result = stream.store(subject, dict(headers or {}), body)
        self._count("out", body)
        # A JetStream publish is a message like any other: core subscribers see it too.
        self.server.route(
            subject,
            lambda sub: CoreMessage(
                sub.bus, sub.sid, subject, reply="", data=body, headers=headers
            ),
        )
        return result

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[tuple[int, bool]]:
        self.check()
        for _, headers, body in messages:
            check_size(headers, body, self.max_payload)
        return [self._store(subject, body, headers) for subject, headers, body in messages]

    async def send_event(self, event: Event) -> Coroutine[Any, Any, tuple[int, bool]]:
        subject, headers, body = self.encode_event(event)
        self.check()
        outcome: tuple[int, bool] | TransportError
        try:
            outcome = self._store(subject, body, headers)
        except TransportError as exc:
            outcome = exc

        async def stored() -> tuple[int, bool]:
            if isinstance(outcome, TransportError):
                raise outcome
            return outcome

        return stored()

    async def read_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int = 1,
        start_time: datetime | None = None,
        limit: int | None = None,
        drain: bool = False,
    ) -> list[Message]:
        found = self.stream(stream)
        # In whole microseconds, exactly: what a datetime holds.
        since = (start_time - _EPOCH) // timedelta(microseconds=1) if start_time else None
        out: list[Message] = []
        for stored in found.after(start_seq if since is None else 1, (subject,)):
            if limit is not None and len(out) >= limit:
                break
            if since is not None and stored.time_ns // 1000 < since:
                continue
            meta = _Metadata(
                _Sequence(stored.seq, len(out) + 1), 1, _utc(stored.time_ns), stream, ""
            )
            out.append(StreamMessage(self, 0, stored, meta, None))
        return out

    async def follow(
        self, subject: str, handler: MessageHandler, *, headers_only: bool = False
    ) -> Subscription:
        self.check()
        if not any(
            _overlap(p, subject) for s in self.server.streams.values() for p in s.config.subjects
        ):
            raise NotFoundError(f"no stream stores {subject}")
        return self.follow_now(subject, handler)

    def follow_now(
        self,
        subject: str,
        handler: MessageHandler | None = None,
        *,
        on_stored: Callable[[_Stored], None] | None = None,
    ) -> _Sub:
        """Follow (see :meth:`follow`) without a suspension point."""
        self.check()
        sub = _Sub(self, next(self.server.sids), subject, handler, on_stored=on_stored)
        self._subs[sub.sid] = self.server.follows[sub.sid] = sub
        return sub

    async def last_stored(
        self, stream: str, subject: str
    ) -> tuple[int, str, dict[str, str], bytes] | None:
        stored = self.stream(stream).last_on(subject)
        if stored is None:
            return None
        return stored.seq, stored.subject, dict(stored.headers), stored.data

    async def get_stored(self, stream: str, seq: int) -> tuple[str, dict[str, str]] | None:
        stored = self.stream(stream).messages.get(seq)
        return (stored.subject, dict(stored.headers)) if stored is not None else None

    async def delete_stored(self, stream: str, seq: int) -> None:
        found = self.server.streams.get(stream)
        if found is None:
            return
        if found.config.deny_delete:
            raise TransportError(f"cannot delete {stream} #{seq}: the stream denies deletes")
        found.remove(seq)

    async def purge_subject(self, stream: str, subject: str) -> None:
        found = self.stream(stream)
        if found.config.deny_purge:
            raise TransportError(f"cannot purge {stream}: the stream denies purges")
        found.purge(subject)

    async def stream_holes(self, stream: str) -> tuple[int, list[int]]:
        state = self.stream(stream).info()["state"]
        return int(state["first_seq"]), list(state["deleted"])

    async def count_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int | None = None,
        start_ns: int | None = None,
    ) -> int:
        found = self.stream(stream)
        if start_seq is not None:
            return sum(1 for _ in found.after(start_seq, (subject,)))
        since = (start_ns or 0) // 1000  # a time to the microsecond, as NATS takes it
        return sum(1 for m in found.after(1, (subject,)) if m.time_ns // 1000 >= since)

    async def consumer_infos(self, stream: str) -> list[dict[str, Any]]:
        return [c.info() for c in self.stream(stream).consumers.values()]

    async def stream_info(self, stream: str) -> dict[str, Any]:
        return self.stream(stream).info()

    # KV helpers
    async def kv_read(self, store: KeyValue, key: str) -> StoredValue | None:
        if not isinstance(store, MemoryKV):
            raise TransportError(f"{store!r} is not a bucket of the memory backend")
        stored = store._last(key)
        if stored is None or stored.operation is not None:
            return None
        return StoredValue(stored.data, stored.seq, stored.time_ns)

    async def kv_entries(
        self, bucket: str, *, limit: int | None = None
    ) -> list[tuple[str, bytes, int | None]]:
        stream, prefix = self.stream(f"KV_{bucket}"), f"$KV.{bucket}."
        lasts = sorted(seqs[-1] for seqs in stream.by_subject.values())[:limit]
        return [
            (m.subject.removeprefix(prefix), m.data, m.time_ns)
            for m in (stream.messages[s] for s in lasts)
            if m.operation is None and m.data
        ]

    # Core messages
    def _count(self, direction: str, data: bytes) -> None:
        self._stats[f"{direction}_msgs"] += 1
        self._stats[f"{direction}_bytes"] += len(data)

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.check()
        check_size(headers or {}, data, self.max_payload)
        self._count("out", data)
        self.server.publish(self, subject, data, headers, reply)

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        self.check()
        return self._subscribe(subject, handler, queue)

    def _subscribe(self, subject: str, handler: MessageHandler, queue: str = "") -> _Sub:
        async def counted(msg: Message) -> None:
            self._count("in", msg.data)
            await handler(msg)

        sub = _Sub(self, next(self.server.sids), subject, counted, queue=queue)
        self._subs[sub.sid] = sub
        self.server.add_sub(sub)
        return sub

    def forget(self, sub: _Sub) -> None:
        """End a subscription or follow (idempotent)."""
        self._subs.pop(sub.sid, None)
        self.server.follows.pop(sub.sid, None)
        self.server.drop_sub(sub)
        sub.close()

    def new_inbox(self) -> str:
        return f"{self.settings.nats_inbox_prefix}.{uuid.uuid4().hex}"

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        self.check()
        answer: asyncio.Future[bytes] = self.server.loop.create_future()

        async def on_reply(msg: Message) -> None:
            if not answer.done():
                answer.set_result(msg.data)

        sub = self._subscribe(self.new_inbox(), on_reply)
        try:
            self._count("out", data)
            if self.server.publish(self, subject, data, None, reply=sub.subject) == 0:
                answer.set_exception(TimeoutError(f"no responders on {subject}"))
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            raise TimeoutError(f"no answer on {subject} within {timeout:g}s") from None
        finally:
            self.forget(sub)

    async def add_service(
        self,
        info: ServiceInfo,
        *,
        endpoint: str,
        handler: Callable[[], bytes],
        stats: Callable[[], dict[str, Any]],
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        service_id, started = uuid.uuid4().hex, _iso(time.time_ns())
        about = {
            "name": info.name,
            "id": service_id,
            "version": info.version,
            "metadata": info.metadata,
        }

        async def on_endpoint(msg: Message) -> None:
            await msg.respond(handler())

        async def on_ping(msg: Message) -> None:
            await msg.respond(
                json.dumps({"type": "io.nats.micro.v1.ping_response", **about}).encode()
            )

        async def on_stats(msg: Message) -> None:
            endpoints = [
                {"name": "health", "subject": endpoint, "queue_group": "q", "data": stats()}
            ]
            body = {
                "type": "io.nats.micro.v1.stats_response",
                **about,
                "started": started,
                "endpoints": endpoints,
            }
            await msg.respond(json.dumps(body).encode())

        subs = [self._subscribe(endpoint, on_endpoint, "q")]
        subs.extend(
            self._subscribe(subject, answer)
            for verb, answer in (("PING", on_ping), ("STATS", on_stats))
            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{info.name}",
                f"$SRV.{verb}.{info.name}.{service_id}",
            )
        )

        async def deregister() -> None:
            for sub in subs:
                self.forget(sub)

        return deregister


# Pulling -----------------------------------------------------------------------
class Puller:
    """Hands every delivery of a durable consumer to ``on_message`` while the
    owner's ``credit()`` allows (see :meth:`Bus.puller`): nothing is owed, since
    a delivery is handed over the moment it is made."""

    def __init__(
        self,
        bus: MemoryBus,
        *,
        stream: str,
        consumer: str,
        on_message: Callable[[Message], None],
        credit: Callable[[], int],
        on_end: Callable[[str], None] | None,
    ) -> None:
        self._bus, self._stream, self._name = bus, stream, consumer
        self._waiter = _Waiter(next(bus.server.sids), credit, on_message, bus)
        self._consumer: _Consumer | None = None
        self._on_end = on_end
        self.what = f"{stream}/{consumer}"

    @property
    def owed(self) -> int:
        return 0

    async def start(self) -> None:
        self._consumer = self._bus._consumer(self._stream, self._name)
        self._consumer.waiters.append(self._waiter)
        self._consumer.wake()

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(ValueError):
                self._consumer.waiters.remove(self._waiter)
            self._consumer = None
            if self._on_end is not None:
                self._on_end("lost")

    def kick(self) -> None:
        if self._consumer is not None:
            self._consumer.wake()

    def reset(self) -> None:
        self.kick()


class Fetcher:
    """Batches from a durable consumer on demand (see :meth:`Bus.fetcher`)."""

    def __init__(self, bus: MemoryBus, consumer: _Consumer) -> None:
        self._bus, self._consumer = bus, consumer
        self._sid = next(bus.server.sids)

    async def fetch(self, batch: int, *, timeout: float) -> list[Message]:
        self._bus.check()
        got: list[Message] = []
        arrived = asyncio.Event()

        def take(msg: StreamMessage) -> None:
            got.append(msg)
            arrived.set()

        waiter = _Waiter(self._sid, lambda: batch - len(got), take, self._bus)
        self._consumer.waiters.append(waiter)
        try:
            self._consumer.dispatch()
            if not got:
                async with asyncio.timeout(timeout):
                    await arrived.wait()
        except TimeoutError:
            if not got:
                raise TimeoutError(f"nothing to fetch within {timeout:g}s") from None
        finally:
            with contextlib.suppress(ValueError):
                self._consumer.waiters.remove(waiter)
        return got

    async def unsubscribe(self) -> None:
        """Nothing is held open between fetches."""


__all__ = [
    "Entry",
    "Fetcher",
    "MemoryBus",
    "MemoryKV",
    "MemoryServer",
    "Puller",
    "StreamConfig",
    "subject_matches",
]

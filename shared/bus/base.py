"""The transport seam: what the coordinator, workers, client and CLI use of a bus.

Every backend (``nats``: :mod:`agenticflow.shared.bus.nats_backend`,
``memory``: :mod:`agenticflow.shared.bus.memory_backend`) implements
:class:`Bus`, and only backend modules import a client library. The model is
JetStream's, since that is the wire contract (see the design's subjects and
streams):

- **streams** store messages by subject (``<prefix>.evt.<workflow>.<type>``...),
  with a sequence per stream, a ``Nats-Msg-Id`` header deduplicated within the
  stream's window, and limits or work-queue retention;
- **consumers** deliver a stream's messages (filtered by subject) to competing
  pullers, each delivery acknowledged (:meth:`Message.ack`), refused for a
  redelivery after a delay (:meth:`Message.nak`), given up (:meth:`Message.term`)
  or extended (:meth:`Message.in_progress`); an unacknowledged delivery comes
  again after the consumer's ``ack_wait``, at most ``max_deliver`` times, after
  which the backend stores a max-deliveries advisory (JetStream's JSON);
- **key-value buckets** (:class:`KeyValue`) with revisions, compare-and-set,
  a TTL and watches;
- **core messages**: publish, subscribe (with queue groups) and request/reply,
  for interventions, auctions and health.

Errors come out as ours (:class:`~agenticflow.shared.errors.TransportError`,
:class:`~agenticflow.shared.errors.StateConflictError`,
:class:`~agenticflow.shared.errors.NotFoundError`), never a client library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar, cast

import structlog

from agenticflow.shared.errors import ConfigError, ReplayedMessageError, TransportError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import (
    TaskMessage,
    decode_event,
    decode_task,
    encode_event,
    encode_task,
)
from agenticflow.shared.wire.events import Event

T = TypeVar("T")

log = structlog.get_logger("agenticflow.bus")

Outgoing = tuple[str, dict[str, str], bytes]
"""A message to publish: ``(subject, headers, body)``, as the codec's encoders return it."""

_CORE_SEEN = 16_384
"""Core-subscription deliveries remembered to refuse a second copy."""


# Messages ------------------------------------------------------------------
class SequencePair(Protocol):
    """Where a delivered message sits (``stream``: its sequence in the stream)."""

    @property
    def stream(self) -> int: ...


class Metadata(Protocol):
    """What a stream delivery says about itself."""

    @property
    def sequence(self) -> SequencePair: ...

    @property
    def num_delivered(self) -> int: ...

    @property
    def timestamp(self) -> datetime: ...


class Message(Protocol):
    """A delivered message: from a stream's consumer (with :attr:`metadata`,
    to settle with exactly one of ack, nak or term, once: a second settlement
    may raise) or a core subscription (with :attr:`reply` to :meth:`respond` to)."""

    @property
    def subject(self) -> str: ...

    @property
    def reply(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def sid(self) -> int:
        """The subscription that received it."""
        ...

    @property
    def metadata(self) -> Metadata:
        """Its stream sequence, deliveries and storing time; raises for a core message."""
        ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...

    async def respond(self, data: bytes) -> None: ...


MessageHandler = Callable[[Message], Awaitable[None]]


class Subscription(Protocol):
    """A core subscription (or a push consumer's); :meth:`unsubscribe` ends it."""

    async def unsubscribe(self, limit: int = 0) -> None: ...


def stored_ns(msg: Message) -> int | None:
    """When the stream stored a message it delivers (ns since the epoch), or
    None (a core message)."""
    try:
        return int(msg.metadata.timestamp.timestamp() * 1e9)
    except Exception:  # a core message has no metadata: each backend says so its way
        return None


# Key-value -----------------------------------------------------------------
class KVEntry(Protocol):
    """A key's value as a bucket stores it or a watch delivers it."""

    @property
    def key(self) -> str: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def revision(self) -> int | None: ...

    @property
    def operation(self) -> str | None:
        """``None`` (or ``"PUT"``) for a value, ``"DEL"`` or ``"PURGE"`` for a deletion."""
        ...


class KVWatcher(Protocol):
    """Updates of watched keys: first every current value, then ``None`` (the
    end of what was stored), then every change as it happens."""

    async def updates(self, timeout: float = 5.0) -> KVEntry | None:
        """The next update; raises TimeoutError when none comes in time."""
        ...

    async def stop(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[KVEntry | None]: ...


class KeyValue(Protocol):
    """A key-value bucket. Keys are dot-separated tokens; a watch pattern
    may use ``*`` (one token) and ``>`` (the rest)."""

    async def get(self, key: str) -> KVEntry:
        """The key's current entry; raises NotFoundError when absent or deleted."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Write; returns the new revision."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if absent (or deleted); raises StateConflictError."""
        ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        """Write only if the key's revision is ``last``; raises StateConflictError."""
        ...

    async def delete(self, key: str, last: int | None = None) -> bool:
        """Delete (only at revision ``last`` when given: raises StateConflictError)."""
        ...

    async def keys(self) -> list[str]:
        """Every key with a value (an empty list for an empty bucket)."""
        ...

    async def watch(
        self,
        keys: str,
        *,
        ignore_deletes: bool = False,
        meta_only: bool = False,
        inactive_threshold: float | None = None,
    ) -> KVWatcher: ...

    async def watchall(self, *, inactive_threshold: float | None = None) -> KVWatcher: ...


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A KV entry's current value (see :meth:`Bus.kv_read`)."""

    value: bytes
    revision: int
    stored_ns: int | None
    """When the server stored it (ns since the epoch), if it said."""


def watched_ns(entry: Any) -> int | None:
    """When the server stored a KV entry delivered by a watch (ns since the
    epoch), if it says."""
    created = getattr(entry, "created", None)
    return int(created.timestamp() * 1e9) if isinstance(created, datetime) else None


# Consumers -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable consumer of a stream (backend-neutral)."""

    name: str
    filter_subjects: tuple[str, ...] = ()
    """Subjects (wildcards allowed) it delivers; empty: all of the stream's."""
    ack_wait_s: float = 30.0
    max_deliver: int = -1
    """Deliveries at most (then a max-deliveries advisory); -1: no limit."""
    max_ack_pending: int = -1
    """Deliveries unacknowledged at once at most; -1: no limit."""
    deliver_new: bool = False
    """Only what is stored after it is created (default: everything stored)."""


class Pulling(Protocol):
    """Continuous pulling from a durable consumer (see :meth:`Bus.puller`)."""

    what: str

    @property
    def owed(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def kick(self) -> None:
        """The owner's credit may have grown: ask for more."""
        ...

    def reset(self) -> None:
        """Forget open requests (after a reconnect) and ask again."""
        ...


class Fetching(Protocol):
    """Batches from a durable consumer on demand (see :meth:`Bus.fetcher`)."""

    async def fetch(self, batch: int, *, timeout: float) -> list[Message]:
        """Up to ``batch`` deliveries; raises TimeoutError when none came in time."""
        ...

    async def unsubscribe(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A process registering itself for discovery (see :meth:`Bus.add_service`)."""

    name: str
    version: str
    description: str
    metadata: dict[str, str] = field(default_factory=dict)


# The bus -------------------------------------------------------------------
class Bus(ABC):
    """One connection to a backend and the cluster's names.

    Subclasses implement the primitives; encoding, sealing and decoding of
    events and tasks is here, the same for every backend."""

    backend: ClassVar[str]
    """``nats``, ``memory`` or ``redis``."""

    def __init__(self, *, settings: Settings, seal: Seal | None = None) -> None:
        self.settings = settings
        self.names = settings.names
        self.seal = seal or Seal()
        """Signs and encrypts what this process publishes, verifies and decrypts
        what it reads (see :mod:`agenticflow.shared.security.seal`); a no-op when not configured."""
        self._sealing = self.seal if self.seal.active else None
        self.closed = asyncio.Event()
        self.closing = False
        self._reconnect_hooks: list[Callable[[], None]] = []
        self._core_seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        """Events taken from core subscriptions, newest last (see decode_event)."""

    # Lifecycle ------------------------------------------------------------
    @classmethod
    async def connect(cls, settings: Settings, *, name: str, role: str = "client") -> Self:
        """Connect to the backend ``settings`` select (``AGENTICFLOW_BACKEND``);
        raises TransportError when it cannot be reached, ConfigError for bad
        settings (e.g. a bad key directory).

        ``role`` is the default principal this process signs as (see
        ``Settings.principal``)."""
        seal = Seal.from_dir(
            settings.security_dir, settings.principal or role, window_s=settings.dedupe_window_s
        )
        backend = _backend_class(settings.bus_backend)
        if cls is not Bus and not issubclass(backend, cls):
            raise TransportError(f"{cls.__name__} cannot connect to a {backend.backend} backend")
        return cast(Self, await backend.open(settings, seal=seal, name=name))

    @classmethod
    @abstractmethod
    async def open(cls, settings: Settings, *, seal: Seal, name: str) -> Bus:
        """Connect this backend (see :meth:`connect`)."""

    @abstractmethod
    async def close(self) -> None:
        """Drain and close the connection (idempotent)."""

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after every reconnect (e.g. to re-send pull requests)."""
        self._reconnect_hooks.append(hook)

    def forget_reconnect(self, hook: Callable[[], None]) -> None:
        """Undo :meth:`on_reconnect` (no error if it was not registered)."""
        with contextlib.suppress(ValueError):
            self._reconnect_hooks.remove(hook)

    def _reconnected(self) -> None:
        for hook in list(self._reconnect_hooks):
            hook()

    @property
    @abstractmethod
    def max_payload(self) -> int:
        """The largest message (headers and body) the backend takes."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connection_report(self) -> dict[str, Any]:
        """The connection's state for health reports (``connected``, ``server``...)."""

    # Topology -------------------------------------------------------------
    @abstractmethod
    async def ensure_topology(self) -> None:
        """Create streams and KV buckets if missing (idempotent). Without
        ``manage_topology``, wait until the task and event streams exist."""

    @abstractmethod
    async def event_partitions(self) -> int | None:
        """The events stream's partition count (None: no stream yet)."""

    @abstractmethod
    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """The KV bucket, created if missing."""

    @abstractmethod
    async def ensure_task_consumer(self, capability: str) -> str:
        """Create the capability's shared durable consumer; returns its name."""

    @abstractmethod
    async def ensure_consumer(self, stream: str, spec: ConsumerSpec) -> None:
        """Create a durable consumer unless it exists (an existing one is kept as is)."""

    @abstractmethod
    async def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a durable consumer (no error if it is already gone)."""

    @abstractmethod
    async def open_direct(
        self, queue: str, node: str, *, deliver_subject: str, max_ack_pending: int
    ) -> str:
        """Create worker ``node``'s consumer of its direct tasks of ``queue``,
        pushing to ``deliver_subject`` (subscribe to it first); returns its
        name. It goes away once nobody listens on ``deliver_subject``."""

    @abstractmethod
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
    ) -> Pulling:
        """Hand every delivery of a durable consumer to ``on_message`` as it
        comes, asking for no more than ``credit()`` at a time; ``max_open=1``
        keeps stream order. A backend that holds requests open (NATS) renews
        each after ``expires_s``."""

    @abstractmethod
    async def fetcher(self, stream: str, spec: ConsumerSpec) -> Fetching:
        """Batches from a durable consumer (created if missing) on demand."""

    # Streams --------------------------------------------------------------
    @abstractmethod
    async def publish_raw(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bool]:
        """Store a message, retrying transient failures with the same msg-id;
        returns ``(stream_seq, duplicate)``. Raises PayloadTooLargeError,
        TransportError."""

    @abstractmethod
    async def publish_many(self, messages: Sequence[Outgoing]) -> list[tuple[int, bool]]:
        """Store ``(subject, headers, body)`` messages pipelined, in order;
        returns their ``(stream_seq, duplicate)`` once every one is stored.
        Raises PayloadTooLargeError before sending anything if one is too big."""

    @abstractmethod
    async def send_event(self, event: Event) -> Coroutine[Any, Any, tuple[int, bool]]:
        """Put an event on the wire now, so events sent one after another are
        stored in that order; returns a coroutine to await (or ``close()``)
        that ends when the event is stored."""

    @abstractmethod
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
        """Every stored message on ``subject`` from ``start_seq`` (or from
        ``start_time``) on, in stream order, at most ``limit``. With ``drain``,
        also what was stored while reading."""

    async def tail(self, stream: str, subject: str) -> AsyncGenerator[Message, None]:
        """Every message stored on ``subject``, then each new one as it is
        stored, in stream order, for as long as the caller iterates (what
        ``tail -f`` does to a file). Here: a live :meth:`follow` started
        first, then :meth:`read_stored`, joined by sequence (nothing falls
        between, nothing comes twice)."""
        live: asyncio.Queue[Message] = asyncio.Queue()

        async def arrived(msg: Message) -> None:
            live.put_nowait(msg)

        sub = await self.follow(subject, arrived)
        try:
            last = 0
            for msg in await self.read_stored(stream, subject):
                last = msg.metadata.sequence.stream
                yield msg
            while True:
                msg = await live.get()
                if msg.metadata.sequence.stream > last:
                    last = msg.metadata.sequence.stream
                    yield msg
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @abstractmethod
    async def follow(
        self, subject: str, handler: MessageHandler, *, headers_only: bool = False
    ) -> Subscription:
        """Call ``handler`` with every message stored from now on whose subject
        matches ``subject`` (a stream's or a KV bucket's, ``$KV.<bucket>.<key>``),
        in order, without acknowledgements."""

    @abstractmethod
    async def last_stored(
        self, stream: str, subject: str
    ) -> tuple[int, str, dict[str, str], bytes] | None:
        """``(seq, subject, headers, body)`` of the last message stored on
        ``subject``, or None. Raises NotFoundError (no such stream), TransportError."""

    @abstractmethod
    async def get_stored(self, stream: str, seq: int) -> tuple[str, dict[str, str]] | None:
        """``(subject, headers)`` of a stored message, or None if it is gone."""

    @abstractmethod
    async def delete_stored(self, stream: str, seq: int) -> None:
        """Delete a stored message (no error if it is already gone)."""

    @abstractmethod
    async def purge_subject(self, stream: str, subject: str) -> None:
        """Remove every message of ``subject`` from ``stream``."""

    @abstractmethod
    async def stream_holes(self, stream: str) -> tuple[int, list[int]]:
        """``(first_seq, deleted)``: where the stream starts now and the
        sequences deleted after that."""

    @abstractmethod
    async def count_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int | None = None,
        start_ns: int | None = None,
    ) -> int:
        """How many messages on ``subject`` are stored from ``start_seq`` (or
        from ``start_ns``, a time) on, without reading them."""

    @abstractmethod
    async def consumer_infos(self, stream: str) -> list[dict[str, Any]]:
        """Every consumer of ``stream``, as JetStream's API describes it
        (``name``, ``config``, ``num_pending``, ``num_ack_pending``...)."""

    @abstractmethod
    async def stream_info(self, stream: str) -> dict[str, Any]:
        """A stream's ``config`` and ``state``, as JetStream's API describes
        them; raises NotFoundError."""

    # Key-value helpers ----------------------------------------------------
    @abstractmethod
    async def kv_read(self, store: KeyValue, key: str) -> StoredValue | None:
        """The key's current value, revision and the server's time of storing
        it; None when the key is absent or deleted."""

    async def kv_put_cas(self, store: KeyValue, key: str, value: bytes, revision: int) -> int:
        """Create (revision 0) or update by revision; raises StateConflictError."""
        if revision == 0:
            return await store.create(key, value)
        return await store.update(key, value, last=revision)

    @abstractmethod
    async def kv_entries(
        self, bucket: str, *, limit: int | None = None
    ) -> list[tuple[str, bytes, int | None]]:
        """``(key, value, stored ns)`` of every key of a bucket (deleted keys left out)."""

    # Core messages --------------------------------------------------------
    @abstractmethod
    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """A core message (not stored)."""

    @abstractmethod
    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        """Call ``handler`` with every core message on ``subject`` (one member
        of ``queue`` each)."""

    @abstractmethod
    def new_inbox(self) -> str:
        """A unique subject to receive replies on."""

    @abstractmethod
    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        """A core request's answer; raises TimeoutError when nobody answers in
        time (no responders included), TransportError for the rest."""

    async def serve(
        self,
        subject: str,
        answer: Callable[[bytes], Awaitable[bytes]],
        *,
        queue: str = "",
    ) -> Callable[[], Awaitable[None]]:
        """Answer core requests on ``subject`` with ``answer(request body)`` (one
        member of ``queue`` each); returns what stops it."""

        async def on_request(msg: Message) -> None:
            try:
                reply = await answer(msg.data)
            except Exception:
                log.exception("request handler failed", subject=subject)
                return
            with contextlib.suppress(TransportError):
                await msg.respond(reply)

        sub = await self.subscribe(subject, on_request, queue=queue)
        return sub.unsubscribe

    @abstractmethod
    async def add_service(
        self,
        info: ServiceInfo,
        *,
        endpoint: str,
        handler: Callable[[], bytes],
        stats: Callable[[], dict[str, Any]],
    ) -> Callable[[], Awaitable[None]]:
        """Register this process for discovery (NATS: a micro service): answer
        requests on ``endpoint`` with ``handler()`` and discovery's STATS
        requests with ``stats()`` as the ``health`` endpoint's data; returns
        what deregisters it."""

    async def call(self, fn: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run a request to the backend, retrying transient failures (how long
        and which depends on the backend); errors come out as ours."""
        return await fn()

    # Events and tasks -----------------------------------------------------
    async def publish_event(self, event: Event) -> tuple[int, bool]:
        """Store an event; returns ``(stream_seq, duplicate)``."""
        subject, headers, body = self.encode_event(event)
        return await self.publish_raw(subject, body, headers)

    async def publish_task(self, task: TaskMessage) -> tuple[int, bool]:
        """Store a task message on its capability's queue."""
        subject, headers, body = self.encode_task(task)
        return await self.publish_raw(subject, body, headers)

    def encode_event(self, event: Event) -> Outgoing:
        """An event as a message, sealed; raises PayloadTooLargeError."""
        return encode_event(event, self.names, max_payload=self.max_payload, seal=self._sealing)

    def encode_task(self, task: TaskMessage) -> Outgoing:
        """A task as a message, sealed; raises PayloadTooLargeError."""
        return encode_task(task, self.names, max_payload=self.max_payload, seal=self._sealing)

    def decode_event(self, msg: Message, *, seq: int | None = None) -> Event:
        """An event read from a stream or a core subscription, verified and
        decrypted; raises MalformedMessageError (ForgedMessageError... for a
        message the seal refuses).

        With keys, a stored message's signing time is checked against the
        backend's time of storing it. A core message (an intervention, an
        auction call) has no stored time: it is checked against the time it
        arrived, and a copy of one this subscription already took is refused
        (ReplayedMessageError), so a captured message re-sent within the
        window is not applied twice either."""
        if self._sealing is None:
            return decode_event(msg.subject, msg.headers, msg.data, self.names, seq=seq)
        stored = stored_ns(msg)
        event = decode_event(
            msg.subject,
            msg.headers,
            msg.data,
            self.names,
            seq=seq,
            seal=self._sealing,
            stored_ns=stored if stored is not None else time.time_ns(),
        )
        if stored is None:
            self._first_delivery(msg, event.id)
        return event

    def _first_delivery(self, msg: Message, event_id: str) -> None:
        """Refuse a core message this subscription has taken already."""
        key = (msg.sid, event_id)
        if key in self._core_seen:
            raise ReplayedMessageError(
                f"message {event_id!r} on {msg.subject} was received already: a replay"
            )
        self._core_seen[key] = None
        if len(self._core_seen) > _CORE_SEEN:
            self._core_seen.popitem(last=False)

    def decode_task(self, msg: Message) -> TaskMessage:
        """A task message pulled from its queue, verified and decrypted."""
        return decode_task(
            msg.subject,
            msg.headers,
            msg.data,
            seal=self._sealing,
            stored_ns=stored_ns(msg) if self._sealing else None,
        )


Backend = Literal["nats", "memory", "redis"]


def _backend_class(backend: str) -> type[Bus]:
    # Imported here: a process loads only the client library it uses.
    if backend == "nats":
        from agenticflow.shared.bus.nats_backend import NatsBus

        return NatsBus
    if backend == "memory":
        from agenticflow.shared.bus.memory_backend import MemoryBus

        return MemoryBus
    if backend == "redis":
        try:
            from agenticflow.shared.bus.redis_backend import RedisBus
        except ImportError as exc:
            raise ConfigError(
                f"the redis backend needs redis-py ({exc}): pip install 'agenticflow[redis]'"
            ) from exc
        return RedisBus
    raise TransportError(f"the {backend!r} backend is not available (nats, memory, redis)")


__all__ = [
    "Backend",
    "Bus",
    "ConsumerSpec",
    "Fetching",
    "KVEntry",
    "KVWatcher",
    "KeyValue",
    "Message",
    "MessageHandler",
    "Metadata",
    "Outgoing",
    "Pulling",
    "SequencePair",
    "ServiceInfo",
    "StoredValue",
    "Subscription",
    "stored_ns",
    "watched_ns",
]

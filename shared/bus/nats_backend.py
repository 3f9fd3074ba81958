"""The NATS JetStream backend: with :mod:`agenticflow.shared.bus.nats_puller`,
the only modules that know nats-py.

:class:`NatsBus` owns one NATS connection and its JetStream context, creates
the topology (streams, KV buckets, task consumers) idempotently, and publishes
events and task messages with their derived ``Nats-Msg-Id`` so a retried
publish is deduplicated by the server. nats-py errors are re-raised as ours
(``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StoreCompression,
    StreamConfig,
    SubjectTransform,
)
from nats.js.kv import KeyValue as NatsKeyValue
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, ServiceConfig
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay

from agenticflow.shared.bus.base import (
    Bus,
    ConsumerSpec,
    KeyValue,
    KVEntry,
    KVWatcher,
    Message,
    MessageHandler,
    Outgoing,
    ServiceInfo,
    StoredValue,
    Subscription,
    stored_ns,
)
from agenticflow.shared.bus.emulated import (
    ANCHORS_KEPT,
    ANCHORS_MAX_MSGS,
    DIRECT_INACTIVE_S,
    DIRECT_MAX_AGE_S,
)
from agenticflow.shared.bus.nats_puller import Puller
from agenticflow.shared.errors import (
    ConnectionLostError,
    NotFoundError,
    PublishTimeoutError,
    StateConflictError,
    TransportError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.resilience import backoff_delay, backoff_wait
from agenticflow.shared.security.credentials import connect_options
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import check_size
from agenticflow.shared.wire.events import Event
from agenticflow.shared.wire.names import partitions_of_transform

log = structlog.get_logger("agenticflow.bus")

T = TypeVar("T")

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

KVConflict = nats.js.errors.KeyWrongLastSequenceError
KVNotFound = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)
FetchTimeout = (nats.errors.TimeoutError, asyncio.TimeoutError)


class _TransientError(TransportError):
    """A transient nats-py failure, wrapped: :meth:`NatsBus.call` retries it."""


_ATTEMPT_S = 2.0
"""One publish attempt's wait for the server's acknowledgement."""


_STREAM_NOT_FOUND = 10059
"""JetStream API error code of a missing stream."""
_WRONG_LAST_SEQUENCE = 10071
"""JetStream API error code of a failed expected-last-sequence check (a CAS)."""
_GONE = (10037, 10043)
"""JetStream API error codes of a message that is not there (no message, no sequence)."""
_FIRST_CONNECT_ATTEMPTS = 3
"""Attempts per server before the first connection gives up."""


def _acked(future: asyncio.Future[Any] | None) -> tuple[int, bool] | None:
    """``(stream_seq, duplicate)`` of a pipelined publish that was stored, or None
    (not sent, failed, or not answered yet: then it is abandoned)."""
    if future is None:
        return None
    if not future.done():
        future.cancel()
        return None
    if future.cancelled() or future.exception() is not None:
        return None
    ack = future.result()
    return ack.seq, bool(ack.duplicate)


def _ours(exc: nats.errors.Error, what: str) -> TransportError:
    """A nats-py error as ours."""
    if isinstance(exc, nats.errors.TimeoutError):
        return PublishTimeoutError(f"{what}: no answer from the server")
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return ConnectionLostError("the NATS connection is closed")
    if isinstance(exc, _TRANSIENT):
        return _TransientError(f"{what} failed: {exc}")
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == _WRONG_LAST_SEQUENCE:
        return StateConflictError(f"{what}: changed by another writer ({exc.description})")
    return TransportError(f"{what} failed: {exc}")


def _coroutine(handler: MessageHandler) -> Callable[[Msg], Awaitable[None]]:
    """``handler`` as the coroutine function nats-py insists on (wrapped only
    when it is another async callable: no extra frame per message otherwise)."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def on_message(msg: Msg) -> None:
        await handler(msg)

    return on_message


_TAIL_ROOM = 128
_TAIL_BYTES = 4 * 1024 * 1024
"""What one reader's pull request may bring at most: many readers on one
connection must stay under the server's slow-consumer limit (64 MiB)."""
"""Most messages a :meth:`NatsBus.tail` reader holds that it has not taken yet."""


class NatsBus(Bus):
    """One NATS connection, the JetStream context and the cluster's names."""

    backend: ClassVar[str] = "nats"

    def __init__(self, *, nc: NatsClient, settings: Settings, seal: Seal | None = None) -> None:
        super().__init__(settings=settings, seal=seal)
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self._consumers: set[str] = set()
        self._kv: dict[str, _NatsKV] = {}

    # Lifecycle ----------------------------------------------------------
    @classmethod
    async def open(cls, settings: Settings, *, seal: Seal, name: str) -> NatsBus:
        """Connect (reconnecting forever once up); raises TransportError if no
        server answers a few attempts (about 2 s, more with slow timeouts)."""
        holder: list[NatsBus] = []

        async def on_closed() -> None:
            if holder:
                holder[0].closed.set()

        errors: list[str] = []
        tls_failed = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))  # e.g. 'Authorization Violation': only told here
            del errors[:-4]
            if isinstance(exc, ssl.SSLError) and not holder:
                tls_failed.set()  # retrying cannot help (and nats-py would hang: see below)
            log.warning("nats error", error=str(exc), error_type=type(exc).__name__)

        async def on_disconnected() -> None:
            if holder and not holder[0].closing:
                log.warning("nats disconnected")

        async def on_reconnected() -> None:
            log.info("nats reconnected")
            if holder:
                holder[0]._reconnected()

        options = connect_options(settings)  # credentials, TLS, inbox prefix
        stop_on_tls = asyncio.ensure_future(tls_failed.wait())
        connecting: asyncio.Future[NatsClient] | None = None
        try:
            connecting = asyncio.ensure_future(
                nats.connect(
                    **options,
                    servers=settings.servers,
                    name=name,
                    connect_timeout=settings.connect_timeout_s,
                    # Bounded for the first connection: nats-py applies -1 to it too,
                    # and a command would wait for ever on a wrong URL.
                    max_reconnect_attempts=_FIRST_CONNECT_ATTEMPTS,
                    reconnect_time_wait=0.5,
                    drain_timeout=5,
                    allow_reconnect=True,
                    closed_cb=on_closed,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                )
            )
            await asyncio.wait({connecting, stop_on_tls}, return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                # After a failed TLS handshake nats-py waits for ever for the plain
                # stream start_tls took over to close: give up on it (finally).
                raise TransportError(f"cannot connect to NATS at {settings.bus_url}: {errors[-1]}")
            nc = connecting.result()
        except (OSError, nats.errors.Error) as exc:
            why = f"{exc} ({'; '.join(dict.fromkeys(errors))})" if errors else str(exc)
            raise TransportError(f"cannot connect to NATS at {settings.bus_url}: {why}") from exc
        finally:
            stop_on_tls.cancel()
            if connecting is not None and not connecting.done():
                connecting.cancel()
        nc.options["max_reconnect_attempts"] = -1  # once up, reconnect for ever
        bus = cls(nc=nc, settings=settings, seal=seal)
        holder.append(bus)
        return bus

    async def close(self) -> None:
        """Drain and close the connection (idempotent)."""
        if self.nc.is_closed:
            return
        self.closing = True
        try:
            await self.nc.drain()
        except (TimeoutError, nats.errors.Error):
            await self.nc.close()

    @property
    def max_payload(self) -> int:
        """The server's max_payload for this connection."""
        return int(self.nc.max_payload)

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    def connection_report(self) -> dict[str, Any]:
        nc = self.nc
        stats = dict(nc.stats)
        return {
            "backend": self.backend,
            "connected": bool(nc.is_connected),
            "reconnecting": bool(nc.is_reconnecting),
            "closed": bool(nc.is_closed),
            "server": str(nc.connected_url.netloc) if nc.connected_url else None,
            "server_id": (nc._server_info or {}).get("server_id"),
            "reconnects": int(stats.get("reconnects", 0)),
            "in_msgs": int(stats.get("in_msgs", 0)),
            "out_msgs": int(stats.get("out_msgs", 0)),
            "in_bytes": int(stats.get("in_bytes", 0)),
            "out_bytes": int(stats.get("out_bytes", 0)),
            "buffered_bytes": int(nc.pending_data_size),
            "max_payload": int(nc.max_payload),
        }

    # Topology -----------------------------------------------------------
    async def _created(self, what: str, probe: Callable[[], Awaitable[T]]) -> T:
        """``probe()`` once ``what`` exists, for a process that may not create it
        (``manage_topology`` off): waits up to ``topology_wait_s`` for the
        coordinator. Raises NotFoundError after that, TransportError when the
        lookup itself fails (refused by permissions: no answer)."""
        deadline = time.monotonic() + self.settings.topology_wait_s
        polls, told = 0, False
        while True:
            try:
                return await probe()
            except nats.js.errors.NotFoundError:
                pass
            except nats.errors.Error as exc:
                raise _ours(exc, f"look up {what} (do the credentials allow it?)") from exc
            if time.monotonic() >= deadline:
                raise NotFoundError(
                    f"{what} does not exist: a coordinator of prefix {self.names.prefix!r} "
                    "creates it; start one (or check AGENTICFLOW_PREFIX)"
                )
            if not told:
                log.info("waiting for the coordinator to create the topology", missing=what)
                told = True
            polls += 1  # polling the server: nothing announces a new stream
            await asyncio.sleep(
                backoff_delay(polls, initial_s=0.05, backoff=2.0, max_s=1.0, jitter=False)
            )

    async def _stream_exists(self, stream: str, subject: str) -> None:
        """Raise nats' NotFoundError unless ``stream`` (which stores ``subject``)
        exists. Asked by name (``STREAM.NAMES``), not ``STREAM.INFO``: permissions
        cannot filter a request's body, and an info request with a subjects
        filter lists every stored subject (the events stream's workflow ids)."""
        reply = await self.nc.request(
            "$JS.API.STREAM.NAMES", json.dumps({"subject": subject}).encode(), timeout=_ATTEMPT_S
        )
        if stream not in (json.loads(reply.data).get("streams") or ()):
            raise nats.js.errors.NotFoundError

    def _work_queue(self, name: str, subjects: str, **more: Any) -> StreamConfig:
        """A task stream: WorkQueue retention, new messages refused when full."""
        return StreamConfig(
            name=name,
            subjects=[subjects],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=self.settings.replicas,
            duplicate_window=self.settings.dedupe_window_s,
            discard=DiscardPolicy.NEW,
            max_msgs=1_000_000,
            **more,
        )

    async def ensure_topology(self) -> None:
        """Create streams and KV buckets if missing (idempotent). Without
        ``manage_topology``, wait until the task and event streams exist."""
        s, n = self.settings, self.names
        if not s.manage_topology:
            for stream, subject in (
                (n.tasks_stream, n.task_subjects),
                (n.events_stream, n.event_subjects),
            ):
                exists = functools.partial(self._stream_exists, stream, subject)
                await self._created(f"stream {stream}", exists)
            return
        await self._ensure_stream(self._work_queue(n.tasks_stream, n.task_subjects))
        await self._ensure_events_stream()
        # A direct message whose worker died unclaimed is purged when its claim
        # expires (the coordinator); max_age bounds any the purge missed.
        await self._ensure_stream(
            self._work_queue(n.direct_stream, n.direct_subjects, max_age=DIRECT_MAX_AGE_S)
        )
        await self._ensure_stream(
            StreamConfig(
                name=n.advisories_stream,
                subjects=[n.max_deliveries_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=s.replicas,
                max_age=s.events_max_age_s,
            )
        )
        # Append-only as far as the server enforces it: deny_delete and deny_purge
        # cannot be turned off again by a stream update (see agenticflow.shared.security.audit); the
        # limits are the documented retention.
        audit = functools.partial(
            StreamConfig,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            discard=DiscardPolicy.OLD,
            max_msg_size=s.audit_max_msg_size,
            allow_direct=True,  # a node reads its own chain's head: one subject, no more
            deny_delete=True,
            deny_purge=True,
        )
        await self._ensure_audit_stream(
            audit(
                name=n.audit_stream,
                subjects=[n.audit_subjects],
                duplicate_window=s.dedupe_window_s,
                max_age=s.audit_max_age_s,
                max_msgs=s.audit_max_msgs,
                max_bytes=s.audit_max_bytes,
            )
        )
        await self._ensure_audit_stream(
            audit(
                name=n.anchor_stream,
                subjects=[n.anchor_subjects],
                max_msgs_per_subject=ANCHORS_KEPT,
                max_msgs=ANCHORS_MAX_MSGS,
            )
        )
        await self.kv(n.workflows_bucket, history=1)
        await self.kv(n.workflow_index_bucket, history=1)
        await self.kv(n.agents_bucket, history=1, ttl=float(s.agent_ttl_s))
        await self.kv(n.control_bucket, history=1)
        await self.kv(n.schedules_bucket, history=1)
        await self.kv(n.schedule_state_bucket, history=1)
        await self.kv(n.definitions_bucket, history=1)
        for bucket in (n.breakers_bucket, n.ratelimits_bucket):
            await self.kv(bucket, history=1)
        await self.kv(n.tool_results_bucket, history=1, ttl=s.tool_results_ttl_s)

    async def _ensure_audit_stream(self, config: StreamConfig) -> None:
        """Create an audit stream if missing. One that exists with another
        configuration is updated only by credentials that may (an admin's: a
        coordinator's may not loosen the audit's limits); otherwise the
        difference is logged and the stream left as it is."""

        async def create() -> bool:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                return False  # exists with another configuration
            return True

        if await self.call(create, what=f"create stream {config.name}"):
            return
        try:
            await self.js.update_stream(config)
        except nats.errors.Error as exc:  # refused by permissions: no answer
            log.error(
                "the audit stream's configuration differs from the settings, and these "
                "credentials may not update it: start a coordinator once with the admin's",
                stream=config.name,
                error=str(exc) or type(exc).__name__,
            )

    async def _ensure_events_stream(self) -> None:
        s, n = self.settings, self.names
        source, destination = n.event_transform(s.partitions)
        config = StreamConfig(
            name=n.events_stream,
            subjects=[n.event_subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            duplicate_window=min(s.dedupe_window_s, s.events_max_age_s),
            max_age=s.events_max_age_s,
            max_bytes=s.events_max_bytes,
            compression=StoreCompression.S2,
            subject_transform=SubjectTransform(src=source, dest=destination),
        )
        existing = await self.event_partitions()
        if existing is not None and existing != s.partitions:
            # The partition count is fixed once events are stored: every stored
            # subject carries its partition, and every coordinator must agree
            # (a coordinator configured otherwise says so; see agenticflow.coordinator.partitions).
            config.subject_transform = SubjectTransform(
                src=source, dest=n.event_transform(existing)[1]
            )
        await self._ensure_stream(config)

    async def event_partitions(self) -> int | None:
        """The events stream's partition count (None: no stream yet, or one
        created before partitions, whose subjects carry none)."""
        try:
            info = await self.js.stream_info(self.names.events_stream)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise _ours(exc, f"read stream {self.names.events_stream}") from exc
        transform = info.config.subject_transform
        return partitions_of_transform(transform.dest or "") if transform else None

    async def _ensure_stream(self, config: StreamConfig) -> None:
        async def create() -> None:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Exists with another config (e.g. limits changed): update in place.
                await self.js.update_stream(config)

        # Retried while the cluster is busy (a replicated stream on a loaded or
        # just-formed cluster can miss one request's timeout); creating it again is
        # a no-op.
        await self.call(create, what=f"create stream {config.name}")

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> _NatsKV:
        """The KV bucket, created if missing."""
        if bucket in self._kv:
            return self._kv[bucket]
        store: NatsKeyValue
        try:
            store = await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not self.settings.manage_topology:
                store = await self._created(
                    f"KV bucket {bucket}", functools.partial(self.js.key_value, bucket)
                )
                self._kv[bucket] = _NatsKV(store)
                return self._kv[bucket]
            store = await self._call(
                self.js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket,
                        history=history,
                        ttl=ttl,
                        storage=StorageType.FILE,
                        replicas=self.settings.replicas,
                    )
                )
            )
        except nats.errors.Error as exc:  # e.g. refused by permissions: no answer
            raise _ours(exc, f"open KV bucket {bucket}") from exc
        self._kv[bucket] = _NatsKV(store)
        return self._kv[bucket]

    async def ensure_task_consumer(self, capability: str) -> str:
        """Create the capability's shared durable pull consumer; returns its name."""
        name = self.names.task_consumer(capability)
        if name in self._consumers:
            return name
        s = self.settings
        config = ConsumerConfig(
            # With a name, the create request's subject carries the name and the
            # filter, so a worker's permissions can allow exactly its consumers.
            name=name,
            durable_name=name,
            filter_subject=self.names.task_subject(capability),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=s.task_max_ack_pending,
            max_waiting=512,
        )
        await self._ensure_consumer(self.names.tasks_stream, config)
        self._consumers.add(name)
        return name

    async def open_direct(
        self, queue: str, node: str, *, deliver_subject: str, max_ack_pending: int
    ) -> str:
        """Create worker ``node``'s consumer of its direct tasks of ``queue``, pushing
        to ``deliver_subject`` (subscribe to it first); returns its name.

        It is ephemeral: the server deletes it once nobody has listened on
        ``deliver_subject`` for :data:`DIRECT_INACTIVE_S` (the worker stopped or
        died). Raises TransportError."""
        s, name = self.settings, self.names.direct_consumer(queue, node)
        config = ConsumerConfig(
            name=name,
            deliver_subject=deliver_subject,
            filter_subject=self.names.direct_subject(queue, node),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=max_ack_pending,
            inactive_threshold=DIRECT_INACTIVE_S,
        )
        try:
            await self.js.add_consumer(self.names.direct_stream, config)
        except nats.errors.Error as exc:
            raise _ours(exc, f"create consumer {name}") from exc
        return name

    async def purge_subject(self, stream: str, subject: str) -> None:
        """Remove every message of ``subject`` from ``stream``; raises TransportError."""
        await self._call(self.js.purge_stream(stream, subject=subject))

    async def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a durable consumer (no error if it is already gone)."""
        self._consumers.discard(name)
        await self._delete(self.js.delete_consumer(stream, name), what=f"consumer {name}")

    async def ensure_consumer(self, stream: str, spec: ConsumerSpec) -> None:
        """Create a durable consumer unless it exists (an existing one is kept as
        is, e.g. with the settings of an earlier version)."""
        await self._ensure_consumer(stream, _consumer_config(spec))

    async def _ensure_consumer(self, stream: str, config: ConsumerConfig) -> None:
        name = config.durable_name or ""
        try:
            await self.js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError:
            pass  # exists with a different config: keep serving it
        except nats.errors.Error as exc:
            raise TransportError(f"cannot create consumer {name}: {exc}") from exc

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
            max_batch=max_batch,
            max_open=max_open,
            expires_s=expires_s,
            heartbeat_s=expires_s / 5,
            on_end=on_end,
        )

    async def fetcher(self, stream: str, spec: ConsumerSpec) -> _Fetcher:
        config = _consumer_config(spec)
        sub = await self.call(
            lambda: self.js.pull_subscribe(
                spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else "",
                durable=spec.name,
                stream=stream,
                config=config,
            ),
            what=f"consume {stream}/{spec.name}",
        )
        return _Fetcher(sub)

    # Publishing ---------------------------------------------------------
    async def publish_raw(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bool]:
        """Publish to JetStream, retrying transient failures with the same Msg-Id."""
        check_size(headers or {}, body, self.max_payload)

        async def once() -> tuple[int, bool]:
            # Short attempts: a request on a connection that died is never failed by
            # nats-py, it just times out; the retry (same Msg-Id) goes out on the new one.
            ack = await self.js.publish(subject, body, headers=headers, timeout=_ATTEMPT_S)
            return ack.seq, bool(ack.duplicate)

        try:
            return await once()  # the common case, without building a retry loop
        except _TRANSIENT:
            pass
        except nats.errors.Error as exc:
            raise _ours(exc, f"publish to {subject}") from exc
        return await self.call(once, what=f"publish to {subject}")

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[tuple[int, bool]]:
        """Publish ``(subject, headers, body)`` messages pipelined; returns their
        ``(stream_seq, duplicate)`` in order once every one is stored.

        All go out, in order, before any acknowledgement is awaited (nats-py
        bounds the acks in flight); a message whose acknowledgement fails or
        does not come within one attempt's time is published again, with the
        same Msg-Id, by :meth:`publish_raw`, which retries transient failures.
        Raises PayloadTooLargeError before sending anything if one is too big.
        """
        for _, headers, body in messages:
            check_size(headers, body, self.max_payload)
        futures = [await self._send(message) for message in messages]
        pending = [f for f in futures if f is not None]
        if pending:
            await asyncio.wait(pending, timeout=_ATTEMPT_S)
        results: list[tuple[int, bool] | None] = []
        retries: dict[int, Awaitable[tuple[int, bool]]] = {}
        for i, future in enumerate(futures):
            ack = _acked(future)
            results.append(ack)
            if ack is None:
                subject, headers, body = messages[i]
                retries[i] = self.publish_raw(subject, body, headers)
        if retries:
            for i, outcome in zip(retries, await asyncio.gather(*retries.values()), strict=True):
                results[i] = outcome
        return [r for r in results if r is not None]

    async def send_event(self, event: Event) -> Coroutine[Any, Any, tuple[int, bool]]:
        """Put an event on the wire now, so events sent one after another are
        stored in that order; returns a coroutine to await (or ``close()``)
        that ends when the event is stored, retrying like :meth:`publish_raw`
        (a retried event may then be stored after events sent later)."""
        message = self.encode_event(event)
        return self._stored(await self._send(message), message)

    async def _send(self, message: Outgoing) -> asyncio.Future[Any] | None:
        subject, headers, body = message
        try:
            return await self.js.publish_async(subject, body, headers=headers)
        except nats.errors.Error:
            return None  # the retrying path publishes it

    async def _stored(
        self, future: asyncio.Future[Any] | None, message: Outgoing
    ) -> tuple[int, bool]:
        if future is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({future}, timeout=_ATTEMPT_S)
        ack = _acked(future)
        if ack is not None:
            return ack
        subject, headers, body = message
        return await self.publish_raw(subject, body, headers)

    async def call(self, fn: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run a JetStream request, retrying transient failures for up to 30 s with
        bounded exponential backoff; nats-py errors come out as ours."""
        try:
            async for attempt in AsyncRetrying(
                # A wrapped bucket's transient failures too (see _ours): a KV put
                # through call() is retried as the raw nats-py call was.
                retry=retry_if_exception_type((*_TRANSIENT, _TransientError, PublishTimeoutError)),
                wait=backoff_wait(initial_s=0.1, backoff=2.0, max_s=2.0, jitter=False),
                stop=stop_after_delay(30),
                reraise=True,
            ):
                with attempt:
                    return await fn()
        except nats.errors.Error as exc:
            raise _ours(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

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
        ``start_time``) on, in stream order, at most ``limit`` (an ephemeral
        consumer, deleted afterwards). With ``drain``, also what was stored
        while reading (until the consumer has nothing pending): a KV value
        re-written during the read then comes twice, and none is missed."""
        policy = DeliverPolicy.ALL
        if start_time is not None:
            policy = DeliverPolicy.BY_START_TIME
        elif start_seq > 1:
            policy = DeliverPolicy.BY_START_SEQUENCE
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=policy,
            opt_start_seq=start_seq if policy == DeliverPolicy.BY_START_SEQUENCE else None,
            opt_start_time=start_time.astimezone(UTC) if start_time else None,
            inactive_threshold=5,
            mem_storage=True,
        )
        sub: Any = await self.call(
            lambda: self.js.pull_subscribe(subject, stream=stream, config=config),
            what=f"read {subject}",
        )
        try:
            info: Any = await self.call(sub.consumer_info, what=f"read {subject}")
            total = int(info.num_pending or 0)
            total = min(total, limit) if limit is not None else total
            out: list[Message] = []
            while True:
                while len(out) < total:
                    try:
                        out.extend(await sub.fetch(min(500, total - len(out)), timeout=5))
                    except FetchTimeout:
                        break
                if not drain or (limit is not None and len(out) >= limit):
                    return out
                info = await self.call(sub.consumer_info, what=f"read {subject}")
                more = int(info.num_pending or 0)
                if more == 0 or len(out) < total:
                    return out
                total = len(out) + more if limit is None else min(len(out) + more, limit)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def tail(self, stream: str, subject: str) -> AsyncGenerator[Message, None]:
        """A consumer of our own, named (so a client's credentials allow it: an
        unnamed create could name the coordinators' durable consumers), from
        the stream's start, read by a :class:`Puller` that keeps a request open
        and asks for no more than the reader has room for (a slow reader holds
        at most :data:`_TAIL_ROOM` messages; the server keeps the rest)."""
        from agenticflow.shared.bus.nats_puller import Puller

        name = f"tail_{os.urandom(6).hex()}"
        config = ConsumerConfig(
            name=name,
            filter_subject=subject,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30,
            mem_storage=True,
        )
        await self.call(lambda: self.js.add_consumer(stream, config=config), what=f"tail {subject}")
        queue: asyncio.Queue[Message] = asyncio.Queue()
        puller = Puller(
            self,
            stream=stream,
            consumer=name,
            on_message=queue.put_nowait,
            credit=lambda: _TAIL_ROOM - queue.qsize(),
            max_batch=_TAIL_ROOM // 2,
            max_bytes=_TAIL_BYTES,
            max_open=1,  # one request at a time: in stream order
        )
        await puller.start()
        last = 0
        try:
            while True:
                msg = await queue.get()
                puller.kick()
                delivered = _consumer_seq(msg)
                if delivered is not None:
                    if last and delivered != last + 1:
                        # Delivered and never received (a dropped connection, a
                        # slow-consumer cut): say so rather than skip them.
                        raise TransportError(
                            f"reading {subject}: {delivered - last - 1} message(s) were lost "
                            "in transit; read again from the last one received"
                        )
                    last = delivered
                yield msg
        finally:
            await puller.stop()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(stream, name)

    async def follow(
        self, subject: str, handler: MessageHandler, *, headers_only: bool = False
    ) -> Subscription:
        sub: Subscription = await self.call(
            lambda: self.js.subscribe(
                subject,
                cb=_coroutine(handler),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                headers_only=headers_only,
                inactive_threshold=5.0,
            ),
            what=f"follow {subject}",
        )
        return sub

    async def count_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int | None = None,
        start_ns: int | None = None,
    ) -> int:
        """An ephemeral consumer is created for its ``num_pending`` and deleted."""
        name = f"count_{os.urandom(6).hex()}"
        config: dict[str, Any] = {
            "name": name,
            "filter_subject": subject,
            "ack_policy": "none",
            "inactive_threshold": 5_000_000_000,
            "mem_storage": True,
            "num_replicas": 1,
        }
        if start_seq is not None:
            config |= {"deliver_policy": "by_start_sequence", "opt_start_seq": start_seq}
        else:
            start = datetime.fromtimestamp((start_ns or 0) / 1e9, tz=UTC).isoformat()
            config |= {"deliver_policy": "by_start_time", "opt_start_time": start}
        request = {"stream_name": stream, "config": config}
        info = await self.api(f"CONSUMER.CREATE.{stream}.{name}", request)
        try:
            return int(info.get("num_pending") or 0)
        finally:
            # If this fails, it goes by itself after its inactive threshold.
            with contextlib.suppress(TransportError, NotFoundError):
                await self.api(f"CONSUMER.DELETE.{stream}.{name}")

    async def stream_info(self, stream: str) -> dict[str, Any]:
        return await self.api(f"STREAM.INFO.{stream}")

    async def api(self, subject: str, request: Any = None) -> dict[str, Any]:
        """A JetStream API request (``$JS.API.<subject>``), its JSON answer;
        raises NotFoundError for a missing stream, TransportError for any other
        error. For what nats-py does not expose (paging, deleted details...)."""

        async def ask() -> Any:
            body = json.dumps(request).encode() if request is not None else b""
            reply = await self.nc.request(f"$JS.API.{subject}", body, timeout=_ATTEMPT_S)
            return json.loads(reply.data)

        answer: dict[str, Any] = await self.call(ask, what=subject)
        error = answer.get("error")
        if error:
            if error.get("err_code") == _STREAM_NOT_FOUND:
                raise NotFoundError(
                    f"{subject}: stream not found; is {self.names.prefix!r} the prefix of a "
                    "deployment that has run (AGENTICFLOW_PREFIX / --prefix)?"
                )
            raise TransportError(f"{subject}: {error.get('description', error)}")
        return answer

    async def kv_entries(
        self, bucket: str, *, limit: int | None = None
    ) -> list[tuple[str, bytes, int | None]]:
        """``(key, value, stored ns)`` of every key of a KV bucket kept with
        history 1 (deleted keys left out), read through one consumer rather than
        one request per key."""
        prefix = f"$KV.{bucket}."
        msgs = await self.read_stored(f"KV_{bucket}", f"{prefix}>", limit=limit, drain=True)
        # A key written again during the read is delivered twice (its old value
        # first): the later one wins; a deletion marker drops the key.
        latest: dict[str, tuple[str, bytes, int | None]] = {}
        for msg in msgs:
            key = msg.subject.removeprefix(prefix)
            latest.pop(key, None)
            if msg.data and (msg.headers or {}).get("KV-Operation") not in ("DEL", "PURGE"):
                latest[key] = (key, msg.data, stored_ns(msg))
        return list(latest.values())

    async def consumer_infos(self, stream: str) -> list[dict[str, Any]]:
        """Every consumer of ``stream``, as the API describes it (all pages)."""
        out: list[dict[str, Any]] = []
        while True:
            page = await self.api(f"CONSUMER.LIST.{stream}", {"offset": len(out)})
            items = page.get("consumers") or []
            out.extend(items)
            if not items or len(out) >= int(page.get("total") or 0):
                return out

    async def stream_holes(self, stream: str) -> tuple[int, list[int]]:
        """``(first_seq, deleted)``: where the stream starts now (older messages
        expired or were purged) and the sequences deleted after that."""
        info = await self.api(f"STREAM.INFO.{stream}", {"deleted_details": True})
        state = info.get("state", {})
        return int(state.get("first_seq", 0)), sorted(int(s) for s in state.get("deleted") or ())

    async def last_stored(
        self, stream: str, subject: str
    ) -> tuple[int, str, dict[str, str], bytes] | None:
        """``(seq, subject, headers, body)`` of the last message stored on
        ``subject``, or None. Raises NotFoundError (no such stream), TransportError."""
        msg = await self._last_msg(stream, subject)
        if msg is None:
            return None
        headers = {k: v for k, v in (msg.headers or {}).items() if isinstance(v, str)}
        return int(msg.seq or 0), str(msg.subject or subject), headers, bytes(msg.data or b"")

    async def _last_msg(self, stream: str, subject: str, *, direct: bool = True) -> Any:
        """The last message stored on ``subject`` (a direct get, which a
        permission can pin to the subject; a request to the stream's leader for
        a stream that allows none, or with ``direct=False`` when the stream is
        known to allow none: no wasted round trip), or None. Raises
        NotFoundError (no such stream), TransportError."""

        async def get() -> Any:
            try:
                if not direct:
                    return await self.js.get_msg(stream, subject=subject)
                try:
                    return await self.js.get_msg(stream, subject=subject, direct=True)
                except nats.errors.NoRespondersError:  # a stream without allow_direct
                    return await self.js.get_msg(stream, subject=subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == _STREAM_NOT_FOUND:
                    raise NotFoundError(f"stream {stream} does not exist") from exc
                return None

        return await self.call(get, what=f"read the last message on {subject}")

    async def get_stored(self, stream: str, seq: int) -> tuple[str, dict[str, str]] | None:
        """``(subject, headers)`` of a stored message, or None if it is gone."""
        try:
            stored = await self.js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {stream} #{seq}: {exc}") from exc
        return stored.subject or "", dict(stored.headers or {})

    async def delete_stored(self, stream: str, seq: int) -> None:
        """Delete a stored message (no error if it is already gone)."""
        await self._delete(self.js.delete_msg(stream, seq), what=f"{stream} #{seq}")

    @staticmethod
    async def _delete(deletion: Awaitable[Any], *, what: str) -> None:
        try:
            await deletion
        except nats.js.errors.NotFoundError:
            return
        except nats.js.errors.APIError as exc:
            if exc.err_code in _GONE:
                return
            raise TransportError(f"cannot delete {what}: {exc}") from exc
        except nats.errors.Error as exc:
            raise TransportError(f"cannot delete {what}: {exc}") from exc

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        check_size(headers or {}, data, self.max_payload)
        await self._call(self.nc.publish(subject, data, reply=reply, headers=headers))

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        sub: Subscription = await self._call(
            self.nc.subscribe(subject, queue=queue, cb=_coroutine(handler))
        )
        return sub

    def new_inbox(self) -> str:
        return str(self.nc.new_inbox())

    async def add_service(
        self,
        info: ServiceInfo,
        *,
        endpoint: str,
        handler: Callable[[], bytes],
        stats: Callable[[], dict[str, Any]],
    ) -> Callable[[], Awaitable[None]]:
        """A NATS micro service, so ``nats micro ls|info|stats`` list the process."""

        def on_stats(_endpoint: EndpointStats) -> dict[str, Any]:
            return stats()

        async def on_request(request: Request) -> None:
            await request.respond(handler())

        micro = await add_service(
            self.nc,
            ServiceConfig(
                name=info.name,
                version=info.version,
                description=info.description,
                metadata=info.metadata,
                stats_handler=on_stats,
            ),
        )
        await micro.add_endpoint(name="health", subject=endpoint, handler=on_request)

        async def stop() -> None:
            if not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await micro.stop()

        return stop

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        """A core request's answer; raises TimeoutError when nobody answers in
        time (no responders included), TransportError for the rest."""
        try:
            reply = await self.nc.request(subject, data, timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise TimeoutError(f"no answer on {subject} within {timeout:g}s") from None
        except nats.errors.Error as exc:
            raise _ours(exc, f"request on {subject}") from exc
        return bytes(reply.data)

    # KV helpers ---------------------------------------------------------
    async def kv_read(self, store: KeyValue, key: str) -> StoredValue | None:
        """The key's current value, revision and the server's time of storing it
        (what :meth:`Seal.open_record` checks a record's signing time against);
        None when the key is absent or deleted."""
        if not isinstance(store, _NatsKV):
            raise TypeError("not a bucket of this bus")
        inner = store.inner
        subject = f"{inner._pre}{key}"  # nats-py keeps the stream and prefix private
        msg = await self._last_msg(inner._stream, subject, direct=inner._direct)
        if msg is None or msg.subject != subject:
            return None
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        stored = int(msg.time.timestamp() * 1e9) if msg.time is not None else None
        return StoredValue(msg.data or b"", int(msg.seq or 0), stored)

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except nats.errors.Error as exc:
            raise TransportError(str(exc) or type(exc).__name__) from exc


def _consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    filters: dict[str, Any] = {}
    if len(spec.filter_subjects) == 1:
        filters["filter_subject"] = spec.filter_subjects[0]
    elif spec.filter_subjects:
        filters["filter_subjects"] = list(spec.filter_subjects)
    return ConsumerConfig(
        durable_name=spec.name,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW if spec.deliver_new else DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        **filters,
    )


class _Fetcher:
    """A pull subscription's batches (see :meth:`NatsBus.fetcher`)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def fetch(self, batch: int, *, timeout: float) -> list[Message]:
        try:
            msgs: list[Message] = await self._sub.fetch(batch, timeout=timeout)
        except FetchTimeout:
            raise TimeoutError(f"no message within {timeout:g}s") from None
        except nats.errors.Error as exc:
            raise _ours(exc, "fetch") from exc
        return msgs

    async def unsubscribe(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class _NatsKV:
    """A JetStream KV bucket with our errors (the :class:`KeyValue` protocol)."""

    def __init__(self, inner: NatsKeyValue) -> None:
        self.inner = inner

    async def get(self, key: str) -> KVEntry:
        try:
            entry: KVEntry = await self.inner.get(key)
        except KVNotFound as exc:
            raise NotFoundError(f"no key {key!r}") from exc
        except nats.errors.Error as exc:
            raise _ours(exc, f"read {key}") from exc
        return entry

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await self.inner.put(key, value))
        except nats.errors.Error as exc:
            raise _ours(exc, f"write {key}") from exc

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self.inner.create(key, value))
        except KVConflict as exc:
            raise StateConflictError(f"{key} exists already") from exc
        except nats.errors.Error as exc:
            raise _ours(exc, f"create {key}") from exc

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        try:
            return int(await self.inner.update(key, value, last=last))
        except KVConflict as exc:
            raise StateConflictError(f"{key} was changed by another writer") from exc
        except nats.errors.Error as exc:
            raise _ours(exc, f"write {key}") from exc

    async def delete(self, key: str, last: int | None = None) -> bool:
        try:
            return bool(await self.inner.delete(key, last=last))
        except KVConflict as exc:
            raise StateConflictError(f"{key} was changed by another writer") from exc
        except nats.errors.Error as exc:
            raise _ours(exc, f"delete {key}") from exc

    async def keys(self) -> list[str]:
        try:
            return list(await self.inner.keys())
        except nats.js.errors.NoKeysError:
            return []
        except nats.errors.Error as exc:
            raise _ours(exc, "list keys") from exc

    async def watch(
        self,
        keys: str,
        *,
        ignore_deletes: bool = False,
        meta_only: bool = False,
        inactive_threshold: float | None = None,
    ) -> KVWatcher:
        try:
            watcher: KVWatcher = await self.inner.watch(
                keys,
                ignore_deletes=ignore_deletes,
                meta_only=meta_only,
                inactive_threshold=inactive_threshold,
            )
        except nats.errors.Error as exc:
            raise _ours(exc, f"watch {keys}") from exc
        return watcher

    async def watchall(self, *, inactive_threshold: float | None = None) -> KVWatcher:
        return await self.watch(">", inactive_threshold=inactive_threshold)


def _consumer_seq(msg: Message) -> int | None:
    """The consumer's delivery sequence of a JetStream message (None: not one)."""
    try:
        return int(msg.metadata.sequence.consumer)  # type: ignore[attr-defined]
    except Exception:  # (not a JetStream delivery)
        return None


__all__ = ["FetchTimeout", "KVConflict", "KVNotFound", "NatsBus"]

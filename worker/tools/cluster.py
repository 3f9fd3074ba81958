"""Breakers, rate limits and cached results in KV: shared by every worker.

One :class:`ClusterToolState` per connection (:func:`cluster_state`). Breaker
records are followed with a KV watch, so a call through a closed breaker costs
no round trip, and a circuit opened by one worker stops calls on every other
worker as soon as the update arrives (a few ms; a call admitted in between
counts as usual). Every change is a compare-and-set on the entry's revision,
retried on conflict. Rate-limit windows and cached results are read and
written per call.

Buckets (see :class:`agenticflow.shared.wire.names.Names`): ``<prefix>_breakers``,
``<prefix>_ratelimits`` and ``<prefix>_tool_results`` (entries expire after
``tool_results_ttl_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

import structlog

from agenticflow.shared.bus.base import Bus, KeyValue, watched_ns
from agenticflow.shared.errors import MalformedMessageError
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.worker.tools.breaker import BreakerRecord
from agenticflow.worker.tools.state import BREAKERS, RESULTS, WINDOWS, ToolState

log = structlog.get_logger("agenticflow.tools")

_INITIAL_SYNC_S = 5.0
_WRITERS = ("worker",)
"""The role whose signature tool-state records must carry when keys are configured."""


class ClusterToolState(ToolState):
    """Tool state in the cluster's KV buckets (see the module docstring)."""

    def __init__(self, *, bus: Bus, worker: str = "") -> None:
        super().__init__(worker=worker)
        self.bus = bus
        names = bus.names
        self._buckets = {
            BREAKERS: names.breakers_bucket,
            WINDOWS: names.ratelimits_bucket,
            RESULTS: names.tool_results_bucket,
        }
        self._view: dict[str, tuple[BreakerRecord, int]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._synced: asyncio.Lock | None = None
        self._stopping = False

    async def _store(self, space: str) -> KeyValue:
        bucket = self._buckets[space]
        if space == RESULTS:
            return await self.bus.kv(bucket, ttl=self.bus.settings.tool_results_ttl_s)
        return await self.bus.kv(bucket)

    async def _get(self, space: str, key: str) -> tuple[Any, int]:
        stored = await self.bus.kv_read(await self._store(space), key)
        if stored is None:
            return None, 0
        return self._open(space, key, stored.value, stored.stored_ns), stored.revision

    def _open(self, space: str, key: str, blob: bytes | None, stored_ns: int | None) -> Any:
        """The record's data; None for an empty, malformed or refused value (a
        refused one is logged, and is overwritten by the next compare-and-set)."""
        if not blob:
            return None
        return open_record(self.bus, self._buckets[space], key, blob, stored_ns=stored_ns)

    def _seal(self, space: str, key: str, value: dict[str, Any]) -> bytes:
        return self.bus.seal.seal_record(self._buckets[space], key, pack(value))

    async def _cas(self, space: str, key: str, value: dict[str, Any], revision: int) -> int:
        body = self._seal(space, key, value)
        return await self.bus.kv_put_cas(await self._store(space), key, body, revision)

    async def _put(self, space: str, key: str, value: dict[str, Any]) -> None:
        store = await self._store(space)
        body = self._seal(space, key, value)
        await self.bus.call(lambda: store.put(key, body), what=f"write {key}")

    # The watched view of breakers ----------------------------------------
    async def _breaker_view(self, key: str) -> tuple[BreakerRecord, int]:
        if self._watch is None:
            await self._start_watch()
        return self._view.get(key, (BreakerRecord(), 0))

    def _saw_breaker(self, key: str, record: BreakerRecord, revision: int) -> None:
        known = self._view.get(key)
        if known is None or known[1] <= revision:
            self._view[key] = (record, revision)

    async def _start_watch(self) -> None:
        if self._synced is None:
            self._synced = asyncio.Lock()
        async with self._synced:
            if self._watch is not None:
                return
            store = await self._store(BREAKERS)
            watcher = await self.bus.call(
                lambda: store.watchall(inactive_threshold=30.0), what="watch breakers"
            )
            # Take the current records before the first call is admitted.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_INITIAL_SYNC_S):
                    while (entry := await watcher.updates(timeout=_INITIAL_SYNC_S)) is not None:
                        self._apply(entry)
            self._watch = asyncio.create_task(self._follow(watcher), name="breaker-watch")

    def _apply(self, entry: Any) -> None:
        revision = int(entry.revision or 0)
        if entry.operation in ("DEL", "PURGE") or entry.value is None:
            self._view[entry.key] = (BreakerRecord(), revision)
            return
        data = self._open(BREAKERS, entry.key, entry.value, watched_ns(entry))
        self._saw_breaker(entry.key, BreakerRecord.from_dict(data), revision)

    async def _follow(self, watcher: Any) -> None:
        try:
            # A flag as well as cancel(): on Python 3.11, wait_for() inside
            # updates() can swallow a cancellation that meets a ready update.
            while not self._stopping and not self.bus.closed.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)
                except TimeoutError:
                    continue
                if entry is None:
                    continue
                if not hasattr(entry, "operation"):  # the watcher was stopped
                    return
                self._apply(entry)
        except Exception as exc:  # the view goes stale; CAS conflicts still correct it
            log.warning("breaker watch ended", error=str(exc), error_type=type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def aclose(self) -> None:
        """Stop following breaker changes (idempotent)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None


_states: weakref.WeakKeyDictionary[Bus, ClusterToolState] = weakref.WeakKeyDictionary()
# One state per connection, created on a worker's first tool call: the worker
# runtime builds a ToolBox per task and has no other place to keep it. It goes
# with the connection.


def cluster_state(bus: Bus, *, worker: str = "") -> ClusterToolState:
    """The connection's shared :class:`ClusterToolState` (created on first use)."""
    state = _states.get(bus)
    if state is None:
        state = _states[bus] = ClusterToolState(bus=bus, worker=worker)
    return state


def breaker_states(bus: Bus) -> dict[str, str]:
    """The state of every breaker this connection follows (none before its
    first tool call), by breaker key."""
    state = _states.get(bus)
    if state is None:
        return {}
    return {key: record.state for key, (record, _) in sorted(state._view.items())}


async def read_states(bus: Bus) -> list[dict[str, Any]]:
    """Every breaker and rate-limit record in the cluster, as plain dicts with
    ``role`` (``breaker`` or ``rate_limit``), ``key`` and the record's fields."""
    out: list[dict[str, Any]] = []
    for role, bucket in (
        ("breaker", bus.names.breakers_bucket),
        ("rate_limit", bus.names.ratelimits_bucket),
    ):
        store = await bus.kv(bucket)
        keys = await store.keys()
        for key in sorted(keys):
            stored = await bus.kv_read(store, key)
            if stored is None or not stored.value:
                continue
            value = open_record(bus, bucket, key, stored.value, stored_ns=stored.stored_ns)
            if isinstance(value, dict):
                out.append({**value, "role": role, "key": key, "capabilities": []})
    return out


def open_record(bus: Bus, bucket: str, key: str, blob: bytes, *, stored_ns: int | None) -> Any:
    """The data of a tool-state record (written by a worker, see
    :meth:`agenticflow.shared.security.seal.Seal.open_record`), or None when it is malformed or
    refused: unsigned, signed by a non-worker or an unknown key, moved from
    another key, or an old value put back. A refusal is logged."""
    try:
        plain, _ = bus.seal.open_record(bucket, key, blob, roles=_WRITERS, stored_ns=stored_ns)
        return unpack(plain)
    except MalformedMessageError as exc:
        log.warning(
            "tool state record refused",
            bucket=bucket,
            key=key,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        return None


__all__ = ["ClusterToolState", "cluster_state", "read_states"]

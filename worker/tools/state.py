"""Where breakers, rate limits and cached results live, behind one interface.

:class:`ToolState` holds the logic (admit a call through the breaker, settle
it, take a rate-limit slot, cache a result) over a small key-value interface
with compare-and-set; :class:`MemoryToolState` keeps the data in this process
(tests, a ``ToolBox`` without a bus) and
:class:`agenticflow.worker.tools.cluster.ClusterToolState` in KV buckets shared by every
worker, which is what makes breakers and rate limits cluster-wide.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from agenticflow.shared.errors import RateLimitedError, StateConflictError
from agenticflow.shared.resilience import CircuitOpenError, Outcome
from agenticflow.worker.tools.breaker import CLOSED, BreakerRecord, admit, settle
from agenticflow.worker.tools.ratelimit import RateRecord, take
from agenticflow.worker.tools.spec import BreakerPolicy, RateLimit

log = structlog.get_logger("agenticflow.tools")

BREAKERS, WINDOWS, RESULTS = "breakers", "ratelimits", "results"
"""The three key spaces (KV buckets in a cluster)."""

_CAS_TRIES = 16
"""Compare-and-set attempts before a breaker update gives up (it is logged)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """One call admitted by a breaker."""

    key: str
    policy: BreakerPolicy | None
    trial: bool = False


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A tool's result kept under its call's idempotency key."""

    tool: str
    params_hash: str
    result: Any
    at: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the KV value."""
        return {"tool": self.tool, "params_hash": self.params_hash, "result": self.result}


def cache_key(idempotency_key: str) -> str:
    """A KV-safe key for an idempotency key (which may hold any character)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


class ToolState:
    """Breakers, rate limits and the result cache over a store with compare-and-set."""

    def __init__(
        self,
        *,
        worker: str = "",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.worker = worker
        self._clock = clock
        self._sleep = sleep
        self._limits: dict[str, tuple[RateRecord, int]] = {}
        """Last record written per rate limit: the revision to try first."""

    # The store (overridden) ----------------------------------------------
    async def _get(self, space: str, key: str) -> tuple[Any, int]:
        """``(value, revision)``; ``(None, 0)`` when absent."""
        raise NotImplementedError

    async def _cas(self, space: str, key: str, value: dict[str, Any], revision: int) -> int:
        """Write if the entry is still at ``revision`` (0: absent); raises StateConflictError."""
        raise NotImplementedError

    async def _put(self, space: str, key: str, value: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _breaker_view(self, key: str) -> tuple[BreakerRecord, int]:
        """The breaker as this process last saw it (no round trip if it can)."""
        value, revision = await self._get(BREAKERS, key)
        return BreakerRecord.from_dict(value), revision

    def _saw_breaker(self, key: str, record: BreakerRecord, revision: int) -> None:
        """A breaker write of ours succeeded (a watched view takes it at once)."""

    # Circuit breakers ---------------------------------------------------
    async def admit(self, key: str, policy: BreakerPolicy | None, *, trial_s: float) -> Ticket:
        """Admit a call to ``key``; raises CircuitOpenError (with ``retry_after_s``)."""
        if policy is None:
            return Ticket(key, None)
        record, revision = await self._breaker_view(key)
        if record.state == CLOSED:
            return Ticket(key, policy)
        for _ in range(_CAS_TRIES):
            now = self._clock()
            decision = admit(record, now, policy, trial_s=trial_s)
            if not decision.allowed:
                raise CircuitOpenError(key, retry_after_s=decision.retry_after_s)
            if decision.record is None:
                return Ticket(key, policy)
            taken = replace(decision.record, changed_at=now, by=self.worker)
            try:
                revision = await self._cas(BREAKERS, key, taken.to_dict(), revision)
            except StateConflictError:
                record, revision = await self._fresh_breaker(key)
                continue
            self._saw_breaker(key, taken, revision)
            log.info("circuit half-open: trial call", circuit=key, worker=self.worker)
            return Ticket(key, policy, trial=True)
        raise CircuitOpenError(key, retry_after_s=1.0)  # too contended: back off

    async def settle(self, ticket: Ticket, outcome: Outcome, error: str | None = None) -> None:
        """Record how an admitted call ended: ``ok``, ``failure`` or ``neutral``."""
        if ticket.policy is None:
            return
        record, revision = await self._breaker_view(ticket.key)
        for _ in range(_CAS_TRIES):
            now = self._clock()
            new = settle(
                record, now, ticket.policy, trial=ticket.trial, outcome=outcome, error=error
            )
            if new is None:
                return
            new = replace(new, by=self.worker)
            try:
                revision = await self._cas(BREAKERS, ticket.key, new.to_dict(), revision)
            except StateConflictError:
                record, revision = await self._fresh_breaker(ticket.key)
                continue
            self._saw_breaker(ticket.key, new, revision)
            if new.state != record.state:
                log.warning(
                    "circuit state changed",
                    circuit=ticket.key,
                    previous=record.state,
                    state=new.state,
                    failures=new.failures,
                    error=error,
                )
            return
        log.warning("circuit update lost to other writers", circuit=ticket.key, outcome=outcome)

    async def _fresh_breaker(self, key: str) -> tuple[BreakerRecord, int]:
        value, revision = await self._get(BREAKERS, key)
        record = BreakerRecord.from_dict(value)
        self._saw_breaker(key, record, revision)
        return record, revision

    async def breaker(self, key: str) -> BreakerRecord:
        """The breaker's current record, read from the store."""
        return (await self._fresh_breaker(key))[0]

    # Rate limits --------------------------------------------------------
    async def acquire(self, key: str, limit: RateLimit, *, max_wait_s: float) -> None:
        """Take a slot of ``key``'s rate limit (GCRA, :mod:`agenticflow.worker.tools.ratelimit`),
        waiting up to ``max_wait_s`` for one; raises RateLimitedError (with
        ``retry_after_s``). One compare-and-set per admitted call; a conflict
        (another worker admitted a call meanwhile) re-reads and decides again."""
        deadline = self._clock() + max_wait_s
        known = self._limits.get(key)
        if known is None:
            record, revision = await self._rate_record(key)
        else:
            record, revision = known
        while True:
            new, wait = take(record, self._clock(), limit)
            if new is not None:
                new = replace(new, by=self.worker)
                try:
                    revision = await self._cas(WINDOWS, key, new.to_dict(), revision)
                except StateConflictError:
                    record, revision = await self._rate_record(key)
                    continue
                self._limits[key] = (new, revision)
                return
            if self._clock() + wait > deadline:
                raise RateLimitedError(
                    f"rate limit {key!r} ({limit}) has no free slot within {max_wait_s:g}s",
                    tool=key,
                    retry_after_s=wait,
                )
            # Waiters of several workers wake together: spread them over a few ms.
            await self._sleep(wait + random.uniform(0, 0.005))  # noqa: S311 - not secrecy
            record, revision = await self._rate_record(key)

    async def _rate_record(self, key: str) -> tuple[RateRecord, int]:
        value, revision = await self._get(WINDOWS, key)
        return RateRecord.from_dict(value), revision

    # Result cache -------------------------------------------------------
    async def cached(self, idempotency_key: str) -> CachedResult | None:
        """The result stored under ``idempotency_key``, if any."""
        value, _ = await self._get(RESULTS, cache_key(idempotency_key))
        if not isinstance(value, dict) or "result" not in value:
            return None
        return CachedResult(
            tool=str(value.get("tool", "")),
            params_hash=str(value.get("params_hash", "")),
            result=value["result"],
            at=float(value.get("at", 0.0)),
        )

    async def remember(self, idempotency_key: str, entry: CachedResult) -> None:
        """Store a result under ``idempotency_key`` (expires with the store's TTL)."""
        data = {**entry.to_dict(), "at": entry.at, "worker": self.worker}
        await self._put(RESULTS, cache_key(idempotency_key), data)


class MemoryToolState(ToolState):
    """Everything in this process: for tests, benchmarks and a ToolBox without a bus."""

    def __init__(
        self,
        *,
        worker: str = "",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(worker=worker, clock=clock, sleep=sleep)
        self.data: dict[str, dict[str, tuple[Any, int]]] = {
            BREAKERS: {},
            WINDOWS: {},
            RESULTS: {},
        }

    async def _get(self, space: str, key: str) -> tuple[Any, int]:
        return self.data[space].get(key, (None, 0))

    async def _cas(self, space: str, key: str, value: dict[str, Any], revision: int) -> int:
        current = self.data[space].get(key, (None, 0))[1]
        if current != revision:
            raise StateConflictError(f"{key} was changed by another writer")
        self.data[space][key] = (value, current + 1)
        return current + 1

    async def _put(self, space: str, key: str, value: dict[str, Any]) -> None:
        current = self.data[space].get(key, (None, 0))[1]
        self.data[space][key] = (value, current + 1)


__all__ = [
    "BREAKERS",
    "RESULTS",
    "WINDOWS",
    "CachedResult",
    "MemoryToolState",
    "Ticket",
    "ToolState",
    "cache_key",
]

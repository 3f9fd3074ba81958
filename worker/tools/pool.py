"""A bounded pool of resources a tool holds (HTTP clients, database connections).

::

    pool = Pool("db", factory=open_connection, close=close_connection, limit=4)
    async with pool.acquire() as conn:
        ...

At most ``limit`` resources exist at a time; a caller that finds none idle
and the limit reached waits for one to come back. A resource whose user raised
is closed rather than reused (it may be broken). :meth:`Pool.metrics` reports
what the pool holds and how long callers waited; :func:`live_pools` lists
the pools of the process (for its health report).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from agenticflow.shared.errors import ConfigError

R = TypeVar("R")

_live: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()


def live_pools() -> list[Pool[Any]]:
    """The pools of this process that are still referenced, by name."""
    return sorted(_live, key=lambda pool: pool.name)


class Pool(Generic[R]):
    """At most ``limit`` resources made by ``factory``, reused between callers."""

    def __init__(
        self,
        name: str,
        *,
        factory: Callable[[], Awaitable[R]] | Callable[[], R],
        close: Callable[[R], Awaitable[None]] | Callable[[R], None] | None = None,
        limit: int = 4,
    ) -> None:
        """Raises ConfigError if ``limit`` is below 1."""
        if limit < 1:
            raise ConfigError(f"pool {name!r}: limit must be at least 1")
        self.name = name
        self.limit = limit
        self._factory = factory
        self._close = close
        self._idle: list[R] = []
        self._in_use = 0
        self._changed: asyncio.Condition | None = None
        self._closed = False
        self.created = 0
        self.discarded = 0
        self.acquired = 0
        self.waits = 0
        self.wait_s = 0.0
        self.max_wait_s = 0.0
        _live.add(self)

    def _condition(self) -> asyncio.Condition:
        # Made on first use, inside the event loop that uses the pool.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[R]:
        """Hold one resource for the ``async with`` block; raises ConfigError once closed."""
        resource = await self._take()
        failed = False
        try:
            yield resource
        except BaseException:
            failed = True
            raise
        finally:
            await self._give_back(resource, discard=failed)

    async def _take(self) -> R:
        changed = self._condition()
        async with changed:
            if self._closed:
                raise ConfigError(f"pool {self.name!r} is closed")
            if not self._idle and self._in_use >= self.limit:
                self.waits += 1
                began = time.perf_counter()
                await changed.wait_for(lambda: bool(self._idle) or self._in_use < self.limit)
                waited = time.perf_counter() - began
                self.wait_s += waited
                self.max_wait_s = max(self.max_wait_s, waited)
            self._in_use += 1
            self.acquired += 1
            if self._idle:
                return self._idle.pop()
        try:
            made = self._factory()
            resource: R = await made if inspect.isawaitable(made) else made
        except BaseException:
            async with changed:
                self._in_use -= 1
                changed.notify()
            raise
        self.created += 1
        return resource

    async def _give_back(self, resource: R, *, discard: bool) -> None:
        changed = self._condition()
        if discard or self._closed:
            self.discarded += 1
            await self._dispose(resource)
        async with changed:
            self._in_use -= 1
            if not discard and not self._closed:
                self._idle.append(resource)
            changed.notify()

    async def _dispose(self, resource: R) -> None:
        if self._close is None:
            return
        done = self._close(resource)
        if inspect.isawaitable(done):
            await done

    async def aclose(self) -> None:
        """Close every idle resource; ones in use are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for resource in idle:
            await self._dispose(resource)

    def metrics(self) -> dict[str, Any]:
        """What the pool holds now and since it was made."""
        return {
            "name": self.name,
            "limit": self.limit,
            "in_use": self._in_use,
            "idle": len(self._idle),
            "created": self.created,
            "discarded": self.discarded,
            "acquired": self.acquired,
            "waits": self.waits,
            "wait_s": round(self.wait_s, 6),
            "max_wait_s": round(self.max_wait_s, 6),
        }

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} in_use={self._in_use} idle={len(self._idle)}/{self.limit}>"


__all__ = ["Pool", "live_pools"]

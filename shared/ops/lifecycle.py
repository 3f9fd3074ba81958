"""Background loops every long-running service shares (coordinator, worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("agenticflow.lifecycle")


async def every(
    interval_s: float, stop: asyncio.Event, fn: Callable[[], Awaitable[None]], *, what: str
) -> None:
    """Call ``fn`` every ``interval_s`` until ``stop`` is set; a failure is logged, not fatal."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        if stop.is_set():
            return
        try:
            await fn()
        except Exception as exc:
            log.warning(f"{what} failed", error=str(exc), error_type=type(exc).__name__)


async def stop_when_closed(closed: asyncio.Event, stop: asyncio.Event, *, who: str) -> None:
    """Set ``stop`` if the connection closes for good (returns once either is set)."""
    waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(closed.wait())}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    if closed.is_set() and not stop.is_set():
        log.error(f"nats connection closed for good; {who} stops")
        stop.set()


__all__ = ["every", "stop_when_closed"]

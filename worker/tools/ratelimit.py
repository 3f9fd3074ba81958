"""A rate limit whose state is shared data: a fixed-window counter.

Window ``w = floor(now / per_s)`` admits ``calls`` calls; the record holds the
current window and its count, and every admitted call increments it with a
compare-and-set on the shared KV entry (:mod:`worker.tools.cluster`), so all
workers together never admit more than ``calls`` in one window. A fixed window
may admit up to twice the limit across a window boundary (the end of one, the
start of the next); providers that count in sliding windows should be given a
slightly lower limit.

Why one compare-and-set per call, not leased blocks of tokens: a lease cuts
round trips (one per block), but tokens leased by a worker that then goes
quiet are lost for that window, and a worker that leased too few waits while
others sit on theirs. For per-minute API limits, a round trip (~0.3 ms on a
LAN) per call is cheap next to the call itself, and the limit stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.tools.record import Record
from worker.tools.spec import RateLimit


@dataclass(frozen=True, slots=True)
class WindowRecord(Record):
    """One rate limit's shared state: the window and the calls admitted in it."""

    window: int = 0
    count: int = 0
    calls: int = 0
    """The limit, for whoever reads the record (``agents --json``)."""
    per_s: float = 0.0


def take(record: WindowRecord, now: float, limit: RateLimit) -> tuple[WindowRecord | None, float]:
    """``(new record, 0)`` if a call is admitted now, else ``(None, seconds
    until the next window)``."""
    window = math.floor(now / limit.per_s)
    count = record.count if record.window == window else 0
    if count < limit.calls:
        return WindowRecord(window, count + 1, limit.calls, limit.per_s), 0.0
    return None, max((window + 1) * limit.per_s - now, 0.0)


__all__ = ["WindowRecord", "take"]

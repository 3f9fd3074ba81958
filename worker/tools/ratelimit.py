"""A rate limit whose state is shared data: GCRA (generic cell rate algorithm).

The record holds one number, the *theoretical arrival time* ``tat`` (integer
microseconds since the epoch). With ``n = calls - burst + 1`` the *emission
interval* is ``T = per_s / n`` and the *burst tolerance* ``tau = (burst - 1) * T``;
a call at ``now`` is admitted if ``now >= tat - tau``, and then
``tat = max(tat, now) + T`` is written back with one compare-and-set on the
shared KV entry (:mod:`agenticflow.worker.tools.cluster`). A refused call is told to wait
``tat - tau - now`` seconds.

**Guarantee: never more than ``calls`` admitted calls in any sliding window of
``per_s`` seconds** (not just in aligned windows: a fixed-window counter lets
twice the limit through across a boundary). Proof sketch: each admission adds
``T`` to ``tat`` and ``tat`` never goes back, so after ``k`` admissions from the
one at ``t1``, ``tat >= t1 + k*T``; the next one needs
``now >= tat - tau >= t1 + (k - burst + 1) * T``, so ``calls + 1`` admissions
span at least ``n * T = per_s``. ``T`` is rounded *up* to whole microseconds
plus a 2 us slack, so the bound survives the float-to-integer conversion.

``burst`` (default 1) trades smoothness for the sustained rate: with 1, calls
are spaced ``per_s / calls`` apart and the full rate is kept; with ``b``, ``b``
calls may go at once but the sustained rate is ``(calls - b + 1) / per_s``.
Both stay under the sliding-window bound. The bound holds on the writers'
clocks: workers whose clocks disagree by ``s`` seconds loosen it by ``s``.

Why one compare-and-set per call, not leased blocks of tokens: a lease cuts
round trips (one per block), but tokens leased by a worker that then goes
quiet are lost, and a worker that leased too few waits while others sit on
theirs. For per-minute API limits, a round trip (~0.3 ms on a LAN) per call
is cheap next to the call itself, and the limit stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agenticflow.worker.tools.record import Record
from agenticflow.worker.tools.spec import RateLimit

_SLACK_US = 2
"""Added to ``per_s`` before dividing: covers the rounding of ``now`` to whole
microseconds (a float time near 1.8e9 s is exact to 0.25 us)."""


@dataclass(frozen=True, slots=True)
class RateRecord(Record):
    """One rate limit's shared state (see the module docstring)."""

    tat_us: int = 0
    """Theoretical arrival time, microseconds since the epoch."""
    at_us: int = 0
    """When the last admitted call was admitted (for ``agents --json`` and tests)."""
    calls: int = 0
    """The limit, for whoever reads the record (``agents --json``)."""
    per_s: float = 0.0
    burst: int = 1
    by: str = ""
    """The worker that admitted the last call."""


def interval_us(limit: RateLimit) -> int:
    """The emission interval ``T`` in whole microseconds (rounded up)."""
    return math.ceil((limit.per_s * 1e6 + _SLACK_US) / (limit.calls - limit.burst + 1))


def to_us(now: float) -> int:
    """Wall-clock seconds to whole microseconds (floor)."""
    return math.floor(now * 1e6)


def take(record: RateRecord, now: float, limit: RateLimit) -> tuple[RateRecord | None, float]:
    """``(new record, 0)`` if a call is admitted at ``now``, else ``(None, seconds
    until one would be)``. A record of the wrong shape counts as empty."""
    step = interval_us(limit)
    tau = (limit.burst - 1) * step
    now_us = to_us(now)
    tat = record.tat_us if type(record.tat_us) is int else 0
    allowed_at = tat - tau
    if now_us < allowed_at:
        return None, (allowed_at - now_us) / 1e6
    new = RateRecord(
        tat_us=max(tat, now_us) + step,
        at_us=now_us,
        calls=limit.calls,
        per_s=limit.per_s,
        burst=limit.burst,
    )
    return new, 0.0


def next_free_s(record: RateRecord, now: float) -> float:
    """Seconds until the record admits a call (0: now), from the limit it carries."""
    if type(record.tat_us) is not int or record.calls < 1 or record.per_s <= 0:
        return 0.0
    try:
        limit = RateLimit(record.calls, per_s=record.per_s, burst=record.burst)
    except Exception:  # a record of the wrong shape: nothing to say
        return 0.0
    tau = (limit.burst - 1) * interval_us(limit)
    return max(record.tat_us - tau - to_us(now), 0) / 1e6


__all__ = ["RateRecord", "interval_us", "next_free_s", "take", "to_us"]

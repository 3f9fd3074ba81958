"""The autoscaler of a local cluster: a pure decision and its I/O shell.

:func:`decide` is a pure function of the lag (pending + unacknowledged tasks
per agent pool), the live worker count, the bounds and the time: up fast,
straight to the count the lag needs; down slowly, one worker at a time once a
surplus has lasted ``down_cooldown_s``; never below MIN nor above MAX.
:class:`Autoscaler` reads the lag of an app's task consumers and keeps what the
decisions remember; :class:`~agenticflow.cluster.local.ProcessSupervisor`
carries them out (starts workers, or drains an idle one with SIGTERM).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError

_HISTORY = 50
"""Scaling decisions kept in the state file."""


# The autoscaler's decision (pure) -------------------------------------------


@dataclass(frozen=True)
class ScalePolicy:
    """Bounds and pace of the autoscaler.

    ``slots`` gives, per pool (an agent, whose capabilities share its
    instances), how many tasks one worker runs at once when fewer than
    ``concurrency`` (an agent with ``instances=1``). Raises ConfigError.
    """

    minimum: int
    maximum: int
    concurrency: int = 8
    slots: Mapping[str, int] = field(default_factory=dict)
    up_cooldown_s: float = 1.0
    """Least time between two scale-ups (a scale-up goes straight to the count needed)."""
    down_cooldown_s: float = 30.0
    """How long a surplus must last before one worker is stopped, and the least
    time between two scale-downs."""

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.maximum < 1 or self.minimum > self.maximum:
            raise ConfigError(
                f"autoscale bounds must be 0 <= MIN <= MAX and MAX >= 1, "
                f"got {self.minimum}:{self.maximum}"
            )
        if self.concurrency < 1:
            raise ConfigError("concurrency must be 1 or more")
        if self.up_cooldown_s < 0 or self.down_cooldown_s < 0:
            raise ConfigError("cooldowns must be 0 or more")


@dataclass(frozen=True)
class ScaleMemory:
    """What the autoscaler remembers between decisions (monotonic seconds)."""

    last_up: float | None = None
    last_down: float | None = None
    surplus_since: float | None = None
    """Since when fewer workers than there are would do (None: no surplus)."""


@dataclass(frozen=True)
class Decision:
    """One decision: go from ``current`` to ``desired`` workers, and why."""

    current: int
    desired: int
    needed: int
    """Workers the lag asks for, before the bounds."""
    lag: int
    """Tasks waiting or running, over every pool."""
    reason: str
    memory: ScaleMemory

    @property
    def delta(self) -> int:
        """Workers to start (> 0) or stop (< 0)."""
        return self.desired - self.current

    def to_json(self) -> dict[str, Any]:
        """The decision without the memory, for the state file."""
        return {
            "current": self.current,
            "desired": self.desired,
            "needed": self.needed,
            "lag": self.lag,
            "reason": self.reason,
        }


def workers_needed(lag: Mapping[str, int], policy: ScalePolicy) -> int:
    """Workers that run every waiting and running task at once: the total over
    ``concurrency``, and each pool's lag over its slots per worker."""
    total = sum(max(0, n) for n in lag.values())
    needed = math.ceil(total / policy.concurrency)
    for pool, n in lag.items():
        slots = max(1, min(policy.slots.get(pool, policy.concurrency), policy.concurrency))
        needed = max(needed, math.ceil(max(0, n) / slots))
    return needed


def decide(
    policy: ScalePolicy,
    lag: Mapping[str, int],
    *,
    current: int,
    now: float,
    memory: ScaleMemory,
) -> Decision:
    """How many workers there should be, given the lag per pool (pending +
    unacknowledged tasks) and ``current`` live workers.

    Up fast: straight to the count the lag needs (at most MAX), at most once
    per ``up_cooldown_s`` (below MIN: at once). Down slowly: one worker at a
    time, once a surplus has lasted ``down_cooldown_s`` and as long after the
    previous step (above MAX: at once). Never below MIN nor above MAX.
    """
    needed = workers_needed(lag, policy)
    total = sum(max(0, n) for n in lag.values())
    target = min(max(needed, policy.minimum), policy.maximum)

    def made(desired: int, reason: str, memory: ScaleMemory) -> Decision:
        return Decision(current, desired, needed, total, reason, memory)

    if current < target:
        waiting = memory.last_up is not None and now - memory.last_up < policy.up_cooldown_s
        if current >= policy.minimum and waiting:
            return made(current, "scale-up cooldown", replace(memory, surplus_since=None))
        why = "below the minimum" if current < policy.minimum else f"lag {total}"
        return made(target, why, replace(memory, last_up=now, surplus_since=None))
    if current > target:
        if current > policy.maximum:
            return made(target, "above the maximum", replace(memory, last_down=now))
        since = memory.surplus_since if memory.surplus_since is not None else now
        ready_at = max(
            since + policy.down_cooldown_s,
            (memory.last_down if memory.last_down is not None else -math.inf)
            + policy.down_cooldown_s,
        )
        if now >= ready_at:
            return made(
                current - 1,
                f"lag {total}: {current - target} surplus",
                replace(memory, last_down=now, surplus_since=since),
            )
        return made(
            current,
            f"lag {total}: {current - target} surplus; one fewer in {ready_at - now:.0f}s",
            replace(memory, surplus_since=since),
        )
    return made(current, f"lag {total}: steady", replace(memory, surplus_since=None))


# The autoscaler's I/O shell ---------------------------------------------------


class Autoscaler:
    """Reads the lag of an app's task consumers and decides with :func:`decide`.

    ``pools`` maps each queue (a capability) to its pool (the agent serving
    it). A decision's memory is kept only once :meth:`commit` says it was
    carried out, so a scale-down that found no idle worker is tried again on
    the next reading.
    """

    def __init__(self, *, bus: Bus, policy: ScalePolicy, pools: Mapping[str, str]) -> None:
        self.bus = bus
        self.policy = policy
        self.pools = dict(pools)
        self.memory = ScaleMemory()
        self.last: Decision | None = None
        self.last_at = 0.0
        self.history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        """The changes made, newest last (wall time ``at``)."""

    async def read_lag(self) -> dict[str, int]:
        """``num_pending + num_ack_pending`` per pool; raises TransportError."""
        lag = dict.fromkeys(sorted(set(self.pools.values())), 0)
        for info in await self.bus.consumer_infos(self.bus.names.tasks_stream):
            queue = self.bus.names.task_queue_of(info)
            pool = self.pools.get(queue) if queue is not None else None
            if pool is not None:
                lag[pool] += int(info.get("num_pending") or 0)
                lag[pool] += int(info.get("num_ack_pending") or 0)
        return lag

    def decide(self, lag: Mapping[str, int], *, current: int, now: float) -> Decision:
        """The decision for this reading (not yet committed)."""
        decision = decide(self.policy, lag, current=current, now=now, memory=self.memory)
        self.last, self.last_at = decision, time.time()
        return decision

    def commit(self, decision: Decision, *, done: int | None = None) -> None:
        """Keep the decision's memory; record a change of ``done`` workers
        (default: the whole delta) in :attr:`history`."""
        self.memory = decision.memory
        changed = decision.delta if done is None else done
        if changed:
            self.history.append(
                {
                    "at": time.time(),
                    **decision.to_json(),
                    "desired": decision.current + changed,
                }
            )

    def to_json(self) -> dict[str, Any]:
        """Bounds, the last decision and the changes made, for the state file."""
        return {
            "min": self.policy.minimum,
            "max": self.policy.maximum,
            "scale_down_after_s": self.policy.down_cooldown_s,
            "last": None if self.last is None else {"at": self.last_at, **self.last.to_json()},
            "history": list(self.history),
        }


__all__ = ["Autoscaler", "Decision", "ScaleMemory", "ScalePolicy", "decide", "workers_needed"]

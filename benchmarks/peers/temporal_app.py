"""The Temporal side of W1-W3: no-op activities and the three workflows.

Kept free of anything but ``temporalio`` and the standard library: Temporal's
workflow sandbox re-imports this module for every workflow run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

TASK_QUEUE = "peers-bench"
ACTIVITY_TIMEOUT = timedelta(minutes=10)


@activity.defn(name="noop")  # type: ignore[untyped-decorator]
async def noop(x: int) -> int:
    """Return the (small) input unchanged."""
    return x


@activity.defn(name="join")  # type: ignore[untyped-decorator]
async def join(xs: list[int]) -> int:
    """The diamond's last task: takes both branches' results."""
    return sum(xs)


async def call(x: int) -> int:
    """Run ``noop(x)`` as an activity."""
    result: int = await workflow.execute_activity(noop, x, start_to_close_timeout=ACTIVITY_TIMEOUT)
    return result


@workflow.defn(name="FanOut")
class FanOut:
    """W1: ``n`` activities started at once, all results gathered."""

    @workflow.run  # type: ignore[untyped-decorator]
    async def run(self, n: int) -> int:
        """Returns how many results came back."""
        results = await asyncio.gather(*(call(i) for i in range(n)))
        return len(results)


@workflow.defn(name="Chain")
class Chain:
    """W2: ``n`` activities one after another, each given the previous one's result."""

    @workflow.run  # type: ignore[untyped-decorator]
    async def run(self, n: int) -> int:
        """Returns the last result."""
        x = 0
        for _ in range(n):
            x = await call(x + 1)
        return x


@workflow.defn(name="Diamond")
class Diamond:
    """W3: a -> (b, c) -> d."""

    @workflow.run  # type: ignore[untyped-decorator]
    async def run(self, i: int) -> int:
        """Returns d's result."""
        a = await call(i)
        b, c = await asyncio.gather(call(a), call(a))
        result: int = await workflow.execute_activity(
            join, [b, c], start_to_close_timeout=ACTIVITY_TIMEOUT
        )
        return result


WORKFLOWS = [FanOut, Chain, Diamond]
ACTIVITIES = [noop, join]

__all__ = ["ACTIVITIES", "TASK_QUEUE", "WORKFLOWS", "Chain", "Diamond", "FanOut"]

"""What a tool call through the registry costs: ``python -m benchmarks.tools``
(``make bench-tools``, part of ``make bench``).

One trivial async tool (adds two numbers) is called ``--calls`` times, one
call after another, in each of these ways:

- **bare**: ``await fn(params, call)``, the function itself, params built;
- **registry, in memory**: ``ToolBox.call`` with :class:`MemoryToolState`
  and no audit sink: lookup, validation, permission, breaker, result cache
  (in a dict), timeout: the pure overhead of the pipeline;
- **registry, cluster, no cache**: the worker's path against a real
  nats-server (embedded): breaker (its closed state read from the local
  watched view: no round trip), the ``task.effect_recorded`` and
  ``task.tool_called`` events stored in JetStream (two publishes);
- **registry, cluster** (the default ``once=True``): as above plus the
  result cache in KV (one read before, one write after the call);
- **registry, cluster, rate limit**: plus a cluster-wide rate-limit slot
  (a compare-and-set on the KV window per call).

Each prints p50 / p99 / mean per call in microseconds and the added p50 over
the bare call; ``benchmarks/results/tools.json`` keeps the figures and the
machine (CPU count).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    Payload,
    TaskEffectRecorded,
    TaskToolCalled,
)
from agenticflow.shared.wire.ids import task_key
from agenticflow.shared.wire.vclock import VectorClock
from agenticflow.worker.effects import Effects
from agenticflow.worker.tools import (
    ClusterToolState,
    MemoryToolState,
    RateLimit,
    ToolBox,
    ToolCall,
    ToolRegistry,
    make_tool,
)

RESULTS = Path(__file__).parent / "results" / "tools.json"


class Add(BaseModel):
    a: int
    b: int


async def add(params: Add, call: ToolCall) -> dict[str, int]:
    """The tool: as cheap as a tool gets, so the figures are the overhead."""
    return {"sum": params.a + params.b}


CACHED = make_tool(add, name="add", permissions={"math:add"})
UNCACHED = make_tool(add, name="add_nocache", permissions={"math:add"}, once=False)
LIMITED = make_tool(
    add,
    name="add_limited",
    permissions={"math:add"},
    once=False,
    rate_limit=RateLimit(10_000_000, per_s=60),
)
REGISTRY = ToolRegistry([CACHED, UNCACHED, LIMITED], permissions={"math:*"})


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
    }


async def measure(calls: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    for i in range(min(200, calls)):  # warm up
        await one(-i - 1)
    samples = []
    for i in range(calls):
        began = time.perf_counter()
        await one(i)
        samples.append(time.perf_counter() - began)
    return summary(samples)


class Sink:
    """Stores events like the worker runtime does (one publish each)."""

    def __init__(self, bus: Bus, workflow_id: str, task_id: str) -> None:
        self.bus, self.workflow_id, self.task_id = bus, workflow_id, task_id

    async def emit(self, event_type: EventType, data: Payload, what: str) -> None:
        await self.bus.publish_event(
            Event(
                id=task_key(self.workflow_id, self.task_id, 1, what),
                type=event_type,
                workflow_id=self.workflow_id,
                source="bench",
                timestamp=time.time_ns(),
                vclock=VectorClock().increment("bench"),
                data=data,
                task_id=self.task_id,
                attempt=1,
            )
        )

    async def effect(self, data: TaskEffectRecorded, call: int) -> None:
        await self.emit(EventType.TASK_EFFECT_RECORDED, data, f"effect:{call}")

    async def audit(self, data: TaskToolCalled, what: str) -> None:
        await self.emit(EventType.TASK_TOOL_CALLED, data, what)


async def one_call(box: ToolBox, tool_name: str, i: int) -> Any:
    return await box.call(tool_name, a=i, b=2)


def cluster_box(bus: Bus, state: ClusterToolState, run: str) -> ToolBox:
    # A new task per box keeps every call's idempotency key new (no cache hits).
    sink = Sink(bus, f"wf-bench{run}", "t")
    return ToolBox(
        REGISTRY,
        state=state,
        workflow_id=sink.workflow_id,
        task_id="t",
        agent="bench",
        worker="bench",
        effects=Effects(key_prefix=f"{sink.workflow_id}:t", worker="bench", publish=sink.effect),
        publish=sink.audit,
    )


async def bench(calls: int) -> dict[str, Any]:
    figures: dict[str, dict[str, float]] = {}
    params, call = Add(a=1, b=2), ToolCall(key="k", tool="add")
    figures["bare"] = await measure(calls, lambda i: add(params, call))

    memory = ToolBox(REGISTRY, state=MemoryToolState(), workflow_id="wf", task_id="t")
    figures["registry, in memory"] = await measure(calls, lambda i: memory.call("add", a=i, b=2))

    with NatsServer() as server:
        settings = Settings(nats_url=server.url, prefix="toolbench")
        bus = await Bus.connect(settings, name="bench-tools")
        try:
            await bus.ensure_topology()
            state = ClusterToolState(bus=bus, worker="bench")
            for name, tool_name in (
                ("registry, cluster, no cache", "add_nocache"),
                ("registry, cluster", "add"),
                ("registry, cluster, rate limit", "add_limited"),
            ):
                box = cluster_box(bus, state, name.replace(" ", "").replace(",", "-"))
                figures[name] = await measure(calls, functools.partial(one_call, box, tool_name))
            await state.aclose()
        finally:
            await bus.close()
    bare = figures["bare"]["p50_us"]
    for values in figures.values():
        values["added_p50_us"] = values["p50_us"] - bare
    return {
        "calls": calls,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "figures": figures,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"tool call latency, {result['calls']} sequential calls each, "
        f"{result['cpu_count']} CPUs, Python {result['python']}",
        f"{'path':32} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} {'added p50':>10}",
    ]
    for name, f in result["figures"].items():
        lines.append(
            f"{name:32} {f['p50_us']:9.1f} {f['p99_us']:9.1f} {f['mean_us']:9.1f} "
            f"{f['added_p50_us']:10.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.calls))
    print(render(result))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()

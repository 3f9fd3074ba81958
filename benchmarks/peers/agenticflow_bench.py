"""W1-W3 on AgenticFlow, with :mod:`benchmarks.run`'s own cluster and measurements.

The cluster is ``make bench``'s: an embedded nats-server, one coordinator and
two worker processes of 64 task slots serving :mod:`benchmarks.app`, driven
through the public client (``Client.submit`` + ``Client.wait``), warmed up
first, as ``benchmarks.run.run_all`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.wire.ids import new_node_id
from benchmarks.peers.common import (
    BenchArgs,
    RunFigures,
    parse_bench_args,
    progress,
    run_bench,
    shown,
)
from benchmarks.run import (
    APP,
    FULL,
    measure_chain,
    measure_diamonds,
    measure_fanout,
    warm_up,
)

WORKERS = 2
CONCURRENCY = 64


async def measure(args: BenchArgs) -> list[RunFigures]:
    """Start the cluster, warm up, run W1-W3 ``runs`` times."""
    sizes = replace(FULL, fanout_tasks=args.fanout, chain_tasks=args.chain, diamonds=args.diamonds)
    cluster = DevCluster(
        app=APP,
        workers=WORKERS,
        concurrency=CONCURRENCY,
        prefix="peers",
        log_dir=args.log_dir,
    )
    runs: list[RunFigures] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(cluster)
        bus = await stack.enter_async_context(connected(cluster.settings, name="peers-bench"))
        client = Client(bus=bus, node_id=new_node_id("bench"))
        await warm_up(client, args.timeout)
        for run in range(1, args.runs + 1):
            figures: RunFigures = {}
            for key, scenario in (
                ("w1", measure_fanout),
                ("w2", measure_chain),
                ("w3", measure_diamonds),
            ):
                figures[key] = await scenario(client, sizes, args.timeout)
            progress(f"  agenticflow run {run}/{args.runs}: {shown(figures)}")
            runs.append(figures)
    return runs


def bench(args: BenchArgs) -> tuple[dict[str, Any], list[RunFigures]]:
    """Start the cluster, measure, stop it."""
    event_loop = "asyncio"
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()  # as in benchmarks.run: the coordinator and workers use it too
        event_loop = "uvloop"
    runs = asyncio.run(measure(args))
    config = {
        "setup": f"nats-server, 1 coordinator, {WORKERS} worker processes x {CONCURRENCY} "
        f"slots (benchmarks.run's cluster), client on {event_loop}",
        "workers": WORKERS,
        "concurrency_per_worker": CONCURRENCY,
        "client_event_loop": event_loop,
    }
    return config, runs


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; the figures (or the error) go to ``--output``."""
    args = parse_bench_args(argv, "python -m benchmarks.peers.agenticflow_bench")
    return run_bench(args, lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())

"""Streaming throughput: ``python -m benchmarks.streaming`` (``make
bench-streaming``, part of ``make bench``).

On a local cluster (embedded nats-server, one coordinator, one worker), one
task streams ``--chunks`` tokens (``ctx.stream``) as fast as the worker's
buffer takes them while one client reads them live (``handle.stream()``).
Reports chunks/s delivered to that client (first chunk made to last chunk
read), the p50/p99 delay from a chunk being made to being read, how many
``task.output`` events carried them, and drops (none expected: the buffer
waits for the bus). ``benchmarks/results/streaming.json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agenticflow
from agenticflow.cluster.dev import DevCluster

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.json"


async def measure(chunks: int, size: int, runs: int) -> dict[str, Any]:
    """Start a cluster, stream ``chunks`` tokens ``runs`` times; the figures."""
    samples: list[dict[str, float]] = []
    async with (
        DevCluster(app="benchmarks.app:app", workers=1, concurrency=4, prefix="benchstream") as c,
        agenticflow.connect(settings=c.settings, name="bench-stream") as client,
    ):
        for _ in range(runs + 1):  # the first run warms up
            workflow = {
                "name": "stream",
                "tasks": [
                    {"id": "s", "capability": "stream", "params": {"chunks": chunks, "size": size}}
                ],
            }
            handle = await client.start(workflow)
            delays: list[float] = []
            first_made = last_read = 0
            count = 0
            async for chunk in handle.stream(kinds=["token"]):
                now = time.time_ns()
                first_made = first_made or chunk.at_ns
                last_read = now
                delays.append((now - chunk.at_ns) / 1e6)
                count += 1
            result = await handle.result(timeout=120)
            events = [e for e in await handle.events() if e.type.value == "task.output"]
            delays.sort()
            samples.append(
                {
                    "chunks_per_s": count / max((last_read - first_made) / 1e9, 1e-9),
                    "read": count,
                    "dropped": float(result["dropped"]),
                    "events": len(events),
                    "p50_delay_ms": delays[len(delays) // 2],
                    "p99_delay_ms": delays[int(len(delays) * 0.99) - 1],
                }
            )
    kept = samples[1:]
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "chunks": chunks,
        "chunk_chars": size,
        "runs": kept,
        "median_chunks_per_s": statistics.median(s["chunks_per_s"] for s in kept),
        "median_p50_delay_ms": statistics.median(s["p50_delay_ms"] for s in kept),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000, help="tokens per run (20,000)")
    parser.add_argument("--size", type=int, default=8, help="characters per token (8)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (3)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    figures = asyncio.run(measure(options.chunks, options.size, options.runs))
    for run in figures["runs"]:
        print(
            f"  {run['read']:,.0f} chunks read, {run['events']:.0f} task.output events, "
            f"{run['dropped']:.0f} dropped: {run['chunks_per_s']:,.0f} chunks/s, "
            f"made -> read p50 {run['p50_delay_ms']:.1f} ms, p99 {run['p99_delay_ms']:.1f} ms"
        )
    print(
        f"streaming to one client: {figures['median_chunks_per_s']:,.0f} chunks/s (median of "
        f"{len(figures['runs'])}), {options.size}-character tokens; "
        f"{figures['cpu_count']} CPUs, Python {figures['python']}"
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(figures, indent=2))
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

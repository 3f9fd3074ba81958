"""Backpressure: 10,000 queued slow tasks do not grow a worker's memory.

``python -m benchmarks.backpressure``: one worker process (``--concurrency``
slots) serves a queue of 10,000 tasks whose handlers wait (1000 workflows of
10 parallel tasks). The worker pulls only as many tasks as it has free slots,
so its resident memory stays flat however long the queue is. We sample the
worker's RSS (``/proc/<pid>/status``) while it works through the queue for
``--seconds`` and report the start, peak and end values, the tasks done, and
the queue depth from the consumer's info. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.shared.graph.workflow import parse_workflow
from tests.support.natsbus import connected

RESULTS = Path(__file__).resolve().parent / "results" / "backpressure.json"


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def main(workflows: int, width: int, seconds: float, concurrency: int, wait_s: float) -> None:
    """Queue the load, sample the worker's memory, print and save the figures."""
    definition = parse_workflow(
        {
            "name": "backpressure",
            "tasks": [
                {"id": f"t{i}", "capability": "wait", "params": {"seconds": wait_s}}
                for i in range(width)
            ],
        }
    )
    async with (
        DevCluster(app="benchmarks.app:app", workers=1, concurrency=concurrency) as cluster,
        connected(cluster.settings, name="backpressure") as bus,
    ):
        client = Client(bus=bus, node_id="backpressure")
        worker = cluster.worker_procs[0].pid
        start_rss, _ = rss_kib(worker)
        await asyncio.gather(*(client.submit(definition) for _ in range(workflows)))
        consumer = bus.names.task_consumer("wait")
        samples: list[tuple[float, int]] = []
        began = time.monotonic()
        queued_max = 0
        while time.monotonic() - began < seconds:
            info = await bus.js.consumer_info(bus.names.tasks_stream, consumer)
            queued_max = max(queued_max, int(info.num_pending or 0))
            samples.append((time.monotonic() - began, rss_kib(worker)[0]))
            await asyncio.sleep(0.5)  # sampling interval
        info = await bus.js.consumer_info(bus.names.tasks_stream, consumer)
        done = int(info.delivered.stream_seq or 0) - int(info.num_ack_pending or 0)
        _, peak = rss_kib(worker)
        result = {
            "cores": os.cpu_count(),
            "queued_tasks_max": queued_max,
            "tasks_total": workflows * width,
            "concurrency": concurrency,
            "handler_wait_s": wait_s,
            "sampled_s": seconds,
            "tasks_done_while_sampling": done,
            "in_flight_max": concurrency,
            "worker_rss_start_mib": round(start_rss / 1024, 1),
            "worker_rss_peak_mib": round(peak / 1024, 1),
            "worker_rss_end_mib": round(samples[-1][1] / 1024, 1),
            "worker_rss_growth_mib": round((samples[-1][1] - samples[0][1]) / 1024, 1),
        }
        print(json.dumps(result, indent=2))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({**result, "samples": samples}, indent=2))


def cli() -> None:
    """Entry point of ``python -m benchmarks.backpressure``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wait", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.width, args.seconds, args.concurrency, args.wait))


if __name__ == "__main__":
    cli()

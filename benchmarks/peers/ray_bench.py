"""W1-W3 on Ray: a local Ray instance started by ``ray.init``.

Ray binds its services to the machine's own address whatever it is told, so
:mod:`benchmarks.peers.main` runs this module inside a network namespace with
only loopback (``unshare -n``, ``lo`` up), where 127.0.0.1 is the only address
there is.

- Ray: ``ray.init(num_cpus=2)`` (two worker processes for tasks of one CPU),
  no dashboard, a 512 MiB object store;
- W1 ``--fanout`` remote no-op tasks, then ``ray.get`` of all of them; W2 a
  chain of ``--chain`` remote calls, each given the previous call's ObjectRef
  (Ray runs a task once its argument is ready; one ``ray.get`` at the end);
  W3 ``--diamonds`` diamonds ``a -> (b, c) -> d`` built from ObjectRefs at
  once, then one ``ray.get`` of every ``d``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.peers.common import (
    BenchArgs,
    PeerError,
    RunFigures,
    parse_bench_args,
    run_bench,
    timed_runs,
)

CPUS = 2
OBJECT_STORE_BYTES = 512 * 1024 * 1024


def measure(ray: Any, args: BenchArgs) -> list[RunFigures]:
    """Warm up, then W1-W3 ``runs`` times."""

    @ray.remote  # type: ignore[untyped-decorator]
    def noop(x: int) -> int:
        return x

    @ray.remote  # type: ignore[untyped-decorator]
    def join(b: int, c: int) -> int:
        return b + c

    def fanout(n: int) -> None:
        if ray.get([noop.remote(i) for i in range(n)], timeout=args.timeout) != list(range(n)):
            raise PeerError("W1 returned wrong results")

    def chain(n: int) -> None:
        ref = noop.remote(0)
        for _ in range(n - 1):
            ref = noop.remote(ref)
        if ray.get(ref, timeout=args.timeout) != 0:
            raise PeerError("W2 returned a wrong result")

    def diamonds(n: int) -> None:
        ends = []
        for i in range(n):
            a = noop.remote(i)
            ends.append(join.remote(noop.remote(a), noop.remote(a)))
        if ray.get(ends, timeout=args.timeout) != [2 * i for i in range(n)]:
            raise PeerError("W3 returned wrong results")

    diamonds(5)
    fanout(100)
    return timed_runs("ray", args, fanout, chain, diamonds)


def bench(args: BenchArgs) -> tuple[dict[str, Any], list[RunFigures]]:
    """Start Ray, measure, shut Ray down."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    logging.getLogger("ray").setLevel(logging.ERROR)
    import ray

    temp_dir = args.log_dir.resolve() / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=CPUS,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=OBJECT_STORE_BYTES,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _temp_dir=str(temp_dir),
    )
    try:
        runs = measure(ray, args)
    finally:
        ray.shutdown()
    config = {
        "setup": f"ray.init(num_cpus={CPUS}) in a loopback-only network namespace, "
        "W2 passes ObjectRefs",
        "num_cpus": CPUS,
        "w2_style": "ObjectRefs passed from call to call, one ray.get at the end",
    }
    return config, runs


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; the figures (or the error) go to ``--output``."""
    args = parse_bench_args(argv, "python -m benchmarks.peers.ray_bench")
    return run_bench(args, lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP gateway's added latency: ``python -m benchmarks.gateway`` (``make
bench-gateway``, part of ``make bench``).

On a local cluster (embedded nats-server, one coordinator, one worker) and
one ``agenticflow gateway`` process in front of it, the same one-task
workflow (``noop``) is run start to result, one at a time, ``--rounds``
times each way, in turn: through the Python client directly
(``client.start`` then ``handle.result()``), through the gateway over
HTTP/1.1 keep-alive (``POST /workflows`` then ``GET
/workflows/{id}/result?wait=``), and through the gateway in one request
(``POST /workflows?wait=``).
Reports p50/p99 of each and the difference (what the gateway adds: the HTTP
round trips, its own client's start and wait, JSON). Warm-up rounds are not
counted. ``benchmarks/results/gateway.json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

import agenticflow
from agenticflow.cluster.dev import DevCluster
from agenticflow.gateway.auth import new_token

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"
WORKFLOW = {"name": "gw-bench", "tasks": [{"id": "n", "capability": "noop"}]}
WARMUP = 10


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def _gateway(settings: Any, token: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``agenticflow gateway`` on a free port; its process and URL."""
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": settings.nats_url,
        "AGENTICFLOW_PREFIX": settings.prefix,
        "AGENTICFLOW_GATEWAY_TOKENS": f"bench={token}",
        "AGENTICFLOW_LOG_LEVEL": "warning",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agenticflow",
        "gateway",
        "--port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    if not line.startswith("gateway listening on "):
        process.kill()
        raise RuntimeError(f"the gateway did not start: {line!r}")
    return process, line.split()[-1]


async def measure(rounds: int) -> dict[str, Any]:
    """Start a cluster and a gateway, run ``rounds`` workflows each way; the figures."""
    direct: list[float] = []
    through: list[float] = []
    one: list[float] = []
    token = new_token()
    with tempfile.TemporaryDirectory() as logs:
        async with (
            DevCluster(
                app="benchmarks.app:app", workers=1, concurrency=4, prefix="benchgw", log_dir=logs
            ) as cluster,
            agenticflow.connect(settings=cluster.settings, name="bench-gateway") as client,
        ):
            process, url = await _gateway(cluster.settings, token)
            try:
                headers = {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                    for n in range(rounds + WARMUP):
                        started = time.perf_counter()
                        handle = await client.start(WORKFLOW)
                        await handle.result(timeout=60)
                        took_direct = time.perf_counter() - started

                        started = time.perf_counter()
                        response = await http.post("/workflows", json={"workflow": WORKFLOW})
                        workflow_id = response.json()["id"]
                        result = await http.get(
                            f"/workflows/{workflow_id}/result", params={"wait": 60}
                        )
                        took_gateway = time.perf_counter() - started
                        if result.json().get("state") != "completed":
                            raise RuntimeError(f"through the gateway: {result.text}")

                        started = time.perf_counter()
                        run = await http.post(
                            "/workflows", params={"wait": 60}, json={"workflow": WORKFLOW}
                        )
                        took_one = time.perf_counter() - started
                        if run.json().get("state") != "completed":
                            raise RuntimeError(f"through the gateway: {run.text}")
                        if n >= WARMUP:
                            direct.append(took_direct * 1e3)
                            through.append(took_gateway * 1e3)
                            one.append(took_one * 1e3)
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)
    added = [g - d for g, d in zip(through, direct, strict=True)]
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rounds": rounds,
        "direct_p50_ms": statistics.median(direct),
        "direct_p99_ms": _percentile(direct, 0.99),
        "gateway_p50_ms": statistics.median(through),
        "gateway_p99_ms": _percentile(through, 0.99),
        "one_request_p50_ms": statistics.median(one),
        "one_request_p99_ms": _percentile(one, 0.99),
        "added_p50_ms": statistics.median(through) - statistics.median(direct),
        "added_one_request_p50_ms": statistics.median(one) - statistics.median(direct),
        "added_median_of_pairs_ms": statistics.median(added),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--rounds", type=int, default=300, help="workflows each way (300)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    figures = asyncio.run(measure(options.rounds))
    print(
        f"start -> result, {options.rounds} one-task workflows each way: "
        f"Python client p50 {figures['direct_p50_ms']:.2f} ms, "
        f"p99 {figures['direct_p99_ms']:.2f} ms; "
        f"through the gateway p50 {figures['gateway_p50_ms']:.2f} ms, "
        f"p99 {figures['gateway_p99_ms']:.2f} ms; the gateway adds "
        f"{figures['added_p50_ms']:.2f} ms at p50; in one request (POST ?wait=) "
        f"p50 {figures['one_request_p50_ms']:.2f} ms, p99 {figures['one_request_p99_ms']:.2f} ms, "
        f"{figures['added_one_request_p50_ms']:.2f} ms added "
        f"({figures['cpu_count']} CPUs, Python {figures['python']})"
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(figures, indent=2))
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""W4 scale: many concurrent workflows and many registered agent instances.

Starts its own cluster (an embedded nats-server, one coordinator, two worker
processes serving :data:`benchmarks.app.scale_app`, whose one agent has
``instances`` instances in each worker), then:

1. measures each worker's resident memory once registered and idle, against a
   third worker serving the same agent with **one** instance
   (:data:`benchmarks.app.one_app`): the difference divided by the extra
   instances is the memory per idle agent instance;
2. submits ``workflows`` ten-task workflows at once (a -> eight in parallel ->
   z) and waits for all of them: completion time and workflows/s;
3. reads the peak resident memory (``VmHWM``) of the coordinator and workers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.ids import new_node_id

SCALE_APP = "benchmarks.app:scale_app"
ONE_APP = "benchmarks.app:one_app"


class ScaleError(Exception):
    """W4 did not complete, so its figures would be meaningless."""


def ten_task_workflow() -> WorkflowDefinition:
    """a -> (b1..b8) -> z: ten noop tasks."""
    middle = [f"b{i}" for i in range(1, 9)]
    tasks: list[dict[str, Any]] = [{"id": "a", "capability": "noop"}]
    tasks += [{"id": m, "capability": "noop", "depends_on": ["a"]} for m in middle]
    tasks.append({"id": "z", "capability": "noop", "depends_on": middle})
    return parse_workflow({"name": "bench-ten", "tasks": tasks})


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ScaleError(f"no {field} for process {pid}")


async def registered_instances(client: Client) -> int:
    """How many agent instances the registry lists for the live workers."""
    agents = await client.agents()
    return sum(int(a.get("instances", 0)) for a in agents if a.get("role") == "worker")


async def measure_scale(
    *, workflows: int, instances: int, concurrency: int, timeout: float, log_dir: Path | None
) -> dict[str, float]:
    """Run W4 once; returns its figures."""
    cluster = DevCluster(
        app=SCALE_APP,
        workers=2,
        concurrency=concurrency,
        prefix="benchscale",
        log_dir=log_dir,
        env={"AGENTICFLOW_BENCH_INSTANCES": str(instances)},
    )
    async with cluster, connected(cluster.settings, name="agenticflow-bench-scale") as bus:
        client = Client(bus=bus, node_id=new_node_id("bench"))
        baseline = cluster.add_worker(ONE_APP)
        await cluster.wait_for_processes(3, timeout=60)  # each registers with its instances
        registered = await registered_instances(client)
        if registered != 2 * instances + 1:
            raise ScaleError(f"{registered} agent instances registered, not {2 * instances + 1}")
        scale_workers = [p.pid for p in cluster.worker_procs if p is not baseline]
        idle_kb = [memory_kb(pid) for pid in scale_workers]
        baseline_kb = memory_kb(baseline.pid)
        cluster.kill(baseline)
        per_instance_kb = (sum(idle_kb) / len(idle_kb) - baseline_kb) / max(instances - 1, 1)
        coordinator = cluster.coordinator
        if coordinator is None:
            raise ScaleError("the cluster has no coordinator")
        coordinator_idle_kb = memory_kb(coordinator.pid)

        definition = ten_task_workflow()
        started = time.perf_counter()
        ids = await asyncio.gather(*(client.submit(definition) for _ in range(workflows)))
        states = await asyncio.gather(*(client.wait(i, timeout=timeout) for i in ids))
        elapsed = time.perf_counter() - started
        failed = [s.workflow_id for s in states if s.status != WorkflowStatus.COMPLETED]
        if failed:
            raise ScaleError(f"{len(failed)} of {workflows} W4 workflows did not complete")
        return {
            "seconds": elapsed,
            "workflows_per_s": workflows / elapsed,
            "tasks_per_s": workflows * len(definition.tasks) / elapsed,
            "instances": float(registered - 1),
            "kb_per_idle_instance": per_instance_kb,
            "worker_idle_mb": max(idle_kb) / 1024,
            "coordinator_idle_mb": coordinator_idle_kb / 1024,
            "coordinator_peak_mb": memory_kb(coordinator.pid, "VmHWM") / 1024,
            "worker_peak_mb": max(memory_kb(pid, "VmHWM") for pid in scale_workers) / 1024,
        }


__all__ = ["ScaleError", "measure_scale", "memory_kb", "ten_task_workflow"]

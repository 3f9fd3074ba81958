"""A cluster of separate processes on Redis: `agenticflow dev --backend redis`'s
DevCluster, driven by the CLI through AGENTICFLOW_URL, and a worker killed
mid-task (its task is redelivered and its effect stored once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.errors import ConfigError
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import wf
from tests.integration.test_cli_commands import ADD, flow, run_cli

pytestmark = pytest.mark.usefixtures("redis_server")  # fails clearly without redis-server


@pytest.fixture(scope="module")
async def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevCluster]:
    cluster = DevCluster(
        app=TEST_APP,
        workers=2,
        prefix=unique_prefix("redis"),
        backend="redis",
        log_dir=tmp_path_factory.mktemp("redis-logs"),
        settings={"task_ack_wait_s": 2, "heartbeat_s": 1},
    )
    async with cluster:
        yield cluster


def on(cluster: DevCluster) -> dict[str, str]:
    return {"AGENTICFLOW_URL": cluster.url, "AGENTICFLOW_PREFIX": cluster.prefix}


def test_the_cli_submits_lists_and_checks_health_on_redis(
    redis_cluster: DevCluster, tmp_path: Path
) -> None:
    done = run_cli(
        "submit",
        str(flow(tmp_path, ADD, name="on-redis")),
        "--wait",
        "-o",
        "json",
        env=on(redis_cluster),
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["state"] == "completed", state
    listed = run_cli("workflow", "list", "-o", "json", env=on(redis_cluster))
    assert listed.returncode == 0, listed.stderr
    assert state["workflow_id"] in {w["id"] for w in json.loads(listed.stdout)}
    health = run_cli("health", "--expect", "3", "-o", "json", env=on(redis_cluster))
    assert health.returncode == 0, health.stderr
    kinds = sorted(r["kind"] for r in json.loads(health.stdout))
    assert kinds == ["coordinator", "worker", "worker"]
    replay = run_cli("replay", state["workflow_id"], "--verify", env=on(redis_cluster))
    assert replay.returncode == 0, replay.stdout + replay.stderr


async def test_a_worker_killed_mid_task_loses_nothing_on_redis(
    redis_cluster: DevCluster, tmp_path: Path
) -> None:
    from agenticflow import connect

    marker = tmp_path / "crashed"
    async with connect(settings=redis_cluster.settings) as client:
        state = await client.wait(
            await client.submit_workflow(
                wf({"id": "a", "capability": "crash_once", "params": {"crash_marker": str(marker)}})
            ),
            timeout=60,
        )
        events = await client.events(state.workflow_id)
    assert marker.exists(), "no worker died: the test proved nothing"
    assert state.status == WorkflowStatus.COMPLETED
    completed = [e for e in events if e.type.value == "task.completed"]
    assert len(completed) == 1, "the outcome was applied twice"
    killed = marker.read_text()
    assert state.tasks["a"].worker == killed, "the outcome stored is the dead worker's"
    dead = next(p for p in redis_cluster.worker_procs if f"-{p.pid}-" in killed)
    # It dies right after storing the outcome, before its ack: wait for that.
    assert await asyncio.wait_for(asyncio.to_thread(dead.wait), timeout=30) == 137
    # Its unacked delivery comes back to the survivor after ack_wait, runs again
    # (its duplicate outcome is absorbed) and is acked: the queue drains.
    # Redis announces no ack, so the consumer's state is read until then.
    async with connect(settings=redis_cluster.settings) as client, asyncio.timeout(30):
        queue = client.bus.names.task_consumer("crash_once")
        while True:
            infos = {
                i["name"]: i for i in await client.bus.consumer_infos(client.bus.names.tasks_stream)
            }
            info = infos.get(queue, {})
            if info and not info.get("num_pending") and not info.get("num_ack_pending"):
                break
            await asyncio.sleep(0.1)
        assert info["num_redelivered"] >= 1 or info["delivered"]["consumer_seq"] >= 2, info
        events = await client.events(state.workflow_id)
    assert len([e for e in events if e.type.value == "task.completed"]) == 1
    redis_cluster.add_worker()  # back to two for the module's other tests


def test_memory_is_refused_for_a_cluster_of_processes() -> None:
    with pytest.raises(ConfigError, match="one process"):
        DevCluster(app=TEST_APP, backend="memory")

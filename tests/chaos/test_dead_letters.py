"""Dead letters: a task whose deliveries all die or hang is terminated and recorded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.wire.events import EventType, TaskDeadLettered
from tests.chaos.test_process_failures import chaos_cluster
from tests.integration.helpers import of_type, wf

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

DLQ = {"task_max_deliver": 2, "task_ack_wait_s": 1}
# Each delivery of a `block` task freezes its worker (no keep-alives), so it is
# redelivered after ack_wait. JetStream announces max_deliver only when a worker
# next pulls, so a third, free worker is needed to see the advisory promptly;
# one task per worker, so a frozen worker holds no other task hostage.
ROOT = Path(__file__).resolve().parents[2]


async def test_dead_lettered_task_fails_the_workflow_and_can_be_retried(
    nats_server: NatsServer, log_dir: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    async with chaos_cluster(
        nats_server, log_dir, "dlq", workers=3, concurrency=1, env=_env(DLQ)
    ) as (
        cluster,
        client,
        _observer,
    ):
        definition = wf(
            {"id": "a", "capability": "add", "params": {"value": 1}},
            # 12 s, not 6: under load the first delivery woke and completed before the
            # dead letter was seen (the same race as the optional task's below).
            {"id": "stuck", "capability": "block", "depends_on": ["a"],
             "params": {"seconds": 12, "unless_exists": str(release)}},
            {"id": "c", "capability": "add", "depends_on": ["stuck"]},
        )  # fmt: skip
        workflow_id = await client.submit(definition)
        state = await client.wait(workflow_id, timeout=60)
        assert state.status == WorkflowStatus.FAILED
        stuck = state.tasks["stuck"]
        assert stuck.error is not None
        assert stuck.error.type == "DeadLetteredError"
        assert "delivered 2 times" in stuck.error.message
        events = await client.events(workflow_id)
        dead = of_type(events, EventType.TASK_DEAD_LETTERED)
        assert len(dead) == 1
        assert isinstance(dead[0].data, TaskDeadLettered)
        assert dead[0].data.capability == "block"

        env = {**os.environ, "AGENTICFLOW_NATS_URL": cluster.url,
               "AGENTICFLOW_PREFIX": cluster.prefix}  # fmt: skip
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agenticflow", "dlq", "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["workflow_id"], r["task_id"]) for r in rows] == [(workflow_id, "stuck")]

        release.write_text("go")
        retried = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agenticflow", "dlq", "retry", workflow_id, "stuck",
             "--wait", "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=90, check=False,
        )  # fmt: skip
        assert retried.returncode == 0, retried.stdout + retried.stderr
        final = json.loads(retried.stdout)
        assert final["state"] == "completed"
        assert final["tasks"]["stuck"]["result"] == "not blocked"
        assert final["tasks"]["a"]["attempts"] == 1


async def test_optional_dead_lettered_task_is_skipped(
    nats_server: NatsServer, log_dir: Path
) -> None:
    async with chaos_cluster(
        nats_server, log_dir, "dlqopt", workers=3, concurrency=1, env=_env(DLQ)
    ) as (
        _cluster,
        client,
        _observer,
    ):
        definition = wf(
            # Frozen long enough that the dead letter is always seen first, under load too
            # (at 6 s a loaded machine let the first delivery complete: it won the race).
            {"id": "maybe", "capability": "block", "optional": True, "params": {"seconds": 12}},
            {"id": "sure", "capability": "add", "params": {"value": 5}},
            {"id": "join", "capability": "echo", "depends_on": ["maybe", "sure"]},
        )
        state = await client.wait(await client.submit(definition), timeout=60)
        assert state.status == WorkflowStatus.COMPLETED
        assert state.tasks["maybe"].status == TaskStatus.SKIPPED
        assert state.tasks["join"].result["inputs"] == {"maybe": None, "sure": 5}


def _env(settings: dict[str, int]) -> dict[str, str]:
    return {f"AGENTICFLOW_{k.upper()}": str(v) for k, v in settings.items()}

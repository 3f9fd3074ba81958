"""`agenticflow fork`, `rerun` and `diff`: the debugging loop on a real cluster.

The ``research`` agent's side effects return a fresh random nonce each time
they really run, and raise when ``OUTSIDE_OFF`` is set: a re-execution that
returns the recorded nonces with the outside world switched off was served
from the recording.
"""

from __future__ import annotations

import json
import subprocess

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.wire.events import EventType, TaskEffectRecorded, TaskStarted
from tests.integration.helpers import agenticflow, by_task, of_type, run, wf
from tests.support.app import FIXED, OUTSIDE_OFF, QUERY_SUFFIX

APP = "tests.support.app:app"


def cli_env(
    cluster: DevCluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``agenticflow ARGS`` against the shared cluster, with extra environment."""
    return agenticflow(cluster.settings, *args, env=env)


def research_then_echo() -> list[dict[str, object]]:
    return [
        {
            "id": "r",
            "capability": "research",
            "params": {"q": "outages", "succeed_on": 2},
            "retry": {"max_attempts": 3, "initial_interval_s": 0.01},
        },
        {"id": "e", "capability": "echo", "depends_on": ["r"]},
    ]


def buggy_chain() -> list[dict[str, object]]:
    return [
        {"id": "a", "capability": "add", "params": {"value": 1}},
        {"id": "b", "capability": "buggy", "depends_on": ["a"]},
        {"id": "c", "capability": "add", "params": {"value": 10}, "depends_on": ["b"]},
    ]


async def test_side_effects_are_recorded_per_attempt(client: Client) -> None:
    state = await run(client, wf(*research_then_echo()))
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    events = await client.events(state.workflow_id)
    effects = [(e.attempt, e.data) for e in events if isinstance(e.data, TaskEffectRecorded)]
    # attempt 1 made both calls and failed, attempt 2 made them again
    assert [(attempt, d.effect.call, d.effect.name) for attempt, d in effects] == [
        (1, 0, "search"),
        (1, 1, "llm.complete"),
        (2, 0, "search"),
        (2, 1, "llm.complete"),
    ]
    final = [data for attempt, data in effects if attempt == 2]
    assert state.tasks["r"].result == {
        "hits": final[0].effect.result["nonce"],
        "answer": final[1].effect.result["nonce"],
    }
    assert all(not data.replayed and data.key.endswith(data.effect.name) for data in final)


async def test_rerun_serves_every_side_effect_from_the_recording(
    cluster: DevCluster, client: Client
) -> None:
    source = await run(client, wf(*research_then_echo()))
    assert source.status == WorkflowStatus.COMPLETED
    shown = cli_env(
        cluster, "rerun", source.workflow_id, "--app", APP, "--json", env={OUTSIDE_OFF: "1"}
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rerun = json.loads(shown.stdout)
    assert rerun["origin"] == {"kind": "rerun", "workflow_id": source.workflow_id, "at_seq": None}
    # Same nonces: nothing really ran (the tools raise in that process).
    assert rerun["tasks"]["r"]["result"] == source.tasks["r"].result
    assert rerun["tasks"]["r"]["attempts"] == 2
    events = await client.events(rerun["workflow_id"])
    served = [e.data for e in events if isinstance(e.data, TaskEffectRecorded)]
    assert len(served) == 4
    assert all(data.replayed for data in served)
    same = cli_env(cluster, "diff", source.workflow_id, rerun["workflow_id"])
    assert same.returncode == 0, same.stdout + same.stderr
    assert "same:" in same.stdout


async def test_rerun_on_the_cluster_is_served_too(client: Client) -> None:
    source = await run(client, wf(*research_then_echo()))
    rerun_id = await client.rerun(source.workflow_id)
    rerun = await client.wait(rerun_id, timeout=60)
    assert rerun.status == WorkflowStatus.COMPLETED
    assert rerun.tasks["r"].result == source.tasks["r"].result
    assert rerun.origin is not None
    assert rerun.origin.kind == "rerun"


async def test_a_rerun_that_calls_differently_diverges(cluster: DevCluster, client: Client) -> None:
    source = await run(client, wf(*research_then_echo()))
    shown = cli_env(
        cluster,
        "rerun",
        source.workflow_id,
        "--app",
        APP,
        "--json",
        env={OUTSIDE_OFF: "1", QUERY_SUFFIX: " (changed)"},
    )
    assert shown.returncode == 1, shown.stdout + shown.stderr
    rerun = json.loads(shown.stdout)
    error = rerun["tasks"]["r"]["error"]
    assert error["type"] == "ReplayDivergedError"
    assert "side effect #0 differs in parameters" in error["message"]
    assert rerun["tasks"]["r"]["attempts"] == 1  # a divergence is not retried
    diverged = cli_env(cluster, "diff", source.workflow_id, rerun["workflow_id"], "--json")
    assert diverged.returncode == 1, diverged.stderr
    found = json.loads(diverged.stdout)
    assert found["same"] is False
    assert found["first"]["type"] == "task.effect_recorded"
    assert found["first"]["data"]["effect"]["call"] == 0


async def test_fork_reuses_results_and_runs_the_rest_on_a_fixed_app(
    cluster: DevCluster, client: Client
) -> None:
    source = await run(client, wf(*buggy_chain()))
    assert source.status == WorkflowStatus.FAILED
    assert source.failed_task == "b"
    shown = cli_env(cluster, "fork", source.workflow_id, "--app", APP, "--json", env={FIXED: "1"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    fork = json.loads(shown.stdout)
    assert fork["state"] == "completed"
    assert fork["output"] == {"c": 12}  # a=1 reused, b=1+1 fixed, c=2+10
    assert "reused from " + source.workflow_id in fork["tasks"]["a"]["note"]
    events = await client.events(fork["workflow_id"])
    assert "a" not in {e.task_id for e in of_type(events, EventType.TASK_SCHEDULED)}
    started = by_task(events, EventType.TASK_STARTED)
    cluster_workers = {
        e.data.worker
        for e in await client.events(source.workflow_id)
        if isinstance(e.data, TaskStarted)
    }
    assert isinstance(started[("b", 1)].data, TaskStarted)
    assert started[("b", 1)].data.worker not in cluster_workers
    diverged = cli_env(cluster, "diff", source.workflow_id, fork["workflow_id"])
    assert diverged.returncode == 1, diverged.stdout + diverged.stderr
    assert "diverged" in diverged.stdout
    assert "'b'" in diverged.stdout
    assert "task.failed" in diverged.stdout
    assert "task.completed" in diverged.stdout
    # The private route's queues went away with the fork's worker.
    agents = json.loads(cli_env(cluster, "agents", "--json").stdout)
    assert not any("~" in c for info in agents for c in info["capabilities"])


async def test_fork_at_a_sequence_reuses_only_what_was_done_by_then(client: Client) -> None:
    source = await run(client, wf(*buggy_chain()))
    events = await client.events(source.workflow_id)
    a_done = by_task(events, EventType.TASK_COMPLETED)[("a", 1)].seq
    assert a_done is not None
    before = await client.wait(await client.fork(source.workflow_id, at_seq=a_done - 1))
    at = await client.wait(await client.fork(source.workflow_id, at_seq=a_done))
    assert before.tasks["a"].attempts == 1
    assert before.tasks["a"].note is None
    assert at.tasks["a"].attempts == 0
    assert at.tasks["a"].status == TaskStatus.COMPLETED
    assert at.origin is not None
    assert at.origin.at_seq == a_done
    assert at.status == before.status == WorkflowStatus.FAILED  # the bug is still there


async def test_fork_and_diff_refuse_unknown_workflows(cluster: DevCluster) -> None:
    shown = cli_env(cluster, "fork", "no-such-workflow")
    assert shown.returncode == 3
    assert "no-such-workflow" in shown.stderr
    shown = cli_env(cluster, "diff", "no-such-workflow", "nor-this-one")
    assert shown.returncode == 3
    shown = cli_env(cluster, "fork", "x", "--app", APP, "--route", "bad.route")
    assert shown.returncode == 2
    assert "route" in shown.stderr

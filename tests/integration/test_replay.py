"""`agenticflow replay`: timeline, verify against the snapshot and causality, time travel."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.replay import parse_until, state_until, verify
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.wire.events import Event, EventType, TaskCompleted
from agenticflow.shared.wire.vclock import VectorClock
from tests.integration.helpers import of_type, run, wf
from tests.integration.test_cli import cli


def chain() -> list[dict[str, object]]:
    return [
        {"id": "a", "capability": "add", "params": {"value": 1}},
        {"id": "b", "capability": "add", "params": {"value": 2}, "depends_on": ["a"]},
    ]


async def test_replay_verifies_a_completed_workflow(cluster: DevCluster, client: Client) -> None:
    state = await run(client, wf(*chain()))
    assert state.status == WorkflowStatus.COMPLETED
    shown = cli(cluster, "replay", state.workflow_id, "--verify")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "verified:" in shown.stdout
    assert "task.completed" in shown.stdout
    listed = cli(cluster, "replay", state.workflow_id, "--verify", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["problems"] == []
    assert data["events"][0]["type"] == "workflow.submitted"


async def test_verify_catches_a_corrupted_snapshot(
    cluster: DevCluster, client: Client, bus: Bus
) -> None:
    state = await run(client, wf(*chain()))
    corrupted = state.model_copy(deep=True)
    corrupted.tasks["b"].result = 999
    store = await bus.kv(bus.names.workflows_bucket)
    await store.put(state.workflow_id, corrupted.to_snapshot())
    shown = cli(cluster, "replay", state.workflow_id, "--verify")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "tasks.b.result" in shown.stderr
    assert "999" in shown.stderr


async def test_verify_catches_a_clock_that_goes_backwards(
    cluster: DevCluster, client: Client, bus: Bus
) -> None:
    state = await run(client, wf(*chain()))
    events = await client.events(state.workflow_id)
    done = of_type(events, EventType.TASK_COMPLETED)[-1]
    forged = Event(
        id=f"{state.workflow_id}:b:1:forged",
        type=EventType.TASK_COMPLETED,
        workflow_id=state.workflow_id,
        source=done.source,
        timestamp=time.time_ns(),
        vclock=VectorClock({done.source: 1}),  # behind that worker's own earlier events
        data=TaskCompleted(result=3),
        task_id="b",
        attempt=1,
    )
    seq, _ = await bus.publish_event(forged)
    shown = cli(cluster, "replay", state.workflow_id, "--verify")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert f"seq {seq} task.completed" in shown.stderr
    assert "does not advance" in shown.stderr


async def test_until_shows_the_state_at_a_sequence(cluster: DevCluster, client: Client) -> None:
    state = await run(client, wf(*chain()))
    events = await client.events(state.workflow_id)
    first_done = next(e for e in events if e.type == EventType.TASK_COMPLETED and e.task_id == "a")
    then = state_until(events, seq=first_done.seq)
    assert then is not None
    assert then.tasks["a"].status == TaskStatus.COMPLETED
    assert then.tasks["b"].status != TaskStatus.COMPLETED
    assert then.status == WorkflowStatus.RUNNING
    shown = cli(cluster, "replay", state.workflow_id, "--until", str(first_done.seq), "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["state"] == "running"
    assert view["tasks"]["a"]["state"] == "completed"
    assert verify(events, state) == []


async def test_bad_replay_input_is_refused_clearly(cluster: DevCluster) -> None:
    unknown = cli(cluster, "replay", "wf-never-submitted")
    assert unknown.returncode == 3
    assert "no events" in unknown.stderr
    bad = cli(cluster, "replay", "wf-never-submitted", "--until", "yesterday")
    assert bad.returncode == 2
    assert "neither a stream sequence nor an ISO 8601 time" in bad.stderr


def test_until_parses_sequences_and_times() -> None:
    assert parse_until("42") == (42, None)
    assert parse_until("1970-01-01T00:00:01Z") == (None, 1_000_000_000)


async def test_replay_since_shows_the_cluster_window_filtered_by_type(
    cluster: DevCluster, client: Client
) -> None:
    since = datetime.fromtimestamp(time.time() - 1, tz=UTC).isoformat()
    good = await run(client, wf(*chain()))
    bad = await run(client, wf({"id": "x", "capability": "fatal"}))
    shown = cli(cluster, "replay", "--since", since, "--type", "task.failed", "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {line["type"] for line in lines} == {"task.failed"}
    assert bad.workflow_id in {line["workflow_id"] for line in lines}
    globbed = cli(cluster, "replay", "--since", "10m", "--type", "workflow.[cf]*", "--json")
    assert globbed.returncode == 0, globbed.stderr
    kinds = {(e["workflow_id"], e["type"]) for e in map(json.loads, globbed.stdout.splitlines())}
    assert (good.workflow_id, "workflow.completed") in kinds
    assert (bad.workflow_id, "workflow.failed") in kinds
    assert (good.workflow_id, "workflow.started") not in kinds
    table = cli(cluster, "replay", "--since", since)
    assert table.returncode == 0, table.stderr
    assert good.workflow_id in table.stdout
    assert bad.workflow_id in table.stdout


def test_replay_needs_an_id_or_a_window(cluster: DevCluster) -> None:
    assert cli(cluster, "replay").returncode == 2
    shown = cli(cluster, "replay", "--since", "yesterday-ish")
    assert shown.returncode == 2
    assert "--since" in shown.stderr
    assert cli(cluster, "replay", "--since", "5m", "--verify").returncode == 2
    assert cli(cluster, "replay", "--since", "5m", "--until", "12").returncode == 2


async def test_replay_exports_json_mermaid_and_chrome_trace(
    cluster: DevCluster, client: Client, tmp_path: Path
) -> None:
    state = await run(
        client,
        wf(
            {"id": "a", "capability": "add", "params": {"value": 1}},
            {
                "id": "f",
                "capability": "flaky",
                "params": {"succeed_on": 2},
                "retry": {"initial_interval_s": 0.01},
                "depends_on": ["a"],
            },
            {"id": "z", "capability": "add", "depends_on": ["a", "f"]},
        ),
    )
    wid = state.workflow_id
    exported = json.loads(cli(cluster, "replay", wid, "--format", "json", "--verify").stdout)
    assert exported["state"]["state"] == "completed"
    assert exported["problems"] == []
    assert len(exported["events"]) == len(await client.events(wid))
    mermaid = cli(cluster, "replay", wid, "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert "<b>f</b><br/>flaky · completed · 2 attempts" in mermaid.stdout
    assert mermaid.stdout.count("-->") == 3
    trace_file = tmp_path / "trace.json"
    written = cli(cluster, "replay", wid, "--format", "chrome-trace", "-o", str(trace_file))
    assert written.returncode == 0, written.stderr
    trace = json.loads(trace_file.read_text())["traceEvents"]
    spans = [e for e in trace if e.get("cat") == "task"]
    assert sorted((s["args"]["task_id"], s["args"]["attempt"]) for s in spans) == [
        ("a", 1), ("f", 1), ("f", 2), ("z", 1),
    ]  # fmt: skip
    workers = {e["args"]["name"] for e in trace if e["name"] == "process_name"}
    assert {s.worker for s in state.tasks.values()} <= workers
    early = cli(
        cluster, "replay", wid, "--format", "mermaid", "--until", str(exported["events"][2]["seq"])
    )
    assert "· completed" not in early.stdout
    bad = cli(cluster, "replay", wid, "--format", "svg")
    assert bad.returncode == 2
    assert "--format must be one of" in bad.stderr

"""`agenticflow replay --format`: how exports compose with --verify, --until and -o.

The formats themselves are checked in tests/unit/test_exports.py and, on a
real run, in tests/integration/test_replay.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowState
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.wire.events import EventType
from tests.integration.helpers import by_task, run, wf
from tests.integration.test_cli import cli


async def chain(client: Client) -> WorkflowState:
    return await run(
        client,
        wf(
            {"id": "a", "capability": "add", "params": {"value": 1}},
            {"id": "b", "capability": "add", "params": {"value": 2}, "depends_on": ["a"]},
        ),
    )


async def test_verify_problems_fail_every_format(
    cluster: DevCluster, client: Client, bus: Bus, tmp_path: Path
) -> None:
    state = await chain(client)
    wid = state.workflow_id
    corrupted = state.model_copy(deep=True)
    corrupted.tasks["b"].result = 999
    store = await bus.kv(bus.names.workflows_bucket)
    await store.put(wid, corrupted.to_snapshot())

    exported = cli(cluster, "replay", wid, "--format", "json", "--verify")
    assert exported.returncode == 1, exported.stderr
    assert any("tasks.b.result" in p for p in json.loads(exported.stdout)["problems"])
    drawn = cli(cluster, "replay", wid, "--format", "mermaid", "--verify")
    assert drawn.returncode == 1, drawn.stderr
    assert drawn.stdout.startswith("flowchart LR")  # stdout stays the export ...
    assert "tasks.b.result" in drawn.stderr  # ... and the problem is named on stderr
    trace_file = tmp_path / "trace.json"
    traced = cli(
        cluster, "replay", wid, "--format", "chrome-trace", "--verify", "-o", str(trace_file)
    )
    assert traced.returncode == 1, traced.stderr
    assert "tasks.b.result" in traced.stderr
    assert json.loads(trace_file.read_text())["traceEvents"]
    last = str(state.last_seq)
    as_of = cli(cluster, "replay", wid, "--until", last, "--verify")
    assert as_of.returncode == 1, as_of.stdout + as_of.stderr
    assert "tasks.b.result" in as_of.stderr
    as_of_json = cli(cluster, "replay", wid, "--until", last, "--verify", "--json")
    assert as_of_json.returncode == 1, as_of_json.stderr
    assert json.loads(as_of_json.stdout)["state"] == "completed"


async def test_until_cuts_every_export(cluster: DevCluster, client: Client) -> None:
    state = await chain(client)
    wid = state.workflow_id
    events = await client.events(wid)
    b_started = by_task(events, EventType.TASK_STARTED)[("b", 1)]
    assert b_started.seq is not None
    cut = str(b_started.seq)

    exported = json.loads(cli(cluster, "replay", wid, "--format", "json", "--until", cut).stdout)
    assert [e["seq"] for e in exported["events"]] == [
        e.seq for e in events if (e.seq or 0) <= b_started.seq
    ]
    assert exported["state"]["state"] == "running"
    assert exported["state"]["tasks"]["b"]["state"] == "running"
    drawn = cli(cluster, "replay", wid, "--format", "mermaid", "--until", cut).stdout
    assert "<b>a</b><br/>add · completed" in drawn
    assert "<b>b</b><br/>add · running" in drawn
    traced = cli(cluster, "replay", wid, "--format", "chrome-trace", "--until", cut).stdout
    spans = {
        e["args"]["task_id"]: e for e in json.loads(traced)["traceEvents"] if e.get("cat") == "task"
    }
    assert spans["a"]["args"]["outcome"] == "completed"
    assert spans["b"]["args"]["outcome"] == "unfinished"
    assert spans["b"]["dur"] == 0  # b's start is the last event before the cut


async def test_export_options_that_do_not_apply_are_refused(
    cluster: DevCluster, client: Client, tmp_path: Path
) -> None:
    target = tmp_path / "out.txt"
    window = cli(cluster, "replay", "--since", "5m", "--format", "mermaid")
    assert window.returncode == 2
    assert "--format" in window.stderr
    written = cli(cluster, "replay", "--since", "5m", "-o", str(target))
    assert written.returncode == 2
    assert "--output" in written.stderr
    assert not target.exists()
    wid = (await chain(client)).workflow_id
    both = cli(cluster, "replay", wid, "--json", "--format", "mermaid")
    assert both.returncode == 2
    assert "--json" in both.stderr
    text_out = cli(cluster, "replay", wid, "-o", str(target))
    assert text_out.returncode == 2
    assert "--output" in text_out.stderr
    nowhere = cli(cluster, "replay", wid, "--format", "json", "-o", str(tmp_path / "no" / "x"))
    assert nowhere.returncode == 2
    assert "cannot write" in nowhere.stderr

"""Exports of a replayed workflow: JSON, Mermaid and Chrome trace."""

from __future__ import annotations

import json

from agenticflow.coordinator.exports import render, to_chrome_trace, to_json, to_mermaid
from agenticflow.coordinator.reducer import fold
from tests.unit.test_forks import run_diamond
from tests.unit.test_reducer import DIAMOND


def test_json_holds_every_event_and_the_refolded_state() -> None:
    events = run_diamond()
    data = json.loads(render("json", events, fold(events)))
    assert [e["seq"] for e in data["events"]] == [e.seq for e in events]
    assert data["state"]["state"] == "completed"
    assert data == json.loads(json.dumps(to_json(events, fold(events)), default=str))


def test_mermaid_has_a_node_per_task_and_an_edge_per_dependency() -> None:
    state = fold(run_diamond(fail="c"))
    assert state is not None
    text = to_mermaid(state)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = [line for line in lines if '["<b>' in line]
    assert len(nodes) == len(DIAMOND.tasks)
    edges = [line for line in lines if "-->" in line]
    assert len(edges) == sum(len(spec.depends_on) for spec in DIAMOND.tasks)
    assert any("<b>c</b><br/>work · failed" in node for node in nodes)
    assert "classDef failed" in text
    assert "classDef completed" in text


def test_chrome_trace_has_a_span_per_attempt_on_its_worker_and_agent() -> None:
    events = run_diamond(fail="d")
    trace = to_chrome_trace(events)["traceEvents"]
    spans = [e for e in trace if e["ph"] == "X" and e["cat"] == "task"]
    starts = [e for e in events if e.type.value == "task.started"]
    assert len(spans) == len(starts)
    assert all(span.get("dur", 0) >= 0 and span["ts"] >= 0 for span in trace if "ts" in span)
    processes = {e["args"]["name"]: e["pid"] for e in trace if e["name"] == "process_name"}
    assert set(processes) == {"coordinator", "w-a", "w-b", "w-c", "w-d"}
    by_task = {span["args"]["task_id"]: span for span in spans}
    assert by_task["d"]["args"]["outcome"] == "failed"
    assert by_task["b"]["args"]["outcome"] == "completed"
    assert by_task["b"]["pid"] == processes["w-b"]
    queued = [e for e in trace if e.get("cat") == "queue"]
    assert len(queued) == len(spans)


def test_an_unfinished_attempt_runs_to_the_last_event() -> None:
    events = run_diamond()
    cut = [e for e in events if not (e.task_id == "d" and e.type.value == "task.completed")]
    cut = [e for e in cut if not e.type.value.startswith("workflow.completed")]
    spans = [e for e in to_chrome_trace(cut)["traceEvents"] if e.get("cat") == "task"]
    (d,) = [s for s in spans if s["args"]["task_id"] == "d"]
    assert d["args"]["outcome"] == "unfinished"


def test_nothing_to_export() -> None:
    assert to_chrome_trace([]) == {"traceEvents": [], "displayTimeUnit": "ms"}
    assert render("mermaid", [], None) == "flowchart LR\n"

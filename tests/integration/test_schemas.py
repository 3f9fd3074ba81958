"""Schema evolution and bad input on a real stream.

A workflow's recorded history is copied, under another subject prefix, as
version-1 payloads (``task.started`` v1 had no ``instance``), then replayed
with this (version-2) code. Then the copy is damaged: a message deleted from
the middle, an event of an unknown schema version, an undecodable body. Replay
names each by its stream sequence and goes on with the rest.
"""

from __future__ import annotations

import json
import subprocess

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import fold
from agenticflow.coordinator.replay import verify
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.codec import H_MSG_ID, H_SCHEMA, pack, unpack
from agenticflow.shared.wire.events import EventType, MessageRejected, TaskStarted
from tests.integration.helpers import agenticflow, run, wf

COPY = "wf-copied-as-v1"


async def copy_as_v1(source: Bus, source_id: str, target: Bus) -> list[int]:
    """Re-publish a workflow's events on ``target`` under id COPY, task.started as
    version 1; returns the new stream sequences."""
    msgs = await source.read_stored(
        source.names.events_stream, source.names.workflow_events(source_id)
    )
    seqs = []
    for msg in msgs:
        headers = dict(msg.headers or {})
        # As published: the stored subject carries the source's partition token.
        subject = source.names.published_subject(msg.subject)
        subject = subject.replace(source.names.prefix + ".", target.names.prefix + ".", 1)
        subject = subject.replace(source_id, COPY)
        headers[H_MSG_ID] = headers[H_MSG_ID].replace(source_id, COPY)
        body = msg.data
        if subject.endswith(".task.started"):
            raw = unpack(body)
            del raw["data"]["instance"]
            body = pack(raw)
            headers[H_SCHEMA] = "1"
        seq, _ = await target.publish_raw(subject, body, headers)
        seqs.append(seq)
    return seqs


def replay_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return agenticflow(settings, "replay", COPY, *args)


def chain(length: int) -> WorkflowDefinition:
    """Tasks t0 -> t1 -> ... adding 1, 2, ..."""
    return wf(
        *(
            {"id": f"t{i}", "capability": "add", "params": {"value": i + 1}}
            | ({"depends_on": [f"t{i - 1}"]} if i else {})
            for i in range(length)
        )
    )


async def test_a_version_1_stream_replays_with_version_2_code(
    client: Client, bus: Bus, settings_for: Settings
) -> None:
    source = await run(client, chain(2))
    async with connected(settings_for, name="v1-copy") as target:
        await target.ensure_topology()
        await copy_as_v1(bus, source.workflow_id, target)
        events = await Client(bus=target, node_id="reader").events(COPY)
    started = [e for e in events if e.type == EventType.TASK_STARTED]
    assert len(started) == 2
    for event in started:
        assert event.migrated_from == 1
        assert isinstance(event.data, TaskStarted)
        assert event.data.instance == f"{event.data.worker}.{event.data.agent}"
    state = fold(events)
    assert state is not None
    assert state.status == WorkflowStatus.COMPLETED
    assert state.output == source.output
    assert state.tasks["t0"].instance == started[0].data.instance  # type: ignore[attr-defined]
    assert verify(events, None) == []
    shown = replay_cli(settings_for, "--verify")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "warning" not in shown.stderr


async def test_replay_names_what_it_cannot_read_and_goes_on(
    client: Client, bus: Bus, settings_for: Settings
) -> None:
    source = await run(client, chain(3))
    async with connected(settings_for, name="damaged-copy") as target:
        await target.ensure_topology()
        seqs = await copy_as_v1(bus, source.workflow_id, target)
        names = target.names
        gone = seqs[len(seqs) // 2]
        await target.delete_stored(names.events_stream, gone)
        subject = names.event_subject(COPY, EventType.TASK_HEARTBEAT.value)
        future = {H_MSG_ID: "from-the-future", "AF-Type": "task.heartbeat", H_SCHEMA: "99"}
        future |= {"AF-VClock": "x:1", "AF-Source": "w9"}
        newer, _ = await target.publish_raw(subject, pack({"ts": 1, "data": {}}), future)
        garbage_headers = {**future, H_MSG_ID: "garbage", H_SCHEMA: "1"}
        garbage, _ = await target.publish_raw(subject, b"\xc1\xc1", garbage_headers)
        reader = Client(bus=target, node_id="reader")
        events = await reader.events(COPY)
        problems = await reader.reading_problems(events)
    assert len(events) == len(seqs) - 1 + 2  # everything still readable was read
    rejected = {e.seq: e.data for e in events if isinstance(e.data, MessageRejected)}
    assert "schema version 99, newer than this node" in rejected[newer].reason
    assert "not valid msgpack" in rejected[garbage].reason
    assert any(p.startswith(f"seq {newer}: unreadable event") for p in problems)
    assert any(p.startswith(f"seq {garbage}: unreadable event") for p in problems)
    assert any(p.startswith(f"seq {gone}: deleted from the stream") for p in problems)
    shown = replay_cli(settings_for, "--json")
    assert shown.returncode == 0, shown.stderr
    assert f"seq {gone}: deleted" in shown.stderr
    data = json.loads(shown.stdout)
    assert data["warnings"] == problems
    assert len(data["events"]) == len(events)


async def test_a_history_whose_beginning_is_gone_is_named(
    client: Client, bus: Bus, settings_for: Settings
) -> None:
    source = await run(client, chain(1))
    async with connected(settings_for, name="headless-copy") as target:
        await target.ensure_topology()
        seqs = await copy_as_v1(bus, source.workflow_id, target)
        await target.delete_stored(target.names.events_stream, seqs[0])
        reader = Client(bus=target, node_id="reader")
        problems = await reader.reading_problems(await reader.events(COPY))
    assert any(f"seq {seqs[1]}: the history starts with workflow.started" in p for p in problems), (
        problems
    )

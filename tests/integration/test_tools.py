"""Tools on a real cluster: worker processes serving ``tests.support.tools_app``.

Two worker processes with one slot each (so two tasks at once run in two
processes), a coordinator, the session's nats-server. The tools leave one line
per real call in a file, so the tests count side effects across processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.bus.nats_backend import FetchTimeout
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.resilience import CircuitOpenError
from agenticflow.shared.wire.codec import unpack
from agenticflow.shared.wire.events import Event, EventType, TaskToolCalled
from agenticflow.shared.wire.ids import node_pid
from agenticflow.worker.tools import ClusterToolState, ToolBox, ToolRegistry, read_states
from agenticflow.worker.tools.ratelimit import RateRecord
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import agenticflow, of_type, run, wf
from tests.support import tools_app
from tests.support.natsbus import connected

pytestmark = pytest.mark.timeout(120)

SECRET = "hunter2-do-not-leak"


@dataclass
class ToolsCluster:
    cluster: DevCluster
    bus: Bus
    client: Client
    observer: Observer


@pytest.fixture(scope="module")
async def tc(nats_server: NatsServer, log_dir: Path) -> AsyncIterator[ToolsCluster]:
    prefix = unique_prefix("tools")
    async with (
        DevCluster(
            app="tests.support.tools_app:app",
            workers=2,
            concurrency=1,
            nats_url=nats_server.url,
            prefix=prefix,
            settings={"task_ack_wait_s": 2},
            env={"TOOL_SECRET": SECRET},
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="tools-tests") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        yield ToolsCluster(cluster, bus, Client(bus=bus, node_id="tools-tests"), observer)


def task(task_id: str, capability: str, **params: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "capability": capability,
        "params": params,
        "timeout_s": 60,
        "retry": {"max_attempts": 2, "initial_interval_s": 0.1},
    }


def audits(events: list[Event]) -> list[TaskToolCalled]:
    out = []
    for event in of_type(events, EventType.TASK_TOOL_CALLED):
        assert isinstance(event.data, TaskToolCalled)
        out.append(event.data)
    return sorted(out, key=lambda a: (a.call, a.outcome))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def local_box(bus: Bus, worker: str) -> tuple[ToolBox, ClusterToolState]:
    """A tool box in this test process: another process on the cluster's KV."""
    state = ClusterToolState(bus=bus, worker=worker)
    box = ToolBox(
        ToolRegistry(tools_app.TOOLS, permissions=tools_app.GRANTED),
        state=state,
        workflow_id="test-process",
        task_id=worker,
        agent="test",
    )
    return box, state


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "error", "outcome", "message"),
    [
        ("no_such_tool", {}, "UnknownToolError", "unknown", "has no tool 'no_such_tool'"),
        ("bump", {"value": -5}, "ToolValidationError", "invalid", "value: Input should be"),
        ("purge_everything", {}, "ToolPermissionError", "denied", "lacks permission admin"),
    ],
)
async def test_bad_input_is_a_typed_error_recorded_and_changes_nothing(
    tc: ToolsCluster,
    tmp_path: Path,
    tool: str,
    args: dict[str, Any],
    error: str,
    outcome: str,
    message: str,
) -> None:
    trace = tmp_path / "trace.txt"
    definition = wf(task("t", "use_tool", tool=tool, args={"path": str(trace), **args}))
    state = await run(tc.client, definition)
    assert state.status == WorkflowStatus.FAILED
    failure = state.tasks["t"].error
    assert failure is not None
    assert (failure.type, failure.retryable) == (error, False)
    assert message in failure.message
    (record,) = audits(await tc.client.events(state.workflow_id))
    assert (record.tool, record.outcome, record.result_hash) == (tool, outcome, None)
    assert record.error is not None
    assert record.error.type == error
    assert not trace.exists()  # the tool never ran
    assert tool not in {s["key"] for s in await read_states(tc.bus)}  # no breaker touched


# --- audit, call_many ----------------------------------------------------------------


async def test_call_many_is_audited_in_input_order_with_hashes(
    tc: ToolsCluster, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.txt"
    calls = [
        ["bump", {"path": str(trace), "value": 1}],
        ["bump", {"path": str(trace), "value": "x"}],
        ["bump", {"path": str(trace), "value": 3}],
        ["sandboxed_add", {"path": "-", "value": 4}],
    ]
    state = await run(tc.client, wf(task("m", "use_many", calls=calls)))
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    result = state.tasks["m"].result
    assert [r["ok"] for r in result] == [True, False, True, True]
    assert result[1]["error"] == "ToolValidationError"
    assert [result[0]["value"]["value"], result[2]["value"]["value"]] == [1, 3]
    assert result[3]["value"]["value"] == 5
    wid = state.workflow_id
    records = audits(await tc.client.events(wid))
    assert [(r.call, r.outcome) for r in records] == [
        (0, "ok"),
        (1, "invalid"),
        (2, "ok"),
        (3, "ok"),
    ]
    assert [r.key for r in records] == [
        f"{wid}:m:0:tool:bump",
        f"{wid}:m:1:tool:bump",
        f"{wid}:m:2:tool:bump",
        f"{wid}:m:3:tool:sandboxed_add",
    ]
    for record in records:
        assert len(record.params_hash) == 32
        assert record.agent == "use_many"
        assert record.worker
        assert record.instance.startswith(f"{record.worker}.use_many.")
        assert (record.result_hash is None) == (record.outcome != "ok")
    assert records[0].params_hash != records[2].params_hash
    # One line per real call, each carrying the idempotency key the tool was given.
    assert sorted(line.split()[0] for line in lines(trace)) == [records[0].key, records[2].key]
    effects = of_type(await tc.client.events(wid), EventType.TASK_EFFECT_RECORDED)
    assert len(effects) == 3


# --- the sandbox in a worker process ---------------------------------------------------


async def test_a_sandboxed_tool_does_not_see_the_workers_secret(tc: ToolsCluster) -> None:
    definition = wf(
        task("inside", "use_tool", tool="env_in_sandbox"),
        task("outside", "use_tool", tool="env_in_process"),
    )
    state = await run(tc.client, definition)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["outside"].result["secret"] == SECRET  # the worker has it
    assert state.tasks["inside"].result["secret"] is None
    assert "TOOL_SECRET" not in state.tasks["inside"].result["env"]
    assert "AGENTICFLOW_NATS_URL" not in state.tasks["inside"].result["env"]


# --- cluster-wide circuit breaker ------------------------------------------------------


async def test_a_breaker_opened_in_one_process_stops_the_others(
    tc: ToolsCluster, tmp_path: Path
) -> None:
    trace = tmp_path / "remote.txt"
    remote = ["remote_call", {"path": str(trace)}]
    # A worker process fails three times: the provider's circuit opens.
    first = await run(tc.client, wf(task("a", "use_many", calls=[remote, remote, remote])))
    assert first.status == WorkflowStatus.COMPLETED, first.reason
    assert [r["error"] for r in first.tasks["a"].result] == ["ConnectionError"] * 3
    assert len(lines(trace)) == 3

    # This test process (its own connection and state) is refused at once...
    box, state = local_box(tc.bus, "test-a")
    try:
        with pytest.raises(CircuitOpenError, match="'remote-api' is open") as refused:
            await box.call("remote_call", path=str(trace))
        assert refused.value.retry_after_s > 60
    finally:
        await state.aclose()
    # ...and so is the next task, on whichever worker process takes it.
    second = await run(tc.client, wf(task("b", "use_many", calls=[remote])))
    assert second.tasks["b"].result[0]["error"] == "CircuitOpenError"
    assert [r.outcome for r in audits(await tc.client.events(second.workflow_id))] == ["open"]
    assert len(lines(trace)) == 3  # nobody called the provider again

    # The other way round: this process opens a circuit, the workers see it.
    other = tmp_path / "other.txt"
    box, state = local_box(tc.bus, "test-b")
    try:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await box.call("other_call", path=str(other))
    finally:
        await state.aclose()
    third = await run(
        tc.client, wf(task("c", "use_many", calls=[["other_call", {"path": str(other)}]]))
    )
    assert third.tasks["c"].result[0]["error"] == "CircuitOpenError"
    assert len(lines(other)) == 2

    # `agents --json` shows the shared state.
    listed = agenticflow(tc.cluster.settings, "agents", "--json")
    assert listed.returncode == 0, listed.stderr
    breakers = {e["key"]: e for e in json.loads(listed.stdout) if e.get("role") == "breaker"}
    assert breakers["remote-api"]["state"] == "open"
    assert breakers["remote-api"]["failures"] == 3
    assert "ConnectionError" in breakers["remote-api"]["last_error"]
    assert breakers["other-api"]["state"] == "open"
    assert breakers["other-api"]["by"] == "test-b"


# --- cluster-wide rate limit -----------------------------------------------------------


async def test_a_rate_limit_holds_across_two_worker_processes(
    tc: ToolsCluster, tmp_path: Path
) -> None:
    """``limited`` allows 3 calls in any 1-second window (GCRA, burst 1), for both
    processes together. Every admission is one compare-and-set on the shared
    record, so the test follows the record and checks the admission times
    themselves: exact, with no allowance for scheduling jitter."""
    trace = tmp_path / "limited.txt"
    both = {"on_feedback": True, "args": {"path": str(trace)}}
    definition = wf(
        task("x", "use_tool", tool="limited", times=6, **both),
        task("y", "use_tool", tool="limited", times=6, **both),
    )
    since_us = math.floor(time.time() * 1e6)
    store = await tc.bus.kv(tc.bus.names.ratelimits_bucket)
    watcher = await store.watch("limited")
    admissions: list[RateRecord] = []

    async def follow() -> None:
        while len(admissions) < 12:
            try:
                entry = await watcher.updates(timeout=1.0)
            except FetchTimeout:
                continue
            if entry is None or entry.value is None:
                continue
            record = RateRecord.from_dict(unpack(entry.value))
            if record.at_us >= since_us:
                admissions.append(record)

    following = asyncio.create_task(follow())
    try:
        wid = await tc.client.submit(definition)
        await tc.client.wait_for(
            wid,
            lambda s: (
                s.is_terminal or all(t.status == TaskStatus.RUNNING for t in s.tasks.values())
            ),
            timeout=60,
        )
        await tc.client.feedback(wid, "go")  # both handlers start calling now
        state = await tc.client.wait(wid, timeout=60)
        assert state.status == WorkflowStatus.COMPLETED, state.reason
        async with asyncio.timeout(10):
            await following
    finally:
        following.cancel()
        await watcher.stop()
    calls = [(float(t), pid) for t, pid in (line.split() for line in lines(trace))]
    assert len(calls) == 12
    assert len({pid for _, pid in calls}) == 2, "both worker processes called the tool"
    assert len({record.by for record in admissions}) == 2, "both admitted calls"
    # The feedback starts both tasks' calls at the same moment: with a
    # per-process limit, or a fixed window at its edge, 4 or more admissions
    # would fall within one second. Any 4 consecutive ones span a full second.
    at = sorted(record.at_us for record in admissions)
    assert len(at) == 12
    spans = [later - earlier for earlier, later in zip(at, at[3:], strict=False)]
    assert min(spans) >= 1_000_000, spans
    # Burst 1: calls are spaced a third of a second apart, so 12 take > 3.6 s.
    assert at[-1] - at[0] >= 11 * 1_000_000 // 3
    limits = {e["key"]: e for e in await read_states(tc.bus) if e["role"] == "rate_limit"}
    assert limits["limited"]["calls"] == 3
    assert limits["limited"]["at_us"] == at[-1]


# --- effectively once: a worker killed after the side effect --------------------------


@pytest.mark.chaos
async def test_a_redelivered_task_does_not_repeat_a_tool_call(
    tc: ToolsCluster, tmp_path: Path
) -> None:
    counter = tmp_path / "counter.txt"
    wid = await tc.client.submit(wf(task("once", "effect_then_wait", counter=str(counter))))

    def called(observer: Observer) -> bool:
        return any(
            e.workflow_id == wid and e.type == EventType.TASK_TOOL_CALLED for _, e in observer.seen
        )

    await tc.observer.until(called, timeout=60)
    (event,) = [
        e
        for _, e in tc.observer.seen
        if e.workflow_id == wid and e.type == EventType.TASK_TOOL_CALLED
    ]
    assert isinstance(event.data, TaskToolCalled)
    assert event.data.outcome == "ok"
    assert len(lines(counter)) == 1
    victim = next(p for p in tc.cluster.worker_procs if p.pid == node_pid(event.data.worker))
    DevCluster.kill(victim)  # SIGKILL after the side effect, before the task completed

    def served_from_cache(observer: Observer) -> bool:
        return any(
            e.workflow_id == wid
            and isinstance(e.data, TaskToolCalled)
            and e.data.outcome == "cached"
            for _, e in observer.seen
        )

    await tc.observer.until(served_from_cache, timeout=60)  # redelivered, past the call
    await tc.client.feedback(wid, "go")

    state: WorkflowState = await tc.client.wait(wid, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert len(lines(counter)) == 1, "the side effect happened exactly once"
    assert state.tasks["once"].result["worker"] != event.data.worker
    records = audits(await tc.client.events(wid))
    assert [(r.call, r.outcome) for r in records] == [(0, "cached"), (0, "ok")]
    assert records[0].key == records[1].key == f"{wid}:once:0:tool:bump"
    assert records[0].result_hash == records[1].result_hash

"""A worker SIGKILLed in the middle of a ``run_agent`` loop: the task completes
on another worker, resuming after the last completed step -- the model is not
asked again for a step that had completed, and no tool runs twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.llm_stub import LLMStubProcess
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.wire.events import EventType, TaskEffectRecorded, TaskToolCalled
from agenticflow.shared.wire.ids import node_pid
from agenticflow.shared.wire.usage import llm_usage
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import wf
from tests.support.llm import llm_stub

__all__ = ["llm_stub"]

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

SCRIPT = {
    "rules": [
        {"turn": 0, "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"turn": 1, "tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]},
        # Step 3 hangs the first time: the worker is killed while it waits.
        {"turn": 2, "content": "too late", "delay_s": 60, "times": 1},
        {"turn": 2, "content": "5, and clear in Oslo"},
    ]
}


async def test_worker_killed_mid_loop_resumes_after_the_last_step(
    nats_server: NatsServer, log_dir: Path, tmp_path: Path, llm_stub: LLMStubProcess
) -> None:
    await llm_stub.aload(SCRIPT)
    tool_log = tmp_path / "tools.log"
    prefix = unique_prefix("llmkill")
    async with (
        DevCluster(
            app="tests.support.llm_app:app",
            workers=2,
            concurrency=1,
            nats_url=nats_server.url,
            prefix=prefix,
            settings={
                "task_ack_wait_s": 2,
                "lease_ttl_s": 3,
                "coordinator_ack_wait_s": 2,
                "llm_base_url": llm_stub.url,
                "llm_model": "stub-model",
                "llm_max_attempts": 1,
            },
            env={
                "LLM_TEST_TOOL_LOG": str(tool_log),
                "AGENTICFLOW_LLM_PRICES": json.dumps({"stub-model": [1.0, 2.0]}),
            },
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="llm-chaos") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        client = Client(bus=bus, node_id="llm-chaos")
        workflow_id = await client.submit(
            wf({"id": "agent", "capability": "llm_loop", "params": {"question": "2+3? Oslo?"}})
        )

        def effects(o: Observer) -> list[TaskEffectRecorded]:
            return [
                e.data
                for _, e in o.seen
                if e.workflow_id == workflow_id and isinstance(e.data, TaskEffectRecorded)
            ]

        # Steps 1 and 2 done (model, add, model, weather), step 3 asked: kill.
        await observer.until(lambda o: len(effects(o)) >= 4)
        await llm_stub.wait_for_requests(3, timeout=30)
        started = [
            e
            for _, e in observer.seen
            if e.type == EventType.TASK_STARTED and e.workflow_id == workflow_id
        ]
        victim = started[0].source
        cluster.kill(next(p for p in cluster.worker_procs if p.pid == node_pid(victim)))

        state = await client.wait(workflow_id, timeout=120)
        assert state.status == WorkflowStatus.COMPLETED, state.reason
        result = state.tasks["agent"].result
        assert result["output"] == "5, and clear in Oslo"
        assert result["steps"] == 3

        events = await client.events(workflow_id)
        [completed] = [e for e in events if e.type == EventType.TASK_COMPLETED]
        assert completed.source != victim  # the redelivered task, on the other worker
        assert not [e for e in events if e.type == EventType.TASK_FAILED]

    # The model was asked once for each completed step; step 3, in flight when
    # the worker died, was asked again. The tools ran once.
    requests = await llm_stub.arequests()
    by_turn = Counter(
        sum(1 for m in r["body"]["messages"] if m["role"] == "assistant") for r in requests
    )
    assert by_turn == {0: 1, 1: 1, 2: 2}, requests
    assert sorted(tool_log.read_text().splitlines()) == ["add 2 3", "weather Oslo"]
    # The survivor was served both tool results from the cache (audited as such).
    cached = [
        e.data.tool
        for e in events
        if isinstance(e.data, TaskToolCalled)
        and e.data.outcome == "cached"
        and e.source == completed.source
    ]
    assert cached == ["add", "weather"]
    # Usage counts each paid call once, whatever the attempts (the killed
    # call's answer never arrived, so it has no usage to count).
    usage = llm_usage(events)
    assert usage.total.calls == 3
    assert usage.by_task["agent"].calls == 3
    assert usage.total.cost_usd > 0

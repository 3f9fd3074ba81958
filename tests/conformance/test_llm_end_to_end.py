"""ctx.llm and run_agent on a real cluster of each backend (coordinator and
workers in this process, the model the local stub server): a loop of tools
completes, its tokens reach ``handle.stream()``, its usage is summed where
users look (``client.usage``, ``agenticflow status``), a failing provider
opens the cluster-wide breaker, and bad answers fail the task clearly.

The worker SIGKILLed mid-loop is tests/chaos/test_llm_crash.py."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import agenticflow.testing
from agenticflow.client import Client
from agenticflow.cluster.llm_stub import LLMStubProcess
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.security.seal import init_keys
from agenticflow.shared.wire.events import (
    EventType,
    TaskEffectRecorded,
    TaskFailed,
    TaskToolCalled,
)
from agenticflow.worker.tools import read_states
from tests.conformance.conftest import BACKENDS
from tests.conformance.test_end_to_end import backend_url
from tests.integration.helpers import agenticflow as run_cli
from tests.integration.helpers import wf
from tests.support.llm import llm_stub
from tests.support.llm_app import app

__all__ = ["llm_stub"]

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., AbstractAsyncContextManager[Client]]

LOOP = {
    "rules": [
        {"turn": 0, "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"turn": 1, "tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]},
        {
            "turn": 2,
            "content": "It is 5, and clear in Oslo",
            "usage": {"prompt_tokens": 100, "completion_tokens": 10},
        },
    ]
}


@pytest.fixture(params=BACKENDS)
def start(request: pytest.FixtureRequest, llm_stub: LLMStubProcess) -> Start:
    """``async with start(**settings) as client``: the LLM app on this test's backend."""
    backend: str = request.param

    def starting(**more: Any) -> AbstractAsyncContextManager[Client]:
        settings = {
            "prefix": f"llm{os.getpid()}x{os.urandom(3).hex()}",
            "task_ack_wait_s": 5,
            "llm_base_url": llm_stub.url,
            "llm_model": "stub-model",
            "llm_max_attempts": 1,
            "llm_prices": {"stub-model": (3.0, 15.0)},
            **more,
        }
        url = backend_url(backend, request)
        return agenticflow.testing.cluster(app, url=url, settings=settings)

    return starting


def loop_task(**params: Any) -> dict[str, Any]:
    return {
        "id": "agent",
        "capability": "llm_loop",
        "params": {"question": "2+3? And Oslo?", **params},
        "retry": {"max_attempts": 2, "initial_interval_s": 0},
    }


async def test_a_tool_loop_completes_with_its_usage(
    start: Start, llm_stub: LLMStubProcess, request: pytest.FixtureRequest
) -> None:
    await llm_stub.aload(LOOP)
    async with start() as client:
        handle = await client.start(wf(loop_task()))
        result = await handle.result(timeout=30)
        usage = await handle.usage()
        if "nats" in request.node.name:  # the CLI reads the same from another process
            settings = client.bus.settings
            env = {"AGENTICFLOW_NATS_URL": str(settings.url or settings.nats_url)}
            shown = await asyncio.to_thread(run_cli, settings, "status", handle.id, env=env)
            as_json = await asyncio.to_thread(
                run_cli, settings, "status", handle.id, "-o", "json", env=env
            )
    assert result["output"] == "It is 5, and clear in Oslo"
    assert [t["name"] for t in result["tool_calls"]] == ["add", "weather"]
    assert result["steps"] == 3
    assert len(await llm_stub.arequests()) == 3
    assert usage.total.calls == 3
    assert usage.by_task["agent"].calls == 3
    assert usage.total.output_tokens == result["usage"]["output_tokens"]
    # The last call's 100 + 10 tokens at 3 and 15 USD per million, plus the others.
    assert usage.total.cost_usd == pytest.approx(
        (usage.total.input_tokens * 3 + usage.total.output_tokens * 15) / 1e6
    )
    if "nats" in request.node.name:
        assert shown.returncode == 0, shown.stderr
        assert "model usage: 3 calls" in shown.stdout
        assert json.loads(as_json.stdout)["llm_usage"]["calls"] == 3


async def test_streamed_tokens_reach_the_reader(start: Start, llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"content": "tokens one by one, as made"}]})
    async with start() as client:
        handle = await client.start(
            wf({"id": "chat", "capability": "llm_chat", "params": {"stream": True}})
        )
        tokens = [chunk.data async for chunk in handle.stream(kinds=["token"])]
        result = await handle.result(timeout=30)
    assert result == {"texts": ["tokens one by one, as made"]}
    assert "".join(str(t) for t in tokens) == "tokens one by one, as made"
    assert len(tokens) == 6  # one per word, as the stub streamed them


async def test_a_failing_provider_opens_the_breaker(start: Start, llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"status": 500}]})
    async with start(llm_breaker_failures=2, llm_breaker_recovery_s=600) as client:
        task = {
            "id": "chat",
            "capability": "llm_chat",
            "retry": {"max_attempts": 3, "initial_interval_s": 0},
        }
        handle = await client.start(wf(task))
        state = await client.wait(handle.id, timeout=30)
        events = await handle.events()
        records = await read_states(client.bus)  # what `agenticflow agents --json` shows
    assert state.status == WorkflowStatus.FAILED
    [breaker] = [r for r in records if r["role"] == "breaker" and r["key"].startswith("llm-")]
    assert breaker["state"] == "open"
    assert "HTTP 500" in breaker["last_error"]
    errors = [e.data.error.type for e in events if isinstance(e.data, TaskFailed)]
    assert errors == ["LLMUnavailableError", "LLMUnavailableError", "CircuitOpenError"]
    assert len(await llm_stub.arequests()) == 2  # the open circuit called nobody


@pytest.mark.parametrize(
    ("script", "params", "error", "says"),
    [
        (
            {"rules": [{"tool_calls": [{"name": "delete_all", "arguments": {}}]}]},
            {},
            "UnknownToolError",
            "asked for tool 'delete_all'",
        ),
        (
            {"rules": [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}]},
            {"max_steps": 2},
            "AgentLoopError",
            "max_steps=2",
        ),
        ({"rules": [{"malformed": True}]}, {}, "LLMResponseError", "not JSON"),
        (
            {"rules": [{"tool_calls": [{"name": "add", "arguments": {"a": "x"}}]}]},
            {},
            "ToolValidationError",
            "invalid params for tool 'add'",
        ),
    ],
    ids=["unknown-tool", "max-steps", "malformed", "bad-arguments"],
)
async def test_bad_answers_fail_the_task_clearly(
    start: Start,
    llm_stub: LLMStubProcess,
    script: dict[str, Any],
    params: dict[str, Any],
    error: str,
    says: str,
) -> None:
    await llm_stub.aload(script)
    async with start() as client:
        handle = await client.start(wf(loop_task(**params)))
        state = await client.wait(handle.id, timeout=30)
        events = await handle.events()
    assert state.status == WorkflowStatus.FAILED
    failed = [e.data for e in events if e.type == EventType.TASK_FAILED]
    assert isinstance(failed[-1], TaskFailed)
    assert failed[-1].error.type == error
    assert says in failed[-1].error.message
    retried = len(failed) == 2
    assert retried == (error == "LLMResponseError")  # only a malformed answer may improve


async def test_rerun_and_fork_do_not_call_the_model_again(
    start: Start, llm_stub: LLMStubProcess
) -> None:
    await llm_stub.aload(LOOP)
    async with start() as client:
        first = await client.start(wf(loop_task()))
        result = await first.result(timeout=30)
        rerun = client.handle(await client.rerun(first.id))
        rerun_result = await rerun.result(timeout=30)
        rerun_usage = await rerun.usage()
        served = [
            e.data.replayed for e in await rerun.events() if isinstance(e.data, TaskEffectRecorded)
        ]
        fork = client.handle(await client.fork(first.id))
        fork_result = await fork.result(timeout=30)
    assert rerun_result == result
    assert fork_result == result
    assert served == [True] * 5  # three model calls and two tool calls, all from the recording
    assert rerun_usage.total.calls == 0  # nothing paid again
    assert len(await llm_stub.arequests()) == 3


async def test_a_retried_attempt_resumes_from_the_sealed_cache(
    start: Start, llm_stub: LLMStubProcess, tmp_path: Path
) -> None:
    """With keys (signed events, sealed tool-state records): step 3 fails once,
    the task is retried, and attempt 2 opens attempt 1's cached answers and
    tool results instead of calling again."""
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    rules = LOOP["rules"]
    await llm_stub.aload({"rules": [*rules[:2], {"turn": 2, "status": 500, "times": 1}, rules[2]]})
    async with start(security_dir=str(keys)) as client:
        handle = await client.start(wf(loop_task()))
        result = await handle.result(timeout=30)
        events = await handle.events()
        usage = await handle.usage()
    assert result["output"] == "It is 5, and clear in Oslo"
    assert not [e for e in events if e.type == EventType.MESSAGE_REJECTED]
    [failed] = [e.data for e in events if isinstance(e.data, TaskFailed)]
    assert failed.error.type == "LLMUnavailableError"
    turns = [
        sum(1 for m in r["body"]["messages"] if m["role"] == "assistant")
        for r in await llm_stub.arequests()
    ]
    assert turns == [0, 1, 2, 2]  # steps 1 and 2 once; step 3 failed, then again
    cached = [
        e.data.tool
        for e in events
        if isinstance(e.data, TaskToolCalled) and e.data.outcome == "cached"
    ]
    assert cached == ["add", "weather"]
    assert usage.total.calls == 3

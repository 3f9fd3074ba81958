"""ctx.llm and run_agent against the local stub server (a real process on a
free port): answers, tool calls, streaming, usage, retries, errors, the
answer cache a retried attempt uses, the recording a rerun uses, and the
cluster-wide breaker -- without a cluster (in-process tool state)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.llm_stub import LLMStubProcess
from agenticflow.shared.errors import (
    AgentLoopError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailableError,
    RateLimitedError,
    ReplayDivergedError,
    UnknownToolError,
)
from agenticflow.shared.ops.metrics import llm_calls, llm_output_tokens
from agenticflow.shared.resilience import CircuitOpenError
from agenticflow.shared.wire.events import RecordedEffect, TaskEffectRecorded
from agenticflow.worker.agent_loop import AgentResult, model_error, run_agent
from agenticflow.worker.effects import Effects
from agenticflow.worker.llm import LLM
from agenticflow.worker.llm_anthropic import AnthropicProvider
from agenticflow.worker.llm_provider import ChatProvider
from agenticflow.worker.tools import MemoryToolState, ToolBox, ToolRegistry
from agenticflow.worker.tools.spec import BreakerPolicy, RateLimit
from tests.support.llm import llm_stub
from tests.support.llm_app import add, weather

__all__ = ["llm_stub"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)

LOOP = {
    "rules": [
        {"turn": 0, "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"turn": 1, "tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]},
        {"turn": 2, "content": "2 + 3 is 5 and Oslo is clear"},
    ]
}


async def _no_sleep(_: float) -> None:
    return None


class Recorder:
    """Collects what an Effects object publishes."""

    def __init__(self) -> None:
        self.events: list[TaskEffectRecorded] = []

    async def __call__(self, data: TaskEffectRecorded, call: int) -> None:
        self.events.append(data)

    def effects(self, **kwargs: Any) -> Effects:
        return Effects(key_prefix="wf1:t1", worker="w1", publish=self, **kwargs)


def make_llm(
    stub: LLMStubProcess,
    *,
    state: MemoryToolState | None = None,
    effects: Effects | None = None,
    tokens: list[str] | None = None,
    attempts: int = 1,
    **kwargs: Any,
) -> LLM:
    async def put(text: str) -> bool:
        assert tokens is not None
        tokens.append(text)
        return True

    return LLM(
        provider=ChatProvider(base_url=stub.url, attempts=attempts, sleep=_no_sleep, timeout_s=10),
        model="stub-model",
        effects=effects,
        state=state if state is not None else MemoryToolState(),
        key_prefix="wf1:t1",
        stream=put if tokens is not None else None,
        **kwargs,
    )


async def test_chat_answers_records_and_prices(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(
        {
            "rules": [
                {
                    "content": "hello there",
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 500},
                }
            ]
        }
    )
    recorder = Recorder()
    llm = make_llm(llm_stub, effects=recorder.effects(), prices={"stub-model": (2.0, 10.0)})
    answer = await llm.chat([{"role": "user", "content": "hi"}])
    assert answer.text == "hello there"
    assert answer.served == "provider"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (1000, 500)
    assert answer.usage.cost_usd == pytest.approx(0.002 + 0.005)
    [event] = recorder.events
    assert event.effect.name == "llm:stub-model"
    assert event.key == "wf1:t1:0:llm:stub-model"
    assert event.effect.result["usage"]["cost_usd"] == pytest.approx(0.007)
    assert llm.usage.calls == 1


async def test_tool_calls_are_parsed(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(LOOP)
    answer = await make_llm(llm_stub).chat(
        [{"role": "user", "content": "sum"}], tools=ToolRegistry([add]).schemas()
    )
    assert answer.content is None
    [call] = answer.tool_calls
    assert (call.name, call.arguments) == ("add", {"a": 2, "b": 3})
    sent = (await llm_stub.arequests())[0]["body"]
    assert sent["tools"][0]["type"] == "function"
    assert sent["tools"][0]["function"]["name"] == "add"


async def test_streaming_hands_tokens_over_as_they_come(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"content": "one two three four"}]})
    tokens: list[str] = []
    answer = await make_llm(llm_stub, tokens=tokens).chat(
        [{"role": "user", "content": "count"}], stream=True
    )
    assert tokens == ["one ", "two ", "three ", "four"]
    assert answer.text == "one two three four"
    assert answer.usage.output_tokens == 4
    [request] = await llm_stub.arequests()
    assert request["stream"] is True


async def test_a_broken_stream_is_not_tried_again_after_tokens_went_out(
    llm_stub: LLMStubProcess,
) -> None:
    await llm_stub.aload({"rules": [{"content": "a b c d", "break_after": 2}]})
    tokens: list[str] = []
    with pytest.raises(LLMUnavailableError, match="failed 1 try: the stream broke"):
        await make_llm(llm_stub, tokens=tokens, attempts=3).chat(
            [{"role": "user", "content": "q"}], stream=True
        )
    assert tokens == ["a ", "b "]  # not "a b a b ...": readers saw each token once
    assert len(await llm_stub.arequests()) == 1


async def test_streamed_tool_calls_are_assembled(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(LOOP)
    answer = await make_llm(llm_stub, tokens=[]).chat(
        [{"role": "user", "content": "sum"}], stream=True
    )
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [("add", {"a": 2, "b": 3})]


async def test_a_retried_attempt_is_served_from_the_cache(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"content": "paid once"}]})
    state = MemoryToolState()
    first = await make_llm(llm_stub, state=state, effects=Recorder().effects()).chat(
        [{"role": "user", "content": "q"}]
    )
    # The next attempt of the same task: same keys, same tool state (KV in a cluster).
    recorder = Recorder()
    again = make_llm(llm_stub, state=state, effects=recorder.effects())
    second = await again.chat([{"role": "user", "content": "q"}])
    assert (first.served, second.served) == ("provider", "cache")
    assert second.text == "paid once"
    assert len(await llm_stub.arequests()) == 1
    assert again.usage.calls == 0  # not paid again
    assert recorder.events[0].key == "wf1:t1:0:llm:stub-model"
    # Another request at the same position is not served a stale answer.
    other = await make_llm(llm_stub, state=state).chat([{"role": "user", "content": "other"}])
    assert other.served == "provider"


async def test_a_rerun_is_served_from_the_recording(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"content": "recorded answer"}]})
    recorder = Recorder()
    await make_llm(llm_stub, effects=recorder.effects()).chat([{"role": "user", "content": "q"}])
    recorded: list[RecordedEffect] = [e.effect for e in recorder.events]
    tokens: list[str] = []
    rerun = LLM(
        provider=None,  # no endpoint at all: nothing may be called
        model="stub-model",
        effects=Recorder().effects(recorded=recorded, replay=True),
        stream=lambda text: _append(tokens, text),
    )
    answer = await rerun.chat([{"role": "user", "content": "q"}], stream=True)
    assert (answer.text, answer.served) == ("recorded answer", "recording")
    assert tokens == ["recorded answer"]
    with pytest.raises(ReplayDivergedError):
        await rerun.chat([{"role": "user", "content": "a call the run did not make"}])
    assert len(await llm_stub.arequests()) == 1


async def _append(tokens: list[str], text: str) -> bool:
    tokens.append(text)
    return True


async def test_429_is_retried_then_answered(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(
        {"rules": [{"status": 429, "retry_after": 0.01, "times": 2}, {"content": "finally"}]}
    )
    answer = await make_llm(llm_stub, attempts=3).chat([{"role": "user", "content": "q"}])
    assert answer.text == "finally"
    assert [r["status"] for r in await llm_stub.arequests()] == [429, 429, 200]


async def test_the_rate_limit_and_metrics_count_calls(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"content": "ok", "usage": {"completion_tokens": 7}}]})
    before = (llm_calls.counts.get("stub-model", 0), llm_output_tokens.counts.get("stub-model", 0))
    llm = make_llm(llm_stub, rate_limit=RateLimit(1, per_s=60))
    await llm.chat([{"role": "user", "content": "first"}])
    with pytest.raises(RateLimitedError, match="no free slot"):
        await llm.chat([{"role": "user", "content": "second"}])
    assert len(await llm_stub.arequests()) == 1
    after = (llm_calls.counts["stub-model"], llm_output_tokens.counts["stub-model"])
    assert after == (before[0] + 1, before[1] + 7)


async def test_failing_provider_opens_the_breaker(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"status": 500}]})
    state = MemoryToolState()
    llm = make_llm(
        llm_stub,
        state=state,
        attempts=2,
        breaker=BreakerPolicy(failure_threshold=2, recovery_timeout_s=60),
    )
    for _ in range(2):
        with pytest.raises(LLMUnavailableError, match="HTTP 500") as failed:
            await llm.chat([{"role": "user", "content": "q"}])
        assert failed.value.retryable
    assert len(await llm_stub.arequests()) == 4  # 2 calls x 2 tries
    with pytest.raises(CircuitOpenError):
        await llm.chat([{"role": "user", "content": "q"}])
    assert len(await llm_stub.arequests()) == 4  # not called
    assert (await state.breaker(llm.breaker_key)).state == "open"


async def test_refusal_is_not_retried_and_does_not_show_the_key() -> None:
    with LLMStubProcess(api_key="sk-right") as stub:
        llm = LLM(
            provider=ChatProvider(base_url=stub.url, api_key="sk-wrong-secret", attempts=3),
            model="m",
        )
        with pytest.raises(LLMRequestError, match="HTTP 401") as refused:
            await llm.chat([{"role": "user", "content": "q"}])
        assert not refused.value.retryable
        assert "sk-wrong-secret" not in str(refused.value)
        assert "sk-wrong-secret" not in repr(llm.provider)
        assert len(await stub.arequests()) == 0  # refused before it counted
        recorder = Recorder()
        good = LLM(
            provider=ChatProvider(base_url=stub.url, api_key="sk-right"),
            model="m",
            effects=recorder.effects(),
        )
        assert (await good.complete("hi")).startswith("echo: hi")
        assert recorder.events
        assert "sk-right" not in repr(recorder.events)  # the recording holds no key


async def test_malformed_answer_is_a_clear_error(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"malformed": True}]})
    with pytest.raises(LLMResponseError, match="no chat completion: the answer is not JSON"):
        await make_llm(llm_stub).chat([{"role": "user", "content": "q"}])


async def test_bad_requests_are_refused_before_any_call(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": []})
    llm = make_llm(llm_stub)
    with pytest.raises(ValueError, match="non-empty list"):
        await llm.chat([])
    with pytest.raises(ValueError, match="needs a role"):
        await llm.chat([{"content": "no role"}])
    with pytest.raises(ValueError, match="unknown option temprature"):
        await llm.chat([{"role": "user", "content": "q"}], temprature=0)
    unconfigured = LLM(provider=None)
    with pytest.raises(LLMRequestError, match="no model") as no_model:
        await unconfigured.complete("q")
    assert not no_model.value.retryable
    with pytest.raises(LLMRequestError, match="no endpoint: set AGENTICFLOW_LLM_BASE_URL"):
        await unconfigured.complete("q", model="m")
    assert await llm_stub.arequests() == []


def toolbox(state: MemoryToolState, effects: Effects | None = None) -> ToolBox:
    return ToolBox(
        ToolRegistry([add, weather]),
        state=state,
        workflow_id="wf1",
        task_id="t1",
        agent="helper",
        effects=effects,
    )


async def test_run_agent_calls_tools_until_an_answer(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(LOOP)
    state = MemoryToolState()

    async def attempt() -> AgentResult:
        """One attempt of the task: its own effects, the tool state they share."""
        effects = Recorder().effects()
        return await run_agent(
            make_llm(llm_stub, state=state, effects=effects),
            toolbox(state, effects),
            model=None,
            instructions="Use tools.",
            input="What is 2+3, and the weather in Oslo?",
            agent="helper",
        )

    result = await attempt()
    assert result.output == "2 + 3 is 5 and Oslo is clear"
    assert result.steps == 3
    assert [(t.name, t.result) for t in result.tool_calls] == [
        ("add", 5),
        ("weather", {"city": "Oslo", "sky": "clear", "celsius": 21}),
    ]
    requests = await llm_stub.arequests()
    assert len(requests) == 3
    last = requests[-1]["body"]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert last[3]["content"] == "5"
    assert result.usage.calls == 3

    # The same task again (a retried attempt): every step comes from the caches.
    again = await attempt()
    assert again.output == result.output
    assert len(await llm_stub.arequests()) == 3


async def test_run_agent_refuses_a_tool_it_does_not_offer(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload({"rules": [{"tool_calls": [{"name": "rm_rf", "arguments": {}}]}]})
    state = MemoryToolState()
    with pytest.raises(UnknownToolError, match="asked for tool 'rm_rf' at step 1"):
        await run_agent(
            make_llm(llm_stub, state=state),
            toolbox(state),
            model=None,
            instructions="",
            input="q",
            agent="helper",
        )
    # Offered tools are a subset: 'weather' is the agent's but not offered here.
    await llm_stub.aload(LOOP)
    await llm_stub.aload(
        {"rules": [{"tool_calls": [{"name": "weather", "arguments": {"city": "x"}}]}]}
    )
    with pytest.raises(UnknownToolError, match="offered: add"):
        await run_agent(
            make_llm(llm_stub, state=MemoryToolState()),
            toolbox(MemoryToolState()),
            model=None,
            instructions="",
            input="q",
            tools=["add"],
            agent="helper",
        )
    with pytest.raises(UnknownToolError, match="has no tool 'nope'"):
        await run_agent(
            make_llm(llm_stub),
            toolbox(MemoryToolState()),
            model=None,
            instructions="",
            input="q",
            tools=["nope"],
        )


async def test_run_agent_stops_at_max_steps(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(
        {"rules": [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}]}
    )
    state = MemoryToolState()
    with pytest.raises(AgentLoopError, match="max_steps=2"):
        await run_agent(
            make_llm(llm_stub, state=state),
            toolbox(state),
            model=None,
            instructions="",
            input="loop forever",
            max_steps=2,
        )
    assert len(await llm_stub.arequests()) == 2
    with pytest.raises(ValueError, match="max_steps"):
        await run_agent(
            make_llm(llm_stub), None, model=None, instructions="", input="q", max_steps=0
        )


def anthropic_llm(stub: LLMStubProcess, **kwargs: Any) -> LLM:
    return LLM(
        provider=AnthropicProvider(base_url=stub.url, attempts=1, timeout_s=10),
        model="claude-stub",
        **kwargs,
    )


async def test_anthropic_messages_api_answers_and_streams(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(
        {"rules": [{"content": "bonjour tout le monde", "usage": {"prompt_tokens": 11}}]}
    )
    tokens: list[str] = []
    llm = anthropic_llm(llm_stub, stream=lambda text: _append(tokens, text))
    plain = await llm.complete("hi", system="Be brief.")
    streamed = await llm.chat([{"role": "user", "content": "hi"}], stream=True)
    assert plain == streamed.text == "bonjour tout le monde"
    assert tokens == ["bonjour ", "tout ", "le ", "monde"]
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (11, 4)
    assert streamed.finish_reason == "stop"
    first = (await llm_stub.arequests())[0]
    assert first["api"] == "anthropic"
    assert first["body"]["system"] == "Be brief."
    assert first["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert first["body"]["max_tokens"] > 0


async def test_anthropic_tool_loop(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(LOOP)
    state = MemoryToolState()
    for stream in (False, True):
        result = await run_agent(
            anthropic_llm(llm_stub, state=MemoryToolState(), stream=lambda t: _append([], t)),
            toolbox(state),
            model=None,
            instructions="Use tools.",
            input="2+3? Oslo?",
            stream=stream,
        )
        assert result.output == "2 + 3 is 5 and Oslo is clear"
        assert [t.name for t in result.tool_calls] == ["add", "weather"]
    last = (await llm_stub.arequests())[2]["body"]
    assert last["tools"][0]["input_schema"]["properties"]["a"]["type"] == "integer"
    assert [m["role"] for m in last["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert last["messages"][1]["content"][0]["type"] == "tool_use"
    assert last["messages"][2]["content"][0]["type"] == "tool_result"
    assert last["messages"][2]["content"][0]["content"] == "5"


async def test_anthropic_key_goes_in_x_api_key() -> None:
    with LLMStubProcess(api_key="sk-ant-right") as stub:
        good = LLM(provider=AnthropicProvider(base_url=stub.url, api_key="sk-ant-right"), model="c")
        assert (await good.complete("hi")).startswith("echo: hi")
        bad = LLM(provider=AnthropicProvider(base_url=stub.url, api_key="sk-ant-wrong"), model="c")
        with pytest.raises(LLMRequestError, match="HTTP 401"):
            await bad.complete("hi")


async def test_run_agent_can_tell_the_model_about_tool_errors(llm_stub: LLMStubProcess) -> None:
    await llm_stub.aload(
        {
            "rules": [
                {
                    "turn": 0,
                    "tool_calls": [
                        {"name": "add", "arguments": {"a": "two", "b": 3}},
                        {"name": "shell", "arguments": {"cmd": "rm -rf /"}},
                    ],
                },
                {"turn": 1, "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
                {"turn": 2, "content": "5"},
            ]
        }
    )
    state = MemoryToolState()
    result = await run_agent(
        make_llm(llm_stub, state=state),
        toolbox(state),
        model=None,
        instructions="",
        input="2+3",
        tool_errors="tell_model",
    )
    assert result.output == "5"
    assert [(t.name, t.error is not None) for t in result.tool_calls] == [
        ("add", True),
        ("shell", True),
        ("add", False),
    ]
    told = (await llm_stub.arequests())[1]["body"]["messages"][-2:]
    assert [m["role"] for m in told] == ["tool", "tool"]
    assert "ToolValidationError: invalid params for tool 'add'" in told[0]["content"]
    assert "UnknownToolError" in told[1]["content"]
    assert result.to_dict()["tool_calls"][0]["error"].startswith("ToolValidationError")
    # Failures of the infrastructure still fail the loop: the task retries them.
    assert not model_error(RateLimitedError("busy", tool="add"))
    assert not model_error(CircuitOpenError("add", retry_after_s=1))
    assert model_error(RuntimeError("the tool's own bug"))
    unknown: Any = "ignore"
    with pytest.raises(ValueError, match="tool_errors"):
        await run_agent(
            make_llm(llm_stub), None, model=None, instructions="", input="q", tool_errors=unknown
        )


def test_the_stub_command_refuses_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "script.yaml"
    bad.write_text("rules:\n  - {content: hi, colour: blue}\n")
    done = subprocess.run(
        [sys.executable, "-m", "agenticflow", "llm-stub", "--port", "0", "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "rule 0 has unknown fields: colour" in done.stderr

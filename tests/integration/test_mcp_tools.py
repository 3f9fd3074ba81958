"""MCP servers' tools (``app.mcp``) against a real MCP server process built with
the SDK (tests/support/mcp_server.py): over stdio and over streamable HTTP, in
a tool box of this process, and end to end on a real cluster whose worker
process serves tests/support/mcp_app.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.llm_stub import LLMStubProcess
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.cluster.redis_server import free_port
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.errors import (
    ConfigError,
    ToolPermissionError,
    ToolValidationError,
    UnknownToolError,
)
from agenticflow.shared.security.audit import AuditKind, read_audit
from agenticflow.shared.wire.events import EventType, TaskToolCalled
from agenticflow.worker.agent_loop import run_agent
from agenticflow.worker.app import AgentApp
from agenticflow.worker.llm import LLM
from agenticflow.worker.llm_provider import ChatProvider
from agenticflow.worker.tools import MemoryToolState, ToolBox, ToolRegistry
from agenticflow.worker.tools.mcp import MCPToolError, MCPTools, MCPUnavailableError
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type, run, wf
from tests.support.listening import listening
from tests.support.llm import llm_stub
from tests.support.mcp_app import SERVER
from tests.support.natsbus import connected

pytestmark = pytest.mark.timeout(120)
__all__ = ["llm_stub"]  # the fixture, imported for pytest


def box_for(server: MCPTools, *granted: str) -> ToolBox:
    registry = ToolRegistry(server.tools, permissions=granted)
    return ToolBox(registry, workflow_id="w", task_id="t", agent="a")


@pytest.fixture
async def calc() -> AsyncIterator[MCPTools]:
    async with MCPTools("calc", command=SERVER, timeout_s=5) as server:
        yield server


# --- one server, this process -------------------------------------------------------


async def test_tools_are_listed_with_their_schemas_and_called(calc: MCPTools) -> None:
    names = [t.name for t in calc.tools]
    assert names[:3] == ["calc__add", "calc__echo", "calc__fail"]
    box = box_for(calc, "mcp:calc")
    add = next(s for s in box.schemas() if s["name"] == "calc__add")
    assert add["description"] == "Add two integers."
    assert add["parameters"]["required"] == ["a", "b"]
    assert await box.call("calc__add", a=2, b=3) == {"result": 5}
    assert await box.call("calc__echo", text="ab", times=2) == {"result": "abab"}
    assert await box.call("calc__text_upper", text="ab") == {"result": "AB"}
    info = next(t.info() for t in calc.tools if t.name == "calc__add")
    assert (info["permissions"], info["provider"], info["mcp_tool"]) == (
        ["mcp:calc"],
        "calc",
        "add",
    )


async def test_refusals_are_typed_and_never_reach_the_server(
    calc: MCPTools, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.txt"
    box = box_for(calc, "mcp:calc")
    with pytest.raises(ToolValidationError) as bad:
        await box.call("calc__record", path=str(trace), line=7)
    assert bad.value.errors == ["line: 7 is not of type 'string'"]
    with pytest.raises(UnknownToolError, match=r"has no tool 'calc__nope'"):
        await box.call("calc__nope")
    with pytest.raises(ToolPermissionError, match="lacks permission mcp:calc"):
        await box_for(calc).call("calc__record", path=str(trace), line="x")
    assert not trace.exists()
    assert await box.call("calc__record", path=str(trace), line="x") == {"result": 1}


async def test_an_is_error_answer_is_an_mcp_tool_error(calc: MCPTools) -> None:
    with pytest.raises(MCPToolError, match=r"MCP tool 'calc__fail' failed: .*boom") as failed:
        await box_for(calc, "mcp:*").call("calc__fail", message="boom")
    assert not isinstance(failed.value, MCPUnavailableError)
    assert failed.value.server == "calc"


async def test_a_crashed_server_is_restarted_by_the_next_call(calc: MCPTools) -> None:
    box = box_for(calc, "mcp:calc")
    first = (await box.call("calc__pid"))["result"]
    with pytest.raises(MCPUnavailableError, match=r"went away during a call of 'calc__crash'"):
        await box.call("calc__crash")  # in flight: not sent again
    second = (await box.call("calc__pid"))["result"]
    assert second != first
    assert calc.starts == 2


async def test_a_server_killed_between_calls_is_restarted(calc: MCPTools) -> None:
    box = box_for(calc, "mcp:calc")
    pid = (await box.call("calc__pid"))["result"]
    session = calc._session
    assert session is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(session.ended.wait(), 10)  # the worker sees its stdout close
    assert (await box.call("calc__add", a=1, b=1)) == {"result": 2}
    assert calc.starts == 2


async def test_the_timeout_applies(tmp_path: Path) -> None:
    async with MCPTools("calc", command=SERVER, timeout_s=0.5, include=["slow"]) as server:
        assert [t.name for t in server.tools] == ["calc__slow"]
        with pytest.raises(TimeoutError, match=r"ran longer than 0\.5s"):
            await box_for(server, "mcp:calc").call("calc__slow", seconds=30)


async def test_a_server_that_will_not_start_says_so(tmp_path: Path) -> None:
    missing = MCPTools("gone", command=[str(tmp_path / "no-such-server")], start_attempts=2)
    with pytest.raises(MCPUnavailableError, match=r"'gone' .* would not start after 2 attempt"):
        await missing.start()
    assert missing.starts == 2
    broken = MCPTools("broken", command=[sys.executable, "-c", "raise SystemExit(4)"])
    with pytest.raises(MCPUnavailableError, match="would not start after 3 attempt"):
        await broken.start()


def test_bad_declarations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="give command"):
        MCPTools("x")
    with pytest.raises(ConfigError, match="give command"):
        MCPTools("x", command=["a"], url="http://h/mcp")
    with pytest.raises(ConfigError, match="must be 1-64"):
        MCPTools("a.b", command=["a"])
    app = AgentApp("dup")
    app.mcp("calc", command=SERVER)
    with pytest.raises(ConfigError, match="already used"):
        app.mcp("calc", command=SERVER)


async def test_an_unknown_agent_or_tool_is_a_config_error_at_start() -> None:
    app = AgentApp("bad")
    app.add_agent(lambda ctx: None, capabilities=["x"], name="real")
    server = app.mcp("calc", command=SERVER, agents=["ghost"])
    with pytest.raises(ConfigError, match="has no agent"):
        await server.start(app)
    assert server._session is None  # its server was stopped again
    partial = MCPTools("calc", command=SERVER, include=["add", "nope"])
    with pytest.raises(ConfigError, match=r"has no tool \['nope'\]"):
        await partial.start()
    assert partial._session is None


async def test_an_including_app_gives_the_tools_to_the_declaring_apps_agents_only() -> None:
    own = AgentApp("own")
    server = own.mcp("calc", command=SERVER, include=["add"])
    own.add_agent(lambda ctx: None, capabilities=["mine"], name="mine")
    other = AgentApp("other")
    other.add_agent(lambda ctx: None, capabilities=["theirs"], name="theirs")
    served = AgentApp("all").include(own).include(other)
    assert served.services == [server]
    await server.start(served)
    try:
        await server.start(served)  # a second worker of this process: the same session
        assert server.starts == 1
        by_name = {spec.name: spec for spec in served.agents}
        assert [t.name for t in by_name["mine"].tools] == ["calc__add"]
        assert len(by_name["theirs"].tools) == 0
    finally:
        await server.close()
        await server.close()
    assert server._session is None


async def test_a_tool_loop_offers_mcp_tools_to_the_model_and_calls_them(
    calc: MCPTools, llm_stub: LLMStubProcess
) -> None:
    await llm_stub.aload(
        {
            "rules": [
                {"turn": 0, "tool_calls": [{"name": "calc__add", "arguments": {"a": 2, "b": 3}}]},
                {"turn": 1, "content": "2 + 3 is 5"},
            ]
        }
    )
    provider = ChatProvider(base_url=llm_stub.url, attempts=1, timeout_s=10)
    llm = LLM(provider=provider, model="stub-model", state=MemoryToolState(), key_prefix="w:t")
    box = box_for(calc, "mcp:calc")
    done = await run_agent(
        llm, box, model=None, instructions="Use the tools.", input="2 + 3?", tools=["calc__add"]
    )
    assert done.output == "2 + 3 is 5"
    assert [(c.name, c.result) for c in done.tool_calls] == [("calc__add", {"result": 5})]
    (declared,) = (await llm_stub.arequests())[0]["body"]["tools"]
    # A name OpenAI's and Anthropic's function calling accept, the server's schema.
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", declared["function"]["name"])
    assert declared["function"]["parameters"]["required"] == ["a", "b"]


# --- streamable HTTP ----------------------------------------------------------------


async def test_over_streamable_http_reconnecting_when_the_server_is_back() -> None:
    port = free_port()
    server = MCPTools("web", url=f"http://127.0.0.1:{port}/mcp", start_attempts=1)
    with listening([*SERVER, "--http", str(port)], port):
        await server.start()
        box = box_for(server, "mcp:web")
        assert await box.call("web__add", a=20, b=22) == {"result": 42}
        with pytest.raises(MCPToolError, match="no good"):
            await box.call("web__fail", message="no good")
        first = (await box.call("web__pid"))["result"]
        assert (await box.call("web__pid"))["result"] == first  # one session, one server
    try:
        with pytest.raises(MCPUnavailableError, match="the next call connects it again"):
            await box.call("web__pid")
        with pytest.raises(MCPUnavailableError, match=r"would not connect after 1 attempt"):
            await box.call("web__pid")
        with listening([*SERVER, "--http", str(port)], port):
            assert (await box.call("web__pid"))["result"] != first
    finally:
        await server.close()


# --- a real cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
async def mcp_cluster(
    nats_server: NatsServer, log_dir: Path
) -> AsyncIterator[tuple[DevCluster, Client]]:
    prefix = unique_prefix("mcp")
    async with (
        DevCluster(
            app="tests.support.mcp_app:app",
            workers=1,
            concurrency=2,
            nats_url=nats_server.url,
            prefix=prefix,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="mcp-tests") as bus,
    ):
        yield cluster, Client(bus=bus, node_id="mcp-tests")


def task(capability: str, tool: str, **args: Any) -> dict[str, Any]:
    return {
        "id": "t",
        "capability": capability,
        "params": {"tool": tool, "args": args},
        "retry": {"max_attempts": 1},
    }


async def test_an_agent_calls_an_mcp_tool_on_the_cluster_audited(
    mcp_cluster: tuple[DevCluster, Client],
) -> None:
    _, client = mcp_cluster
    state = await run(client, wf(task("mcp_call", "calc__add", a=40, b=2)))
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["t"].result == {"result": 42}
    events = await client.events(state.workflow_id)
    (record,) = [e.data for e in of_type(events, EventType.TASK_TOOL_CALLED)]
    assert isinstance(record, TaskToolCalled)
    assert (record.tool, record.agent, record.outcome) == ("calc__add", "caller", "ok")
    assert record.key == f"{state.workflow_id}:t:0:tool:calc__add"
    entries = await read_audit(client.bus, client.bus.seal)
    noted = [e for e in entries if e.workflow_id == state.workflow_id]
    assert [(e.kind, (e.detail or {}).get("tool")) for e in noted] == [
        (AuditKind.TOOL_CALLED.value, "calc__add")
    ]


@pytest.mark.parametrize(
    ("capability", "error", "outcome"),
    [
        ("mcp_intrude", "ToolPermissionError", "denied"),  # has the tool, not the grant
        ("mcp_outside", "UnknownToolError", "unknown"),  # granted all, not given the tools
    ],
)
async def test_an_agent_without_the_grant_or_the_tools_is_refused(
    mcp_cluster: tuple[DevCluster, Client],
    tmp_path: Path,
    capability: str,
    error: str,
    outcome: str,
) -> None:
    _, client = mcp_cluster
    trace = tmp_path / "trace.txt"
    state = await run(client, wf(task(capability, "calc__record", path=str(trace), line="x")))
    assert state.status == WorkflowStatus.FAILED
    failure = state.tasks["t"].error
    assert failure is not None
    assert (failure.type, failure.retryable) == (error, False)
    (record,) = [
        e.data for e in of_type(await client.events(state.workflow_id), EventType.TASK_TOOL_CALLED)
    ]
    assert isinstance(record, TaskToolCalled)
    assert (record.tool, record.outcome) == ("calc__record", outcome)
    assert not trace.exists()  # the server never saw it
    entries = await read_audit(client.bus, client.bus.seal)
    kinds = [e.kind for e in entries if e.workflow_id == state.workflow_id]
    expected = AuditKind.TOOL_DENIED if outcome == "denied" else AuditKind.TOOL_CALLED
    assert kinds == [expected.value]


async def test_a_server_crash_on_the_cluster_fails_the_call_and_the_next_task_restarts_it(
    mcp_cluster: tuple[DevCluster, Client],
) -> None:
    _, client = mcp_cluster
    crashed = await run(client, wf(task("mcp_call", "calc__crash")))
    assert crashed.status == WorkflowStatus.FAILED
    failure = crashed.tasks["t"].error
    assert failure is not None
    assert (failure.type, failure.retryable) == ("MCPUnavailableError", True)
    again = await run(client, wf(task("mcp_call", "calc__echo", text="back")))
    assert again.status == WorkflowStatus.COMPLETED, again.reason
    assert again.tasks["t"].result == {"result": "back"}

"""``agenticflow mcp serve`` driven by the MCP SDK's own client, over stdio (a
real ``agenticflow`` process) and over streamable HTTP, against the session's
cluster (tests/support/app.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_auth import CLIENT, read_env_file
from agenticflow.cluster.redis_server import free_port
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import ROOT
from tests.support.listening import listening

pytestmark = pytest.mark.timeout(120)

TEMPLATE = """\
template: add-up
description: Add a number to ten.
params:
  value:
    description: what to add
    default: 1
workflow:
  name: add-up
  tasks:
    - id: ten
      capability: add
      params: {value: 10}
    - id: total
      capability: add
      depends_on: [ten]
      params: {value: "{{value}}"}
"""


def environment(cluster: DevCluster, templates: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTICFLOW_NATS_URL": cluster.settings.nats_url,
        "AGENTICFLOW_PREFIX": cluster.settings.prefix,
        "AGENTICFLOW_TEMPLATES_PATH": str(templates),
    }


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    (tmp_path / "add-up.yaml").write_text(TEMPLATE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def stdio(cluster: DevCluster, templates: Path) -> StdioServerParameters:
    """``agenticflow mcp serve`` for the SDK's client to start (each test enters
    the client itself: the SDK's contexts end in the task that began them)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "agenticflow", "mcp", "serve"],
        env=environment(cluster, templates),
        cwd=ROOT,
    )


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def test_start_a_definition_then_its_result_and_status(stdio: StdioServerParameters) -> None:
    definition = {
        "name": "mcp-add",
        "tasks": [{"id": "a", "capability": "add", "params": {"value": 5}}],
    }
    async with Client(stdio) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert {"start_workflow", "workflow_status", "workflow_result", "list_templates"} <= listed
        wid = (await call(client, "start_workflow", workflow=definition))["workflow_id"]
        done = await call(client, "workflow_result", workflow_id=wid, timeout_s=60)
        assert done == {"workflow_id": wid, "status": "completed", "output": 5}
        status = await call(client, "workflow_status", workflow_id=wid)
    assert (status["status"], status["tasks"]["a"]["status"]) == ("completed", "completed")


async def test_start_a_template_by_name(stdio: StdioServerParameters) -> None:
    async with Client(stdio) as client:
        names = [t["name"] for t in (await call(client, "list_templates"))["result"]]
        assert "add-up" in names
        started = await call(client, "start_workflow", template="add-up", input={"value": 32})
        done = await call(client, "workflow_result", workflow_id=started["workflow_id"])
    assert done["output"] == 42


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("start_workflow", {"template": "no-such-template"}, "no-such-template"),
        ("start_workflow", {}, "give a template name or a workflow definition"),
        ("workflow_status", {"workflow_id": "wf-never-started"}, "wf-never-started"),
    ],
)
async def test_errors_are_tool_errors(
    stdio: StdioServerParameters, tool: str, arguments: dict[str, Any], message: str
) -> None:
    async with Client(stdio) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert message in result.content[0].text  # type: ignore[union-attr]


async def test_a_failed_workflow_is_an_error_with_its_reason(stdio: StdioServerParameters) -> None:
    definition = {"name": "mcp-fatal", "tasks": [{"id": "f", "capability": "fatal"}]}
    async with Client(stdio) as client:
        wid = (await call(client, "start_workflow", workflow=definition))["workflow_id"]
        result = await client.call_tool("workflow_result", {"workflow_id": wid})
    assert result.is_error
    assert "bad input" in result.content[0].text  # type: ignore[union-attr]


@pytest.fixture
def http_serve(cluster: DevCluster, templates: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "agenticflow", "mcp", "serve", "--http", str(port)]
    with listening(argv, port, env=environment(cluster, templates), cwd=ROOT):
        yield f"http://127.0.0.1:{port}/mcp"


async def test_over_streamable_http(http_serve: str) -> None:
    async with Client(http_serve) as client:
        definition = {
            "name": "mcp-http",
            "tasks": [{"id": "a", "capability": "add", "params": {"value": 7}}],
        }
        wid = (await call(client, "start_workflow", workflow=definition))["workflow_id"]
        assert (await call(client, "workflow_result", workflow_id=wid))["output"] == 7


POLICY = """\
[roles.adder]
permissions = ["workflow:submit:add"]

[principals]
"client" = ["adder"]
"""


async def test_on_a_secure_cluster_it_acts_as_the_clis_principal_under_its_rbac(
    log_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    async with DevCluster(
        app=TEST_APP,
        workers=1,
        prefix=unique_prefix("smcp"),
        secure=True,
        settings={"policy_file": str(policy)},
        log_dir=log_dir / "secure-mcp",
    ) as cluster:
        assert cluster.auth is not None
        # Nothing but the client's env file: its NATS user and its signing key.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICFLOW_")}
        env.update(read_env_file(cluster.auth.env_file(CLIENT)))
        serve = StdioServerParameters(
            command=sys.executable, args=["-m", "agenticflow", "mcp", "serve"], env=env, cwd=ROOT
        )
        allowed = {
            "name": "add",
            "tasks": [{"id": "a", "capability": "add", "params": {"value": 3}}],
        }
        refused = {"name": "echo", "tasks": [{"id": "e", "capability": "echo"}]}
        async with Client(serve) as client:
            wid = (await call(client, "start_workflow", workflow=allowed))["workflow_id"]
            assert (await call(client, "workflow_result", workflow_id=wid))["output"] == 3
            other = (await call(client, "start_workflow", workflow=refused))["workflow_id"]
            result = await client.call_tool("workflow_result", {"workflow_id": other})
    assert result.is_error
    assert "workflow:submit:echo" in result.content[0].text  # type: ignore[union-attr]

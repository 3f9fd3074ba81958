"""Sandboxed tools run in a separate, limited process with a scrubbed environment."""

from __future__ import annotations

import os

import pytest

from shared.errors import SandboxError, ToolTimeoutError
from tests.support import tools_app
from worker.tools import MemoryToolState, ToolBox, ToolRegistry

pytestmark = pytest.mark.timeout(60)


def box() -> ToolBox:
    return ToolBox(
        ToolRegistry(tools_app.TOOLS, permissions={"*"}),
        state=MemoryToolState(),
        workflow_id="wf",
        task_id="t",
        agent="sandboxed",
    )


async def test_a_sandboxed_tool_gets_params_and_call_and_not_the_parents_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOOL_SECRET", "hunter2")
    tools = box()
    outside = await tools.call("env_in_process")
    assert outside["secret"] == "hunter2"  # the control: the worker has it
    inside = await tools.call("env_in_sandbox")
    assert inside["secret"] is None
    assert set(inside["env"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "LC_CTYPE",
    }
    added = await tools.call("sandboxed_add", path="unused", value=41)
    assert added["value"] == 42
    assert added["key"] == "wf:t:2:tool:sandboxed_add"
    assert os.path.basename(added["cwd"]).startswith("af-sandbox-")
    assert not os.path.exists(added["cwd"])  # its directory is gone afterwards


async def test_a_sandboxed_tool_that_takes_too_much_memory_fails_clearly() -> None:
    tools = box()
    assert await tools.call("hog", mb=10) == 10 * 1024 * 1024
    with pytest.raises(
        SandboxError, match=r"'hog' failed: MemoryError: ran out of memory \(limit 400 MiB\)"
    ):
        await tools.call("hog", mb=2048)


async def test_a_sandboxed_tool_that_loops_for_ever_is_killed_by_its_cpu_limit() -> None:
    with pytest.raises(SandboxError, match=r"'spin' used up its CPU time limit \(1s\)"):
        await box().call("spin")


async def test_a_sandboxed_tool_past_its_timeout_is_killed() -> None:
    with pytest.raises(ToolTimeoutError, match=r"'nap' ran longer than 1s and was killed"):
        await box().call("nap")

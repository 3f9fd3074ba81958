"""An agent app using the MCP test server (tests/support/mcp_server.py) over
stdio, served by the MCP tests' worker processes.

``caller`` may use the server's tools (it is granted ``mcp:calc``);
``intruder`` has them in its registry but no grant (its calls are denied);
``outsider`` is granted everything but was not given the tools (unknown).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agenticflow import AgentApp, TaskContext

SERVER = [sys.executable, str(Path(__file__).with_name("mcp_server.py"))]

app = AgentApp("mcp-tests")
calc = app.mcp("calc", command=SERVER, agents=["caller", "intruder"], timeout_s=10)


async def use(ctx: TaskContext) -> Any:
    """Call ``params.tool`` with ``params.args`` and return its result."""
    assert ctx.tools is not None
    return await ctx.tools.call(ctx.params["tool"], **ctx.params.get("args", {}))


app.add_agent(use, capabilities=["mcp_call"], name="caller", permissions={"mcp:calc"})
app.add_agent(use, capabilities=["mcp_intrude"], name="intruder")
app.add_agent(use, capabilities=["mcp_outside"], name="outsider", permissions={"*"})

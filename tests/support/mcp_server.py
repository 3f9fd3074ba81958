"""A real MCP server built with the SDK, for the MCP tests (and nothing else).

``python tests/support/mcp_server.py`` serves it over stdio;
``python tests/support/mcp_server.py --http PORT`` over streamable HTTP on
127.0.0.1:PORT (path ``/mcp``). Its tools: ``add``, ``echo``, ``fail``
(answers ``isError``), ``text.upper`` (a dot in its name), ``pid`` (the
server's process id), ``crash`` (the process exits mid-call), ``slow`` and
``record`` (appends a line to a file: one line per real call, so tests count
side effects).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("agenticflow-test-server", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str, times: int = 1) -> str:
    """Repeat a text."""
    return text * times


@server.tool()
def fail(message: str) -> str:
    """Always fails, with ``message`` (an isError result)."""
    raise ToolError(message)


@server.tool(name="text.upper")
def upper(text: str) -> str:
    """A tool whose name has a dot (``calc__text_upper`` in an agent's registry)."""
    return text.upper()


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """The server process exits in the middle of the call."""
    os._exit(3)


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after ``seconds``."""
    await anyio.sleep(seconds)
    return "done"


@server.tool()
def record(path: str, line: str) -> int:
    """Append ``line`` to the file at ``path``; returns the number of lines."""
    target = Path(path)
    with target.open("a", encoding="utf-8") as file:
        file.write(line + "\n")
    return len(target.read_text(encoding="utf-8").splitlines())


def main(argv: list[str]) -> None:
    """Serve over stdio, or ``--http PORT``."""
    if len(argv) == 2 and argv[0] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        server.run()


if __name__ == "__main__":
    main(sys.argv[1:])

"""The knowledge base as an MCP server (stdio), built with the official ``mcp`` SDK.

The customer-service app declares it with ``app.mcp("kb", command=[...])``:
each worker starts it (``python -m agenticflow.examples.customer_service.kb_server``),
lists its tools and gives them to the resolution agent as
``kb__search_articles``, whose model calls it in its tool loop
(``ctx.run_agent``). Any MCP client can use it too.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from agenticflow.examples.customer_service.knowledge import propose_resolution

server = MCPServer("knowledge-base", log_level="WARNING")


@server.tool()
def search_articles(category: str, query: str, max_steps: int = 3) -> dict[str, Any]:
    """The knowledge-base article that best fits a support request.

    ``category`` is the triage category (outage, billing, bug, how-to);
    ``query`` the words to match against the articles' keywords. Returns the
    article's id, title and first ``max_steps`` steps, the terms that matched,
    and a confidence in [0, 1]."""
    return propose_resolution(category, query, max_steps=max(1, min(max_steps, 10)))


if __name__ == "__main__":
    server.run()

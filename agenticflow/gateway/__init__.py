"""The HTTP gateway: REST, Server-Sent Events and WebSocket access to a
cluster for programs that do not speak NATS (``agenticflow gateway``).

Modules, one concept each: :mod:`.settings` (``AGENTICFLOW_GATEWAY_*``),
:mod:`.auth` (bearer tokens to principals, the policy), :mod:`.models`
(request bodies), :mod:`.responses` (JSON answers and errors),
:mod:`.service` (the cluster side: a client per principal), :mod:`.feeds`
(a client's bounded queue of events or chunks), :mod:`.live` (SSE and
WebSockets), :mod:`.app` (the routes), :mod:`.openapi` (the published
schema) and :mod:`.server` (uvicorn). Built on Starlette and uvicorn: a
small ASGI toolkit and server with SSE-friendly streaming and WebSockets, no
framework on top.
"""

from __future__ import annotations

from agenticflow.gateway.auth import Access, Tokens, digest, new_token
from agenticflow.gateway.server import GatewayServer, build
from agenticflow.gateway.service import Gateway
from agenticflow.gateway.settings import GatewaySettings

__all__ = [
    "Access",
    "Gateway",
    "GatewayServer",
    "GatewaySettings",
    "Tokens",
    "build",
    "digest",
    "new_token",
]

"""What the gateway tests share: an app with a flooding agent, a cluster with a
policy on a real nats-server, the gateway served by uvicorn on a free port,
and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import agenticflow
from agenticflow.client import Client
from agenticflow.coordinator.service import Coordinator
from agenticflow.gateway import GatewayServer, GatewaySettings
from agenticflow.gateway.service import Gateway
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.worker.app import AgentApp
from agenticflow.worker.context import TaskContext
from agenticflow.worker.runtime import Worker
from tests.support.app import app as support_app

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
CAROL = "carol-token-0123456789abcdef"
DAVE = "dave-token-0123456789abcdef"
TOKENS = f"alice={ALICE},bob={BOB},carol={CAROL},dave={DAVE}"

POLICY = """
[roles.operator]
permissions = ["workflow:*"]

[roles.reporter]
permissions = ["workflow:submit:echo"]

[roles.editor]
permissions = ["workflow:modify", "workflow:submit:echo"]

[principals]
alice = ["operator"]
bob = ["reporter"]
dave = ["editor"]
"""
"""alice may do anything; bob may submit echo tasks only; carol is not named
(reads only); dave may modify workflows and submit echo tasks."""

app = AgentApp("tests-gateway").include(support_app)


@app.agent(capabilities=["flood"])
async def flood(ctx: TaskContext) -> int:
    """Stream ``params.n`` tokens of ``params.size`` characters, numbered."""
    n, size = int(ctx.params.get("n", 100)), int(ctx.params.get("size", 100))
    for i in range(n):
        await ctx.stream(f"{i:06d}".ljust(size, "x"))
    return n


async def wait_for(gateway: Gateway, check: Any, timeout: float = 30) -> None:
    """Until ``check()`` holds, woken by the gateway's feed changes."""
    async with asyncio.timeout(timeout):
        while not check():
            gateway.feeds_changed.clear()
            if check():
                return
            await gateway.feeds_changed.wait()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Env:
    """A cluster (coordinator + worker in this process, on a real nats-server)
    with the gateway in front of it."""

    settings: Settings
    server: GatewayServer
    client: Client
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway

    def http(self, token: str | None = ALICE) -> httpx.AsyncClient:
        headers = auth(token) if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    def ws_url(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path


async def start_env(
    url: str, prefix: str, directory: Path, *, backend: str = "nats", **gateway: Any
) -> Env:
    """Start the cluster (on ``backend`` at ``url``) and the gateway
    (``gateway``: GatewaySettings fields)."""
    policy = directory / "policy.toml"
    policy.write_text(POLICY)
    where: dict[str, Any] = {"nats_url": url} if backend == "nats" else {"url": url}
    settings = Settings(
        **where,
        backend=backend,
        prefix=prefix,
        policy_file=policy,
        heartbeat_s=0.5,
        snapshot_interval_s=0.05,
    )
    stack = contextlib.AsyncExitStack()
    try:
        bus = await Bus.connect(settings, name="gateway-tests")
        stack.push_async_callback(bus.close)
        await stack.enter_async_context(Coordinator(bus=bus, node_id="gw-coord"))
        await stack.enter_async_context(
            Worker(bus=bus, app=app, node_id="gw-worker", concurrency=16)
        )
        config = GatewaySettings(**{"port": 0, "tokens": TOKENS, "keepalive_s": 1, **gateway})
        server = await stack.enter_async_context(GatewayServer(settings, config, grace_s=1))
        client = await stack.enter_async_context(
            agenticflow.connect(settings=settings, node_id="gw-tests")
        )
    except BaseException:
        await stack.aclose()
        raise
    return Env(settings=settings, server=server, client=client, stack=stack)


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The frames of an SSE answer: ``{"id", "event", "data"}`` (data parsed)."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "event" in frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(": ")
            frame[key] = json.loads(value) if key == "data" else value


async def read_sse(http: httpx.AsyncClient, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every frame of an SSE route, until it ends."""
    async with http.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        return [frame async for frame in sse_frames(response)]


@contextlib.asynccontextmanager
async def console_login(env: Env, token: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A browser-like client (cookie jar) logged in to the console as
    ``token``'s principal, and its session's CSRF token."""
    async with httpx.AsyncClient(base_url=env.url, timeout=60) as http:
        response = await http.post("/console/api/login", json={"token": token})
        assert response.status_code == 200, response.text
        yield http, str(response.json()["csrf"])


def workflow(*tasks: dict[str, Any], name: str = "gw") -> dict[str, Any]:
    return {"name": name, "tasks": list(tasks)}

"""The gateway's limits on what one client may hold, against a real cluster:
waits that end with their client, capped waits and feeds (429), an SSE
client that stops reading dropped, a slow body cut off and connections
capped. (Findings #5 to #8 of the gateway review.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.gateway import GatewayServer
from tests.conftest import unique_prefix
from tests.integration.gateway_support import (
    ALICE,
    BOB,
    CAROL,
    Env,
    auth,
    sse_frames,
    start_env,
    wait_for,
    workflow,
)

pytestmark = pytest.mark.timeout(120)

LISTEN = {"id": "l", "capability": "listen", "params": {"timeout": 60}}


@pytest.fixture(scope="module")
async def env(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    started = await start_env(
        nats_server.url,
        unique_prefix("gwl"),
        tmp_path_factory.mktemp("gwl"),
        max_waits_per_principal=1,
        max_feeds_per_principal=1,
        max_feeds=2,
        send_timeout_s=1,
        body_timeout_s=1,
    )
    async with started.stack:
        yield started


async def start(http: httpx.AsyncClient, *tasks: dict[str, Any]) -> str:
    response = await http.post("/workflows", json={"workflow": workflow(*tasks)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def raw_request(url: str, request: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A socket that sent ``request`` (and reads nothing unless asked)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before the handshake
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, request.encode())
    return sock


async def test_a_wait_ends_with_its_client_and_waits_are_capped(env: Env) -> None:
    """Review #5: a ?wait= whose client left kept its subscription until the
    workflow ended, and a principal could have any number of them."""
    gateway = env.gateway
    async with env.http() as http, env.http(BOB) as bob:
        workflow_id = await start(http, LISTEN)
        # (Not path.replace("60", ...): a workflow id may hold "60" too.)
        result = f"/workflows/{workflow_id}/result"
        path = f"{result}?wait=60"
        leaving = await raw_request(
            env.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\r\n"
        )
        await wait_for(gateway, lambda: gateway.waits_of.get("alice") == 1)

        busy = await http.get(f"{result}?wait=1")
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "too_many_requests"
        assert "MAX_WAITS_PER_PRINCIPAL" in busy.json()["error"]["message"]
        refused = await http.post(
            "/workflows", params={"wait": 5}, json={"workflow": workflow(LISTEN, name="gw-cap")}
        )
        assert refused.status_code == 429  # and nothing was started
        listed = await http.get("/workflows", params={"name": "gw-cap"})
        assert listed.json()["workflows"] == []
        other = await bob.get(f"{result}?wait=0.2")  # another principal's own cap
        assert other.status_code == 202

        leaving.close()  # the client goes: its wait ends now, not in 60 s
        await wait_for(gateway, lambda: "alice" not in gateway.waits_of, timeout=10)
        assert (await http.get(f"{result}?wait=0.2")).status_code == 202
        await http.post(f"/workflows/{workflow_id}/terminate")


async def test_feeds_are_capped_per_principal_and_in_all(env: Env) -> None:
    """Review #6: any number of SSE/WebSocket feeds (a consumer and tasks each)."""
    gateway = env.gateway
    await wait_for(gateway, lambda: gateway.open_feeds == 0)
    async with env.http() as http, env.http(BOB) as bob, env.http(CAROL) as carol:
        workflow_id = await start(http, LISTEN)
        path = f"/workflows/{workflow_id}/events/sse"
        async with http.stream("GET", path) as first:
            frames = sse_frames(first)  # held: collected, it would close the stream
            await anext(frames)
            again = await http.get(path)
            assert again.status_code == 429
            assert "MAX_FEEDS_PER_PRINCIPAL" in again.json()["error"]["message"]
            with pytest.raises(websockets.InvalidStatus) as ws_refused:
                async with ws_connect(
                    env.ws_url(f"/workflows/{workflow_id}/events/ws"),
                    additional_headers=auth(ALICE),
                ):
                    pass
            assert ws_refused.value.response.status_code == 429
            async with bob.stream("GET", path) as second:
                bobs = sse_frames(second)
                await anext(bobs)
                full = await carol.get(path)  # two open: the gateway's own cap
                assert full.status_code == 429
                assert "AGENTICFLOW_GATEWAY_MAX_FEEDS)" in full.json()["error"]["message"]
                assert gateway.open_feeds == 2
        await wait_for(gateway, lambda: gateway.open_feeds == 0)
        assert gateway.feeds_of == {}
        async with carol.stream("GET", path) as later:
            assert later.status_code == 200
        await http.post(f"/workflows/{workflow_id}/terminate")


async def test_an_sse_client_that_stops_reading_is_dropped(env: Env) -> None:
    """Review #7: a client that keeps its TCP connection open but reads nothing
    kept its feed (and its queue) for ever. With both socket buffers tiny a
    send blocks at once; after send_timeout_s (1 s here, before any overflow
    at client_block_s) the connection is aborted and the feed released."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited by connections
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.setblocking(False)
    config = env.gateway.config
    async with GatewayServer(env.settings, config, sock=listening, grace_s=1) as server:
        gateway = server.gateway
        async with httpx.AsyncClient(base_url=server.url, headers=auth(ALICE)) as http:
            workflow_id = await start(
                http, {"id": "f", "capability": "flood", "params": {"n": 2000, "size": 500}}
            )
        stalled = await raw_request(
            server.url,
            f"GET /workflows/{workflow_id}/stream/sse HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {ALICE}\r\n\r\n",
            rcvbuf=4096,
        )
        with stalled:
            await wait_for(gateway, lambda: gateway.stalled == 1)
            await wait_for(gateway, lambda: gateway.open_feeds == gateway.readers == 0)
            assert gateway.overflows == 0  # dropped for the send, not the queue
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(30):  # what was sent, then the reset
                with contextlib.suppress(ConnectionResetError):
                    while await loop.sock_recv(stalled, 1 << 16):
                        pass
        assert await env.client.handle(workflow_id).result(timeout=60) == 2000


async def test_a_slow_body_is_cut_off_and_connections_are_capped(env: Env) -> None:
    """Review #8: a body that never finished arriving held its request for
    ever, and uvicorn served any number of connections."""
    head = (
        f"POST /workflows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    loop = asyncio.get_running_loop()
    with await raw_request(env.url, head) as slow:
        data = b""
        async with asyncio.timeout(20):  # body_timeout_s is 1 here
            while b"\r\n\r\n" not in data:
                part = await loop.sock_recv(slow, 1 << 16)
                assert part, data
                data += part
        assert data.startswith(b"HTTP/1.1 408"), data

    config = env.gateway.config.model_copy(update={"max_connections": 4})
    async with GatewayServer(env.settings, config, grace_s=1) as server:
        idle = [await raw_request(server.url, "") for _ in range(4)]
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/healthz")).status_code == 503
        finally:
            for sock in idle:
                sock.close()
        async with httpx.AsyncClient(base_url=server.url) as http:
            # uvicorn tells nobody when it has noticed the closed sockets: poll,
            # bounded (200 tries, 10 s at most), not a wait for an effect we could see.
            for _ in range(200):
                if (await http.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("still 503 after the idle connections closed")

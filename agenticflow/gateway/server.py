"""Serving the gateway with uvicorn: :func:`serve` for ``agenticflow gateway``
(until SIGTERM/SIGINT), :class:`GatewayServer` to run one inside a program
or a test (``async with GatewayServer(settings, tokens=...) as server:``
``server.url``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from agenticflow.gateway.auth import Access, Tokens
from agenticflow.gateway.service import Gateway
from agenticflow.gateway.settings import GatewaySettings
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.rbac import load_policy

GRACE_S = 5
"""How long a stopping gateway lets open requests and streams finish."""


def build(settings: Settings, config: GatewaySettings) -> Gateway:
    """A gateway from settings: its tokens (file and environment) and the
    policy the cluster enforces (``AGENTICFLOW_POLICY_FILE``, else
    ``policy.toml`` in the security directory). Raises ConfigError."""
    secret = config.tokens.get_secret_value() if config.tokens is not None else None
    tokens = Tokens.load(config.tokens_file, secret)
    policy = load_policy(settings.policy_file, settings.security_dir)
    return Gateway(settings=settings, config=config, tokens=tokens, access=Access(policy))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one); connections queue from now on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the entry point owns those."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(app: Any, config: GatewaySettings, *, grace_s: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,  # our structlog setup; uvicorn's own lines go to its loggers
        access_log=False,  # we log requests ourselves, never their headers
        server_header=False,
        timeout_graceful_shutdown=grace_s,
        ws_max_size=config.max_body_bytes,
        limit_concurrency=config.max_connections,
        timeout_keep_alive=config.keepalive_timeout_s,
        # A client's address is its socket's peer unless a trusted proxy says
        # otherwise: uvicorn would believe X-Forwarded-For from 127.0.0.1.
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=config.trusted_proxies or None,
    )


class GatewayServer:
    """A gateway served in this process on ``host:port`` (0: a free port)."""

    def __init__(
        self,
        settings: Settings,
        config: GatewaySettings | None = None,
        *,
        gateway: Gateway | None = None,
        sock: socket.socket | None = None,
        grace_s: int = GRACE_S,
    ) -> None:
        self.config = config or GatewaySettings()
        self.gateway = gateway or build(settings, self.config)
        self._sock = sock
        self._grace_s = grace_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""
        """``http://host:port`` once started."""

    async def start(self) -> None:
        """Connect to the cluster and listen; returns once requests are accepted."""
        await self.gateway.start()
        sock = self._sock or listen(self.config.host, self.config.port)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._server = _Server(_config(self.gateway.app(), self.config, grace_s=self._grace_s))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway")

    def request_stop(self) -> None:
        """Ask the server to stop (what SIGTERM does); :meth:`wait` then returns."""
        if self._server is not None:
            self._server.should_exit = True

    async def wait(self) -> None:
        """Until the server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop serving (open streams get ``grace_s``), then close the clients (idempotent)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
        await self.gateway.close()

    async def __aenter__(self) -> GatewayServer:
        try:
            await self.start()
        except BaseException:
            await self.gateway.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


__all__ = ["GRACE_S", "GatewayServer", "build", "listen"]

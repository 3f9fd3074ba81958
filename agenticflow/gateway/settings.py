"""The gateway's own settings (``AGENTICFLOW_GATEWAY_*``), built once at the
entry point; the cluster's connection comes from the usual
:class:`~agenticflow.shared.ops.config.Settings`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Where the gateway listens, who may use it and how much it holds per client."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTICFLOW_GATEWAY_", frozen=True, extra="ignore"
    )

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0``: every interface; put TLS in front)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0: any free one, printed at start)."""
    tokens_file: Path | None = None
    """A TOML file mapping principals to the SHA-256 of their tokens (see
    :mod:`agenticflow.gateway.auth`)."""
    tokens: SecretStr | None = None
    """``principal=token,principal=token`` (or ``principal=sha256:HEX``): tokens
    from the environment, for a container's secret."""
    allow_no_policy: bool = False
    """With a trust store (signed messages), the gateway refuses to start
    without a policy (``AGENTICFLOW_POLICY_FILE``, else ``policy.toml`` in the
    security directory): its own check would be off. ``true`` starts it anyway,
    when every token may read and steer every workflow and only the
    coordinator's policy limits what they start."""
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    """Connections (and WebSockets) served at once: uvicorn answers 503 beyond."""
    keepalive_timeout_s: int = Field(default=5, ge=1, le=600)
    """How long an idle keep-alive connection stays open between requests."""
    body_timeout_s: float = Field(default=30, gt=0, le=600)
    """How long reading a request's body may take (408 beyond). Headers have
    no time limit here: a front proxy must enforce one (see the guide)."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    """Largest request body (413 beyond it)."""
    client_queue: int = Field(default=256, ge=1, le=100_000)
    """Frames held for one SSE or WebSocket client."""
    client_block_s: float = Field(default=5, gt=0, le=300)
    """How long a full client queue may wait for the client to take a frame:
    beyond it the client is too slow and is disconnected (with an ``overflow``
    notice; it reconnects and resumes where it was)."""
    send_timeout_s: float = Field(default=30, gt=0, le=600)
    """How long one write to an SSE client may wait for it to read (its TCP
    window full): beyond it the client has stopped reading and its connection is
    aborted, its queue freed (WebSockets: uvicorn's pings close it)."""
    max_wait_s: float = Field(default=300, gt=0, le=3600)
    """Longest ``?wait=`` a result request may ask for."""
    max_waits_per_principal: int = Field(default=32, ge=1, le=100_000)
    """Requests with a ``?wait=`` one principal may have waiting at once (429 beyond)."""
    max_feeds_per_principal: int = Field(default=32, ge=1, le=100_000)
    """SSE and WebSocket feeds one principal may have open at once (429 beyond)."""
    max_feeds: int = Field(default=256, ge=1, le=1_000_000)
    """SSE and WebSocket feeds open at once, all principals together (429 beyond)."""
    intervention_timeout_s: float = Field(default=15, gt=0, le=300)
    """How long an intervention waits for the coordinator's verdict (504 beyond)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins whose pages may call the gateway (``AGENTICFLOW_GATEWAY_CORS_ORIGINS``,
    a JSON list such as ``["https://app.example.com"]``); none by default."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses of proxies in front whose ``X-Forwarded-For`` / ``-Proto`` name
    the client (``["10.0.0.5"]``); none by default, so a client cannot choose
    the address its failed logins count against."""
    console: bool = True
    """Serve the web console at ``/console/`` (``AGENTICFLOW_GATEWAY_CONSOLE=false``:
    the API only)."""
    console_session_s: float = Field(default=8 * 3600, ge=60, le=30 * 86400)
    """How long a console login lasts."""
    keepalive_s: float = Field(default=15, gt=0, le=300)
    """An SSE comment line this often on a quiet stream, so proxies keep it open."""


__all__ = ["GatewaySettings"]

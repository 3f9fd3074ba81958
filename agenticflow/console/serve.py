"""Serving the console: the gateway's settings with a login token made on the
spot when none is configured, the link that logs in with it, and a gateway
started on its port (or a free one). Used by ``agenticflow console``,
``agenticflow gateway``, ``agenticflow dev`` and ``cluster up``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agenticflow.gateway.auth import new_token
from agenticflow.gateway.server import GatewayServer
from agenticflow.gateway.settings import GatewaySettings
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings

CONSOLE_PRINCIPAL = "console"
"""Who the console acts as when no tokens are configured."""


def console_config(
    principal: str = CONSOLE_PRINCIPAL, **given: Any
) -> tuple[GatewaySettings, str | None]:
    """Gateway settings from ``given`` (None values left out) and the
    environment, and a fresh login token when none is configured (then one for
    ``principal``, valid while it runs). Raises pydantic's ValidationError."""
    config = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    if config.tokens_file is not None or config.tokens is not None:
        return config, None
    token = new_token()
    return config.model_copy(update={"tokens": SecretStr(f"{principal}={token}")}), token


def console_link(url: str, token: str | None) -> str:
    """The console's address; with ``token``, a link that logs in (the token
    rides in the fragment: no request carries it, so no server or proxy log
    sees it; the page uses it once and drops it from the URL)."""
    return f"{url}/console/" + (f"#token={token}" if token else "")


async def start_server(
    settings: Settings, config: GatewaySettings, *, fallback_port: bool = False
) -> GatewayServer:
    """A started gateway; when its port is taken and ``fallback_port``, on a
    free one. Raises ConfigError (the port taken, a bad token file, keys
    without a policy), TransportError."""
    server = GatewayServer(settings, config)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        if not fallback_port or config.port == 0:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        return await start_server(settings, config.model_copy(update={"port": 0}))
    except BaseException:
        await server.stop()
        raise
    return server


def write_token(path: Path, token: str) -> None:
    """Keep a login token in a file only its owner reads (0600)."""
    from agenticflow.shared.security.seal import write_secret

    write_secret(path, token.encode())


__all__ = [
    "CONSOLE_PRINCIPAL",
    "console_config",
    "console_link",
    "start_server",
    "write_token",
]

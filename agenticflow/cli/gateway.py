"""``agenticflow gateway`` (the HTTP gateway: REST, SSE, WebSocket) and
``agenticflow gateway-token`` (a token for a principal).

The gateway is configured like a coordinator: by its environment
(``AGENTICFLOW_*`` for the cluster, ``AGENTICFLOW_GATEWAY_*`` for itself) and
its options, never by a profile. Exit codes: 0 stopped by SIGTERM/SIGINT,
2 invalid settings or tokens, 3 the cluster is unreachable.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from agenticflow.cli._common import EXIT_INPUT, EXIT_UNREACHABLE, NatsOpt, PrefixOpt, fail, out


def gateway(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: AGENTICFLOW_GATEWAY_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port (0: a free one; default AGENTICFLOW_GATEWAY_PORT, 8080)."
        ),
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="TOML file of principals and their tokens' digests (default: "
            "AGENTICFLOW_GATEWAY_TOKENS_FILE; see `agenticflow gateway-token`).",
            show_default=False,
        ),
    ] = None,
    port_file: Annotated[
        Path | None,
        typer.Option(
            "--port-file",
            help="Write the port listened on here once listening.",
            show_default=False,
        ),
    ] = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve the HTTP gateway: REST to start, list, read and steer workflows,
    Server-Sent Events and WebSockets for their events and streamed output,
    OpenAPI at /openapi.json. Every request needs a bearer token; its
    principal is checked against the cluster's policy."""
    import asyncio

    from pydantic import ValidationError

    from agenticflow.cli.services import run_loop, service_settings
    from agenticflow.gateway.server import GatewayServer
    from agenticflow.gateway.settings import GatewaySettings
    from agenticflow.shared.errors import AgenticFlowError, ConfigError, TransportError
    from agenticflow.shared.ops.logging import configure_logging

    settings = service_settings(nats, prefix)
    given: dict[str, Any] = {"host": host, "port": port, "tokens_file": tokens_file}
    try:
        config = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        fail(EXIT_INPUT, f"invalid gateway settings: {exc}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        server = GatewayServer(settings, config)
        try:
            await server.start()
        except OSError as exc:
            await server.stop()
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        try:
            out.print(f"gateway listening on {server.url}", markup=False, highlight=False)
            if port_file is not None:
                port_file.write_text(server.url.rsplit(":", 1)[1] + "\n")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, server.request_stop)
            await server.wait()
        finally:
            await server.stop()

    try:
        run_loop(main())
    except AgenticFlowError as exc:
        fail(EXIT_UNREACHABLE if isinstance(exc, TransportError) else EXIT_INPUT, exc)


CONSOLE_PRINCIPAL = "console"
"""Who ``agenticflow console`` (and ``dev``) acts as when no tokens are configured."""


def console_config(
    host: str | None, port: int | None, tokens_file: Path | None, principal: str
) -> tuple[Any, str | None]:
    """The gateway's settings for a console, and a fresh login token when none
    is configured (then one for ``principal``, valid while it runs)."""
    from pydantic import SecretStr

    from agenticflow.gateway.auth import new_token
    from agenticflow.gateway.settings import GatewaySettings

    given: dict[str, Any] = {"host": host, "port": port, "tokens_file": tokens_file}
    config = GatewaySettings(**{k: v for k, v in given.items() if v is not None}, console=True)
    if config.tokens_file is not None or config.tokens is not None:
        return config, None
    token = new_token()
    return config.model_copy(update={"tokens": SecretStr(f"{principal}={token}")}), token


def console_link(url: str, token: str | None) -> str:
    """The console's address; with ``token``, a link that logs in (the token
    rides in the fragment: the page sends it once and drops it from the URL,
    and no server or proxy log sees it)."""
    return f"{url}/console/" + (f"#token={token}" if token else "")


async def start_console(settings: Any, config: Any, *, fallback_port: bool) -> Any:
    """A started :class:`~agenticflow.gateway.server.GatewayServer`; when its
    port is taken and ``fallback_port``, on a free one. Raises ConfigError."""
    from agenticflow.gateway.server import GatewayServer
    from agenticflow.shared.errors import ConfigError

    server = GatewayServer(settings, config)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        if not fallback_port or config.port == 0:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        server = GatewayServer(settings, config.model_copy(update={"port": 0}))
        await server.start()
    except BaseException:
        await server.stop()
        raise
    return server


def console(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: AGENTICFLOW_GATEWAY_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port (0: a free one; default AGENTICFLOW_GATEWAY_PORT, 8080)."
        ),
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="Principals and their tokens' digests, to log in with (default: "
            "AGENTICFLOW_GATEWAY_TOKENS_FILE). Without any: a token for --principal is made "
            "and printed in a link that logs in.",
            show_default=False,
        ),
    ] = None,
    principal: Annotated[
        str,
        typer.Option(
            "--principal",
            help="Without a token file: who the printed link logs in as (with keys, "
            "<principal>.key signs its actions; the policy applies to it).",
        ),
    ] = CONSOLE_PRINCIPAL,
    port_file: Annotated[
        Path | None,
        typer.Option(
            "--port-file",
            help="Write the port listened on here once listening.",
            show_default=False,
        ),
    ] = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve the web console (and the HTTP gateway it runs on): find, watch and
    steer workflows and see the cluster in a browser. Prints its address; Ctrl-C
    stops it."""
    import asyncio

    from pydantic import ValidationError

    from agenticflow.cli.services import run_loop, service_settings
    from agenticflow.shared.errors import AgenticFlowError, TransportError
    from agenticflow.shared.ops.logging import configure_logging

    settings = service_settings(nats, prefix)
    try:
        config, token = console_config(host, port, tokens_file, principal)
    except ValidationError as exc:
        fail(EXIT_INPUT, f"invalid gateway settings: {exc}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        server = await start_console(settings, config, fallback_port=False)
        try:
            link = console_link(server.url, token)
            out.print(f"console at {link}", markup=False, highlight=False, soft_wrap=True)
            if token is None:
                out.print("  log in with a gateway token (agenticflow gateway-token NAME)")
            if port_file is not None:
                port_file.write_text(server.url.rsplit(":", 1)[1] + "\n")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, server.request_stop)
            await server.wait()
        finally:
            await server.stop()

    try:
        run_loop(main())
    except AgenticFlowError as exc:
        fail(EXIT_UNREACHABLE if isinstance(exc, TransportError) else EXIT_INPUT, exc)


def gateway_token(
    principal: Annotated[str, typer.Argument(help="Who the token acts as (a policy principal).")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Add the token's digest to this token file (created 0600 if missing).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Make a token for PRINCIPAL: the token on stdout (give it to them; it is
    shown once), its digest added to --file, else printed on stderr as the
    line to add under [tokens]."""
    from agenticflow.gateway.auth import add_token, new_token
    from agenticflow.shared.errors import ConfigError

    token = new_token()
    try:
        line = add_token(file, principal, token)
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)
    if file is None:
        typer.echo(line, err=True)
    typer.echo(token)


def register(app: typer.Typer) -> None:
    """The commands on ``app``."""
    app.command("gateway", rich_help_panel="Processes")(gateway)
    app.command("console", rich_help_panel="Processes")(console)
    app.command("gateway-token", rich_help_panel="Setup")(gateway_token)


__all__ = [
    "console",
    "console_config",
    "console_link",
    "gateway",
    "gateway_token",
    "register",
    "start_console",
]

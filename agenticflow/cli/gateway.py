"""``agenticflow gateway`` (the HTTP gateway: REST, SSE, WebSocket) and
``agenticflow gateway-token`` (a token for a principal).

The gateway is configured like a coordinator: by its environment
(``AGENTICFLOW_*`` for the cluster, ``AGENTICFLOW_GATEWAY_*`` for itself) and
its options, never by a profile. Exit codes: 0 stopped by SIGTERM/SIGINT,
2 invalid settings or tokens, 3 the cluster is unreachable.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from agenticflow.cli._common import EXIT_INPUT, EXIT_UNREACHABLE, NatsOpt, PrefixOpt, fail, out

HostOpt = Annotated[
    str | None,
    typer.Option(help="Address to listen on (default: AGENTICFLOW_GATEWAY_HOST, 127.0.0.1)."),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="Port (0: a free one; default AGENTICFLOW_GATEWAY_PORT, 8080)."
    ),
]
PortFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--port-file", help="Write the port listened on here once listening.", show_default=False
    ),
]


def gateway(
    host: HostOpt = None,
    port: PortOpt = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="TOML file of principals and their tokens' digests (default: "
            "AGENTICFLOW_GATEWAY_TOKENS_FILE; see `agenticflow gateway-token`).",
            show_default=False,
        ),
    ] = None,
    port_file: PortFileOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve the HTTP gateway: REST to start, list, read and steer workflows,
    Server-Sent Events and WebSockets for their events and streamed output,
    OpenAPI at /openapi.json. Every request needs a bearer token; its
    principal is checked against the cluster's policy."""
    from agenticflow.gateway.settings import GatewaySettings

    def settings() -> tuple[Any, str | None]:
        given: dict[str, Any] = {"host": host, "port": port, "tokens_file": tokens_file}
        return GatewaySettings(**{k: v for k, v in given.items() if v is not None}), None

    def announce(url: str, _token: str | None) -> None:
        out.print(f"gateway listening on {url}", markup=False, highlight=False)

    _serve(settings, announce, port_file=port_file, nats=nats, prefix=prefix)


def console(
    host: HostOpt = None,
    port: PortOpt = None,
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
    ] = "console",
    port_file: PortFileOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve the web console (and the HTTP gateway it runs on): find, watch and
    steer workflows and see the cluster in a browser. Prints its address; Ctrl-C
    stops it."""
    from agenticflow.console.serve import console_config, console_link

    def settings() -> tuple[Any, str | None]:
        return console_config(
            principal, host=host, port=port, tokens_file=tokens_file, console=True
        )

    def announce(url: str, token: str | None) -> None:
        link = console_link(url, token)
        out.print(f"console at {link}", markup=False, highlight=False, soft_wrap=True)
        if token is None:
            out.print("  log in with a gateway token (agenticflow gateway-token NAME)")

    _serve(settings, announce, port_file=port_file, nats=nats, prefix=prefix)


def _serve(
    make: Callable[[], tuple[Any, str | None]],
    announce: Callable[[str, str | None], None],
    *,
    port_file: Path | None,
    nats: str | None,
    prefix: str | None,
) -> None:
    """Serve a gateway configured by ``make()`` (its settings, and a login token
    made for it if any) until SIGTERM/SIGINT; ``announce`` says where."""
    import asyncio

    from pydantic import ValidationError

    from agenticflow.cli.services import run_loop, service_settings
    from agenticflow.console.serve import start_server
    from agenticflow.shared.errors import AgenticFlowError, TransportError
    from agenticflow.shared.ops.logging import configure_logging

    settings = service_settings(nats, prefix)
    try:
        config, token = make()
    except ValidationError as exc:
        fail(EXIT_INPUT, f"invalid gateway settings: {exc}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        server = await start_server(settings, config)
        try:
            announce(server.url, token)
            if port_file is not None:
                port = server.url.rsplit(":", 1)[1] + "\n"
                await asyncio.to_thread(port_file.write_text, port)
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


__all__ = ["console", "gateway", "gateway_token", "register"]

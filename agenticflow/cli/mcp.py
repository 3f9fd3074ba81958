"""``agenticflow mcp serve``: the cluster as an MCP server (see
:mod:`agenticflow.mcp_server`), over stdio or streamable HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from agenticflow.cli._common import NatsOpt, PrefixOpt, run, settings

mcp_app = typer.Typer(
    help="Model Context Protocol: the cluster as MCP tools for other agents.",
    no_args_is_help=True,
)


@mcp_app.command("serve")
def serve_command(
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
    http: Annotated[
        int | None,
        typer.Option(
            "--http",
            min=1,
            max=65535,
            help="Serve streamable HTTP on this port (path /mcp) instead of stdio.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on with --http (anyone who reaches it acts as you)."),
    ] = "127.0.0.1",
) -> None:
    """Serve MCP tools that start workflows (a template or a definition) and read
    their status and results, as this command's principal (its credentials and
    RBAC). stdio by default: an MCP client starts `agenticflow mcp serve`."""
    from agenticflow.mcp_server import serve

    conf = settings(nats, prefix)
    run(serve(conf, http_port=http, host=host))


def register(app: typer.Typer) -> None:
    """Add the ``mcp`` group to the command line."""
    app.add_typer(mcp_app, name="mcp", rich_help_panel="Processes")


__all__ = ["mcp_app", "register"]

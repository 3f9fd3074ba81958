"""The ``agenticflow`` command line.

One module per command group: :mod:`.workflow` (submit, list, describe,
result, events, watch), :mod:`.steer` (pause, resume, cancel, terminate,
feedback, modify, approve, reject), :mod:`.debug` (replay, fork, rerun, diff),
:mod:`.ask` (ask, templates), :mod:`.agents` (agents, agent, health, dlq,
top), :mod:`.services` (coordinator, worker, dev, nats-config),
:mod:`.cluster`, :mod:`.gateway` (gateway, gateway-token), :mod:`.keys`,
:mod:`.audit` and :mod:`.profile`; what they share is in :mod:`._common`.
Each imports its heavy modules inside its commands, so ``--help`` loads
typer and rich only.

Exit codes: 0 success; 1 the workflow failed or was rejected (``audit verify``:
the trail was tampered with); 2 invalid input (file, options, JSON, profile);
3 NATS unreachable or the workflow is unknown; 4 timed out waiting; 5 the
coordinator refused an intervention (nothing changed); 6 ``ask`` planned but
ran nothing.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from agenticflow.cli import (
    agents,
    ask,
    audit,
    cluster,
    debug,
    gateway,
    keys,
    profile,
    schedule,
    services,
    steer,
)
from agenticflow.cli import llm as llm_commands
from agenticflow.cli import mcp as mcp_commands
from agenticflow.cli import workflow as workflow_commands
from agenticflow.cli._common import complete_profile, out

app = typer.Typer(
    name="agenticflow",
    help="AgenticFlow: multi-agent workflows on a NATS JetStream worker cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    import importlib.metadata  # not at start-up: 20 ms of --help

    try:
        return importlib.metadata.version("agenticflow")
    except importlib.metadata.PackageNotFoundError:
        from agenticflow import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        out.print(f"agenticflow {version()}", markup=False, highlight=False)
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Show the version and exit.",
            is_eager=True,
            callback=_show_version,
        ),
    ] = False,
    profile_name: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            autocompletion=complete_profile,
            help="Connect with this profile (default: AGENTICFLOW_PROFILE, else the current "
            "one; see `agenticflow profile`).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Logs go to stderr (errors only): stdout carries only a command's output."""
    if profile_name:
        os.environ["AGENTICFLOW_PROFILE"] = profile_name  # read by profiles.resolve


workflow_commands.register(app)
steer.register(app, workflow_commands.workflow_app)
schedule.register(app)
ask.register(app)
debug.register(app)
agents.register(app)
services.register(app)
cluster.register(app)
gateway.register(app)
app.add_typer(keys.keys_app, name="keys", rich_help_panel="Setup")
app.add_typer(audit.audit_app, name="audit", rich_help_panel="Setup")
profile.register(app)
llm_commands.register(app)
mcp_commands.register(app)


def main() -> None:
    """Console-script entry point (and ``python -m agenticflow``: the same
    program name, so usage lines and shell completion say ``agenticflow``)."""
    app(prog_name="agenticflow")


__all__ = ["app", "main", "version"]

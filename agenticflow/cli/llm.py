"""``agenticflow llm-stub``: a local OpenAI-compatible server answering from a script."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from agenticflow.cli._common import EXIT_INPUT, fail


def llm_stub(
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            help="JSON script of answers (see docs/guides/llm.md); none: every request "
            "is answered 'echo: <last message>'.",
            show_default=False,
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            help="Require 'Authorization: Bearer <key>' with the key read from this "
            "environment variable (never from the command line).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve POST /v1/chat/completions from a script (text, tool calls, SSE
    streaming, errors, slowness), counting requests at GET /stub/requests.

    Prints 'llm-stub listening on URL' once ready; runs until interrupted.
    Exit codes: 0 stopped, 2 a bad script or a port in use."""
    import asyncio
    import contextlib

    from agenticflow.cluster.llm_stub import serve

    api_key = os.environ.get(api_key_env) or None if api_key_env else None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(host=host, port=port, script=script, api_key=api_key))
    except (OSError, ValueError) as exc:
        fail(EXIT_INPUT, exc)


def register(app: typer.Typer) -> None:
    """``llm-stub``, on ``app``."""
    app.command("llm-stub", rich_help_panel="Setup")(llm_stub)


__all__ = ["register"]

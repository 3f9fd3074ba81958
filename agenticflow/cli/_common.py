"""What every command shares: consoles, exit codes, options, settings, output
formats and running a coroutine with our errors mapped to exit codes.

Only typer, rich and the standard library load with this module; a command
imports what it needs when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.client import Client
    from agenticflow.shared.ops.config import Settings
    from agenticflow.worker.app import AgentApp

T = TypeVar("T")

EXIT_FAILED, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_REFUSED = 1, 2, 3, 4, 5

# No emoji codes: rich would show a user's ":warning:" (a workflow name, a
# result, an error) as an emoji, with markup and highlighting off too.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


class Output(enum.StrEnum):
    """How a command prints its data (``-o``)."""

    table = "table"
    json = "json"
    jsonl = "jsonl"


NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="NATS server URL(s), comma-separated (default: a profile named by --profile "
        "or AGENTICFLOW_PROFILE, AGENTICFLOW_NATS_URL, NATS_URL, then the current profile).",
        show_default=False,
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="Subject prefix of the deployment (default: AGENTICFLOW_PREFIX, then the profile).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Output | None,
    typer.Option(
        "--output",
        "-o",
        help="table (for people), json (one compact document) or jsonl (one object per line).",
        case_sensitive=False,
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", hidden=True, help="Former spelling of -o json (or jsonl).")
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        envvar="AGENTICFLOW_METRICS_PORT",
        help="Serve /metrics (Prometheus), /healthz, /readyz and /health on this HTTP port "
        "(0: any free one).",
    ),
]
WeakSandboxOpt = Annotated[
    bool,
    typer.Option(
        "--allow-weak-sandbox",
        help="Run sandboxed tools even where the kernel refuses user namespaces (host "
        "network, the worker's user, only an audit hook on files): a warning at start-up and "
        "in `health`. Default: such calls fail and the tool is not run. Also "
        "AGENTICFLOW_ALLOW_WEAK_SANDBOX=1.",
    ),
]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the end; exit 1 if it failed.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait with --wait.")]
WorkflowArg = Annotated[str, typer.Argument(help="Workflow id.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who asks (default: your user name).")]


def fail(code: int, message: object, *, label: str = "error") -> NoReturn:
    """Print ``label: message`` on stderr as one unwrapped line of text, and exit ``code``."""
    err.print(f"[red]{label}:[/red] {esc(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def config_errors() -> Iterator[None]:
    """A ConfigError raised inside as a one-line error and exit 2."""
    from agenticflow.shared.errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)


def complete_profile(incomplete: str) -> list[str]:
    """Shell completion of a profile name."""
    from agenticflow import profiles
    from agenticflow.shared.errors import ConfigError

    try:
        return [name for name in profiles.names() if name.startswith(incomplete)]
    except ConfigError:
        return []


def output_of(output: Output | None, as_json: bool, *, legacy: Output = Output.json) -> Output:
    """The chosen format: ``-o``, else ``legacy`` for ``--json`` (what the command
    printed with it before ``-o``), else a table."""
    if output is not None:
        return output
    return legacy if as_json else Output.table


def to_json(value: Any) -> str:
    """One compact JSON document; odd values (bytes, times) become strings."""
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def emit(value: Any, fmt: Output) -> None:
    """Write data in a JSON format: ``json`` one document, ``jsonl`` a list's
    items one per line (another value on one line)."""
    if fmt is Output.jsonl and isinstance(value, list | tuple):
        emit_lines(value)
        return
    sys.stdout.write(to_json(value) + "\n")


def emit_lines(values: Iterable[Any]) -> None:
    """One JSON object per line."""
    for value in values:
        sys.stdout.write(to_json(value) + "\n")


def configure_cli_logging(fmt: str = "auto", *, level: str | None = None) -> None:
    """Logs on stderr at ``AGENTICFLOW_CLI_LOG_LEVEL`` (default: errors only), so
    a command's output and its one-line error are all a user sees."""
    from agenticflow.shared.ops.logging import configure_logging

    chosen = level or os.environ.get("AGENTICFLOW_CLI_LOG_LEVEL") or "error"
    configure_logging(level=chosen, fmt=fmt)


def settings(nats: str | None, prefix: str | None, **more: Any) -> Settings:
    """The settings of this command (see :func:`agenticflow.profiles.resolve`);
    exits 2 when they are invalid or the profile is unknown."""
    from agenticflow import profiles
    from agenticflow.shared.errors import ConfigError

    configure_cli_logging()
    try:
        return profiles.resolve(nats, prefix=prefix, **more)
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine, mapping our errors to exit codes."""
    import asyncio  # with ssl, 15 ms of --help if imported at start-up

    from agenticflow.shared.errors import (
        ConfigError,
        InterventionRefusedError,
        NotFoundError,
        TransportError,
        WorkflowDefinitionError,
    )

    try:
        return asyncio.run(coro)
    except (WorkflowDefinitionError, ConfigError) as exc:
        fail(EXIT_INPUT, exc)
    except (NotFoundError, TransportError) as exc:
        fail(EXIT_UNREACHABLE, exc)
    except InterventionRefusedError as exc:
        code = EXIT_UNREACHABLE if exc.code == "unknown_workflow" else EXIT_REFUSED
        fail(code, exc, label=f"refused ({esc(exc.code)})")


def run_waiting(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """:func:`run`, with a timeout exiting 4."""
    try:
        return run(coro)
    except TimeoutError:
        fail(EXIT_TIMEOUT, f"the workflow did not finish within {timeout:g}s")


async def with_client(settings: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Connect (:func:`agenticflow.connect`), call ``fn`` with the client, disconnect."""
    from agenticflow.client import connect
    from agenticflow.shared.wire.ids import new_node_id

    async with connect(settings=settings, name="agenticflow-cli", node_id=new_node_id("cli")) as c:
        return await fn(c)


def who(by: str | None) -> str:
    """Who asks: ``--by``, else the user's name."""
    return by or os.environ.get("USER") or os.environ.get("USERNAME") or "cli"


def parse_json_object(text: str | None, *, option: str = "--input") -> dict[str, Any]:
    """A JSON object given as text or ``@file``; exits 2 when it is not one."""
    if text is None:
        return {}
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            fail(EXIT_INPUT, f"{option} {text}: {exc.strerror}")
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        fail(EXIT_INPUT, f"{option} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail(EXIT_INPUT, f"{option} must be a JSON object")
    return value


def load_app(app_spec: str) -> AgentApp:
    """The agent app ``module:attribute`` (from the current directory too); exits 2."""
    from agenticflow.shared.errors import AgenticFlowError
    from agenticflow.worker.app import load_app as load

    sys.path.insert(0, str(Path.cwd()))
    try:
        return load(app_spec)
    except AgenticFlowError as exc:
        fail(EXIT_INPUT, exc)


def check_route(route: str | None) -> None:
    """Exit 2 unless ``route`` can name a queue."""
    from agenticflow.shared.errors import ConfigError
    from agenticflow.shared.wire.names import queue_of

    try:
        queue_of("any", route)
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)


def live_terminal() -> bool:
    """Whether live progress may be drawn: stdout and stderr are terminals
    (piped or redirected output gets nothing extra)."""
    return out.is_terminal and err.is_terminal


__all__ = [
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "ByOpt",
    "JsonOpt",
    "MetricsPortOpt",
    "NatsOpt",
    "Output",
    "OutputOpt",
    "PrefixOpt",
    "TimeoutOpt",
    "WaitOpt",
    "WeakSandboxOpt",
    "WorkflowArg",
    "check_route",
    "complete_profile",
    "config_errors",
    "configure_cli_logging",
    "emit",
    "emit_lines",
    "err",
    "fail",
    "live_terminal",
    "load_app",
    "out",
    "output_of",
    "parse_json_object",
    "run",
    "run_waiting",
    "settings",
    "to_json",
    "who",
    "with_client",
]

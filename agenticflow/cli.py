"""The ``agenticflow`` command line.

Exit codes: 0 success; 1 the workflow failed or was rejected (``audit verify``:
the trail was tampered with); 2 invalid input
(file, options, JSON); 3 NATS unreachable or the workflow is unknown; 4 timed
out waiting; 5 the coordinator refused an intervention (nothing changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console

from agenticflow import render
from agenticflow.coordinator import exports
from agenticflow.coordinator import replay as replay_mod
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.forks import first_divergence
from agenticflow.coordinator.partitions import PartitionedCoordinators
from agenticflow.coordinator.state import WorkflowState
from agenticflow.keys_cli import keys_app
from agenticflow.render import esc
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    InterventionRefusedError,
    NotFoundError,
    TransportError,
    WorkflowDefinitionError,
)
from agenticflow.shared.graph.workflow import WorkflowDefinition, load_workflow_file
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.health import serve_health
from agenticflow.shared.ops.logging import configure_logging
from agenticflow.shared.ops.metrics import configure_metrics, shutdown_metrics
from agenticflow.shared.ops.telemetry import configure_tracing, shutdown_tracing
from agenticflow.shared.wire.events import Event, InterventionApplied, MessageRejected
from agenticflow.shared.wire.ids import new_node_id
from agenticflow.shared.wire.names import queue_of
from agenticflow.worker.app import AgentApp, load_app
from agenticflow.worker.runtime import Worker

T = TypeVar("T")

EXIT_FAILED, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_REFUSED = 1, 2, 3, 4, 5

app = typer.Typer(
    name="agenticflow",
    help="AgenticFlow: multi-agent workflows on a NATS JetStream worker cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)


def _version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    try:
        return importlib.metadata.version("agenticflow")
    except importlib.metadata.PackageNotFoundError:
        from agenticflow import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        out.print(f"agenticflow {_version()}", markup=False, highlight=False)
        raise typer.Exit


@app.callback()
def _logging(
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
) -> None:
    """Log to stderr (warnings and worse) unless a command configures more:
    stdout carries only a command's output."""
    configure_logging(level="warning")


NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats", envvar="AGENTICFLOW_NATS_URL", help="NATS server URL(s), comma-separated."
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", envvar="AGENTICFLOW_PREFIX", help="Subject prefix of the deployment."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
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


def _settings(nats: str | None, prefix: str | None, **more: Any) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if nats:
        overrides["nats_url"] = nats
    if prefix:
        overrides["prefix"] = prefix
    try:
        settings = Settings(**overrides)
        _ = settings.names  # validates the prefix
    except (ValueError, ConfigError) as exc:
        err.print(f"[red]error:[/red] invalid settings: {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine, mapping our errors to exit codes."""
    try:
        return asyncio.run(coro)
    except WorkflowDefinitionError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    except NotFoundError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    except TransportError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    except InterventionRefusedError as exc:
        err.print(f"[red]refused ({esc(exc.code)}):[/red] {esc(exc)}")
        code = EXIT_UNREACHABLE if exc.code == "unknown_workflow" else EXIT_REFUSED
        raise typer.Exit(code) from exc


async def _with_client(settings: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    async with connected(settings, name="agenticflow-cli") as bus:
        return await fn(Client(bus=bus, node_id=new_node_id("cli")))


def _serve(settings: Settings, make: Callable[[Bus], Any], *, name: str) -> None:
    """Run a coordinator or worker until SIGTERM/SIGINT; the only signal handlers.

    Around it: tracing and metrics as configured, and the process's health
    service (a NATS micro service, plus HTTP with ``--metrics-port``)."""
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    kind = name.removeprefix("agenticflow-")
    configure_tracing(f"agenticflow-{kind}")
    configure_metrics(f"agenticflow-{kind}", prometheus=settings.metrics_port is not None)

    async def main() -> None:
        async with connected(settings, name=name, role=kind) as bus:
            service = make(bus)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(service.shutdown()))
            try:
                async with serve_health(bus, service, kind=kind, node_id=service.node_id):
                    await service.run()
            except OSError as exc:  # the HTTP port is taken
                raise ConfigError(f"cannot serve health and metrics: {exc}") from exc

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(main())
    except AgenticFlowError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(
            EXIT_UNREACHABLE if isinstance(exc, TransportError) else EXIT_INPUT
        ) from exc
    finally:
        shutdown_tracing()
        shutdown_metrics()


# Processes ------------------------------------------------------------------


@app.command()
def coordinator(
    nats: NatsOpt = None, prefix: PrefixOpt = None, metrics_port: MetricsPortOpt = None
) -> None:
    """Run a coordinator: folds events, dispatches ready tasks, keeps state in KV.

    Several may run. With AGENTICFLOW_PARTITIONS=1 (the default) one is active
    (it holds a lease in KV) and the others stand by; with more partitions, the
    workflows are split among them and all are active. Either way a survivor
    takes over within about AGENTICFLOW_LEASE_TTL_S of a coordinator's death."""
    settings = _settings(nats, prefix, metrics_port=metrics_port)
    _serve(
        settings,
        lambda bus: PartitionedCoordinators(bus=bus, node_id=new_node_id("coord")),
        name="agenticflow-coordinator",
    )


@app.command()
def worker(
    app_spec: Annotated[str, typer.Option("--app", help="Agent app as 'module:attribute'.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once.")] = 8,
    route: Annotated[
        str | None,
        typer.Option(help="Serve only the workflows submitted to this route (fork/rerun --route)."),
    ] = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
    metrics_port: MetricsPortOpt = None,
    allow_weak_sandbox: WeakSandboxOpt = False,
) -> None:
    """Run a worker hosting the agents of an app."""
    settings = _settings(
        nats, prefix, metrics_port=metrics_port, allow_weak_sandbox=allow_weak_sandbox or None
    )
    agent_app = _load_app(app_spec)
    _check_route(route)
    _serve(
        settings,
        lambda bus: Worker(
            bus=bus,
            app=agent_app,
            node_id=new_node_id("w"),
            concurrency=concurrency,
            route=route,
        ),
        name="agenticflow-worker",
    )


def _load_app(app_spec: str) -> AgentApp:
    sys.path.insert(0, str(Path.cwd()))
    try:
        return load_app(app_spec)
    except AgenticFlowError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc


def _check_route(route: str | None) -> None:
    try:
        queue_of("any", route)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc


NO_KEYS_WARNING = (
    "warning: no keys (AGENTICFLOW_SECURITY_DIR unset): messages are not signed, so anyone "
    "who can publish to this NATS server can submit and steer workflows and report task "
    "outcomes; see 'Threat model' in the README"
)


@app.command()
def dev(
    app_spec: Annotated[
        str, typer.Option("--app", help="Agent app as 'module:attribute'.")
    ] = "agenticflow.examples.apps:app",
    workers: Annotated[int, typer.Option(min=0, help="Worker processes.")] = 2,
    port: Annotated[int | None, typer.Option(help="Client port (default: a free one).")] = None,
    store: Annotated[
        Path | None, typer.Option(help="JetStream store directory (default: temporary).")
    ] = None,
    prefix: PrefixOpt = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS and one least-privilege NATS user per role (see `agenticflow nats-config`).",
        ),
    ] = False,
    secure_dir: Annotated[
        Path | None,
        typer.Option(
            "--secure-dir",
            help="With --secure: write (and keep) the credentials here (default: temporary).",
        ),
    ] = None,
    allow_weak_sandbox: WeakSandboxOpt = False,
) -> None:
    """Start an embedded nats-server, a coordinator and N workers; Ctrl-C stops all."""
    from agenticflow.cluster.dev import DevCluster

    cluster = DevCluster(
        app=app_spec,
        workers=workers,
        port=port,
        store_dir=store,
        prefix=prefix or "af",
        secure=secure,
        secure_dir=secure_dir,
        env={"AGENTICFLOW_ALLOW_WEAK_SANDBOX": "1"} if allow_weak_sandbox else None,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with cluster:
            url = esc(cluster.url)
            out.print(f"[green]AgenticFlow dev cluster ready[/green] at [bold]{url}[/bold]")
            if cluster.auth is None:
                out.print(f"  export AGENTICFLOW_NATS_URL={esc(cluster.url)}")
            else:
                kept = "" if secure_dir else " (removed on exit: --secure-dir keeps them)"
                where = cluster.auth.directory
                out.print(f"  TLS and least-privilege users; credentials in {esc(where)}{kept}")
                for role in ("client", "admin"):
                    out.print(f"  {role}: set -a; . {esc(cluster.auth.env_file(role))}; set +a")
            out.print(f"  {workers} worker(s) serving {esc(app_spec)}; Ctrl-C stops everything")
            if cluster.settings.security_dir is None:
                out.print(NO_KEYS_WARNING, style="yellow", markup=False, highlight=False)
            stop_wait = asyncio.create_task(stop.wait())
            while not stop_wait.done():
                await asyncio.wait({stop_wait}, timeout=1.0)
                cluster._check_children()
        out.print("stopped")

    _run(main())


@app.command("nats-config")
def nats_config(
    directory: Annotated[Path, typer.Argument(help="Where to write the files (created 0700).")],
    worker: Annotated[
        list[str],
        typer.Option(
            "--worker",
            help="A worker group and the capabilities its credentials may serve: "
            "NAME=cap1,cap2 (cap~route for a routed queue; NAME='*' for every one). Repeatable.",
        ),
    ],
    prefix: PrefixOpt = None,
    tls: Annotated[
        bool, typer.Option("--tls/--no-tls", help="TLS on the client port, with a test CA.")
    ] = True,
    host: Annotated[str, typer.Option(help="Address the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Client port.")] = 4222,
    auth: Annotated[
        str,
        typer.Option(
            help="How users authenticate: nkey (no secret in the server's file) or password."
        ),
    ] = "nkey",
    force: Annotated[bool, typer.Option(help="Replace an existing configuration.")] = False,
) -> None:
    """Write a nats-server configuration with one least-privilege user per role
    (coordinator, each worker group, client, admin), their credentials and env
    files, and with --tls a test CA and server certificate."""
    from agenticflow.cluster.nats_auth import generate, parse_auth, parse_worker_group

    try:
        groups = [parse_worker_group(spec) for spec in worker]
        files = generate(
            directory,
            prefix=prefix or "af",
            workers=groups,
            tls=tls,
            host=host,
            port=port,
            auth=parse_auth(auth),
            force=force,
        )
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    out.print(f"wrote {esc(files.config)} and the credentials of: {esc(', '.join(files.roles))}")
    out.print(f"  server:  nats-server -c {esc(files.config)}")
    for role in files.roles:
        out.print(f"  {esc(role)}: set -a; . {esc(files.env_file(role))}; set +a")


# Client commands ------------------------------------------------------------


def _parse_input(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            err.print(f"[red]error:[/red] --input {esc(text)}: {esc(exc.strerror)}")
            raise typer.Exit(EXIT_INPUT) from exc
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] --input is not valid JSON: {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    if not isinstance(value, dict):
        err.print("[red]error:[/red] --input must be a JSON object")
        raise typer.Exit(EXIT_INPUT)
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str, ensure_ascii=False, indent=2) + "\n")


def _finish(state: WorkflowState, as_json: bool) -> None:
    if as_json:
        _print_json(state.public_view())
    else:
        render.print_state(out, state)
    if state.status.value != "completed":
        raise typer.Exit(EXIT_FAILED)


def _show_outcome(
    settings: Settings,
    go: Callable[[Client], Awaitable[WorkflowState | str]],
    *,
    timeout: float,
    as_json: bool,
) -> None:
    """Run ``go``; show the workflow id it returns, or the final state it waited for."""
    try:
        result = _run(_with_client(settings, go))
    except TimeoutError as exc:
        err.print(f"[red]error:[/red] the workflow did not finish within {timeout:g}s")
        raise typer.Exit(EXIT_TIMEOUT) from exc
    if isinstance(result, str):
        out.print(
            render.to_json({"workflow_id": result}) if as_json else result,
            markup=False,
            highlight=False,
        )
        return
    _finish(result, as_json)


@app.command()
def submit(
    file: Annotated[
        Path | None, typer.Argument(help="Workflow file (YAML or JSON); or use --template.")
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input", help="Workflow input: JSON, or @file.json.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Run this template (see `agenticflow templates`)."),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option("--param", help="A template parameter, k=v (repeatable)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end; exit 1 if it failed.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300.0,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Workflow id (idempotency key).")
    ] = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Submit a workflow file or a template; prints its id (and, with --wait,
    its final state)."""
    settings = _settings(nats, prefix)
    if (file is None) == (template is None):
        err.print("[red]error:[/red] give a workflow file or --template NAME (not both)")
        raise typer.Exit(EXIT_INPUT)
    if params and template is None:
        err.print("[red]error:[/red] --param goes with --template")
        raise typer.Exit(EXIT_INPUT)
    try:
        definition = (
            load_workflow_file(file) if file is not None else _from_template(template, params)
        )
    except WorkflowDefinitionError as exc:
        err.print(f"[red]error:[/red] invalid {esc('workflow file' if file else 'template')}:")
        for problem in exc.problems:
            err.print(f"  {esc(problem)}")
        raise typer.Exit(EXIT_INPUT) from exc
    data = _parse_input(input_json)

    async def go(client: Client) -> WorkflowState | str:
        wid = await client.submit(definition, input=data, workflow_id=workflow_id)
        if not wait:
            return wid
        if not as_json:
            err.print(f"submitted {esc(wid)}; waiting…")
        return await client.wait(wid, timeout=timeout)

    _show_outcome(settings, go, timeout=timeout, as_json=as_json)


def _from_template(name: str | None, params: list[str] | None) -> WorkflowDefinition:
    """The template's workflow with ``k=v`` parameters; raises WorkflowDefinitionError."""
    from agenticflow.coordinator.supervisor.templates import Templates  # only for --template

    given: dict[str, str] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WorkflowDefinitionError(f"--param {esc(repr(item))} must be key=value")
        given[key.strip()] = value
    try:
        return Templates.load().get(str(name)).render(given)
    except NotFoundError as exc:
        raise WorkflowDefinitionError(str(exc)) from exc


@app.command()
def status(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Show a workflow's state and its tasks."""
    settings = _settings(nats, prefix)
    state = _run(_with_client(settings, lambda c: c.status(workflow_id)))
    if as_json:
        _print_json(state.public_view())
    else:
        render.print_state(out, state)


@app.command()
def events(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List a workflow's events in stream order, with vector clocks."""
    settings = _settings(nats, prefix)
    found = _run(_with_client(settings, lambda c: c.events(workflow_id)))
    _require_events(found, workflow_id)
    if as_json:
        for event in found:
            sys.stdout.write(render.to_json(render.event_json(event)) + "\n")
        return
    render.print_timeline(out, found)


@app.command()
def replay(
    workflow_id: Annotated[
        str | None, typer.Argument(help="Workflow id (or --since for the whole cluster).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Replay every workflow's events from this time on (ISO 8601, or a span "
            "back from now: 90s, 15m, 2h, 1d); --until ends the window.",
        ),
    ] = None,
    types: Annotated[
        str | None,
        typer.Option("--type", help="With --since: only event types matching this glob."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="With --since: read at most this many events.")
    ] = 10_000,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="text (the timeline), json (events and the re-folded state), mermaid "
            "(the DAG with each task's state) or chrome-trace (task spans per worker and "
            "agent, for ui.perfetto.dev); with --until, as of then.",
        ),
    ] = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the export to this file.")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Re-fold the events through the reducer and compare with the stored "
            "snapshot; check the causality rules. Exit 0 when all holds, 1 otherwise.",
        ),
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Show the state as it was after stream sequence SEQ or at an ISO 8601 time.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Replay a workflow from its recorded events: timeline, verify, time travel;
    or, with --since, what happened in the whole cluster in a window."""
    settings = _settings(nats, prefix)
    _check_export_options(fmt, output, as_json=as_json, window=since is not None)
    if (workflow_id is None) == (since is None) or (since is not None and check):
        err.print(
            "[red]error:[/red] give a workflow id, or --since TIME (without --verify) "
            "for the whole cluster"
        )
        raise typer.Exit(EXIT_INPUT)
    cut = None
    try:
        if until is not None:
            cut = replay_mod.parse_until(until)
        start = replay_mod.parse_since(since, now_ns=time.time_ns()) if since else None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    if start is not None:
        if cut is not None and cut[0] is not None:
            err.print("[red]error:[/red] with --since, --until must be a time")
            raise typer.Exit(EXIT_INPUT)
        _replay_window(settings, start, cut[1] if cut else None, types, limit, as_json=as_json)
        return
    assert workflow_id is not None

    async def read(client: Client) -> tuple[list[Event], WorkflowState | None, list[str]]:
        found = await client.events(workflow_id)
        snapshot = None
        if check:
            with contextlib.suppress(NotFoundError):
                snapshot = await client.status(workflow_id)
        return found, snapshot, await client.reading_problems(found)

    found, snapshot, warnings = _run(_with_client(settings, read))
    _require_events(found, workflow_id)
    for warning in warnings:  # replay goes on with what could be read
        err.print(f"[yellow]warning:[/yellow] {esc(warning)}")
    problems = replay_mod.verify(found, snapshot) if check else []
    if fmt != "text":
        _export(fmt, found, cut, output, problems=problems, warnings=warnings)
    elif cut is not None:
        _show_state_until(found, cut, until or "", as_json=as_json)
    else:
        _show_replay(found, problems, warnings, as_json=as_json, check=check, snapshot=snapshot)
    if problems and (fmt != "text" or cut is not None):
        # on stderr: stdout holds the export or the state (the timeline has its verdict)
        _print_verdict(problems, len(found), has_snapshot=snapshot is not None)
    if problems:
        raise typer.Exit(EXIT_FAILED)


def _show_replay(
    found: list[Event],
    problems: list[str],
    warnings: list[str],
    *,
    as_json: bool,
    check: bool,
    snapshot: WorkflowState | None,
) -> None:
    if as_json:
        _print_json(
            {
                "events": [render.event_json(event) for event in found],
                "verified": check,
                "problems": problems,
                "warnings": warnings,
            }
        )
        return
    render.print_timeline(out, found)
    if check:
        _print_verdict(problems, len(found), has_snapshot=snapshot is not None)


def _check_export_options(fmt: str, output: Path | None, *, as_json: bool, window: bool) -> None:
    """Refuse (exit 2) a format, or an option it would silently ignore."""
    misfit = None
    if fmt not in exports.FORMATS:
        misfit = f"--format must be one of {', '.join(exports.FORMATS)}"
    elif window and fmt != "text":
        misfit = "--format exports one workflow's replay, not a --since window"
    elif as_json and fmt not in ("text", "json"):
        misfit = f"--json cannot go with --format {fmt}"
    elif output is not None and fmt == "text":
        misfit = "--output writes an export: give --format json, mermaid or chrome-trace"
    if misfit is not None:
        err.print(f"[red]error:[/red] {esc(misfit)}")
        raise typer.Exit(EXIT_INPUT)


def _export(
    fmt: str,
    found: list[Event],
    cut: tuple[int | None, int | None] | None,
    output: Path | None,
    *,
    problems: list[str],
    warnings: list[str],
) -> None:
    """Write the replay in an export format (to ``output`` or stdout)."""
    if cut is not None:
        found = replay_mod.events_until(found, seq=cut[0], at_ns=cut[1])
    state = replay_mod.state_until(found)
    if fmt == "json":
        data = exports.to_json(found, state) | {"problems": problems, "warnings": warnings}
        text = json.dumps(data, default=str, ensure_ascii=False, indent=2)
    else:
        text = exports.render(fmt, found, state)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write {esc(output)}: {esc(exc.strerror)}")
        raise typer.Exit(EXIT_INPUT) from exc
    err.print(f"wrote {esc(fmt)} of {len(found)} events to {esc(output)}")


def _replay_window(
    settings: Settings,
    start: datetime,
    until_ns: int | None,
    types: str | None,
    limit: int,
    *,
    as_json: bool,
) -> None:
    found = _run(
        _with_client(
            settings,
            lambda c: c.events_since(start, until_ns=until_ns, types=types, limit=limit),
        )
    )
    for event in found:
        if event.id.startswith(replay_mod.UNREADABLE) and isinstance(event.data, MessageRejected):
            err.print(
                f"[yellow]warning:[/yellow] seq {event.seq}: unreadable event, skipped: "
                f"{event.data.reason}"
            )
    if as_json:
        for event in found:
            sys.stdout.write(render.to_json(render.event_json(event)) + "\n")
        return
    window = f"since {start.isoformat(timespec='seconds')}" + (f", type {types}" if types else "")
    if not found:
        out.print(f"no events {esc(window)}")
        return
    workflows = len({e.workflow_id for e in found})
    out.print(f"{len(found)} events of {workflows} workflow(s) {esc(window)}:")
    render.print_timeline(out, found, show_workflow=True)
    if len(found) >= limit:
        err.print(f"[yellow]showing the first {limit}:[/yellow] narrow with --type or --until")


def _require_events(found: list[Event], workflow_id: str) -> None:
    if not found:
        err.print(f"[red]error:[/red] no events for workflow {workflow_id!r}")
        raise typer.Exit(EXIT_UNREACHABLE)


def _show_state_until(
    found: list[Event], cut: tuple[int | None, int | None], until: str, *, as_json: bool
) -> None:
    state = replay_mod.state_until(found, seq=cut[0], at_ns=cut[1])
    if state is None:
        err.print(f"[red]error:[/red] the workflow had not been submitted at {esc(until)}")
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        _print_json(state.public_view())
        return
    out.print(f"as of {esc(until)} (seq {state.last_seq}):")
    render.print_state(out, state)


def _print_verdict(problems: list[str], count: int, *, has_snapshot: bool) -> None:
    if problems:
        err.print(f"[red]verify failed:[/red] {esc(problems[0])}")
        for problem in problems[1:]:
            err.print(f"  also: {esc(problem)}")
        return
    out.print(
        f"[green]verified:[/green] {count} events; "
        + ("the snapshot is their re-fold; " if has_snapshot else "no snapshot stored yet; ")
        + "every causality rule holds"
    )


@app.command()
def watch(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Show live progress until the workflow ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    settings = _settings(nats, prefix)

    async def go(client: Client) -> WorkflowState:
        final: WorkflowState | None = None
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=out,
        ) as progress:
            bar = progress.add_task(workflow_id, total=None, detail="waiting for the coordinator")
            async for state in client.states(workflow_id):
                counts = state.counts()
                detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                progress.update(
                    bar,
                    total=len(state.tasks) or None,
                    completed=state.completed,
                    description=f"{state.name} {state.status.value}",
                    detail=detail,
                )
                final = state
        assert final is not None
        return final

    _finish(_run(_with_client(settings, go)), as_json=False)


@app.command()
def agents(as_json: JsonOpt = False, nats: NatsOpt = None, prefix: PrefixOpt = None) -> None:
    """List registered agent instances, their capabilities and last heartbeat,
    then the cluster-wide circuit breakers and rate limits of tools (in JSON:
    entries with ``role`` ``breaker`` or ``rate_limit``)."""
    from agenticflow.worker.tools import read_states

    async def both(client: Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await client.agents(), await read_states(client.bus)

    settings = _settings(nats, prefix)
    found, tools = _run(_with_client(settings, both))
    if as_json:
        _print_json([*found, *tools])
        return
    if not found:
        out.print("no agents registered")
    else:
        render.print_agents(out, found)
    if tools:
        render.print_tool_states(out, tools)


@app.command()
def health(
    as_json: JsonOpt = False,
    wait: Annotated[
        float, typer.Option(min=0.05, help="Seconds to wait for processes to answer.")
    ] = 1.0,
    expect: Annotated[
        int | None,
        typer.Option(min=1, help="Stop waiting once this many processes answered; fewer fails."),
    ] = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """The health of every coordinator and worker process of the deployment.

    Processes are found through their NATS micro services (``nats micro ls``
    lists them too). Exit 0 when all answer ready, 1 when one is not (or fewer
    than --expect answered), 3 when none answers."""
    from agenticflow.shared.ops.health import cluster_health

    async def go(client: Client) -> list[dict[str, Any]]:
        return await cluster_health(client.bus, wait_s=wait, expect=expect)

    settings = _settings(nats, prefix)
    reports = _run(_with_client(settings, go))
    if as_json:
        _print_json(reports)
    elif reports:
        render.print_health(out, reports)
    if not reports:
        err.print(f"[red]no AgenticFlow process of prefix {settings.prefix!r} answered[/red]")
        raise typer.Exit(EXIT_UNREACHABLE)
    if expect is not None and len(reports) < expect:
        err.print(f"[red]{len(reports)} of {expect} processes answered[/red]")
        raise typer.Exit(EXIT_FAILED)
    if not all(report.get("ready") for report in reports):
        raise typer.Exit(EXIT_FAILED)


def _resume(
    settings: Settings,
    workflow_id: str,
    from_task: str | None,
    *,
    wait: bool,
    timeout: float,
    as_json: bool,
    done: str,
) -> None:
    """Request a resume; with ``wait``, show the final state (exit 1 unless completed)."""
    state = _resume_state(settings, workflow_id, from_task, wait, timeout)
    if state is None:
        out.print(done)
        return
    _finish(state, as_json)


def _resume_state(
    settings: Settings, workflow_id: str, from_task: str | None, wait: bool, timeout: float
) -> WorkflowState | None:
    async def go(client: Client) -> WorkflowState | None:
        before = await client.status(workflow_id)
        await client.resume(workflow_id, from_task=from_task)
        if not wait:
            return None
        return await client.wait_for_resume(workflow_id, before.resumes + 1, timeout=timeout)

    try:
        return _run(_with_client(settings, go))
    except TimeoutError as exc:
        err.print(f"[red]error:[/red] the workflow did not finish within {timeout:g}s")
        raise typer.Exit(EXIT_TIMEOUT) from exc


WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the end; exit 1 if it failed.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait with --wait.")]


@app.command()
def resume(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    from_task: Annotated[
        str | None,
        typer.Option("--from", help="Also re-run this task and everything after it."),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Resume a paused workflow, or re-run a failed one keeping the results of
    tasks that completed."""
    _resume(
        _settings(nats, prefix), workflow_id, from_task, wait=wait, timeout=timeout,
        as_json=as_json, done=f"resume of {workflow_id} requested",
    )  # fmt: skip


def _intervene(
    nats: str | None,
    prefix: str | None,
    as_json: bool,
    call: Callable[[Client], Awaitable[InterventionApplied]],
) -> None:
    """Send an intervention and print the coordinator's verdict."""
    settings = _settings(nats, prefix)
    try:
        applied = _run(_with_client(settings, call))
    except TimeoutError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_TIMEOUT) from exc
    if as_json:
        _print_json(applied.model_dump(mode="json"))
    else:
        out.print(f"[green]{esc(applied.action)}:[/green] {esc(applied.summary)}")


WorkflowArg = Annotated[str, typer.Argument(help="Workflow id.")]
WaitingTaskArg = Annotated[str, typer.Argument(help="The task waiting for approval.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who asks (default: your user name).")]


def _who(by: str | None) -> str:
    return by or os.environ.get("USER") or os.environ.get("USERNAME") or "cli"


@app.command()
def pause(
    workflow_id: WorkflowArg,
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Pause a running workflow: no new task is dispatched; running ones finish."""
    _intervene(nats, prefix, as_json, lambda c: c.pause(workflow_id, by=_who(by)))


@app.command()
def abort(
    workflow_id: WorkflowArg,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "",
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Abort a running workflow: running handlers are cancelled, unfinished tasks
    end as cancelled."""
    _intervene(nats, prefix, as_json, lambda c: c.abort(workflow_id, reason, by=_who(by)))


@app.command()
def feedback(
    workflow_id: WorkflowArg,
    text: Annotated[str, typer.Argument(help="The feedback.")],
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Send feedback to the running handlers (ctx.feedback) and every later task."""
    _intervene(nats, prefix, as_json, lambda c: c.feedback(workflow_id, text, by=_who(by)))


@app.command()
def modify(
    workflow_id: WorkflowArg,
    changes_file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="YAML/JSON with add, remove, replace (task lists) and params."
        ),
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Remove this task (repeatable).")
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option("--params", help="TASK=JSON: merge these params into the task's."),
    ] = None,
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Change tasks that have not started: add, remove, replace, or change params.
    Validated like a new DAG; refused with the reason when invalid."""
    changes = _changes(changes_file, remove or [], params or [])
    _intervene(nats, prefix, as_json, lambda c: c.modify(workflow_id, changes, by=_who(by)))


def _changes(path: Path | None, remove: list[str], params: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            err.print(f"[red]error:[/red] {esc(path)}: {esc(exc)}")
            raise typer.Exit(EXIT_INPUT) from exc
        if not isinstance(loaded, dict):
            err.print(
                f"[red]error:[/red] {esc(path)}: expected a mapping of add/remove/replace/params"
            )
            raise typer.Exit(EXIT_INPUT)
        changes = loaded
    if remove:
        changes["remove"] = [*changes.get("remove", []), *remove]
    for item in params:
        task_id, sep, raw = item.partition("=")
        try:
            value = json.loads(raw) if sep else None
        except json.JSONDecodeError as exc:
            err.print(f"[red]error:[/red] --params {esc(repr(item))}: not JSON: {esc(exc)}")
            raise typer.Exit(EXIT_INPUT) from exc
        if not isinstance(value, dict):
            err.print(f"[red]error:[/red] --params {esc(repr(item))}: expected TASK={{...}}")
            raise typer.Exit(EXIT_INPUT)
        changes.setdefault("params", {})[task_id] = value
    if not changes:
        err.print("[red]error:[/red] nothing to change: give --file, --remove or --params")
        raise typer.Exit(EXIT_INPUT)
    return changes


CommentOpt = Annotated[str, typer.Option("--comment", help="Reaches the handler; recorded.")]


@app.command()
def approve(
    workflow_id: WorkflowArg,
    task_id: WaitingTaskArg,
    comment: CommentOpt = "",
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Approve a task waiting for approval; it runs with the decision and comment."""
    _intervene(
        nats, prefix, as_json, lambda c: c.approve(workflow_id, task_id, comment, by=_who(by))
    )


@app.command()
def reject(
    workflow_id: WorkflowArg,
    task_id: WaitingTaskArg,
    comment: CommentOpt = "",
    by: ByOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Reject a task waiting for approval (a rejected gate fails the task; a
    handler's request gets the rejection and comment)."""
    _intervene(
        nats, prefix, as_json, lambda c: c.reject(workflow_id, task_id, comment, by=_who(by))
    )


agent_app = typer.Typer(help="Operate on one agent instance.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(keys_app, name="keys")


def _set_suspended(
    instance: str, suspended: bool, by: str | None, nats: str | None, prefix: str | None
) -> None:
    settings = _settings(nats, prefix)
    try:
        info = _run(
            _with_client(
                settings, lambda c: c.set_suspended(instance, suspended=suspended, by=_who(by))
            )
        )
    except TimeoutError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_TIMEOUT) from exc
    note = " (finishing its task first)" if info.get("suspending") else ""
    out.print(f"{esc(instance)}: {esc(info.get('state'))}{esc(note)}")


@agent_app.command("suspend")
def agent_suspend(
    instance: Annotated[str, typer.Argument(help="Agent instance id (see `agenticflow agents`).")],
    by: ByOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Suspend an agent instance: it pulls no new task (a busy one finishes first)."""
    _set_suspended(instance, True, by, nats, prefix)


@agent_app.command("resume")
def agent_resume(
    instance: Annotated[str, typer.Argument(help="Agent instance id.")],
    by: ByOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Resume a suspended agent instance."""
    _set_suspended(instance, False, by, nats, prefix)


dlq_app = typer.Typer(
    help="Dead letters: tasks delivered max_deliver times without an outcome.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(dlq_app, name="dlq")


@dlq_app.callback()
def dlq(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List dead letters (``dlq retry ID TASK`` re-dispatches one)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(nats, prefix)
    found = _run(_with_client(settings, lambda c: c.dead_letters()))
    rows = [
        {
            "workflow_id": e.workflow_id,
            "task_id": e.task_id,
            "attempt": e.attempt,
            "timestamp": e.timestamp,
            **e.data.model_dump(mode="json"),
        }
        for e in found
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no dead letters")
        return
    for row in rows:
        out.print(
            f"{render.when(row['timestamp'])}  {row['workflow_id']}  {row['task_id']} "
            f"(attempt {row['attempt']}, {row['capability']}): {row['reason']}"
        )


@dlq_app.command("retry")
def dlq_retry(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    task_id: Annotated[str, typer.Argument(help="The dead-lettered task.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Re-dispatch a dead-lettered task (and what depends on it)."""
    _resume(
        _settings(nats, prefix), workflow_id, task_id, wait=wait, timeout=timeout,
        as_json=as_json, done=f"{task_id} of {workflow_id} re-dispatched",
    )  # fmt: skip


# Forks, re-executions and comparisons ---------------------------------------

DebugAppOpt = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="Run the new workflow's tasks on this agent app ('module:attribute') in this "
        "process, on a private route, instead of on the cluster's workers; waits for the end.",
    ),
]
RouteOpt = Annotated[
    str | None,
    typer.Option(help="Send the new workflow's tasks to the workers started with --route."),
]
BranchWaitOpt = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait for the end; exit 1 if it failed.")
]


def _branch(
    settings: Settings,
    start: Callable[[Client, str | None], Awaitable[str]],
    *,
    what: str,
    app_spec: str | None,
    route: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a fork or re-execution, on the cluster or on ``app_spec`` in this
    process (a worker on a private route), then wait for it and show its end."""
    _check_route(route)
    agent_app = _load_app(app_spec) if app_spec else None
    if agent_app is not None:
        configure_logging(level="warning", fmt=settings.log_format)

    async def go(client: Client) -> WorkflowState | str:
        if agent_app is None:
            new_id = await start(client, route)
            if not wait:
                return new_id
            err.print(f"{esc(what)} {esc(new_id)}; waiting…")
            return await client.wait(new_id, timeout=timeout)
        private = route or f"dbg-{os.urandom(4).hex()}"
        worker = Worker(bus=client.bus, app=agent_app, node_id=new_node_id("w"), route=private)
        async with worker:
            new_id = await start(client, private)
            err.print(f"{what} {esc(new_id)} on {esc(app_spec)} (route {esc(private)}); waiting…")
            return await client.wait(new_id, timeout=timeout)

    _show_outcome(settings, go, timeout=timeout, as_json=as_json)


@app.command()
def fork(
    workflow_id: Annotated[str, typer.Argument(help="Workflow to fork.")],
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            min=1,
            help="Reuse the results completed up to this stream sequence (default: all).",
        ),
    ] = None,
    app_spec: DebugAppOpt = None,
    route: RouteOpt = None,
    wait: BranchWaitOpt = True,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Start a new workflow that reuses every result completed up to --at and runs
    the rest (with --app: on a fixed agent app). Then: agenticflow diff OLD NEW."""
    _branch(
        _settings(nats, prefix),
        lambda client, to: client.fork(workflow_id, at_seq=at, route=to),
        what="forked",
        app_spec=app_spec,
        route=route,
        wait=wait,
        timeout=timeout,
        as_json=as_json,
    )


@app.command()
def rerun(
    workflow_id: Annotated[str, typer.Argument(help="Workflow to re-execute.")],
    app_spec: DebugAppOpt = None,
    route: RouteOpt = None,
    wait: BranchWaitOpt = True,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Re-execute a workflow with every side effect (ctx.effect) served from its
    recording, not the outside world; a call the recording lacks fails its task."""
    _branch(
        _settings(nats, prefix),
        lambda client, to: client.rerun(workflow_id, route=to),
        what="re-running as",
        app_spec=app_spec,
        route=route,
        wait=wait,
        timeout=timeout,
        as_json=as_json,
    )


@app.command()
def diff(
    first: Annotated[str, typer.Argument(help="A workflow id.")],
    second: Annotated[str, typer.Argument(help="Another workflow id (e.g. its fork).")],
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Name the first event where two runs diverge and show both sides; exit 0
    when they did the same things, 1 when they diverge."""
    settings = _settings(nats, prefix)

    async def read(client: Client) -> tuple[list[Event], list[Event]]:
        return await client.events(first), await client.events(second)

    left, right = _run(_with_client(settings, read))
    _require_events(left, first)
    _require_events(right, second)
    found = first_divergence(left, right)
    if as_json:
        _print_json(
            {
                "same": found is None,
                "why": found.why if found else None,
                "first": render.event_json(found.left) if found and found.left else None,
                "second": render.event_json(found.right) if found and found.right else None,
            }
        )
    elif found is None:
        out.print(
            f"[green]same:[/green] {first} and {second} did the same things "
            f"({len(left)} and {len(right)} events; timing and worker names aside)"
        )
    else:
        render.print_divergence(out, found, first, second)
    if found is not None:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def top(
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (without rates).")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The view as JSON (with --once one document, else one line per refresh)."
        ),
    ] = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """A live view of the cluster: queues with their lag and workers, agent
    instances and their states, tasks/s and events/s, running workflows with
    their progress, recent failures. Ctrl-C quits."""
    from agenticflow.top import run_top

    settings = _settings(nats, prefix)
    with contextlib.suppress(KeyboardInterrupt):
        _run(run_top(settings, interval=interval, once=once, as_json=as_json, console=out))


# The audit trail ------------------------------------------------------------

audit_app = typer.Typer(
    help="The tamper-evident audit trail (hash-chained records of security events).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


async def _with_audit(settings: Settings, fn: Callable[[Bus, Any], Awaitable[T]]) -> T:
    """Connect without signing anything (these commands only read) and check
    with the trust store and data keys of AGENTICFLOW_SECURITY_DIR, if set: an
    auditor needs no key of its own."""
    from agenticflow.shared.security.audit import reader_seal

    seal = reader_seal(settings.security_dir, window_s=settings.dedupe_window_s)
    reading = settings.model_copy(update={"security_dir": None})
    async with connected(reading, name="agenticflow-audit") as bus:
        return await fn(bus, seal)


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="Also compare each chain with the heads kept in FILE by an earlier run, "
            "then keep the new heads there if intact: a copy kept away from the cluster "
            "still catches an admin who deleted both the audit and the anchors stream.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Check every record of the audit trail: signatures, each node's hash chain,
    no removed or reordered record, and each chain against its signed anchors
    (a deleted, re-created or truncated stream). Exit 0 when intact, 1 with the
    problems."""
    from agenticflow.shared.security.audit import load_anchor, save_anchor, verify_audit

    settings = _settings(nats, prefix)
    try:
        heads = load_anchor(anchor) if anchor is not None else None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {esc(exc)}")
        raise typer.Exit(EXIT_INPUT) from exc
    report = _run(_with_audit(settings, lambda bus, seal: verify_audit(bus, seal, anchor=heads)))
    if anchor is not None and report.ok:
        save_anchor(anchor, report)
    if as_json:
        _print_json(report.to_json())
    elif report.ok:
        checked = (
            "signatures checked"
            if report.signatures_checked
            else "signatures NOT checked: no trust store"
        )
        out.print(
            f"[green]intact[/green]: {report.records} records in {len(report.chains)} "
            f"chains ({checked}; {report.anchors} anchors compared)"
        )
    if not as_json:
        for note in report.notes:
            out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if not as_json and not report.ok:
        for problem in report.problems:
            out.print(str(problem), style="red", markup=False, highlight=False, soft_wrap=True)
        total = report.problems_total
        hidden = total - len(report.problems)
        more = f" ({hidden} not shown)" if hidden else ""
        out.print(f"TAMPERED: {total} problem{'s' if total != 1 else ''}{more}", style="bold red")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("show")
def audit_show(
    last: Annotated[int, typer.Option("--last", min=1, help="The last N records.")] = 20,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Print audit records, oldest first, decrypted where the data keys allow."""
    from agenticflow.shared.security.audit import read_audit

    settings = _settings(nats, prefix)
    entries = _run(_with_audit(settings, lambda bus, seal: read_audit(bus, seal, last=last)))
    if as_json:
        for entry in entries:
            sys.stdout.write(json.dumps(entry.to_json(), default=str) + "\n")
        return
    for e in entries:
        where = "/".join(x for x in (e.workflow_id, e.task_id) if x)
        what = render.short(e.detail, 120) if e.detail is not None else f"({e.error})"
        parts = [f"#{e.seq}", render.when(e.ts), f"{e.node}:{e.n}", e.principal or "?"]
        parts += [e.kind or "?", where, what]
        out.print("  ".join(p for p in parts if p), markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()


# `ask` and `templates` live in their own module and register on `app` when imported.
from agenticflow import ask_cli as _ask_cli  # noqa: E402, F401
from agenticflow import cluster_cli as _cluster_cli  # noqa: E402, F401

__all__ = ["app", "main"]

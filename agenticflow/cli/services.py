"""``agenticflow coordinator|worker|dev|nats-config``: the processes of a cluster.

A coordinator or worker is configured by its environment (``AGENTICFLOW_*``,
``NATS_URL``) and its options, never by a profile: a profile is a client's.
``dev`` saves a profile (``dev``) for its clients and makes it current.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agenticflow.cli._common import (
    EXIT_INPUT,
    EXIT_UNREACHABLE,
    MetricsPortOpt,
    NatsOpt,
    PrefixOpt,
    WeakSandboxOpt,
    check_route,
    configure_cli_logging,
    err,
    fail,
    load_app,
    out,
    run,
)
from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.shared.bus.transport import Bus
    from agenticflow.shared.ops.config import Settings


def service_settings(nats: str | None, prefix: str | None, **more: Any) -> Settings:
    """A process's settings: options, then its environment (no profile); exits 2."""
    from agenticflow import profiles
    from agenticflow.shared.errors import ConfigError

    try:
        return profiles.resolve(nats, prefix=prefix, implicit=False, **more)
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's coroutine on uvloop where it is installed."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def serve(settings: Settings, make: Callable[[Bus], Any], *, name: str) -> None:
    """Run a coordinator or worker until SIGTERM/SIGINT; the only signal handlers.

    Around it: tracing and metrics as configured, and the process's health
    service (a NATS micro service, plus HTTP with ``--metrics-port``)."""
    import asyncio

    from agenticflow.shared.bus.transport import connected
    from agenticflow.shared.errors import AgenticFlowError, ConfigError, TransportError
    from agenticflow.shared.ops.health import serve_health
    from agenticflow.shared.ops.logging import configure_logging
    from agenticflow.shared.ops.metrics import configure_metrics, shutdown_metrics
    from agenticflow.shared.ops.telemetry import configure_tracing, shutdown_tracing

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
            except TimeoutError as exc:  # an OSError too, but NATS's, not the port's
                raise TransportError(f"NATS did not answer in time: {exc}") from exc
            except OSError as exc:  # the HTTP port is taken
                raise ConfigError(f"cannot serve health and metrics: {exc}") from exc

    try:
        run_loop(main())
    except AgenticFlowError as exc:
        fail(EXIT_UNREACHABLE if isinstance(exc, TransportError) else EXIT_INPUT, exc)
    finally:
        shutdown_tracing()
        shutdown_metrics()


def coordinator(
    nats: NatsOpt = None, prefix: PrefixOpt = None, metrics_port: MetricsPortOpt = None
) -> None:
    """Run a coordinator: folds events, dispatches ready tasks, keeps state in KV.

    Several may run. With AGENTICFLOW_PARTITIONS=1 (the default) one is active
    (it holds a lease in KV) and the others stand by; with more partitions, the
    workflows are split among them and all are active. Either way a survivor
    takes over within about AGENTICFLOW_LEASE_TTL_S of a coordinator's death."""
    from agenticflow.coordinator.partitions import PartitionedCoordinators
    from agenticflow.shared.wire.ids import new_node_id

    settings = service_settings(nats, prefix, metrics_port=metrics_port)
    serve(
        settings,
        lambda bus: PartitionedCoordinators(bus=bus, node_id=new_node_id("coord")),
        name="agenticflow-coordinator",
    )


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
    from agenticflow.shared.wire.ids import new_node_id
    from agenticflow.worker.runtime import Worker

    settings = service_settings(
        nats, prefix, metrics_port=metrics_port, allow_weak_sandbox=allow_weak_sandbox or None
    )
    agent_app = load_app(app_spec)
    check_route(route)
    serve(
        settings,
        lambda bus: Worker(
            bus=bus, app=agent_app, node_id=new_node_id("w"), concurrency=concurrency, route=route
        ),
        name="agenticflow-worker",
    )


NO_KEYS_WARNING = (
    "warning: no keys (AGENTICFLOW_SECURITY_DIR unset): messages are not signed, so anyone "
    "who can publish to this server (NATS or Redis) can submit and steer workflows and report task "
    "outcomes; see 'Threat model' in the README"
)

SaveAsOpt = Annotated[
    str,
    typer.Option(
        "--save-as",
        help="Save how to reach the cluster as this profile and make it current "
        "('' saves none; see `agenticflow profile`).",
    ),
]


def save_profile(name: str, fields: Any) -> str | None:
    """Save a profile and make it current; the line saying so (None: not saved).
    A failure is a warning: the cluster runs all the same."""
    from agenticflow import profiles
    from agenticflow.shared.errors import ConfigError

    if not name:
        return None
    try:
        profiles.save(name, fields, make_current=True)
    except ConfigError as exc:
        err.print(f"[yellow]warning:[/yellow] profile not saved: {esc(exc)}", soft_wrap=True)
        return None
    return f"profile {name!r} saved and made current: its clients need no variables"


def dev(
    app_spec: Annotated[
        str, typer.Option("--app", help="Agent app as 'module:attribute'.")
    ] = "agenticflow.examples.apps:app",
    workers: Annotated[int, typer.Option(min=0, help="Worker processes.")] = 2,
    port: Annotated[int | None, typer.Option(help="Client port (default: a free one).")] = None,
    store: Annotated[
        Path | None, typer.Option(help="JetStream store directory (default: temporary).")
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", envvar="AGENTICFLOW_PREFIX", help="Subject prefix.")
    ] = "af",
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
    save_as: SaveAsOpt = "dev",
    allow_weak_sandbox: WeakSandboxOpt = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            envvar="AGENTICFLOW_BACKEND",
            help="nats (an embedded nats-server), redis (an embedded redis-server) or "
            "memory (everything in this process: runs the packaged examples, then exits).",
        ),
    ] = "nats",
    console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            help="Serve the web console (and the HTTP gateway) on 127.0.0.1 and print "
            "a link that logs in.",
        ),
    ] = True,
    console_port: Annotated[
        int,
        typer.Option(
            "--console-port", min=0, max=65535, help="The console's port (taken: a free one)."
        ),
    ] = 8080,
) -> None:
    """Start an embedded server (nats-server, or redis-server with --backend redis),
    a coordinator and N workers, and the web console; Ctrl-C stops all. Saves the profile 'dev'
    (--save-as) and makes it current. With --backend memory nothing outside
    this process could reach the cluster: it runs every packaged example in
    it instead and exits (0 when all complete)."""

    import asyncio

    from agenticflow.cluster.dev import DevCluster
    from agenticflow.shared.errors import ConfigError

    configure_cli_logging()
    if backend == "memory":
        from agenticflow.examples.demo import EXAMPLES, demo

        async def examples() -> int:
            codes = [await demo(example, max(workers, 1), "memory") for example in EXAMPLES]
            return max(codes)

        raise typer.Exit(run(examples()))
    try:
        cluster = DevCluster(
            app=app_spec,
            workers=workers,
            port=port,
            store_dir=store,
            prefix=prefix,
            secure=secure,
            secure_dir=secure_dir,
            env={"AGENTICFLOW_ALLOW_WEAK_SANDBOX": "1"} if allow_weak_sandbox else None,
            backend=backend,
        )
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with cluster:
            url = esc(cluster.url)
            out.print(f"[green]AgenticFlow dev cluster ready[/green] at [bold]{url}[/bold]")
            if backend == "redis":
                out.print(f"  export AGENTICFLOW_URL={esc(cluster.url)}", soft_wrap=True)
            elif cluster.auth is None:
                out.print(f"  export AGENTICFLOW_NATS_URL={esc(cluster.url)}", soft_wrap=True)
            else:
                kept = "" if secure_dir else " (removed on exit: --secure-dir keeps them)"
                where = cluster.auth.directory
                out.print(f"  TLS and least-privilege users; credentials in {esc(where)}{kept}")
                for role in ("client", "admin"):
                    out.print(f"  {role}: set -a; . {esc(cluster.auth.env_file(role))}; set +a")
            saved = save_profile(save_as, cluster.settings)
            if saved:
                out.print(f"  {saved}", markup=False, highlight=False, soft_wrap=True)
            out.print(f"  {workers} worker(s) serving {esc(app_spec)}; Ctrl-C stops everything")
            if cluster.settings.security_dir is None:
                out.print(NO_KEYS_WARNING, style="yellow", markup=False, highlight=False)
            async with contextlib.AsyncExitStack() as stack:
                if console:
                    await _dev_console(cluster.settings, console_port, stack)
                stop_wait = asyncio.create_task(stop.wait())
                while not stop_wait.done():
                    await asyncio.wait({stop_wait}, timeout=1.0)
                    cluster._check_children()
        out.print("stopped")

    run(main())


async def _dev_console(settings: Settings, port: int, stack: contextlib.AsyncExitStack) -> None:
    """Serve the console for a dev cluster on 127.0.0.1 (until ``stack``
    closes) and print its login link; a console that cannot start is a warning."""
    from agenticflow.console.serve import console_config, console_link, start_server
    from agenticflow.shared.errors import AgenticFlowError

    try:
        config, token = console_config(host="127.0.0.1", port=port, console=True)
        server = await start_server(settings, config, fallback_port=True)
    except AgenticFlowError as exc:
        out.print(f"  console not started: {exc}", style="yellow", markup=False, soft_wrap=True)
        return
    stack.push_async_callback(server.stop)
    link = console_link(server.url, token)
    out.print(f"  console: {link}", markup=False, highlight=False, soft_wrap=True)


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
    prefix: Annotated[
        str, typer.Option("--prefix", envvar="AGENTICFLOW_PREFIX", help="Subject prefix.")
    ] = "af",
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
    from agenticflow.shared.errors import ConfigError

    try:
        groups = [parse_worker_group(spec) for spec in worker]
        files = generate(
            directory,
            prefix=prefix,
            workers=groups,
            tls=tls,
            host=host,
            port=port,
            auth=parse_auth(auth),
            force=force,
        )
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)
    out.print(f"wrote {esc(files.config)} and the credentials of: {esc(', '.join(files.roles))}")
    out.print(f"  server:  nats-server -c {esc(files.config)}")
    for role in files.roles:
        out.print(f"  {esc(role)}: set -a; . {esc(files.env_file(role))}; set +a")


def register(app: typer.Typer) -> None:
    """The process commands, on ``app``."""
    for command in (coordinator, worker, dev):
        app.command(command.__name__, rich_help_panel="Processes")(command)
    app.command("nats-config", rich_help_panel="Processes")(nats_config)


__all__ = [
    "NO_KEYS_WARNING",
    "coordinator",
    "dev",
    "nats_config",
    "register",
    "run_loop",
    "save_profile",
    "serve",
    "service_settings",
    "worker",
]

"""``agenticflow cluster up|status|down``: a production-shaped cluster on this machine.

``up`` starts a JetStream cluster of ``--nodes`` nats-server processes on
127.0.0.1, ``--coordinators`` coordinators and ``--workers`` workers of
``--app``, owned by a detached supervisor (see :mod:`agenticflow.cluster.local`),
and returns once it is ready, printing how to use it. ``status`` shows what
runs; ``down`` stops it all.

Exit codes: 0 done (``status``: a cluster runs); 2 invalid options, or a
cluster already runs in that directory (``up``); 3 the cluster did not start
(``up``) or none runs there (``status``); 4 not ready within ``--timeout``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from agenticflow.cli._common import (
    EXIT_INPUT,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    JsonOpt,
    Output,
    OutputOpt,
    WeakSandboxOpt,
    configure_cli_logging,
    emit,
    fail,
    out,
    output_of,
)
from agenticflow.cli.services import SaveAsOpt, save_profile
from agenticflow.render import esc

cluster_app = typer.Typer(
    help="A local cluster: N nats-server nodes, coordinators with fail-over, workers "
    "(optionally autoscaled), kept running in the background.",
    no_args_is_help=True,
)

# The defaults of agenticflow.cluster.local (not imported here, to start fast;
# tests/unit/test_cli_package.py checks they are the same).
DEFAULT_DIR = Path(".agenticflow") / "cluster"
DEFAULT_APP = "agenticflow.examples.apps:app"

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir", help="State directory: state file, logs, NATS stores.", show_default=True
    ),
]


def _line(text: str) -> None:
    """A line meant to be copied: never wrapped, no markup."""
    sys.stdout.write(text + "\n")


def up(
    nodes: Annotated[
        int, typer.Option(min=1, max=9, help="nats-server nodes (R3 streams from 3).")
    ] = 3,
    coordinators: Annotated[int, typer.Option(min=1, max=16, help="Coordinator processes.")] = 2,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, max=256, help="Worker processes at start (default 2; MIN with --autoscale)."
        ),
    ] = None,
    app_spec: Annotated[
        str, typer.Option("--app", help="Agent app the workers serve, as 'module:attribute'.")
    ] = DEFAULT_APP,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks each worker runs at once.")] = 8,
    autoscale: Annotated[
        str | None,
        typer.Option(
            "--autoscale",
            metavar="MIN:MAX",
            help="Add and remove workers from the task consumers' lag, within MIN..MAX.",
        ),
    ] = None,
    scale_down_after: Annotated[
        float,
        typer.Option(
            "--scale-down-after",
            min=0,
            help="Seconds a surplus of workers lasts before one is stopped (and between two).",
        ),
    ] = 30.0,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Coordinator partitions (default 8 with several coordinators)."
        ),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", envvar="AGENTICFLOW_PREFIX", help="Subject prefix.")
    ] = "af",
    metrics: Annotated[
        bool,
        typer.Option("--metrics", help="Each process serves /metrics and /health on a free port."),
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS, one least-privilege NATS user per role, signing and data keys "
            "(what the deploy files generate on first start).",
        ),
    ] = False,
    console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            help="Serve the web console on 127.0.0.1 (--console-port; taken: a free port) "
            "and print a link that logs in.",
        ),
    ] = True,
    console_port: Annotated[
        int, typer.Option("--console-port", min=0, max=65535, help="The console's port.")
    ] = 8080,
    directory: DirOpt = DEFAULT_DIR,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the cluster to be ready.")
    ] = 120.0,
    save_as: SaveAsOpt = "local",
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    allow_weak_sandbox: WeakSandboxOpt = False,
) -> None:
    """Start the cluster in the background; return once it is ready. Saves the
    profile 'local' (--save-as) and makes it current."""
    from agenticflow.cluster.local import (
        ClusterSpec,
        app_pools,
        parse_autoscale,
        start_supervisor,
        stop_cluster,
    )
    from agenticflow.shared.errors import (
        AgenticFlowError,
        ConfigError,
        NotFoundError,
        TransportError,
    )

    configure_cli_logging()
    fmt = output_of(output, as_json)
    if allow_weak_sandbox:  # the supervisor and every worker inherit it
        os.environ["AGENTICFLOW_ALLOW_WEAK_SANDBOX"] = "1"
    try:
        spec = ClusterSpec.build(
            nodes=nodes,
            coordinators=coordinators,
            workers=workers,
            app=app_spec,
            concurrency=concurrency,
            autoscale=parse_autoscale(autoscale) if autoscale is not None else None,
            scale_down_after_s=scale_down_after,
            partitions=partitions,
            prefix=prefix,
            metrics=metrics,
            secure=secure,
            console=console,
            console_port=console_port,
        )
        app_pools(spec)  # the app imports, here and now, rather than in every worker
    except (ConfigError, NotFoundError) as exc:
        fail(EXIT_INPUT, exc)
    directory = directory.resolve()
    started = time.monotonic()
    try:
        state = start_supervisor(spec, directory, timeout=timeout)
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)
    except TransportError as exc:
        fail(EXIT_UNREACHABLE, exc)
    except TimeoutError as exc:
        fail(EXIT_TIMEOUT, exc)
    except KeyboardInterrupt:
        with contextlib.suppress(AgenticFlowError):
            stop_cluster(directory)
        fail(EXIT_INPUT, "interrupted; stopped what had started")
    saved = save_profile(save_as, profile_fields(state))
    if fmt is not Output.table:
        emit(state, fmt)
        return
    took = time.monotonic() - started
    out.print(
        f"[green]AgenticFlow cluster ready[/green] in {took:.1f}s: {spec.nodes} NATS node"
        f"{'s' * (spec.nodes != 1)} (R{spec.replicas}), {spec.coordinators} coordinator"
        f"{'s' * (spec.coordinators != 1)} ({spec.effective_partitions} partition"
        f"{'s' * (spec.effective_partitions != 1)}), {spec.initial_workers} worker"
        f"{'s' * (spec.initial_workers != 1)} of {spec.app}",
        highlight=False,
        soft_wrap=True,
    )
    for node in state.get("nodes") or []:
        _line(f"  {node['name']}: {node['url']}  (monitoring {node['monitor_url']})")
    if spec.autoscale is not None:
        low, high = spec.autoscale
        _line(f"  autoscaler: {low}..{high} workers, one fewer after {scale_down_after:g}s idle")
    served = state.get("console") or {}
    if served.get("url"):
        _line(f"  console: {served['url']}{_console_token(served)}")
    _line(f"  state and logs: {directory}")
    env_file = state.get("env_file")
    if saved:
        _line(f"  {saved}")
    _line("Or in another shell:")
    _line(f"set -a; . {env_file}; set +a" if env_file else export_line(state))
    where = "" if directory == DEFAULT_DIR.resolve() else f" --dir {directory}"
    _line(f"Then: agenticflow cluster status{where} · agenticflow cluster down{where}")


def _console_token(console: dict[str, Any]) -> str:
    """The login link's fragment, from the 0600 token file in the state
    directory ('' when the environment's gateway tokens log in)."""
    if not console.get("token_file"):
        return ""
    try:
        return "#token=" + Path(console["token_file"]).read_text().strip()
    except OSError:
        return " (token: see the state directory)"


def profile_fields(state: dict[str, Any]) -> dict[str, str]:
    """What a client of the cluster needs, as profile fields: the cluster's
    variables and, for a secure one, the admin's credentials (its env file)."""
    from agenticflow import profiles
    from agenticflow.cluster.nats_auth import read_env_file
    from agenticflow.shared.errors import ConfigError

    env = dict(state.get("env") or {})
    if state.get("env_file"):
        with contextlib.suppress(ConfigError):  # the warning comes from the profile
            env.update(read_env_file(Path(state["env_file"])))
    return profiles.env_fields(env)


def export_line(state: dict[str, Any]) -> str:
    """``export AGENTICFLOW_NATS_URL=... AGENTICFLOW_REPLICAS=...`` for a client.

    The replica count matters: a client creates missing streams and buckets,
    and one with the default of 1 would turn R3 streams into R1."""
    env = state.get("env") or {}
    names = ["AGENTICFLOW_NATS_URL", "AGENTICFLOW_REPLICAS"]
    if env.get("AGENTICFLOW_PREFIX", "af") != "af":
        names.append("AGENTICFLOW_PREFIX")
    if env.get("AGENTICFLOW_PARTITIONS", "1") != "1":
        names.append("AGENTICFLOW_PARTITIONS")
    return "export " + " ".join(f"{k}={env[k]}" for k in names if k in env)


def status(
    directory: DirOpt = DEFAULT_DIR, output: OutputOpt = None, as_json: JsonOpt = False
) -> None:
    """Nodes, coordinators and workers with their pids and whether they run; the
    autoscaler's last decision."""
    from agenticflow.cluster.local import cluster_status

    fmt = output_of(output, as_json)
    directory = directory.resolve()
    state = cluster_status(directory)
    if state is None or not state.get("running"):
        if fmt is not Output.table:
            emit({"running": False, "dir": str(directory), **(state or {})}, fmt)
        else:
            what = "no cluster runs" if state is None else "the supervisor is gone (stale state)"
            out.print(f"{esc(what)} in {esc(directory)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE)
    if fmt is not Output.table:
        emit(state, fmt)
        return
    _print_status(state)


def _age(since: float | None) -> str:
    if not since:
        return ""
    seconds = max(0.0, time.time() - since)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _print_status(state: dict[str, Any]) -> None:
    from rich.table import Table

    supervisor = state.get("supervisor") or {}
    out.print(
        f"cluster in {state.get('dir')} ({state.get('status')}), supervisor pid "
        f"{supervisor.get('pid')}, up {_age(state.get('started_at'))}, "
        f"R{state.get('replicas')}, {state.get('partitions')} partition(s)",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("process", "pid", "state", "age", "where", box=None, pad_edge=False)
    for node in state.get("nodes") or []:
        alive = "up" if node.get("alive") else f"dead ({node.get('exit_code')})"
        table.add_row(f"nats {node['name']}", str(node.get("pid")), alive, "", node.get("url"))
    for kind in ("coordinators", "workers"):
        for member in state.get(kind) or []:
            alive = member.get("state") if member.get("alive") else "exited"
            if not member.get("alive") and member.get("exit_code") is not None:
                alive = f"exited ({member['exit_code']})"
            table.add_row(
                member["name"],
                str(member.get("pid")),
                alive,
                _age(member.get("started")),
                member.get("log"),
            )
    out.print(table)
    console = state.get("console") or {}
    if console.get("url"):
        where = console.get("token_file") or "the environment's gateway tokens"
        _line(f"console: {console['url']} (login: {where})")
    scaler = state.get("autoscaler")
    if scaler:
        last = scaler.get("last") or {}
        out.print(
            f"autoscaler {scaler['min']}..{scaler['max']}: "
            + (
                f"{last.get('current')} -> {last.get('desired')} workers ({last.get('reason')}), "
                f"{_age(last.get('at'))} ago"
                if last
                else "no reading yet"
            ),
            highlight=False,
            soft_wrap=True,
        )
        for change in (scaler.get("history") or [])[-5:]:
            out.print(
                f"  {_age(change['at'])} ago: {change['current']} -> {change['desired']} "
                f"({change['reason']})",
                highlight=False,
            )
    _line(export_line(state))


def down(
    directory: DirOpt = DEFAULT_DIR,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to let the supervisor stop everything.")
    ] = 60.0,
) -> None:
    """Stop workers, coordinators, then NATS nodes, and wait for them."""
    from agenticflow.cluster.local import stop_cluster
    from agenticflow.shared.errors import TransportError

    directory = directory.resolve()
    try:
        stopped = stop_cluster(directory, timeout=timeout)
    except TransportError as exc:
        fail(EXIT_UNREACHABLE, exc)
    if stopped is None:
        out.print(f"no cluster runs in {esc(directory)}; nothing to stop", highlight=False)
        return
    counts = {k: len(stopped.get(k) or []) for k in ("workers", "coordinators", "nodes")}
    out.print(
        f"stopped {counts['workers']} worker(s), {counts['coordinators']} coordinator(s) and "
        f"{counts['nodes']} NATS node(s) in {directory}",
        highlight=False,
        soft_wrap=True,
    )
    if stopped.get("killed_leftovers"):
        out.print(f"killed left-over processes: {esc(', '.join(stopped['killed_leftovers']))}")


def register(app: typer.Typer) -> None:
    """``cluster up|status|down``, on ``app``."""
    cluster_app.command("up")(up)
    cluster_app.command("status")(status)
    cluster_app.command("down")(down)
    app.add_typer(cluster_app, name="cluster", rich_help_panel="Processes")


__all__ = ["DEFAULT_APP", "DEFAULT_DIR", "cluster_app", "export_line", "profile_fields", "register"]

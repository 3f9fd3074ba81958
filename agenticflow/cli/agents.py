"""``agenticflow agents|agent|health|dlq|top``: what runs in the cluster.

``agents`` lists agent instances and the tools' breakers and rate limits,
``agent suspend|resume`` operates one instance, ``health`` asks every process,
``dlq`` lists dead letters (``dlq retry`` re-dispatches one) and ``top`` is a
live view of it all.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agenticflow import render
from agenticflow.cli._common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    ByOpt,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
    TimeoutOpt,
    WaitOpt,
    emit,
    fail,
    out,
    output_of,
    run,
    settings,
    who,
    with_client,
)
from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.client import Client


def agents(
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List registered agent instances, their capabilities and last heartbeat,
    then the cluster-wide circuit breakers and rate limits of tools (in JSON:
    entries with ``role`` ``breaker`` or ``rate_limit``)."""
    from agenticflow.worker.tools import read_states

    async def both(client: Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await client.agents(), await read_states(client.bus)

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    found, tools = run(with_client(conf, both))
    if fmt is not Output.table:
        emit([*found, *tools], fmt)
        return
    if not found:
        out.print("no agents registered")
    else:
        render.print_agents(out, found)
    if tools:
        render.print_tool_states(out, tools)


agent_app = typer.Typer(help="Operate on one agent instance.", no_args_is_help=True)


def _set_suspended(
    instance: str,
    suspended: bool,
    by: str | None,
    fmt: Output,
    nats: str | None,
    prefix: str | None,
) -> None:
    conf = settings(nats, prefix)
    try:
        info = run(
            with_client(conf, lambda c: c.set_suspended(instance, suspended=suspended, by=who(by)))
        )
    except TimeoutError as exc:
        fail(EXIT_TIMEOUT, exc)
    if fmt is not Output.table:
        emit({"instance": instance, **info}, fmt)
        return
    note = " (finishing its task first)" if info.get("suspending") else ""
    out.print(f"{esc(instance)}: {esc(info.get('state'))}{esc(note)}")


@agent_app.command("suspend")
def agent_suspend(
    instance: Annotated[str, typer.Argument(help="Agent instance id (see `agenticflow agents`).")],
    by: ByOpt = None,
    output: OutputOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Suspend an agent instance: it pulls no new task (a busy one finishes first)."""
    _set_suspended(instance, True, by, output_of(output, False), nats, prefix)


@agent_app.command("resume")
def agent_resume(
    instance: Annotated[str, typer.Argument(help="Agent instance id.")],
    by: ByOpt = None,
    output: OutputOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Resume a suspended agent instance."""
    _set_suspended(instance, False, by, output_of(output, False), nats, prefix)


def health(
    wait: Annotated[
        float, typer.Option(min=0.05, help="Seconds to wait for processes to answer.")
    ] = 1.0,
    expect: Annotated[
        int | None,
        typer.Option(min=1, help="Stop waiting once this many processes answered; fewer fails."),
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
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

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    reports = run(with_client(conf, go))
    if fmt is not Output.table:
        emit(reports, fmt)
    elif reports:
        render.print_health(out, reports)
    if not reports:
        fail(EXIT_UNREACHABLE, f"no AgenticFlow process of prefix {conf.prefix!r} answered")
    if expect is not None and len(reports) < expect:
        fail(EXIT_FAILED, f"{len(reports)} of {expect} processes answered")
    if not all(report.get("ready") for report in reports):
        raise typer.Exit(EXIT_FAILED)


dlq_app = typer.Typer(
    help="Dead letters: tasks delivered max_deliver times without an outcome.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@dlq_app.callback()
def dlq(
    ctx: typer.Context,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List dead letters (``dlq retry ID TASK`` re-dispatches one)."""
    if ctx.invoked_subcommand is not None:
        return
    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    found = run(with_client(conf, lambda c: c.dead_letters()))
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
    if fmt is not Output.table:
        emit(rows, fmt)
        return
    if not rows:
        out.print("no dead letters")
        return
    for row in rows:
        out.print(
            render.safe(
                f"{render.when(row['timestamp'])}  {row['workflow_id']}  {row['task_id']} "
                f"(attempt {row['attempt']}, {row['capability']}): {row['reason']}"
            ),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@dlq_app.command("retry")
def dlq_retry(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    task_id: Annotated[str, typer.Argument(help="The dead-lettered task.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Re-dispatch a dead-lettered task (and what depends on it)."""
    from agenticflow.cli.steer import resume_and_show

    resume_and_show(
        settings(nats, prefix), workflow_id, task_id, wait=wait, timeout=timeout,
        fmt=output_of(output, as_json), done=f"{task_id} of {workflow_id} re-dispatched",
    )  # fmt: skip


def top(
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (without rates).")
    ] = False,
    output: Annotated[
        Output | None,
        typer.Option(
            "--output",
            "-o",
            help="table (the live view), or the view as JSON: with --once one document, "
            "else one line per refresh (json and jsonl alike).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """A live view of the cluster: queues with their lag and workers, agent
    instances and their states, tasks/s and events/s, running workflows with
    their progress, recent failures. Ctrl-C quits."""
    from agenticflow.top import run_top

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    with contextlib.suppress(KeyboardInterrupt):
        run(
            run_top(
                conf, interval=interval, once=once, as_json=fmt is not Output.table, console=out
            )
        )


def register(app: typer.Typer) -> None:
    """These commands, on ``app``."""
    app.command("agents", rich_help_panel="Cluster")(agents)
    app.add_typer(agent_app, name="agent", rich_help_panel="Cluster")
    app.command("health", rich_help_panel="Cluster")(health)
    app.add_typer(dlq_app, name="dlq", rich_help_panel="Cluster")
    app.command("top", rich_help_panel="Cluster")(top)


__all__ = [
    "agent_app",
    "agents",
    "dlq",
    "dlq_app",
    "dlq_retry",
    "health",
    "register",
    "top",
]

"""``agenticflow replay|fork|rerun|diff``: debugging from the event stream.

``replay`` shows a workflow's recorded events (a timeline, a verification, the
state at a point in time) or what happened in the whole cluster in a window;
``--format`` exports it (json, mermaid, chrome-trace) and ``--file`` writes the
export. ``-o table|json|jsonl`` chooses how the rest is printed, as in every
command; ``-o FILE`` (any other value), the former spelling of ``--file``,
still works.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agenticflow import render
from agenticflow.cli._common import (
    EXIT_FAILED,
    EXIT_INPUT,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
    TimeoutOpt,
    check_route,
    configure_cli_logging,
    emit,
    err,
    fail,
    load_app,
    out,
    output_of,
    run,
    settings,
    with_client,
)
from agenticflow.cli.workflow import require_events, show_outcome
from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.client import Client
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.wire.events import Event

Cut = tuple[int | None, int | None]
"""``--until`` parsed: a stream sequence or a time in ns."""


def _output_or_file(output: str | None) -> tuple[Output | None, Path | None]:
    """replay's ``-o``: a format name, or (its former meaning) a file to write."""
    if output is None:
        return None, None
    with contextlib.suppress(ValueError):
        return Output(output.lower()), None
    return None, Path(output)


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
    file: Annotated[
        Path | None, typer.Option("--file", help="Write the --format export to this file.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="table, json (one document) or jsonl (one event per line); "
            "any other value: a file, as --file (the former spelling).",
            show_default=False,
        ),
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
    from agenticflow.coordinator import replay as replay_mod
    from agenticflow.shared.errors import ConfigError, NotFoundError

    chosen, legacy_file = _output_or_file(output)
    file = file or legacy_file
    window = since is not None
    shown = output_of(chosen, as_json, legacy=Output.jsonl if window else Output.json)
    conf = settings(nats, prefix)
    _check_export_options(fmt, file, shown=shown, window=window)
    if (workflow_id is None) == (since is None) or (since is not None and check):
        fail(EXIT_INPUT, "give a workflow id, or --since TIME (without --verify) for the cluster")
    cut = None
    try:
        if until is not None:
            cut = replay_mod.parse_until(until)
        start = replay_mod.parse_since(since, now_ns=time.time_ns()) if since else None
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)
    if start is not None:
        if cut is not None and cut[0] is not None:
            fail(EXIT_INPUT, "with --since, --until must be a time")
        _replay_window(conf, start, cut[1] if cut else None, types, limit, shown=shown)
        return
    assert workflow_id is not None

    async def read(client: Client) -> tuple[list[Event], WorkflowState | None, list[str]]:
        found = await client.events(workflow_id)
        snapshot = None
        if check:
            with contextlib.suppress(NotFoundError):
                snapshot = await client.status(workflow_id)
        return found, snapshot, await client.reading_problems(found)

    found, snapshot, warnings = run(with_client(conf, read))
    require_events(found, workflow_id)
    for warning in warnings:  # replay goes on with what could be read
        err.print(f"[yellow]warning:[/yellow] {esc(warning)}", soft_wrap=True)
    problems = replay_mod.verify(found, snapshot) if check else []
    if fmt != "text":
        _export(fmt, found, cut, file, problems=problems, warnings=warnings)
    elif cut is not None:
        _show_state_until(found, cut, until or "", shown=shown)
    else:
        _show_replay(found, problems, warnings, shown=shown, check=check, snapshot=snapshot)
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
    shown: Output,
    check: bool,
    snapshot: WorkflowState | None,
) -> None:
    events = [render.event_json(event) for event in found]
    if shown is Output.jsonl:
        emit(events, shown)
    elif shown is Output.json:
        emit(
            {"events": events, "verified": check, "problems": problems, "warnings": warnings}, shown
        )
    else:
        render.print_timeline(out, found)
    if check and shown is Output.table:
        _print_verdict(problems, len(found), has_snapshot=snapshot is not None)


def _check_export_options(fmt: str, file: Path | None, *, shown: Output, window: bool) -> None:
    """Refuse (exit 2) a format, or an option it would silently ignore."""
    from agenticflow.coordinator import exports

    misfit = None
    if fmt not in exports.FORMATS:
        misfit = f"--format must be one of {', '.join(exports.FORMATS)}"
    elif window and fmt != "text":
        misfit = "--format exports one workflow's replay, not a --since window"
    elif shown is not Output.table and fmt not in ("text", "json"):
        misfit = f"-o {shown.value} (--json) cannot go with --format {fmt}"
    elif file is not None and fmt == "text":
        misfit = (
            "--file (formerly -o/--output FILE) writes an export: "
            "give --format json, mermaid or chrome-trace"
        )
    if misfit is not None:
        fail(EXIT_INPUT, misfit)


def _export(
    fmt: str,
    found: list[Event],
    cut: Cut | None,
    file: Path | None,
    *,
    problems: list[str],
    warnings: list[str],
) -> None:
    """Write the replay in an export format (to ``file`` or stdout)."""
    import json

    from agenticflow.coordinator import exports
    from agenticflow.coordinator import replay as replay_mod

    if cut is not None:
        found = replay_mod.events_until(found, seq=cut[0], at_ns=cut[1])
    state = replay_mod.state_until(found)
    if fmt == "json":
        data = exports.to_json(found, state) | {"problems": problems, "warnings": warnings}
        text = json.dumps(data, default=str, ensure_ascii=False, indent=2)
    else:
        text = exports.render(fmt, found, state)
    if file is None:
        out.file.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(EXIT_INPUT, f"cannot write {file}: {exc.strerror}")
    err.print(f"wrote {esc(fmt)} of {len(found)} events to {esc(file)}", soft_wrap=True)


def _replay_window(
    conf: Settings,
    start: datetime,
    until_ns: int | None,
    types: str | None,
    limit: int,
    *,
    shown: Output,
) -> None:
    from agenticflow.coordinator import replay as replay_mod
    from agenticflow.shared.wire.events import MessageRejected

    found = run(
        with_client(
            conf, lambda c: c.events_since(start, until_ns=until_ns, types=types, limit=limit)
        )
    )
    for event in found:
        if event.id.startswith(replay_mod.UNREADABLE) and isinstance(event.data, MessageRejected):
            err.print(
                f"[yellow]warning:[/yellow] seq {event.seq}: unreadable event, skipped: "
                f"{esc(event.data.reason)}",
                soft_wrap=True,
            )
    if shown is not Output.table:
        emit([render.event_json(event) for event in found], shown)
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


def _show_state_until(found: list[Event], cut: Cut, until: str, *, shown: Output) -> None:
    from agenticflow.coordinator import replay as replay_mod

    state = replay_mod.state_until(found, seq=cut[0], at_ns=cut[1])
    if state is None:
        fail(EXIT_FAILED, f"the workflow had not been submitted at {until}")
    if shown is not Output.table:
        emit(state.public_view(), shown)
        return
    out.print(f"as of {esc(until)} (seq {state.last_seq}):")
    render.print_state(out, state)


def _print_verdict(problems: list[str], count: int, *, has_snapshot: bool) -> None:
    if problems:
        err.print(f"[red]verify failed:[/red] {esc(problems[0])}", soft_wrap=True)
        for problem in problems[1:]:
            err.print(f"  also: {esc(problem)}", soft_wrap=True)
        return
    out.print(
        f"[green]verified:[/green] {count} events; "
        + ("the snapshot is their re-fold; " if has_snapshot else "no snapshot stored yet; ")
        + "every causality rule holds"
    )


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
    conf: Settings,
    start: Callable[[Client, str | None], Awaitable[str]],
    *,
    what: str,
    app_spec: str | None,
    route: str | None,
    wait: bool,
    timeout: float,
    fmt: Output,
) -> None:
    """Start a fork or re-execution, on the cluster or on ``app_spec`` in this
    process (a worker on a private route), then wait for it and show its end."""
    from agenticflow.cli import _live

    check_route(route)
    agent_app = load_app(app_spec) if app_spec else None
    if agent_app is not None:
        configure_cli_logging(conf.log_format, level="warning")

    async def go(client: Client) -> WorkflowState | str:
        from agenticflow.shared.wire.ids import new_node_id
        from agenticflow.worker.runtime import Worker

        if agent_app is None:
            new_id = await start(client, route)
            if not wait:
                return new_id
            return await _live.wait(client, new_id, timeout=timeout, what=f"{what} {new_id}")
        private = route or f"dbg-{os.urandom(4).hex()}"
        worker = Worker(bus=client.bus, app=agent_app, node_id=new_node_id("w"), route=private)
        async with worker:
            new_id = await start(client, private)
            label = f"{what} {new_id} on {app_spec} (route {private})"
            return await _live.wait(client, new_id, timeout=timeout, what=label)

    show_outcome(conf, go, timeout=timeout, fmt=fmt)


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
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Start a new workflow that reuses every result completed up to --at and runs
    the rest (with --app: on a fixed agent app). Then: agenticflow diff OLD NEW."""
    _branch(
        settings(nats, prefix),
        lambda client, to: client.fork(workflow_id, at_seq=at, route=to),
        what="forked",
        app_spec=app_spec,
        route=route,
        wait=wait,
        timeout=timeout,
        fmt=output_of(output, as_json),
    )


def rerun(
    workflow_id: Annotated[str, typer.Argument(help="Workflow to re-execute.")],
    app_spec: DebugAppOpt = None,
    route: RouteOpt = None,
    wait: BranchWaitOpt = True,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Re-execute a workflow with every side effect (ctx.effect) served from its
    recording, not the outside world; a call the recording lacks fails its task."""
    _branch(
        settings(nats, prefix),
        lambda client, to: client.rerun(workflow_id, route=to),
        what="re-running as",
        app_spec=app_spec,
        route=route,
        wait=wait,
        timeout=timeout,
        fmt=output_of(output, as_json),
    )


def diff(
    first: Annotated[str, typer.Argument(help="A workflow id.")],
    second: Annotated[str, typer.Argument(help="Another workflow id (e.g. its fork).")],
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Name the first event where two runs diverge and show both sides; exit 0
    when they did the same things, 1 when they diverge."""
    from agenticflow.coordinator.forks import first_divergence

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)

    async def read(client: Client) -> tuple[list[Event], list[Event]]:
        return await client.events(first), await client.events(second)

    left, right = run(with_client(conf, read))
    require_events(left, first)
    require_events(right, second)
    found = first_divergence(left, right)
    if fmt is not Output.table:
        emit(
            {
                "same": found is None,
                "why": found.why if found else None,
                "first": render.event_json(found.left) if found and found.left else None,
                "second": render.event_json(found.right) if found and found.right else None,
            },
            fmt,
        )
    elif found is None:
        out.print(
            f"[green]same:[/green] {esc(first)} and {esc(second)} did the same things "
            f"({len(left)} and {len(right)} events; timing and worker names aside)"
        )
    else:
        render.print_divergence(out, found, first, second)
    if found is not None:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """The debugging commands, on ``app``."""
    for command in (replay, fork, rerun, diff):
        app.command(command.__name__, rich_help_panel="Debugging")(command)


__all__ = ["diff", "fork", "register", "replay", "rerun"]

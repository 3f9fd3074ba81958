"""``agenticflow workflow submit|list|describe|status|result|events|watch``:
start workflows and read them.

The same functions are registered flat (``agenticflow submit``, ``status``,
``events``, ``watch``) as they were before the ``workflow`` group existed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agenticflow import render
from agenticflow.cli import _live
from agenticflow.cli._common import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    ByOpt,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
    TimeoutOpt,
    WorkflowArg,
    emit,
    err,
    fail,
    out,
    output_of,
    parse_json_object,
    run,
    run_waiting,
    settings,
    who,
    with_client,
)
from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.client import Client, WorkflowSummary
    from agenticflow.coordinator.definitions import RegisteredDefinition
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.shared.graph.workflow import WorkflowDefinition
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.wire.events import Event
    from agenticflow.shared.wire.usage import WorkflowUsage

workflow_app = typer.Typer(
    help="Workflows: submit, list, describe, result, events, watch; steer them "
    "(pause, resume, cancel, terminate, feedback, modify, approve, reject).",
    no_args_is_help=True,
)


def finish(state: WorkflowState, fmt: Output) -> None:
    """Show a final state; exit 1 unless it completed."""
    show_state(state, fmt)
    if state.status.value != "completed":
        raise typer.Exit(EXIT_FAILED)


def show_state(state: WorkflowState, fmt: Output) -> None:
    """A workflow's state: a table, or its public view as JSON."""
    if fmt is Output.table:
        render.print_state(out, state)
    else:
        emit(state.public_view(), fmt)


def show_outcome(
    settings: Settings,
    go: Callable[[Client], Awaitable[WorkflowState | str]],
    *,
    timeout: float,
    fmt: Output,
) -> None:
    """Run ``go``; show the workflow id it returns, or the final state it waited for."""
    result = run_waiting(with_client(settings, go), timeout)
    if isinstance(result, str):
        if fmt is Output.table:
            out.print(result, markup=False, highlight=False)
        else:
            emit({"workflow_id": result}, fmt)
        return
    finish(result, fmt)


def submit(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Workflow file (YAML or JSON), or a registered workflow NAME[@VERSION]; "
            "or use --template."
        ),
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
        bool,
        typer.Option(
            "--wait", help="Wait for the end (live progress on a terminal); exit 1 if it failed."
        ),
    ] = False,
    timeout: TimeoutOpt = 300.0,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Workflow id (idempotency key).")
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Submit a workflow file, a registered workflow (NAME@VERSION, or NAME for
    its latest version) or a template; prints its id (and, with --wait, its
    final state)."""
    from agenticflow.shared.errors import WorkflowDefinitionError
    from agenticflow.shared.graph.workflow import load_workflow_file

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    if (file is None) == (template is None):
        fail(EXIT_INPUT, "give a workflow file or --template NAME (not both)")
    if params and template is None:
        fail(EXIT_INPUT, "--param goes with --template")
    registered = file is not None and not file.exists() and _is_ref(str(file))
    try:
        definition = (
            None
            if registered
            else load_workflow_file(file)
            if file is not None
            else _from_template(template, params)
        )
    except WorkflowDefinitionError as exc:
        err.print(f"[red]error:[/red] invalid {'workflow file' if file else 'template'}:")
        for problem in exc.problems:
            err.print(f"  {esc(problem)}", soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from exc
    data = parse_json_object(input_json)

    async def go(client: Client) -> WorkflowState | str:
        chosen = definition or str(file)  # (a registered NAME[@VERSION])
        wid = (await client.start(chosen, input=data, id=workflow_id)).id
        if not wait:
            return wid
        return await _live.wait(client, wid, timeout=timeout, what=f"submitted {wid}")

    show_outcome(conf, go, timeout=timeout, fmt=fmt)


def _from_template(name: str | None, params: list[str] | None) -> WorkflowDefinition:
    """The template's workflow with ``k=v`` parameters; raises WorkflowDefinitionError."""
    from agenticflow.coordinator.supervisor.templates import Templates
    from agenticflow.shared.errors import NotFoundError, WorkflowDefinitionError

    given: dict[str, str] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WorkflowDefinitionError(f"--param {item!r} must be key=value")
        given[key.strip()] = value
    try:
        return Templates.load().get(str(name)).render(given)
    except NotFoundError as exc:
        raise WorkflowDefinitionError(str(exc)) from exc


def status(
    workflow_id: WorkflowArg,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Show a workflow's state and its tasks (``describe`` is the same), and
    its model usage (``ctx.llm`` calls: tokens and cost) when it has any."""
    conf = settings(nats, prefix)

    async def read(client: Client) -> tuple[WorkflowState, WorkflowUsage]:
        return await client.status(workflow_id), await client.usage(workflow_id)

    state, usage = run(with_client(conf, read))
    fmt = output_of(output, as_json)
    if fmt is not Output.table and usage.total.calls:
        emit({**state.public_view(), "llm_usage": usage.to_dict()}, fmt)
        return
    show_state(state, fmt)
    if fmt is Output.table:
        render.print_usage(out, usage)


def require_events(found: list[Event], workflow_id: str) -> None:
    """Exit 3 when a workflow has no events (it is unknown)."""
    if not found:
        fail(EXIT_UNREACHABLE, f"no events for workflow {workflow_id!r}")


def events(
    workflow_id: WorkflowArg,
    agents: Annotated[
        bool,
        typer.Option(
            "--agents",
            help="Also show the agent instances' moves (idle -> processing -> idle) "
            "each task event implies; they are not stored separately.",
        ),
    ] = False,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List a workflow's events in stream order, with vector clocks
    (-o jsonl: one event per line)."""
    fmt = output_of(output, as_json, legacy=Output.jsonl)
    conf = settings(nats, prefix)
    found = run(with_client(conf, lambda c: c.events(workflow_id)))
    require_events(found, workflow_id)
    if agents:
        from agenticflow.shared.wire.events import agent_moves

        found = agent_moves(found, interleaved=True)
    if fmt is Output.table:
        render.print_timeline(out, found)
    else:
        emit([render.event_json(event) for event in found], fmt)


def watch(
    workflow_id: WorkflowArg,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait (default: no limit).")
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print what its tasks stream (ctx.stream) as it comes: tokens on "
            "stdout as they are made, progress, logs and artifacts on stderr.",
        ),
    ] = False,
    output: OutputOpt = None,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Show live progress until the workflow ends, then its final state; exit 1
    unless it completed."""
    conf = settings(nats, prefix)

    async def go(client: Client) -> WorkflowState:
        if stream:
            await _live.print_stream(client, workflow_id, timeout=timeout)
        return await _live.wait(client, workflow_id, timeout=timeout, what=workflow_id)

    finish(run_waiting(with_client(conf, go), timeout or 0), output_of(output, False))


def result(
    workflow_id: WorkflowArg,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the end (default) or not.")
    ] = True,
    timeout: TimeoutOpt = 300.0,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Print only the workflow's output, as one JSON document on stdout: its sink
    task's result (a dict by task id with several sinks), as
    ``handle.result()`` returns it. Exit 1 (the reason on stderr) when it
    failed, was cancelled or terminated; 4 when it has not ended (within
    --timeout, or at once with --no-wait)."""
    from agenticflow.client import WorkflowFailedError

    conf = settings(nats, prefix)

    async def go(client: Client) -> Any:
        if wait:
            await _live.wait(client, workflow_id, timeout=timeout, what=workflow_id)
        else:
            state = await client.status(workflow_id)
            if not state.is_terminal:
                fail(
                    EXIT_TIMEOUT, f"workflow {workflow_id!r} is {state.status.value}: no result yet"
                )
        return await client.handle(workflow_id).result(timeout=timeout)

    try:
        output = run_waiting(with_client(conf, go), timeout)
    except WorkflowFailedError as exc:  # cancelled and terminated too
        fail(EXIT_FAILED, exc)
    emit(output, Output.json)


def list_workflows(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            help="Only workflows in this state (repeatable): running, completed, failed, "
            "rejected, cancelled, aborted (terminated).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Only workflows whose name matches this glob.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only workflows created from this time on (ISO 8601, or a span back from "
            "now: 90s, 15m, 2h, 1d).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many, newest first.")
    ] = 50,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """List workflows, newest first: id, name, state, tasks done/total, created,
    updated. Reads the coordinators' workflow index (one small record per
    workflow), so it sees every workflow, however many there are."""
    from agenticflow.coordinator.replay import parse_since
    from agenticflow.shared.errors import ConfigError

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    try:
        start = parse_since(since, now_ns=time.time_ns()) if since else None
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)

    async def read(client: Client) -> list[dict[str, Any]]:
        found = await client.list(
            state=list(state) if state else None, name=name, since=start, limit=limit
        )
        return [summary_json(s) for s in found]

    rows = run(with_client(conf, read))
    if fmt is not Output.table:
        emit(rows, fmt)
    elif rows:
        render.print_workflows(out, rows)
    else:
        out.print("no workflows")


def summary_json(summary: WorkflowSummary) -> dict[str, Any]:
    """A listed workflow as JSON: times in nanoseconds, as everywhere else."""
    data = summary.model_dump(mode="json")
    data["created_at"] = int(summary.created_at.timestamp() * 1e9)
    data["updated_at"] = int(summary.updated_at.timestamp() * 1e9)
    return data


def _is_ref(text: str) -> bool:
    from agenticflow.coordinator.definitions import NAME_RE, VERSION_RE

    name, at, version = text.partition("@")
    return bool(NAME_RE.match(name)) and (not at or bool(VERSION_RE.match(version)))


def register_definition(
    file: Annotated[Path, typer.Argument(help="Workflow file (YAML or JSON).")],
    version: Annotated[
        str | None,
        typer.Option("--version", help="Its version (default: the file's, else the next number)."),
    ] = None,
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Register a workflow definition under its name and a version, to submit
    it by name: `agenticflow submit NAME@VERSION` (NAME alone: the latest)."""
    from agenticflow.shared.errors import StateConflictError, WorkflowDefinitionError
    from agenticflow.shared.graph.workflow import load_workflow_file

    fmt = output_of(output, as_json)
    try:
        definition = load_workflow_file(file)
    except WorkflowDefinitionError as exc:
        err.print("[red]error:[/red] invalid workflow file:")
        for problem in exc.problems:
            err.print(f"  {esc(problem)}", soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from exc

    async def go(client: Client) -> RegisteredDefinition:
        try:
            return await client.register_workflow(definition, version=version, by=who(by))
        except StateConflictError as exc:  # a version exists: the input's fault (exit 2)
            raise WorkflowDefinitionError(str(exc)) from exc

    found = run(with_client(settings(nats, prefix), go))
    if fmt is not Output.table:
        emit({"name": found.name, "version": found.version, "ref": found.ref}, fmt)
        return
    out.print(f"registered {esc(found.ref)}", highlight=False)


def definitions(
    name: Annotated[str | None, typer.Argument(help="Only this workflow's versions.")] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Registered workflow definitions: name, version, tasks, who registered it, when."""
    fmt = output_of(output, as_json)
    found = run(with_client(settings(nats, prefix), lambda c: c.registered_workflows(name)))
    rows: list[dict[str, Any]] = [
        {
            "name": d.name,
            "version": d.version,
            "tasks": len(d.definition.tasks),
            "registered_by": d.registered_by,
            "registered_at": d.registered_at,
        }
        for d in found
    ]
    if fmt is not Output.table:
        emit(rows, fmt)
        return
    if not rows:
        out.print("no registered workflows")
        return
    from datetime import UTC, datetime

    from rich.table import Table

    table = Table("name", "version", "tasks", "registered by", "at")
    for row in rows:
        at = datetime.fromtimestamp(row["registered_at"] / 1e9, UTC).isoformat(timespec="seconds")
        table.add_row(
            esc(row["name"]), esc(row["version"]), str(row["tasks"]), esc(row["registered_by"]), at
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """The group on ``app``, and the verbs it had before the group, flat."""
    for command in (submit, status, events, watch):
        app.command(command.__name__, rich_help_panel="Workflows")(command)
    workflow_app.command("submit")(submit)
    workflow_app.command("list")(list_workflows)
    workflow_app.command("describe")(status)
    workflow_app.command("status")(status)
    workflow_app.command("result")(result)
    workflow_app.command("events")(events)
    workflow_app.command("watch")(watch)
    workflow_app.command("register")(register_definition)
    workflow_app.command("definitions")(definitions)
    app.add_typer(workflow_app, name="workflow", rich_help_panel="Workflows")


__all__ = [
    "events",
    "finish",
    "list_workflows",
    "register",
    "require_events",
    "result",
    "show_outcome",
    "show_state",
    "status",
    "submit",
    "summary_json",
    "watch",
    "workflow_app",
]

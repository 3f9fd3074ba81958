"""``agenticflow schedule create|list|pause|resume|delete|trigger``: workflows
started on a cron expression or every N seconds (see
:mod:`agenticflow.coordinator.schedules`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agenticflow.cli._common import (
    EXIT_INPUT,
    ByOpt,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
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
    from agenticflow.coordinator.client import ScheduleInfo

schedule_app = typer.Typer(
    help="Start workflows on a cron expression or every N seconds.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name (1-40 letters, digits, _ -).")]


@schedule_app.command("create")
def create(
    name: NameArg,
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron expression, e.g. '*/15 * * * *'.")
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Interval: 90, 45s, 15m, 1h or 2d.")
    ] = None,
    workflow: Annotated[
        Path | None, typer.Option("--workflow", "-w", help="Workflow file (YAML or JSON).")
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="Or a template (`agenticflow templates`).")
    ] = None,
    params: Annotated[
        list[str] | None, typer.Option("--param", help="A template parameter, k=v (repeatable).")
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input", help="JSON object: each run's workflow input.")
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", "--tz", help="IANA time zone the cron is read in.")
    ] = "UTC",
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap", help="While the previous run runs: skip, allow or cancel-previous."
        ),
    ] = "skip",
    catch_up: Annotated[
        int,
        typer.Option(
            "--catch-up", min=0, help="Missed ticks to run besides the latest after downtime."
        ),
    ] = 0,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a schedule of that name.")
    ] = False,
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Create a schedule: the coordinator owning it starts the workflow at each
    tick, once, across fail-overs (run ids NAME-YYYYMMDDTHHMMSSZ)."""
    from agenticflow.cli.workflow import _from_template
    from agenticflow.coordinator.schedules import ScheduleSpec
    from agenticflow.shared.errors import StateConflictError, WorkflowDefinitionError
    from agenticflow.shared.graph.workflow import load_workflow_file

    fmt = output_of(output, as_json)
    if (workflow is None) == (template is None):
        fail(EXIT_INPUT, "give --workflow FILE or --template NAME (one of them)")
    if (cron is None) == (every is None):
        fail(EXIT_INPUT, "give --cron EXPR or --every DURATION (one of them)")
    given: Any = {}
    if input_json is not None:
        try:
            given = json.loads(input_json)
        except json.JSONDecodeError as exc:
            fail(EXIT_INPUT, f"--input: not JSON: {exc}")
        if not isinstance(given, dict):
            fail(EXIT_INPUT, "--input must be a JSON object")
    try:
        definition = (
            load_workflow_file(workflow)
            if workflow is not None
            else _from_template(template, params)
        )
        spec = ScheduleSpec.model_validate(
            {
                "name": name,
                "cron": cron,
                "every": every,
                "timezone": timezone,
                "definition": definition,
                "input": given,
                "overlap": overlap,
                "catch_up": catch_up,
                "created_by": who(by) or "",
            }
        )
    except (WorkflowDefinitionError, ValueError) as exc:
        fail(EXIT_INPUT, _first_error(exc))

    async def go(client: Client) -> None:
        try:
            await client.put_schedule(spec, replace=replace)
        except StateConflictError as exc:  # the name is taken: the input's fault (exit 2)
            raise WorkflowDefinitionError(str(exc)) from exc

    run(with_client(settings(nats, prefix), go))
    if fmt is not Output.table:
        emit(spec.model_dump(mode="json", exclude={"definition"}), fmt)
        return
    nxt = spec.next_tick(spec.created_at)
    out.print(f"schedule {esc(name)}: {esc(spec.rule)}; first run at {esc(_time(nxt))}")


def _first_error(exc: Exception) -> str:
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # pydantic: "1 validation error for X / field / Value error, why [type=...]"
    for line in lines:
        if line.startswith("Value error, "):
            return line.removeprefix("Value error, ").split(" [type=")[0]
    return lines[-1].split(" [type=")[0] if len(lines) > 1 else text


@schedule_app.command("list")
def list_(
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Every schedule: its rule, whether paused, its next and last run, counts."""
    fmt = output_of(output, as_json)

    async def listed(client: Client) -> list[ScheduleInfo]:
        return await client.schedules()

    found = run(with_client(settings(nats, prefix), listed))
    if fmt is not Output.table:
        emit([_row(info) for info in found], fmt)
        return
    if not found:
        out.print("no schedules")
        return
    from rich.table import Table

    table = Table("name", "when", "next run", "last run", "fired", "skipped", "note")
    for info in found:
        row = _row(info)
        table.add_row(
            esc(row["name"]),
            esc(row["rule"] + (" (paused)" if row["paused"] else "")),
            esc(row["next_run"] or "-"),
            esc(row["last_workflow_id"] or "-"),
            str(row["fired"]),
            str(row["skipped"]),
            esc(row["last_error"] or ""),
        )
    out.print(table)


def _time(ns: int | None) -> str:
    if ns is None:
        return ""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _row(info: ScheduleInfo) -> dict[str, Any]:
    spec, state = info.spec, info.state
    return {
        "name": spec.name,
        "rule": spec.rule,
        "paused": spec.paused,
        "workflow": spec.definition.name,
        "overlap": spec.overlap,
        "catch_up": spec.catch_up,
        "created_by": spec.created_by,
        "next_run": _time(info.next_tick_ns) or None,
        "last_tick": _time(state.last_tick_ns) if state.last_tick_ns else None,
        "last_workflow_id": state.last_workflow_id,
        "fired": state.fired,
        "skipped": state.skipped,
        "last_error": state.last_error,
    }


def _toggle(name: str, paused: bool, nats: str | None, prefix: str | None) -> None:
    run(with_client(settings(nats, prefix), lambda c: c.pause_schedule(name, paused=paused)))
    out.print(f"schedule {esc(name)}: {'paused' if paused else 'resumed'}")


@schedule_app.command("pause")
def pause(name: NameArg, nats: NatsOpt = None, prefix: PrefixOpt = None) -> None:
    """Pause a schedule: no tick fires until it is resumed."""
    _toggle(name, True, nats, prefix)


@schedule_app.command("resume")
def resume(name: NameArg, nats: NatsOpt = None, prefix: PrefixOpt = None) -> None:
    """Resume a paused schedule (ticks missed while paused do not run)."""
    _toggle(name, False, nats, prefix)


@schedule_app.command("delete")
def delete(name: NameArg, nats: NatsOpt = None, prefix: PrefixOpt = None) -> None:
    """Delete a schedule (its runs are kept)."""
    run(with_client(settings(nats, prefix), lambda c: c.delete_schedule(name)))
    out.print(f"schedule {esc(name)}: deleted")


@schedule_app.command("trigger")
def trigger(name: NameArg, nats: NatsOpt = None, prefix: PrefixOpt = None) -> None:
    """Start the schedule's workflow now, with your rights; prints its id."""
    workflow_id = run(with_client(settings(nats, prefix), lambda c: c.trigger_schedule(name)))
    typer.echo(workflow_id)


def register(app: typer.Typer) -> None:
    """``agenticflow schedule ...``."""
    app.add_typer(schedule_app, name="schedule", rich_help_panel="Workflows")


__all__ = ["register", "schedule_app"]

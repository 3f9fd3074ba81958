"""``agenticflow workflow pause|resume|cancel|terminate|feedback|modify|approve|reject|signal``:
steer a running workflow. Each is an event on the workflow's stream; the
coordinator answers with its verdict (exit 5 when it refused: nothing changed).

``cancel`` is cooperative (no new task starts; running tasks finish or see the
cancellation), ``terminate`` ends the workflow now (running handlers are
cancelled); ``abort`` is terminate's former name. The verbs are registered flat
too (``agenticflow pause`` ...), as they were before the ``workflow`` group.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agenticflow.cli import _live
from agenticflow.cli._common import (
    EXIT_INPUT,
    ByOpt,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
    TimeoutOpt,
    WaitOpt,
    WorkflowArg,
    emit,
    fail,
    out,
    output_of,
    run,
    run_waiting,
    settings,
    who,
    with_client,
)
from agenticflow.cli.workflow import finish
from agenticflow.render import esc

if TYPE_CHECKING:
    from agenticflow.client import Client
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.wire.events import InterventionApplied


def intervene(
    nats: str | None,
    prefix: str | None,
    fmt: Output,
    call: Callable[[Client], Awaitable[InterventionApplied]],
) -> None:
    """Send an intervention and print the coordinator's verdict (exit 4 when no
    coordinator answered in time)."""
    from agenticflow.cli._common import EXIT_TIMEOUT

    conf = settings(nats, prefix)
    try:
        applied = run(with_client(conf, call))
    except TimeoutError as exc:
        fail(EXIT_TIMEOUT, exc)
    if fmt is Output.table:
        out.print(f"[green]{esc(applied.action)}:[/green] {esc(applied.summary)}", soft_wrap=True)
    else:
        emit(applied.model_dump(mode="json"), fmt)


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded.")]


def pause(
    workflow_id: WorkflowArg,
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Pause a running workflow: no new task is dispatched; running ones finish."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.pause(workflow_id, by=who(by)))


def cancel(
    workflow_id: WorkflowArg,
    reason: ReasonOpt = "",
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Cancel a workflow cooperatively: no new task starts; running tasks
    finish (their handlers see ctx.cancelled), then it ends as cancelled."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.cancel(workflow_id, reason, by=who(by)))


def terminate(
    workflow_id: WorkflowArg,
    reason: ReasonOpt = "",
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Terminate a workflow now: running handlers are cancelled, unfinished
    tasks end as cancelled (``abort`` is the former name)."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.terminate(workflow_id, reason, by=who(by)))


def feedback(
    workflow_id: WorkflowArg,
    text: Annotated[str, typer.Argument(help="The feedback.")],
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Send feedback to the running handlers (ctx.feedback) and every later task."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.feedback(workflow_id, text, by=who(by)))


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
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Change tasks that have not started: add, remove, replace, or change params.
    Validated like a new DAG; refused with the reason when invalid."""
    fmt = output_of(output, as_json)
    changes = _changes(changes_file, remove or [], params or [])
    intervene(nats, prefix, fmt, lambda c: c.modify(workflow_id, changes, by=who(by)))


def _changes(path: Path | None, remove: list[str], params: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            text = path.read_text(encoding="utf-8")
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            fail(EXIT_INPUT, f"{path}: {exc}")
        if not isinstance(loaded, dict):
            fail(EXIT_INPUT, f"{path}: expected a mapping of add/remove/replace/params")
        changes = loaded
    if remove:
        changes["remove"] = [*changes.get("remove", []), *remove]
    for item in params:
        task_id, sep, raw = item.partition("=")
        try:
            value = json.loads(raw) if sep else None
        except json.JSONDecodeError as exc:
            fail(EXIT_INPUT, f"--params {item!r}: not JSON: {exc}")
        if not isinstance(value, dict):
            fail(EXIT_INPUT, f"--params {item!r}: expected TASK={{...}}")
        changes.setdefault("params", {})[task_id] = value
    if not changes:
        fail(EXIT_INPUT, "nothing to change: give --file, --remove or --params")
    return changes


WaitingTaskArg = Annotated[str, typer.Argument(help="The task waiting for approval.")]
CommentOpt = Annotated[str, typer.Option("--comment", help="Reaches the handler; recorded.")]


def approve(
    workflow_id: WorkflowArg,
    task_id: WaitingTaskArg,
    comment: CommentOpt = "",
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Approve a task waiting for approval; it runs with the decision and comment."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.approve(workflow_id, task_id, comment, by=who(by)))


def reject(
    workflow_id: WorkflowArg,
    task_id: WaitingTaskArg,
    comment: CommentOpt = "",
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Reject a task waiting for approval (a rejected gate fails the task; a
    handler's request gets the rejection and comment)."""
    fmt = output_of(output, as_json)
    intervene(nats, prefix, fmt, lambda c: c.reject(workflow_id, task_id, comment, by=who(by)))


def resume_and_show(
    conf: Settings,
    workflow_id: str,
    from_task: str | None,
    *,
    wait: bool,
    timeout: float,
    fmt: Output,
    done: str,
) -> None:
    """Request a resume; with ``wait``, show the final state (exit 1 unless completed)."""

    async def go(client: Client) -> WorkflowState | None:
        before = await client.status(workflow_id)
        await client.resume(workflow_id, from_task=from_task)
        if not wait:
            return None
        again = before.resumes + 1

        def resumed(state: WorkflowState) -> bool:
            return state.resumes >= again and state.is_terminal

        return await _live.wait(client, workflow_id, timeout=timeout, what=done, until=resumed)

    state = run_waiting(with_client(conf, go), timeout)
    if state is None:
        if fmt is Output.table:
            out.print(done, markup=False, highlight=False)
        else:
            emit({"workflow_id": workflow_id, "requested": "resume"}, fmt)
        return
    finish(state, fmt)


def resume(
    workflow_id: WorkflowArg,
    from_task: Annotated[
        str | None,
        typer.Option("--from", help="Also re-run this task and everything after it."),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Resume a paused workflow, or re-run a failed one keeping the results of
    tasks that completed."""
    resume_and_show(
        settings(nats, prefix), workflow_id, from_task, wait=wait, timeout=timeout,
        fmt=output_of(output, as_json), done=f"resume of {workflow_id} requested",
    )  # fmt: skip


def signal(
    workflow_id: WorkflowArg,
    name: Annotated[str, typer.Argument(help="The signal's name (a 'wait: {signal: NAME}' node).")],
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="JSON: the data the waiting node completes with."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Only for this wait node (several wait for NAME)."),
    ] = None,
    by: ByOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Send a signal to the workflow's 'wait: {signal: NAME}' nodes: each waiting
    one completes with the data; one not ready yet gets it when it is. Refused
    (exit 5) when no unfinished node waits for NAME."""
    fmt = output_of(output, as_json)
    value: Any = None
    if data is not None:
        try:
            value = json.loads(data)
        except json.JSONDecodeError as exc:
            fail(EXIT_INPUT, f"--data: not JSON: {exc}")
    intervene(
        nats, prefix, fmt, lambda c: c.signal(workflow_id, name, value, task=task, by=who(by))
    )


def register(app: typer.Typer, workflow_app: typer.Typer) -> None:
    """The verbs on the ``workflow`` group, and flat on ``app`` (those that were)."""
    for command in (pause, resume, feedback, modify, approve, reject, signal):
        name = command.__name__
        app.command(name, rich_help_panel="Steering")(command)
        workflow_app.command(name)(command)
    workflow_app.command("cancel")(cancel)
    workflow_app.command("terminate")(terminate)
    workflow_app.command("abort", hidden=True)(terminate)
    app.command("cancel", rich_help_panel="Steering")(cancel)
    app.command("terminate", rich_help_panel="Steering")(terminate)
    app.command("abort", rich_help_panel="Steering", help="Former name of terminate.")(terminate)


__all__ = [
    "approve",
    "cancel",
    "feedback",
    "intervene",
    "modify",
    "pause",
    "register",
    "reject",
    "resume",
    "resume_and_show",
    "signal",
    "terminate",
]

"""Waiting for a workflow, with live progress on a terminal.

On a terminal (stdout and stderr both), stderr shows a bar of tasks done out of
the total and the latest task changes, redrawn on every new snapshot of the
workflow's state; piped or redirected, nothing extra is printed. Every name
shown is text, never markup.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from agenticflow.cli._common import err, live_terminal
from agenticflow.render import safe

if TYPE_CHECKING:
    from agenticflow.client import Client
    from agenticflow.coordinator.state import WorkflowState

LATEST = 5
"""Task changes shown under the bar."""


def changes(before: WorkflowState | None, after: WorkflowState) -> list[str]:
    """The task transitions between two snapshots, as ``task: old -> new`` (pure)."""
    lines = []
    for task_id, task in after.tasks.items():
        old = before.tasks.get(task_id) if before is not None else None
        was = old.status.value if old is not None else None
        if was != task.status.value:
            arrow = f"{was} -> " if was else ""
            lines.append(f"{safe(task_id)}: {arrow}{task.status.value}")
    if before is None or before.status != after.status:
        lines.append(f"workflow {after.status.value}")
    return lines


async def wait(
    client: Client,
    workflow_id: str,
    *,
    timeout: float | None,
    what: str,
    until: Callable[[WorkflowState], bool] | None = None,
) -> WorkflowState:
    """The first state of the workflow for which ``until`` holds (default: a
    terminal one); raises TimeoutError after ``timeout`` s. With progress on a
    terminal; ``what``: its first label (e.g. ``submitted ID``)."""
    import asyncio

    await _require_known(client, workflow_id)
    done = until or (lambda state: state.is_terminal)
    if not live_terminal():
        return await client.wait_for(workflow_id, done, timeout=timeout)
    return await asyncio.wait_for(_follow(client, workflow_id, what, done), timeout)


async def print_stream(client: Client, workflow_id: str, *, timeout: float | None) -> None:
    """Print the workflow's streamed output until it ends (raises TimeoutError
    after ``timeout`` s): tokens to stdout as they come, other chunks to
    stderr, one line each; every string as text, never markup or a terminal
    escape."""
    import asyncio
    import sys

    from agenticflow.render import safe, safe_text, to_json

    await _require_known(client, workflow_id)
    inline = False

    async def show() -> None:
        nonlocal inline
        async for chunk in client.stream(workflow_id):
            if chunk.kind == "token":
                sys.stdout.write(safe_text(chunk.text))
                sys.stdout.flush()
                inline = not chunk.text.endswith("\n")
                continue
            if chunk.kind == "dropped":
                line = f"{chunk.data} chunks dropped (the bus was too slow)"
            elif isinstance(chunk.data, str | bytes):
                line = chunk.text
            else:
                line = to_json(chunk.data)
            sys.stderr.write(f"[{safe(chunk.task_id)} {chunk.kind}] {safe(line)}\n")
            sys.stderr.flush()

    try:
        await asyncio.wait_for(show(), timeout)
    finally:
        if inline:
            sys.stdout.write("\n")
            sys.stdout.flush()


async def _require_known(client: Client, workflow_id: str) -> None:
    """Raise NotFoundError for a workflow nobody submitted (rather than wait for
    it until the timeout); one just submitted has its submission event."""
    from agenticflow.shared.errors import NotFoundError

    try:
        await client.status(workflow_id)
    except NotFoundError:
        if not await client.events(workflow_id):
            raise


async def _follow(
    client: Client, workflow_id: str, what: str, done: Callable[[WorkflowState], bool]
) -> WorkflowState:
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    bar = progress.add_task(f"{safe(what)}: waiting for the coordinator", total=None)
    latest: deque[str] = deque(maxlen=LATEST)
    previous: WorkflowState | None = None

    def view() -> Group:
        return Group(progress, *(Text(f"  {line}", style="dim") for line in latest))

    with Live(view(), console=err, transient=True, refresh_per_second=8) as live:
        async for state in client.states(workflow_id, until=done):
            latest.extend(changes(previous, state))
            previous = state
            progress.update(
                bar,
                total=len(state.tasks) or None,
                completed=state.completed,
                description=f"{safe(state.name or workflow_id)} {state.status.value}",
            )
            live.update(view())
    assert previous is not None  # states() returns after a terminal state
    return previous


__all__ = ["changes", "wait"]

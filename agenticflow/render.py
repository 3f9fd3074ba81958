"""How the CLI shows workflows, events and agents (rich tables, JSON lines)."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the CLI imports this module to start; these load when used
    from agenticflow.coordinator.forks import Divergence
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.shared.wire.events import Event, TaskOutput
    from agenticflow.shared.wire.usage import Usage, WorkflowUsage

_STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "rejected": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "scheduled": "blue",
    "retry_wait": "yellow",
    "pending": "dim",
    "waiting_approval": "magenta",
    "waiting": "magenta",
    "auction": "blue",
    "aborted": "red",
    "suspended": "yellow",
    "error": "red",
    "idle": "dim",
    "processing": "cyan",
}


def safe(value: object) -> str:
    """``value`` as one line of plain text: line breaks become spaces, other
    control and format characters (ESC, bidi overrides...) are shown escaped."""
    text = str(value)
    return "".join(
        " " if ch in "\r\n\t" else
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] == "C" else ch
        for ch in text
    )  # fmt: skip


def safe_text(value: object) -> str:
    """``value`` as plain text that may span lines (streamed tokens): line
    breaks and tabs kept, other control and format characters (ESC, bidi
    overrides...) shown escaped, so no text can drive the terminal."""
    return "".join(
        ch if ch in "\n\t" else
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] == "C" else ch
        for ch in str(value)
    )  # fmt: skip


def esc(value: object) -> str:
    """User-supplied text for a string rich reads as markup (a table cell, a
    ``console.print``): shown as written, ``[/b]`` and ``[red]`` included, with
    control characters escaped; never markup, never a terminal escape."""
    return escape(safe(value))


def to_json(value: Any) -> str:
    """Compact JSON; bytes and other odd values become strings."""
    return json.dumps(value, default=str, ensure_ascii=False)


def when(ns: int | None) -> str:
    """A nanosecond timestamp as local time with milliseconds."""
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def short(value: Any, limit: int = 60) -> str:
    """A one-line preview of a result or error."""
    text = to_json(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_json(event: Event) -> dict[str, Any]:
    """The JSON-lines form of ``agenticflow events --json``."""
    from agenticflow.coordinator.exports import event_dict

    return event_dict(event)


def print_state(console: Console, state: WorkflowState) -> None:
    """A workflow's status and its tasks as a table."""
    style = _STATE_STYLE.get(state.status.value, "")
    console.print(
        f"[bold]{esc(state.workflow_id)}[/bold] ({esc(state.name)}): "
        f"[{style}]{state.status.value}[/{style}]"
    )
    if state.reason:
        console.print(f"  reason: {esc(state.reason)}")
    for problem in state.problems:
        console.print(f"  - {esc(problem)}")
    if not state.tasks:
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("task", "capability", "state", "attempts", "worker", "result / error"):
        table.add_column(column)
    for task_id, task in state.tasks.items():
        if task.error is not None and task.status.value != "completed":
            detail = f"[red]{esc(task.error.type)}: {esc(short(task.error.message, 70))}[/red]"
        elif task.note:
            detail = f"[yellow]{esc(task.note)}[/yellow]"
        else:
            detail = esc(short(task.result))
        if task.child:  # a task that runs a child workflow: name it (`status <child>`)
            shown = task.result is not None or task.error is not None or task.note
            detail = f"child workflow {esc(task.child)}" + (f": {detail}" if shown else "")
        tstyle = _STATE_STYLE.get(task.status.value, "")
        table.add_row(
            esc(task_id),
            esc(task.capability),
            f"[{tstyle}]{task.status.value}[/{tstyle}]",
            str(task.attempts),
            esc((task.worker or "-")[-24:]),
            detail,
        )
    console.print(table)


def print_usage(console: Console, usage: WorkflowUsage) -> None:
    """A workflow's model usage (``ctx.llm`` calls), in all and by task when
    several tasks called; nothing when none did."""
    total = usage.total
    if not total.calls:
        return

    def line(u: Usage) -> str:
        calls = f"{u.calls} call{'s' if u.calls != 1 else ''}"
        return (
            f"{calls}, {u.input_tokens} input + {u.output_tokens} output tokens, ${u.cost_usd:.4f}"
        )

    console.print(f"model usage: {line(total)}", markup=False, highlight=False)
    if len(usage.by_task) > 1:
        for task_id, used in sorted(usage.by_task.items()):
            console.print(f"  {task_id}: {line(used)}", markup=False, highlight=False)


def print_timeline(console: Console, events: list[Event], *, show_workflow: bool = False) -> None:
    """Events in stream order with vector clocks; marks causally concurrent
    neighbours (of one workflow: clocks of different workflows are unrelated)."""
    from agenticflow.coordinator.replay import duration_ms
    from agenticflow.shared.wire.events import TaskOutput as TaskOutputType
    from agenticflow.shared.wire.vclock import Ordering

    table = Table(show_edge=False, pad_edge=False)
    columns = ("seq", "time", "event", "task", "att", "ms", "node", "vector clock", "")
    for column in ("workflow", *columns) if show_workflow else columns:
        table.add_column(column)
    previous: Event | None = None
    for event in events:
        mark = ""
        if (
            previous is not None
            and previous.workflow_id == event.workflow_id
            and event.vclock.compare(previous.vclock) == Ordering.CONCURRENT
        ):
            mark = "[magenta]∥ concurrent with previous[/magenta]"
        note = auction_note(event)
        if isinstance(event.data, TaskOutputType):
            note = output_note(event.data)
        mark = " ".join(part for part in (esc(note), mark) if part)
        table.add_row(
            *((esc(event.workflow_id),) if show_workflow else ()),
            str(event.seq or ""),
            when(event.timestamp),
            event.type.value,
            esc(event.task_id or ""),
            str(event.attempt or ""),
            f"{ms:.1f}" if (ms := duration_ms(event)) is not None else "",
            esc(event.source[-22:]),
            esc(event.vclock.encode()),
            mark,
        )
        previous = event
    console.print(table)


def auction_note(event: Event) -> str:
    """What an auction event says, in a few words (empty for other events)."""
    from agenticflow.shared.wire.events import (
        TaskAuctionOpened,
        TaskAwarded,
        TaskBid,
        TaskClaimExpired,
    )

    data = event.data
    if isinstance(data, TaskAuctionOpened):
        return f"call to {data.queue}, bids for {data.window_s:g}s"
    if isinstance(data, TaskBid):
        return f"bid {data.value:g} by {data.worker}"
    if isinstance(data, TaskAwarded):
        if data.winner is None:
            return "no bid: shared queue"
        return f"to {data.winner} (bid {data.value:g}, {data.bids} bid{'s' * (data.bids != 1)})"
    if isinstance(data, TaskClaimExpired):
        return f"{data.winner} did not start it in {data.claim_timeout_s:g}s: shared queue"
    return ""


def output_note(data: TaskOutput) -> str:
    """A ``task.output`` event in a few words: its chunks by kind, the start
    of its tokens, its drops (plain text; escape it for markup)."""
    kinds = Counter(chunk.kind for chunk in data.chunks)
    parts = [f"{n} {kind}{'s' * (n != 1)}" for kind, n in sorted(kinds.items())]
    tokens = "".join(c.data for c in data.chunks if c.kind == "token" and isinstance(c.data, str))
    if tokens:
        parts.append(repr(tokens if len(tokens) <= 40 else tokens[:40] + "…"))
    if data.dropped:
        parts.append(f"{data.dropped} dropped")
    if data.last:
        parts.append("(last)")
    return " ".join(parts) or "nothing"


def print_workflows(console: Console, rows: list[dict[str, Any]]) -> None:
    """Workflow summaries (``workflow list``) as a table: one row per workflow."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("workflow", no_wrap=True)  # an id is copied whole
    for column in ("name", "state", "tasks", "created", "updated"):
        table.add_column(column, overflow="fold")
    for row in rows:
        state = str(row.get("state", ""))
        state = "paused" if row.get("paused") and state == "running" else state
        style = _STATE_STYLE.get(state, "")
        table.add_row(
            esc(row.get("id", "")),
            esc(row.get("name") or ""),
            f"[{style}]{esc(state)}[/{style}]" if style else esc(state),
            f"{row.get('tasks_done', 0)}/{row.get('tasks_total', 0)}",
            when(row.get("created_at")),
            when(row.get("updated_at")),
        )
    console.print(table)


def print_agents(console: Console, agents: list[dict[str, Any]]) -> None:
    """Registered agent instances as a table: one row per instance."""
    table = Table(show_edge=False, pad_edge=False)
    columns = ("instance", "agent", "capabilities", "state", "since", "tasks", "last heartbeat")
    for column in columns:
        table.add_column(column)
    for info in agents:
        rows = info.get("agents") or [
            {"id": info.get("instance", ""), "state": info.get("state", "")}
        ]
        for row in rows:
            state = str(row.get("state", ""))
            if row.get("suspending"):
                state += " (suspending)"
            style = _STATE_STYLE.get(str(row.get("state", "")), "")
            table.add_row(
                esc(row.get("id", "")),
                esc(
                    info.get("agent", "") + (f" v{info['version']}" if info.get("version") else "")
                ),
                esc(", ".join(str(c) for c in info.get("capabilities", []))),
                f"[{style}]{esc(state)}[/{style}]" if style else esc(state),
                when(row.get("since")),
                str(row.get("tasks_done", "")),
                when(info.get("heartbeat")),
            )
    console.print(table)


def print_divergence(console: Console, found: Divergence, first: str, second: str) -> None:
    """Where two runs first diverge: why, then the event on each side."""
    anchor = found.left or found.right
    assert anchor is not None
    task = f" of task {anchor.task_id!r} (attempt {anchor.attempt})" if anchor.task_id else ""
    console.print(f"[red]diverged[/red] at {anchor.type.value}{esc(task)}: {esc(found.why)}")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("", "workflow", "seq", "time", "event", "node", "data"):
        table.add_column(column)
    for label, workflow_id, event in (("1", first, found.left), ("2", second, found.right)):
        if event is None:
            table.add_row(
                label, esc(workflow_id), "", "", "[yellow](no such event)[/yellow]", "", ""
            )
            continue
        table.add_row(
            label,
            esc(workflow_id),
            str(event.seq or ""),
            when(event.timestamp),
            event.type.value,
            esc(event.source[-22:]),
            esc(short(event.data.model_dump(mode="json"), 90)),
        )
    console.print(table)


def print_tool_states(console: Console, states: list[dict[str, Any]]) -> None:
    """Cluster-wide circuit breakers and rate limits of tools, as a table."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("tools", "key", "state", "detail", "changed by"):
        table.add_column(column)
    for info in states:
        if info.get("role") == "breaker":
            until = info.get("opened_until") or 0
            detail = f"{info.get('failures', 0)} failures"
            if info.get("state") != "closed" and until:
                detail += f", open until {when(int(until * 1e9))}"
            if info.get("last_error"):
                detail += f"; {short(info['last_error'], 50)}"
            table.add_row(
                "breaker",
                esc(info.get("key")),
                esc(info.get("state")),
                esc(detail),
                esc(info.get("by", "")),
            )
        else:  # a GCRA record (agenticflow.worker.tools.ratelimit.RateRecord)
            per_s = info.get("per_s")
            period = f"{per_s:g}" if isinstance(per_s, int | float) else "?"
            burst = info.get("burst") or 1
            at_us = info.get("at_us")
            table.add_row(
                "rate limit",
                Text(safe(info.get("key"))),
                Text(
                    safe(
                        f"{info.get('calls', '?')}/{period}s"
                        + (f" burst {burst}" if burst != 1 else "")
                    )
                ),
                f"last call {when(int(at_us) * 1000)}" if isinstance(at_us, int) and at_us else "",
                Text(safe(info.get("by", ""))),
            )
    console.print(table)


def print_health(console: Console, reports: list[dict[str, Any]]) -> None:
    """Health reports of the cluster's processes: one row each, then pools."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("process", "node", "ready", "host:pid", "up", "memory", "cpu", "nats", "work"):
        table.add_column(column)
    pools: list[tuple[str, dict[str, Any]]] = []
    for report in reports:
        process = report.get("process") or {}
        nats = report.get("nats") or {}
        ready = (
            "[green]ready[/green]"
            if report.get("ready")
            else f"[red]{esc(report.get('problem'))}[/red]"
        )
        link = "connected" if nats.get("connected") else "[red]disconnected[/red]"
        if nats.get("reconnects"):
            link += f", {nats['reconnects']} reconnects"
        table.add_row(
            esc(report.get("kind", "")),
            esc(report.get("node", "")),
            ready,
            esc(f"{process.get('host', '?')}:{process.get('pid', '?')}"),
            f"{process.get('uptime_s', 0):.0f}s",
            f"{(process.get('rss_bytes') or 0) / 2**20:.0f} MiB",
            f"{process.get('cpu_percent', 0):.0f}%",
            link,
            _work(report),
        )
        pools.extend(
            (str(report.get("node")), p) for p in (report.get("worker") or {}).get("pools", [])
        )
    console.print(table)
    for report in reports:
        for warning in report.get("warnings") or []:
            console.print(
                f"warning: {safe(report.get('kind', ''))} {safe(report.get('node', ''))}: "
                f"{safe(warning)}",
                style="yellow",
                markup=False,
                highlight=False,
            )
    if pools:
        pool_table = Table(show_edge=False, pad_edge=False, title="resource pools")
        for column in ("node", "pool", "in use", "idle", "limit", "waits", "max wait"):
            pool_table.add_column(column)
        for node, pool in pools:
            pool_table.add_row(
                esc(node),
                esc(pool.get("name")),
                str(pool.get("in_use")),
                str(pool.get("idle")),
                str(pool.get("limit")),
                str(pool.get("waits")),
                f"{pool.get('max_wait_s', 0):.3f}s",
            )
        console.print(pool_table)


def _work(report: dict[str, Any]) -> str:
    """What a process is doing, in a few words."""
    if "worker" in report:
        worker = report["worker"]
        states = ", ".join(f"{n} {s}" for s, n in sorted(worker.get("instances", {}).items()))
        text = esc(
            f"{worker.get('in_hand', 0)}/{worker.get('concurrency', '?')} tasks in hand, "
            f"{worker.get('tasks_done', 0)} done; {states}"
        )
        if worker.get("open_breakers"):
            breakers = ", ".join(str(b) for b in worker["open_breakers"])
            text += f"; [red]open breakers: {esc(breakers)}[/red]"
        return text
    coordinator = report.get("coordinator") or {}
    owned = coordinator.get("owned")
    of = f" of {coordinator.get('partitions')}" if owned is not None else ""
    if coordinator.get("role") != "active":
        return f"standby (no partition{of})" if of else "standby"
    text = (
        f"active: {coordinator.get('workflows_running', 0)} workflows running, "
        f"{coordinator.get('events_folded', 0)} events folded"
    )
    if owned is not None:
        text += f"; partitions {','.join(str(k) for k in owned)}{of}"
    return text


__all__ = [
    "esc",
    "event_json",
    "print_agents",
    "print_divergence",
    "print_health",
    "print_state",
    "print_timeline",
    "print_tool_states",
    "safe",
    "to_json",
]

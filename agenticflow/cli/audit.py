"""``agenticflow audit verify|show``: the tamper-evident audit trail.

Both only read: they connect without signing anything and check with the
trust store and data keys of ``AGENTICFLOW_SECURITY_DIR``, if set (an auditor
needs no key of its own). ``verify`` exits 0 when the trail is intact, 1 with
the problems.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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
    emit,
    fail,
    out,
    output_of,
    run,
    settings,
)

if TYPE_CHECKING:
    from agenticflow.shared.bus.transport import Bus
    from agenticflow.shared.ops.config import Settings

T = TypeVar("T")

audit_app = typer.Typer(
    help="The tamper-evident audit trail (hash-chained records of security events).",
    no_args_is_help=True,
)


async def _with_audit(conf: Settings, fn: Callable[[Bus, Any], Awaitable[T]]) -> T:
    """Connect without signing anything (these commands only read) and check
    with the trust store and data keys of AGENTICFLOW_SECURITY_DIR, if set."""
    from agenticflow.shared.bus.transport import connected
    from agenticflow.shared.security.audit import reader_seal

    seal = reader_seal(conf.security_dir, window_s=conf.dedupe_window_s)
    reading = conf.model_copy(update={"security_dir": None})
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
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Check every record of the audit trail: signatures, each node's hash chain,
    no removed or reordered record, and each chain against its signed anchors
    (a deleted, re-created or truncated stream). Exit 0 when intact, 1 with the
    problems."""
    from agenticflow.shared.errors import ConfigError
    from agenticflow.shared.security.audit import load_anchor, save_anchor, verify_audit

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    try:
        heads = load_anchor(anchor) if anchor is not None else None
    except ConfigError as exc:
        fail(EXIT_INPUT, exc)
    report = run(_with_audit(conf, lambda bus, seal: verify_audit(bus, seal, anchor=heads)))
    if anchor is not None and report.ok:
        save_anchor(anchor, report)
    if fmt is not Output.table:
        emit(report.to_json(), fmt)
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_report(report: Any) -> None:
    if report.ok:
        checked = (
            "signatures checked"
            if report.signatures_checked
            else "signatures NOT checked: no trust store"
        )
        out.print(
            f"[green]intact[/green]: {report.records} records in {len(report.chains)} "
            f"chains ({checked}; {report.anchors} anchors compared)"
        )
    for note in report.notes:
        out.print(render.safe(f"note: {note}"), markup=False, highlight=False, soft_wrap=True)
    if report.ok:
        return
    for problem in report.problems:
        shown = render.safe(problem)
        out.print(shown, style="red", markup=False, highlight=False, soft_wrap=True)
    total = report.problems_total
    hidden = total - len(report.problems)
    more = f" ({hidden} not shown)" if hidden else ""
    out.print(f"TAMPERED: {total} problem{'s' if total != 1 else ''}{more}", style="bold red")


@audit_app.command("show")
def audit_show(
    last: Annotated[int, typer.Option("--last", min=1, help="The last N records.")] = 20,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Print audit records, oldest first, decrypted where the data keys allow
    (-o jsonl: one record per line)."""
    from agenticflow.shared.security.audit import read_audit

    fmt = output_of(output, as_json, legacy=Output.jsonl)
    conf = settings(nats, prefix)
    entries = run(_with_audit(conf, lambda bus, seal: read_audit(bus, seal, last=last)))
    if fmt is not Output.table:
        emit([entry.to_json() for entry in entries], fmt)
        return
    for e in entries:
        where = "/".join(x for x in (e.workflow_id, e.task_id) if x)
        what = render.short(e.detail, 120) if e.detail is not None else f"({e.error})"
        parts = [f"#{e.seq}", render.when(e.ts), f"{e.node}:{e.n}", e.principal or "?"]
        parts += [e.kind or "?", where, what]
        out.print(
            render.safe("  ".join(p for p in parts if p)),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


__all__ = ["audit_app", "audit_show", "audit_verify"]

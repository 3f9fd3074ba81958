"""``agenticflow ask`` and ``agenticflow templates``: the supervisor from the shell.

``ask "QUERY"`` plans the query against the live agents (the ``rules``
planner by default, ``--planner llm`` for an OpenAI-compatible endpoint),
shows the plan, and runs it only when told to: ``--yes``, a ``y`` at the
prompt when stdin is a terminal, or a policy that grants the principal
``planner:unattended``. Otherwise it prints the plan and exits 6 without
submitting anything. ``--dry-run`` only prints the plan: the steps, their
dependencies, the capability each goes to and why. ``templates`` lists the
workflow templates ``submit --template`` and the planners use.

Every string in a plan (names, descriptions, reasons, notes: a model or the
registry may have written them) is printed as plain text: never read as rich
markup, control characters shown escaped.

Exit codes: 0 done (or planned, with ``--dry-run``), 1 the workflow failed,
2 the query cannot be planned (empty, nothing matches, invalid LLM plan, a
capability no live agent serves), 3 NATS or the LLM endpoint unreachable,
4 ``--wait`` timed out, 5 the plan uses a capability the principal may not
submit (``workflow:submit:<capability>``), 6 planned but not run (no
``--yes``, declined at the prompt, or no terminal to ask on).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agenticflow import render
from agenticflow.cli._common import (
    EXIT_INPUT,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    JsonOpt,
    NatsOpt,
    Output,
    OutputOpt,
    PrefixOpt,
    TimeoutOpt,
    emit,
    err,
    out,
    output_of,
    run,
    settings,
    with_client,
)
from agenticflow.render import safe

if TYPE_CHECKING:
    from agenticflow.client import Client
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.coordinator.supervisor import PlanStep, Templates
    from agenticflow.coordinator.supervisor.supervisor import Allocation, Planned
    from agenticflow.shared.ops.config import Settings
    from agenticflow.shared.security.rbac import Policy

EXIT_NOT_RUN = 6
"""``ask`` planned the query but ran nothing: nobody confirmed the plan."""


def _load_templates() -> Templates:
    from agenticflow.coordinator.supervisor import Templates
    from agenticflow.shared.errors import WorkflowDefinitionError

    try:
        return Templates.load()
    except WorkflowDefinitionError as exc:
        err.print(Text(f"error: {safe(exc)}"))
        raise typer.Exit(EXIT_INPUT) from exc


def plan_dict(planned: Planned) -> dict[str, Any]:
    """A plan as plain data (``ask --json``), with the planning time."""
    return {
        **planned.plan.model_dump(mode="json"),
        "planning_ms": round(planned.planning_ms, 3),
        "steps_total": planned.plan.count(),
    }


def print_plan(console: Console, planned: Planned) -> None:
    """The plan as a tree: strategy, steps with capability, dependencies and why.
    Every string of the plan is printed as text (:func:`safe`), never as markup."""
    plan = planned.plan
    how = "one agent can handle it" if plan.strategy == "single" else f"{plan.strategy} workflow"
    source = f"template {plan.template}" if plan.template else f"{plan.planner} planner"
    count = plan.count()
    tree = Tree(
        Text.assemble(
            (safe(plan.name), "bold"),
            f": {how}, {count} step{'s' * (count != 1)} "
            f"({safe(source)}, planned in {planned.planning_ms:.1f} ms)",
        )
    )
    _add_steps(tree, plan.steps)
    console.print(tree)
    if plan.input:
        console.print(Text(f"input: {safe(render.to_json(plan.input))}"))
    for note in plan.notes:
        console.print(Text.assemble(("note:", "yellow"), f" {safe(note)}"))


def _add_steps(tree: Tree, steps: tuple[PlanStep, ...]) -> None:
    for step in steps:
        after = (
            ("", "")
            if not step.depends_on
            else (f" after {safe(', '.join(step.depends_on))}", "dim")
        )
        if step.steps:
            branch = tree.add(Text.assemble((step.id, "bold"), " child workflow", after))
            if step.why:
                branch.add(Text(f"why: {safe(step.why)}", style="dim"))
            _add_steps(branch, step.steps)
            continue
        auction = (" (auction)", "magenta") if step.allocation == "auction" else ("", "")
        branch = tree.add(
            Text.assemble((step.id, "bold"), " → ", (step.capability or "", "cyan"), auction, after)
        )
        if step.description:
            branch.add(Text(safe(step.description)))
        if step.why:
            branch.add(Text(f"why: {safe(step.why)}", style="dim"))


def _policy(settings: Settings) -> Policy | None:
    """The RBAC policy this client can read (None: none here; the coordinator
    still checks every submission against its own)."""
    from agenticflow.shared.errors import ConfigError
    from agenticflow.shared.security.rbac import load_policy

    try:
        return load_policy(settings.policy_file, settings.security_dir)
    except ConfigError as exc:
        err.print(Text(f"error: {safe(exc)}"))
        raise typer.Exit(EXIT_INPUT) from exc


def unattended(policy: Policy | None, principal: str) -> bool:
    """Whether the policy lets ``principal`` run plans nobody confirmed."""
    from agenticflow.shared.security.rbac import UNATTENDED

    return policy is not None and policy.context(principal).can(UNATTENDED)


def _show_plan(planned: Planned, *, fmt: Output) -> None:
    """The plan on stdout: JSON with ``-o json``, else the tree."""
    if fmt is not Output.table:
        emit(plan_dict(planned), fmt)
    else:
        print_plan(out, planned)


@contextmanager
def _planning_errors() -> Iterator[None]:
    """The supervisor's refusals as messages and exit codes."""
    from agenticflow.shared.errors import (
        PermissionDeniedError,
        PlannerUnavailableError,
        PlanningError,
    )

    try:
        yield
    except PlannerUnavailableError as exc:
        err.print(Text(f"planner unavailable: {safe(exc)}"))
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    except PlanningError as exc:
        err.print(Text(f"cannot plan ({exc.code}): {safe(exc)}"))
        for problem in getattr(exc, "problems", [])[1:]:
            err.print(Text(f"  {safe(problem)}"))
        raise typer.Exit(EXIT_INPUT) from exc
    except PermissionDeniedError as exc:
        err.print(Text(f"refused ({exc.code}): {safe(exc)}"))
        raise typer.Exit(EXIT_REFUSED) from exc


def _confirm(planned: Planned, *, yes: bool, fmt: Output, who: str) -> None:
    """Show the plan; return if it may run (``yes``: ``--yes`` or an unattended
    policy; else a person at a terminal answered ``y``), else exit 6."""
    from agenticflow.shared.security.rbac import UNATTENDED

    as_json = fmt is not Output.table
    if yes:
        if as_json:  # stdout keeps the JSON of the outcome
            shown = planned.plan
            err.print(
                Text(f"planned {shown.count()} steps ({shown.strategy}, {safe(shown.planner)})")
            )
        else:
            print_plan(err, planned)
        return
    if sys.stdin.isatty() and not as_json:
        print_plan(err, planned)
        if typer.confirm("Run this plan?", default=False, err=True):
            return
        err.print(Text(f"not run (exit {EXIT_NOT_RUN})"))
        raise typer.Exit(EXIT_NOT_RUN)
    _show_plan(planned, fmt=fmt)
    err.print(
        Text(
            f"not run: pass --yes to run it (or grant {safe(who)} {UNATTENDED}); "
            f"exit {EXIT_NOT_RUN}"
        )
    )
    raise typer.Exit(EXIT_NOT_RUN)


def ask(
    query: Annotated[str, typer.Argument(help="What you want done, in plain language.")],
    planner: Annotated[
        str, typer.Option("--planner", help="rules (offline, default) or llm.")
    ] = "rules",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; run nothing.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Run the plan without asking (otherwise: ask, or exit 6)."
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end; exit 1 if it failed.")
    ] = False,
    timeout: TimeoutOpt = 300.0,
    allocation: Annotated[
        str | None,
        typer.Option("--allocation", help="queue or auction: how every step finds its agent."),
    ] = None,
    no_fallback: Annotated[
        bool,
        typer.Option("--no-fallback", help="With --planner llm: fail instead of using the rules."),
    ] = False,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Workflow id (idempotency key).")
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Plan a plain-language query into a workflow, show it, and run it once
    confirmed (--yes, a 'y' at the prompt, or planner:unattended)."""
    from agenticflow.cli import _live
    from agenticflow.cli.workflow import show_outcome
    from agenticflow.coordinator.supervisor import Supervisor

    fmt = output_of(output, as_json)
    conf = settings(nats, prefix)
    if planner not in ("rules", "llm"):
        err.print(Text(f"error: --planner must be rules or llm, not {safe(planner)!r}"))
        raise typer.Exit(EXIT_INPUT)
    if allocation not in (None, "queue", "auction"):
        err.print(Text(f"error: --allocation must be queue or auction, not {safe(allocation)!r}"))
        raise typer.Exit(EXIT_INPUT)
    chosen: Allocation | None = allocation  # type: ignore[assignment]
    templates = _load_templates()
    policy = _policy(conf)
    principal = conf.principal or "client"

    def supervisor(client: Client) -> Supervisor:
        return Supervisor(
            client=client,
            settings=conf,
            templates=templates,
            policy=policy,
            principal=principal,
        )

    async def plan(client: Client) -> Planned:
        with _planning_errors():
            return await supervisor(client).plan(
                query, planner=planner, allocation=chosen, fallback=not no_fallback
            )

    planned = run(with_client(conf, plan))
    if dry_run:
        _show_plan(planned, fmt=fmt)
        return
    _confirm(planned, yes=yes or unattended(policy, principal), fmt=fmt, who=principal)

    async def go(client: Client) -> WorkflowState | str:
        with _planning_errors():
            wid = await supervisor(client).submit(planned.plan, workflow_id=workflow_id)
        if not wait:
            return wid
        return await _live.wait(client, wid, timeout=timeout, what=f"submitted {wid}")

    show_outcome(conf, go, timeout=timeout, fmt=fmt)


def templates_command(
    name: Annotated[
        str | None, typer.Argument(help="Show this template's workflow and parameters.")
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the workflow templates (``submit --template NAME --param k=v`` runs one)."""
    from agenticflow.shared.errors import NotFoundError

    fmt = output_of(output, as_json)
    templates = _load_templates()
    if name is not None:
        try:
            template = templates.get(name)
        except NotFoundError as exc:
            err.print(Text(f"error: {safe(exc)}"))
            raise typer.Exit(EXIT_INPUT) from exc
        data = {
            **template.describe(),
            "source": template.source,
            "workflow": template.workflow.model_dump(mode="json", exclude_defaults=True),
        }
        if fmt is not Output.table:
            emit(data, fmt)
            return
        out.print(
            Text.assemble(
                (safe(template.name), "bold"),
                f" ({template.strategy}): {safe(template.description)}",
            )
        )
        out.print(Text(f"source: {safe(template.source)}"))
        for key, param in template.params.items():
            out.print(
                Text(f"  --param {key}=…  {safe(param.description)} (default {param.default!r})")
            )
        for task in template.workflow.tasks:
            after = f" after {', '.join(task.depends_on)}" if task.depends_on else ""
            out.print(Text(f"  {task.id} → {task.capability}{after}"))
        return
    if fmt is not Output.table:
        emit(templates.describe(), fmt)
        return
    table = Table("template", "strategy", "capabilities", "params (defaults)")
    for info in templates.describe():
        table.add_row(
            Text(safe(info["name"])),
            Text(info["strategy"]),
            Text(", ".join(info["capabilities"])),
            Text(
                safe(
                    ", ".join(
                        f"{k}={render.short(v['default'], 24)}" for k, v in info["params"].items()
                    )
                )
            ),
        )
    out.print(table)
    out.print("[dim]agenticflow templates NAME: its description, parameters and tasks[/dim]")
    if not len(templates):
        err.print("no templates found: set AGENTICFLOW_TEMPLATES_PATH to a directory of them")


def register(app: typer.Typer) -> None:
    """``ask`` and ``templates``, on ``app``."""
    app.command("ask", rich_help_panel="Workflows")(ask)
    app.command("templates", rich_help_panel="Workflows")(templates_command)


__all__ = [
    "EXIT_NOT_RUN",
    "ask",
    "plan_dict",
    "print_plan",
    "register",
    "templates_command",
    "unattended",
]

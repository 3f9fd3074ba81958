"""``agenticflow ask`` and ``agenticflow templates``: the supervisor from the shell.

``ask "QUERY"`` plans the query against the live agents (the ``rules``
planner by default, ``--planner llm`` for an OpenAI-compatible endpoint) and
runs the plan; ``--dry-run`` only prints it: the steps, their dependencies,
the capability each goes to and why. ``templates`` lists the workflow
templates ``submit --template`` and the planners use.

Exit codes: 0 done (or planned, with ``--dry-run``), 1 the workflow failed,
2 the query cannot be planned (empty, nothing matches, invalid LLM plan, a
capability no live agent serves), 3 NATS or the LLM endpoint unreachable,
4 ``--wait`` timed out.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from agenticflow import render
from agenticflow.cli import (
    EXIT_INPUT,
    EXIT_UNREACHABLE,
    JsonOpt,
    NatsOpt,
    PrefixOpt,
    _print_json,
    _run,
    _settings,
    _show_outcome,
    _with_client,
    app,
)
from coordinator.client import Client
from coordinator.state import WorkflowState
from coordinator.supervisor import PlanStep, Supervisor, Templates
from coordinator.supervisor.supervisor import Allocation, Planned
from shared.errors import (
    NotFoundError,
    PlannerUnavailableError,
    PlanningError,
    WorkflowDefinitionError,
)

out = Console()
err = Console(stderr=True)


def _load_templates() -> Templates:
    try:
        return Templates.load()
    except WorkflowDefinitionError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_INPUT) from exc


def plan_dict(planned: Planned) -> dict[str, Any]:
    """A plan as plain data (``ask --json``), with the planning time."""
    return {
        **planned.plan.model_dump(mode="json"),
        "planning_ms": round(planned.planning_ms, 3),
        "steps_total": planned.plan.count(),
    }


def print_plan(console: Console, planned: Planned) -> None:
    """The plan as a tree: strategy, steps with capability, dependencies and why."""
    plan = planned.plan
    how = "one agent can handle it" if plan.strategy == "single" else f"{plan.strategy} workflow"
    source = f"template {plan.template}" if plan.template else f"{plan.planner} planner"
    tree = Tree(
        f"[bold]{plan.name}[/bold]: {how}, {plan.count()} step"
        f"{'s' * (plan.count() != 1)} ({source}, planned in {planned.planning_ms:.1f} ms)"
    )
    _add_steps(tree, plan.steps, planned)
    console.print(tree)
    if plan.input:
        console.print(f"input: {plan.input}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _add_steps(tree: Tree, steps: tuple[PlanStep, ...], planned: Planned) -> None:
    for step in steps:
        after = f" [dim]after {', '.join(step.depends_on)}[/dim]" if step.depends_on else ""
        if step.steps:
            branch = tree.add(f"[bold]{step.id}[/bold] child workflow{after}")
            if step.why:
                branch.add(f"[dim]why: {step.why}[/dim]")
            _add_steps(branch, step.steps, planned)
            continue
        auction = " [magenta](auction)[/magenta]" if step.allocation == "auction" else ""
        branch = tree.add(
            f"[bold]{step.id}[/bold] → [cyan]{step.capability}[/cyan]{auction}{after}"
        )
        if step.description:
            branch.add(step.description)
        if step.why:
            branch.add(f"[dim]why: {step.why}[/dim]")


@app.command()
def ask(
    query: Annotated[str, typer.Argument(help="What you want done, in plain language.")],
    planner: Annotated[
        str, typer.Option("--planner", help="rules (offline, default) or llm.")
    ] = "rules",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; run nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end; exit 1 if it failed.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300.0,
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
    as_json: JsonOpt = False,
    nats: NatsOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Plan a plain-language query into a workflow and run it."""
    settings = _settings(nats, prefix)
    if planner not in ("rules", "llm"):
        err.print(f"[red]error:[/red] --planner must be rules or llm, not {planner!r}")
        raise typer.Exit(EXIT_INPUT)
    if allocation not in (None, "queue", "auction"):
        err.print(f"[red]error:[/red] --allocation must be queue or auction, not {allocation!r}")
        raise typer.Exit(EXIT_INPUT)
    chosen: Allocation | None = allocation  # type: ignore[assignment]
    templates = _load_templates()

    async def go(client: Client) -> WorkflowState | str:
        supervisor = Supervisor(client=client, settings=settings, templates=templates)
        try:
            planned = await supervisor.plan(
                query, planner=planner, allocation=chosen, fallback=not no_fallback
            )
        except PlannerUnavailableError as exc:
            err.print(f"[red]planner unavailable:[/red] {exc}")
            raise typer.Exit(EXIT_UNREACHABLE) from exc
        except PlanningError as exc:
            err.print(f"[red]cannot plan ({exc.code}):[/red] {exc}")
            for problem in getattr(exc, "problems", [])[1:]:
                err.print(f"  {problem}")
            raise typer.Exit(EXIT_INPUT) from exc
        if as_json and dry_run:
            _print_json(plan_dict(planned))
        elif as_json:  # stdout keeps the JSON of the outcome
            plan = planned.plan
            err.print(f"planned {plan.count()} steps ({plan.strategy}, {plan.planner})")
        else:
            print_plan(err if not dry_run else out, planned)
        if dry_run:
            return ""
        wid = await supervisor.submit(planned.plan, workflow_id=workflow_id)
        if not wait:
            return wid
        if not as_json:
            err.print(f"submitted {wid}; waiting…")
        return await client.wait(wid, timeout=timeout)

    if dry_run:
        _run(_with_client(settings, go))
        return
    _show_outcome(settings, go, timeout=timeout, as_json=as_json)


@app.command("templates")
def templates_command(
    name: Annotated[
        str | None, typer.Argument(help="Show this template's workflow and parameters.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the workflow templates (``submit --template NAME --param k=v`` runs one)."""
    templates = _load_templates()
    if name is not None:
        try:
            template = templates.get(name)
        except NotFoundError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_INPUT) from exc
        data = {
            **template.describe(),
            "source": template.source,
            "workflow": template.workflow.model_dump(mode="json", exclude_defaults=True),
        }
        if as_json:
            _print_json(data)
            return
        out.print(f"[bold]{template.name}[/bold] ({template.strategy}): {template.description}")
        out.print(f"source: {template.source}")
        for key, param in template.params.items():
            out.print(f"  --param {key}=…  {param.description} (default {param.default!r})")
        for task in template.workflow.tasks:
            after = f" after {', '.join(task.depends_on)}" if task.depends_on else ""
            out.print(f"  {task.id} → {task.capability}{after}")
        return
    if as_json:
        _print_json(templates.describe())
        return
    table = Table("template", "strategy", "capabilities", "params (defaults)")
    for info in templates.describe():
        table.add_row(
            info["name"],
            info["strategy"],
            ", ".join(info["capabilities"]),
            ", ".join(f"{k}={render.short(v['default'], 24)}" for k, v in info["params"].items()),
        )
    out.print(table)
    out.print("[dim]agenticflow templates NAME: its description, parameters and tasks[/dim]")
    if not len(templates):
        err.print("no templates found: set AGENTICFLOW_TEMPLATES_PATH to a directory of them")


__all__ = ["ask", "plan_dict", "print_plan", "templates_command"]

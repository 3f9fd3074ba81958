"""A plan: what a planner makes of a query, before it becomes a workflow.

Every planner (the offline rules, an LLM, a template) produces a :class:`Plan`:
steps, each served by a capability or itself a sub-plan (run as a child
workflow), with dependencies, the strategy that shaped them and, per step,
*why* that capability was chosen. :meth:`Plan.to_workflow` turns it into the
:class:`~agenticflow.shared.graph.workflow.WorkflowDefinition` the coordinator runs, and
:meth:`Plan.problems` says what is wrong with it (cycles, unknown or duplicate
steps) in words a planner (or a person) can act on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agenticflow.shared.errors import InvalidPlanError, WorkflowDefinitionError
from agenticflow.shared.graph.dag import graph_problems
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.ids import ID_RE, TASK_ID_RE

Strategy = Literal["single", "sequential", "parallel", "hierarchical", "pipeline"]
"""How the steps relate: one agent; a chain; independent steps joined at the
end; steps that are themselves workflows; per-item stages handing each result
on as soon as it is ready."""

STRATEGIES: tuple[str, ...] = ("single", "sequential", "parallel", "hierarchical", "pipeline")

MAX_DEPTH = 4
"""Sub-plans nest at most this deep."""


class PlanStep(BaseModel):
    """One step: a capability to call, or a sub-plan run as a child workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    capability: str | None = None
    """Who serves it; None when the step is a sub-plan (``steps``)."""
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    allocation: Literal["queue", "auction"] = "queue"
    steps: tuple[PlanStep, ...] | None = None
    """A sub-plan: the step runs as a child workflow made of these steps."""
    why: str = ""
    """Why this capability (or sub-plan) was chosen, for the person reading the plan."""

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not TASK_ID_RE.match(value):
            raise ValueError("step id must be 1-64 letters, digits, '_', '-' or '.'")
        return value

    @field_validator("capability")
    @classmethod
    def _check_capability(cls, value: str | None) -> str | None:
        if value is not None and not ID_RE.match(value):
            raise ValueError("capability must be 1-64 letters, digits, '_' or '-'")
        return value

    def capabilities(self) -> set[str]:
        """The capabilities this step and its sub-plan need."""
        found = {self.capability} if self.capability else set()
        for step in self.steps or ():
            found |= step.capabilities()
        return found


class Plan(BaseModel):
    """A planner's answer to a query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str
    name: str = Field(default="plan", min_length=1, max_length=200)
    strategy: Strategy
    steps: tuple[PlanStep, ...] = Field(min_length=1, max_length=10_000)
    input: dict[str, Any] = Field(default_factory=dict)
    """The workflow input (what the query said: a topic, items, a message)."""
    planner: str = "rules"
    template: str | None = None
    """The template the plan came from, if any."""
    notes: tuple[str, ...] = ()
    """What the person should know: assumptions, fallbacks taken."""

    def capabilities(self) -> set[str]:
        """Every capability the plan needs, sub-plans included."""
        found: set[str] = set()
        for step in self.steps:
            found |= step.capabilities()
        return found

    def count(self) -> int:
        """Steps in the plan, sub-plans' steps included."""
        return _count(self.steps)

    def problems(self) -> list[str]:
        """Every reason this plan cannot run (empty when it can)."""
        return _problems(self.steps, "steps", depth=1)

    def check(self) -> None:
        """Raise :class:`InvalidPlanError` listing every problem, if any."""
        found = self.problems()
        if found:
            raise InvalidPlanError("; ".join(found), problems=found)

    def to_workflow(self) -> WorkflowDefinition:
        """The workflow definition that runs this plan; raises InvalidPlanError."""
        self.check()
        data = {
            "name": self.name,
            "description": f"planned by {self.planner} ({self.strategy}) from: {self.query}"[:2000],
            "input": self.input,
            "tasks": [_task(step) for step in self.steps],
        }
        try:
            return parse_workflow(data, source="plan")
        except WorkflowDefinitionError as exc:
            raise InvalidPlanError(str(exc), problems=exc.problems) from exc

    def with_notes(self, *notes: str) -> Plan:
        """A copy with ``notes`` added."""
        return self.model_copy(update={"notes": (*self.notes, *notes)})


def _count(steps: tuple[PlanStep, ...]) -> int:
    return sum(1 + (_count(step.steps) if step.steps else 0) for step in steps)


def _task(step: PlanStep) -> dict[str, Any]:
    task: dict[str, Any] = {
        "id": step.id,
        "params": dict(step.params),
        "depends_on": list(step.depends_on),
        "description": step.description or step.why,
    }
    if step.steps:
        task["workflow"] = {
            "name": step.id,
            "description": step.description,
            "tasks": [_task(sub) for sub in step.steps],
        }
    else:
        task["capability"] = step.capability
    if step.allocation != "queue":
        task["allocation"] = step.allocation
    return task


def _problems(steps: tuple[PlanStep, ...], where: str, *, depth: int) -> list[str]:
    problems: list[str] = []
    if depth > MAX_DEPTH:
        return [f"{where}: sub-plans nest deeper than {MAX_DEPTH} levels"]
    for index, step in enumerate(steps):
        at = f"{where}[{index}] ({step.id})"
        if step.steps is None and step.capability is None:
            problems.append(f"{at}: needs a capability or a sub-plan")
        elif step.steps is not None and step.capability is not None:
            problems.append(f"{at}: has both a capability and a sub-plan")
        elif step.steps is not None:
            if not step.steps:
                problems.append(f"{at}: its sub-plan has no steps")
            else:
                problems.extend(_problems(step.steps, f"{at}.steps", depth=depth + 1))
    # The graph checks of the workflow model, on a flat stand-in of this level.
    try:
        flat = WorkflowDefinition.model_validate(
            {
                "tasks": [
                    {"id": s.id, "capability": "x", "depends_on": list(s.depends_on)} for s in steps
                ]
            }
        )
    except ValidationError as exc:  # pragma: no cover - ids were checked by PlanStep
        return [*problems, f"{where}: {exc.errors()[0]['msg']}"]
    problems.extend(f"{where}: {problem}" for problem in graph_problems(flat))
    return problems


def parse_plan(data: Any, *, query: str, planner: str) -> Plan:
    """Validate plain data (e.g. an LLM's JSON) as a plan for ``query``.

    Raises :class:`InvalidPlanError` listing every problem: fields that fail
    the model, then graph problems (cycles, unknown or duplicate steps).
    """
    if not isinstance(data, dict):
        raise InvalidPlanError("a plan must be a JSON object with 'strategy' and 'steps'")
    try:
        plan = Plan.model_validate({**data, "query": query, "planner": planner})
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidPlanError("; ".join(problems), problems=problems) from exc
    plan.check()
    return plan


__all__ = ["MAX_DEPTH", "STRATEGIES", "Plan", "PlanStep", "Strategy", "parse_plan"]

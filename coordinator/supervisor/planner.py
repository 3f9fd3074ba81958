"""The interface every planner implements.

A planner turns a person's query into a :class:`~agenticflow.coordinator.supervisor.plan.Plan`
using the live :class:`~agenticflow.coordinator.supervisor.catalog.Catalog` (what the
cluster can do now) and the :class:`~agenticflow.coordinator.supervisor.templates.Templates`
(named, parameterised workflows). It raises
:class:`~agenticflow.shared.errors.PlanningError` (or a subclass) with a reason a person
can act on; it never hangs (an LLM planner bounds every call with a timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agenticflow.coordinator.supervisor.catalog import Catalog
    from agenticflow.coordinator.supervisor.plan import Plan
    from agenticflow.coordinator.supervisor.templates import Templates


class Planner(Protocol):
    """Turns a query into a plan."""

    name: str
    """``rules``, ``llm``, ..."""

    async def plan(self, query: str, *, catalog: Catalog, templates: Templates) -> Plan:
        """A plan for ``query``; raises PlanningError (or a subclass)."""
        ...


__all__ = ["Planner"]

"""Planning with a fallback: when one planner's backend is unavailable, another plans.

Only :class:`~agenticflow.shared.errors.PlannerUnavailableError` (an LLM endpoint unset,
down, slow or refusing) falls back, and the plan's notes tell the person. An
invalid plan (:class:`~agenticflow.shared.errors.InvalidPlanError`) or an unplannable query
is reported as it is: another planner's guess must not hide it.
"""

from __future__ import annotations

import structlog

from agenticflow.coordinator.supervisor.catalog import Catalog
from agenticflow.coordinator.supervisor.plan import Plan
from agenticflow.coordinator.supervisor.planner import Planner
from agenticflow.coordinator.supervisor.templates import Templates
from agenticflow.shared.errors import PlannerUnavailableError

log = structlog.get_logger("agenticflow.supervisor")


async def plan_with_fallback(
    primary: Planner, fallback: Planner, query: str, *, catalog: Catalog, templates: Templates
) -> Plan:
    """``primary``'s plan, or ``fallback``'s with a note when ``primary`` is unavailable.

    Raises what ``primary`` raises other than PlannerUnavailableError, and
    what ``fallback`` raises.
    """
    try:
        return await primary.plan(query, catalog=catalog, templates=templates)
    except PlannerUnavailableError as exc:
        log.warning(
            "planner unavailable; falling back",
            planner=primary.name,
            fallback=fallback.name,
            error=str(exc),
        )
        plan = await fallback.plan(query, catalog=catalog, templates=templates)
        return plan.with_notes(
            f"the {primary.name} planner was unavailable ({exc}); "
            f"planned with the {fallback.name} planner instead"
        )


__all__ = ["plan_with_fallback"]

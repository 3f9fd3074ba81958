"""The supervisor: plain-language queries planned into workflows.

See :mod:`agenticflow.coordinator.supervisor.supervisor` for the flow, :mod:`.rules` and
:mod:`.llm` for the planners, :mod:`.catalog` for capability matching and
:mod:`.templates` for the template registry.
"""

from agenticflow.coordinator.supervisor.catalog import CapabilityInfo, Catalog, Match
from agenticflow.coordinator.supervisor.plan import Plan, PlanStep, Strategy, parse_plan
from agenticflow.coordinator.supervisor.planner import Planner
from agenticflow.coordinator.supervisor.rules import RulesPlanner
from agenticflow.coordinator.supervisor.supervisor import Planned, Supervisor, check_served
from agenticflow.coordinator.supervisor.templates import (
    Template,
    TemplateParam,
    Templates,
    load_template,
)

__all__ = [
    "CapabilityInfo",
    "Catalog",
    "Match",
    "Plan",
    "PlanStep",
    "Planned",
    "Planner",
    "RulesPlanner",
    "Strategy",
    "Supervisor",
    "Template",
    "TemplateParam",
    "Templates",
    "check_served",
    "load_template",
    "parse_plan",
]

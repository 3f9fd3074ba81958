"""The supervisor: plain-language queries planned into workflows.

See :mod:`coordinator.supervisor.supervisor` for the flow, :mod:`.rules` and
:mod:`.llm` for the planners, :mod:`.catalog` for capability matching and
:mod:`.templates` for the template registry.
"""

from coordinator.supervisor.catalog import CapabilityInfo, Catalog, Match
from coordinator.supervisor.plan import Plan, PlanStep, Strategy, parse_plan
from coordinator.supervisor.planner import Planner
from coordinator.supervisor.rules import RulesPlanner
from coordinator.supervisor.supervisor import Planned, Supervisor, check_served
from coordinator.supervisor.templates import Template, TemplateParam, Templates, load_template

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

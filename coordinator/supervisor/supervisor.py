"""The supervisor: a query in, a checked plan out, and the workflow that runs it.

::

    supervisor = Supervisor(client=client, settings=settings)
    planned = await supervisor.plan("research bees, then write an article")
    print(planned.plan.strategy, [s.capability for s in planned.plan.steps])
    workflow_id = await supervisor.submit(planned.plan)

Planning reads the live agent registry first (:class:`Catalog`), so the plan
uses what is running now, and a step no live agent can serve is reported
before anything starts (:class:`~agenticflow.shared.errors.UnservedCapabilityError`).
The ``llm`` planner falls back to the ``rules`` planner when its endpoint is
down or slow, and the plan's notes say so; an LLM plan that stays invalid
after one repair is an error, never silently replaced.

Submission rights: given the RBAC policy and the principal that will submit,
a plan that uses a capability the principal may not submit
(``workflow:submit:<capability>``) is refused with
:class:`~agenticflow.shared.errors.PermissionDeniedError` before anything is sent. The
``llm`` planner is shown only the capabilities the principal may submit (the
plan's notes name the ones left out); the ``rules`` planner matches the same
way whoever asks, so its refusal names the capability. The
coordinator's admission makes the same check on every submission; this one
only says it sooner. Registry entries reach the planners only through
:func:`registry_entries`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agenticflow.coordinator.supervisor.catalog import Catalog
from agenticflow.coordinator.supervisor.plan import Plan, PlanStep
from agenticflow.coordinator.supervisor.planner import Planner
from agenticflow.coordinator.supervisor.rules import RulesPlanner
from agenticflow.coordinator.supervisor.templates import Templates
from agenticflow.shared.errors import (
    ConfigError,
    PermissionDeniedError,
    PlannerUnavailableError,
    UnservedCapabilityError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.rbac import Policy, SecurityContext

if TYPE_CHECKING:
    from agenticflow.coordinator.client import Client

Allocation = Literal["queue", "auction"]


async def registry_entries(client: Client) -> list[dict[str, Any]]:
    """The registry entries planning may use: the only way registry text
    (capabilities, agent names, descriptions) enters the supervisor.

    :meth:`Client.agents` opens each entry as a signed record
    (:func:`agenticflow.shared.bus.registry.open_entry`): with a trust store it refuses one
    that is unsigned, altered, moved to another key, replayed, or whose role
    is not its signer's. Here, with a trust store, an entry that does not name
    its verified signer (``signed_by``) is dropped as well, so no reader path
    that forgets to verify can feed the planner. What a trusted worker says
    about itself is still only data (see :mod:`agenticflow.coordinator.supervisor.llm`).
    Raises TransportError.
    """
    entries = await client.agents()
    if client.bus.seal.trust is None:
        return entries
    return [entry for entry in entries if entry.get("signed_by")]


@dataclass(frozen=True, slots=True)
class Planned:
    """A checked plan with what it was planned against and how long it took."""

    plan: Plan
    catalog: Catalog
    planning_ms: float


class Supervisor:
    """Plans queries against the live cluster and submits the plans."""

    def __init__(
        self,
        *,
        client: Client | None,
        settings: Settings,
        templates: Templates | None = None,
        planners: Mapping[str, Planner] | None = None,
        policy: Policy | None = None,
        principal: str | None = None,
    ) -> None:
        """``client`` may be None for planning against a given catalog only.

        With a ``policy``, plans are limited to the capabilities ``principal``
        (default: the settings' principal, else ``client``) may submit."""
        self.client = client
        self.settings = settings
        self.policy = policy
        self.principal = principal or settings.principal or "client"
        self.templates = templates if templates is not None else Templates.load()
        self.planners: dict[str, Planner] = dict(planners or {})
        self.planners.setdefault("rules", RulesPlanner())

    def planner(self, name: str) -> Planner:
        """The planner called ``name``; the ``llm`` one is made from the settings
        on first use. Raises ConfigError for an unknown name."""
        if name not in self.planners and name == "llm":
            from agenticflow.coordinator.supervisor.llm import LlmPlanner  # httpx only when used

            self.planners["llm"] = LlmPlanner.from_settings(self.settings)
        if name not in self.planners:
            raise ConfigError(
                f"unknown planner {name!r}; choose {', '.join(sorted({*self.planners, 'llm'}))}"
            )
        return self.planners[name]

    async def catalog(self) -> Catalog:
        """The capabilities of the live agents (registry entries within the TTL)."""
        if self.client is None:
            raise ConfigError("the supervisor has no client: pass a catalog")
        entries = await registry_entries(self.client)
        return Catalog.from_registry(
            entries, now_ns=time.time_ns(), ttl_s=float(self.settings.agent_ttl_s)
        )

    async def plan(
        self,
        query: str,
        *,
        planner: str = "rules",
        catalog: Catalog | None = None,
        allocation: Allocation | None = None,
        fallback: bool = True,
    ) -> Planned:
        """A checked plan for ``query``.

        With the ``llm`` planner and ``fallback``, an unreachable endpoint
        gives the rules planner's plan, with a note saying so. ``allocation``
        sets every capability step's allocation (e.g. ``auction``).
        Raises PlanningError (empty or unplannable query), InvalidPlanError,
        PlannerUnavailableError (without fallback), UnservedCapabilityError,
        PermissionDeniedError (the plan uses a capability the principal may
        not submit).
        """
        chosen = self.planner(planner)
        catalog = catalog if catalog is not None else await self.catalog()
        context = self.context()
        # A model reads the registry's text and could be talked into anything:
        # it sees only what the principal may submit. The rules planner's
        # matching stays the same whoever asks; its plan is checked below.
        usable = catalog
        if context is not None and chosen.name != RulesPlanner.name:
            usable = catalog.permitted(context.may_submit)
            if len(catalog) and not len(usable):
                raise PermissionDeniedError(
                    f"{context.principal} may submit none of the live capabilities "
                    f"({', '.join(catalog.names())}): its roles grant no "
                    "workflow:submit:<capability> for them"
                )
        hidden = sorted(set(catalog.names()) - set(usable.names()))
        started = time.perf_counter()
        try:
            plan = await chosen.plan(query, catalog=usable, templates=self.templates)
        except PlannerUnavailableError as exc:
            if not fallback or chosen.name == "rules":
                raise
            plan = await self.planner("rules").plan(
                query, catalog=catalog, templates=self.templates
            )
            plan = plan.with_notes(
                f"the {chosen.name} planner was unavailable ({exc}); "
                "planned with the rules planner instead"
            )
        if allocation is not None:
            plan = plan.model_copy(update={"steps": _allocate(plan.steps, allocation)})
        if hidden and context is not None:
            plan = plan.with_notes(
                f"planned without the capabilities {context.principal} may not submit: "
                f"{', '.join(hidden)}"
            )
        planning_ms = (time.perf_counter() - started) * 1000
        plan.check()
        if context is not None:
            check_permitted(plan, context)
        check_served(plan, catalog)
        return Planned(plan=plan, catalog=catalog, planning_ms=planning_ms)

    def context(self) -> SecurityContext | None:
        """The submitting principal's roles under the policy (None: no policy)."""
        return None if self.policy is None else self.policy.context(self.principal)

    async def submit(self, plan: Plan, *, workflow_id: str | None = None) -> str:
        """Run ``plan`` as a workflow; returns its id. Raises InvalidPlanError,
        PermissionDeniedError, TransportError."""
        context = self.context()
        if context is not None:
            check_permitted(plan, context)
        if self.client is None:
            raise ConfigError("the supervisor has no client to submit with")
        definition = plan.to_workflow()
        return await self.client.submit_workflow(
            definition, input=plan.input, workflow_id=workflow_id
        )


def check_served(plan: Plan, catalog: Catalog) -> None:
    """Raise UnservedCapabilityError when no live agent serves a step's capability."""
    missing = catalog.unserved(plan.capabilities())
    if missing:
        live = ", ".join(catalog.names()) or "none"
        raise UnservedCapabilityError(
            f"no live agent serves {', '.join(missing)} (live capabilities: {live}); "
            "start workers that serve them, or rephrase the query",
            capabilities=missing,
        )


def check_permitted(plan: Plan, context: SecurityContext) -> None:
    """Raise PermissionDeniedError when ``plan`` uses a capability the principal of
    ``context`` may not submit (the coordinator would refuse the workflow)."""
    denial = context.submit_denial(plan.capabilities())
    if denial is not None:
        raise PermissionDeniedError(f"the plan cannot be submitted: {denial}")


def _allocate(steps: tuple[PlanStep, ...], allocation: Allocation) -> tuple[PlanStep, ...]:
    return tuple(
        step.model_copy(update={"steps": _allocate(step.steps, allocation)})
        if step.steps
        else step.model_copy(update={"allocation": allocation})
        for step in steps
    )


__all__ = [
    "Allocation",
    "Planned",
    "Supervisor",
    "check_permitted",
    "check_served",
    "registry_entries",
]

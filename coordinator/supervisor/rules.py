"""The offline planner: templates and capability matching on the query's words.

Deterministic and local (no network, no model): the same query and catalog
always give the same plan, in well under a millisecond per step.

How a query is read:

1. **Pipeline**: ``for each of [a, b, c]: summarize then translate`` (or
   ``each of "a", "b"``, ``one by one``): every item goes through the stages,
   and item *i*'s next stage starts as soon as its previous stage is done, not
   when all items are (``summarize-2`` depends on nothing, ``translate-2`` on
   ``summarize-2`` only).
2. **Template**: a query that asks for a template (its name, or two of its
   keywords) in one sentence is that template, with the parameters the query
   states (``about coffee`` → ``topic=coffee``).
3. **Steps**: otherwise the query is cut into stages at ``then``, ``after
   that``, ``finally``, ``;`` or a full stop, and each stage into parallel
   parts at ``and``, ``also``, ``,`` where every part names something an agent
   does. Each part goes to the best matching live capability (see
   :class:`~agenticflow.coordinator.supervisor.catalog.Catalog`); a stage waits for the
   whole previous stage. A stage that asks for a template, among other stages,
   becomes a sub-plan (a child workflow: the *hierarchical* strategy).

A part no live capability matches is an error naming it and the capabilities
there are: the planner never silently drops what was asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agenticflow.coordinator.supervisor.catalog import Catalog, Match, words
from agenticflow.coordinator.supervisor.plan import Plan, PlanStep, Strategy
from agenticflow.coordinator.supervisor.templates import Template, Templates
from agenticflow.shared.errors import PlanningError

MAX_QUERY = 10_000
"""Characters; a longer query is refused."""

_STAGE_SPLIT = re.compile(
    r"(?i)\s*(?:;|(?<=[a-z0-9\])\"'])[.!?](?:\s+|$)|,?\s*\b(?:and\s+then|then|after\s+that|"
    r"afterwards|after\s+which|followed\s+by|finally|next|lastly|once\s+done|->|=>)\b,?\s*|\s*(?:->|=>)\s*)"
)
_PART_SPLIT = re.compile(
    r"(?i)\s*(?:,\s*(?:and\s+)?|\band\s+also\b|\balso\b|\bas\s+well\s+as\b|\bplus\b|\band\b|\bwhile\b|\bmeanwhile\b)\s*"
)
_LEAD = re.compile(r"(?i)^\s*(?:first(?:ly)?|please|then|and|also|,)\s*,?\s*")
_PIPELINE = re.compile(
    r"(?i)\b(?:for\s+(?:each|every)(?:\s+one)?(?:\s+of)?|each\s+of|one\s+by\s+one(?:\s+for)?|"
    r"as\s+they\s+come(?:\s+for)?)\b"
)
_BRACKETS = re.compile(r"\[(?P<items>[^\[\]]{1,5000})\]")
_QUOTED = re.compile(r"[\"“](?P<item>[^\"”]{1,500})[\"”]")
_LIST_AFTER = re.compile(
    r"(?i)\b(?:each|every)(?:\s+one)?(?:\s+of)?(?:\s+(?:these|the\s+following|the))?"
    r"(?:\s+\w+)?\s*:\s*(?P<items>[^:]+?)\s*(?::|--|$)"
)
MAX_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class _Part:
    text: str
    match: Match | None = None
    template: Template | None = None


class RulesPlanner:
    """The default planner: templates and word matching, offline."""

    name = "rules"

    def __init__(self, *, template_threshold: int = 2) -> None:
        self.template_threshold = template_threshold

    async def plan(self, query: str, *, catalog: Catalog, templates: Templates) -> Plan:
        """A plan for ``query``; raises PlanningError with the reason."""
        return self.plan_now(query, catalog=catalog, templates=templates)

    def plan_now(self, query: str, *, catalog: Catalog, templates: Templates) -> Plan:
        """:meth:`plan` without the event loop (it does no I/O)."""
        text = " ".join(query.split())
        if not text:
            raise PlanningError("the query is empty: say what you want done")
        if len(text) > MAX_QUERY:
            raise PlanningError(f"the query is {len(text)} characters; at most {MAX_QUERY}")
        if not words(text):
            raise PlanningError(f"the query {text!r} has no words to plan from")
        if not catalog:
            raise PlanningError("no live agents: start workers (agenticflow worker) first")
        pipeline = _pipeline(text)
        if pipeline is not None:
            return self._pipeline_plan(text, *pipeline, catalog=catalog)
        stages = _stages(text)
        if len(stages) == 1:
            chosen = templates.best(text, at_least=self.template_threshold)
            if chosen is not None:
                template = chosen[0]
                plan = template.to_plan(text, template.extract(text), planner=self.name)
                return plan.with_notes(
                    f"the query asks for template {template.name!r} (score {chosen[1]})"
                )
        try:
            return self._steps_plan(text, stages, catalog=catalog, templates=templates)
        except PlanningError:
            # "should I buy ACME? use capital 20000": sentences that only make
            # sense together, as a template's parameters.
            chosen = templates.best(text, at_least=self.template_threshold)
            if chosen is None:
                raise
            template = chosen[0]
            plan = template.to_plan(text, template.extract(text), planner=self.name)
            return plan.with_notes(
                f"read as template {template.name!r} (score {chosen[1]}): "
                "the query's parts do not plan on their own"
            )

    # Steps -------------------------------------------------------------
    def _steps_plan(
        self, text: str, stages: list[str], *, catalog: Catalog, templates: Templates
    ) -> Plan:
        grouped: list[list[_Part]] = []
        unmatched: list[str] = []
        for stage in stages:
            chosen = (
                templates.best(stage, at_least=self.template_threshold) if len(stages) > 1 else None
            )
            if chosen is not None and (catalog.best(stage) is None or _is_compound(stage, catalog)):
                grouped.append([_Part(stage, template=chosen[0])])
                continue
            parts = _parts(stage, catalog)
            unmatched.extend(p.text for p in parts if p.match is None)
            grouped.append(parts)
        if not _PARALLEL.search(text):  # "in parallel" overrides "it"
            grouped = _chain_backrefs(grouped)
        if unmatched:
            raise PlanningError(
                "no live agent can do "
                + "; ".join(repr(u) for u in unmatched)
                + f" (capabilities: {', '.join(catalog.names())})"
            )
        steps: list[PlanStep] = []
        previous: list[str] = []
        used: dict[str, int] = {}
        for parts in grouped:
            ids: list[str] = []
            for part in parts:
                step = _step(part, tuple(previous), used, text)
                steps.append(step)
                ids.append(step.id)
            previous = ids
        return Plan(
            query=text,
            name=_name(text),
            strategy=_strategy(grouped),
            steps=tuple(steps),
            input={"query": text},
            planner=self.name,
        )

    # Pipelines -------------------------------------------------------------
    def _pipeline_plan(self, text: str, items: list[str], rest: str, *, catalog: Catalog) -> Plan:
        stages = [
            piece.strip(" ,.")
            for stage in _stages(rest)
            for piece in _PART_SPLIT.split(stage)
            if piece and words(piece)
        ]
        if not stages:
            raise PlanningError(f"the query gives items but no stage to run them through: {text!r}")
        matched: list[Match] = []
        for stage in stages:
            found = catalog.best(stage)
            if found is None:
                raise PlanningError(
                    f"no live agent can do {stage!r} (capabilities: {', '.join(catalog.names())})"
                )
            matched.append(found)
        steps: list[PlanStep] = []
        for index, item in enumerate(items, start=1):
            before: tuple[str, ...] = ()
            for stage, match in zip(stages, matched, strict=True):
                step_id = f"{match.capability}-{index}"[:64]
                steps.append(
                    PlanStep(
                        id=step_id,
                        capability=match.capability,
                        description=f"{stage} — item {index}: {item}"[:500],
                        params={"item": item, "index": index, "instruction": stage},
                        depends_on=before,
                        why=match.why,
                    )
                )
                before = (step_id,)
        return Plan(
            query=text,
            name=_name(text),
            strategy="pipeline",
            steps=tuple(steps),
            input={"query": text, "items": items},
            planner=self.name,
            notes=(
                f"{len(items)} items through {len(stages)} stages; each item moves on "
                "as soon as its previous stage is done",
            ),
        )


_PARALLEL = re.compile(
    r"(?i)\b(?:in\s+parallel|at\s+the\s+same\s+time|simultaneously|concurrently|side\s+by\s+side)\b"
)
_NOISE = re.compile(
    r"(?i)\s*\b(?:in\s+parallel|at\s+the\s+same\s+time|simultaneously|concurrently|"
    r"side\s+by\s+side|in\s+sequence|step\s+by\s+step)\b"
)


def _stages(text: str) -> list[str]:
    text = _NOISE.sub("", text)
    parts = [_LEAD.sub("", p).strip(" ,.") for p in _STAGE_SPLIT.split(text) if p]
    return [p for p in parts if p] or [text]


def _parts(stage: str, catalog: Catalog) -> list[_Part]:
    """Cut a stage into parallel parts where every part matches a capability."""
    pieces = [p.strip(" ,.") for p in _PART_SPLIT.split(stage) if p and p.strip(" ,.")]
    if len(pieces) > 1:
        matches = [catalog.best(piece) for piece in pieces]
        if all(matches):
            merged: list[_Part] = []
            for piece, match in zip(pieces, matches, strict=True):
                merged.append(_Part(piece, match))
            return _dedupe(merged)
        # Some piece names no agent ("salt and pepper"): glue it to the part before.
        glued: list[_Part] = []
        for piece, match in zip(pieces, matches, strict=True):
            if match is None and glued:
                last = glued[-1]
                glued[-1] = _Part(f"{last.text} and {piece}", last.match)
            else:
                glued.append(_Part(piece, match))
        if all(p.match for p in glued):
            return _dedupe(glued)
    return [_Part(stage, catalog.best(stage))]


def _dedupe(parts: list[_Part]) -> list[_Part]:
    """Adjacent parts for the same capability where one is a bare word
    (``summarize and condense the notes``, ``into French and German``) are one part."""
    out: list[_Part] = []
    for part in parts:
        last = out[-1] if out else None
        if (
            last is not None
            and last.match
            and part.match
            and last.match.capability == part.match.capability
            and min(len(words(last.text)), len(words(part.text))) <= 1
        ):
            out[-1] = _Part(f"{last.text} and {part.text}", last.match)
        else:
            out.append(part)
    return out


_BACKREF = re.compile(
    r"(?i)\b(?:it|them|they|that|those|both|the\s+(?:results?|outputs?|summary|"
    r"draft|translation|answer|findings|page|text))\b"
)


def _chain_backrefs(stages: list[list[_Part]]) -> list[list[_Part]]:
    """A part that refers back (``fetch the page and summarize it``) waits for
    the part before it: it starts a new stage."""
    out: list[list[_Part]] = []
    for parts in stages:
        current: list[_Part] = []
        for part in parts:
            if current and _BACKREF.search(part.text):
                out.append(current)
                current = []
            current.append(part)
        out.append(current)
    return out


def _is_compound(stage: str, catalog: Catalog) -> bool:
    """Whether a stage asks for several different capabilities (a job for a template)."""
    return len({p.match.capability for p in _parts(stage, catalog) if p.match}) > 1


def _step(part: _Part, after: tuple[str, ...], used: dict[str, int], query: str) -> PlanStep:
    if part.template is not None:
        template = part.template
        sub = template.to_plan(part.text, template.extract(part.text), planner="rules")
        step_id = _unique(template.name, used)
        return PlanStep(
            id=step_id,
            description=part.text,
            depends_on=after,
            params=dict(sub.input),
            steps=sub.steps,
            why=f"asks for template {template.name!r}: runs as a child workflow",
        )
    assert part.match is not None
    return PlanStep(
        id=_unique(part.match.capability, used),
        capability=part.match.capability,
        description=part.text,
        params={"instruction": part.text},
        depends_on=after,
        why=part.match.why,
    )


def _unique(base: str, used: dict[str, int]) -> str:
    base = base[:60]
    used[base] = used.get(base, 0) + 1
    return base if used[base] == 1 else f"{base}-{used[base]}"


def _strategy(grouped: list[list[_Part]]) -> Strategy:
    if any(part.template for parts in grouped for part in parts):
        return "hierarchical"
    if sum(len(parts) for parts in grouped) == 1:
        return "single"
    if any(len(parts) > 1 for parts in grouped):
        return "parallel"
    return "sequential"


def _pipeline(text: str) -> tuple[list[str], str] | None:
    """(items, the stages' text) when the query runs a list of items through stages."""
    marker = _PIPELINE.search(text)
    if marker is None:
        return None
    for finder in (_BRACKETS, _LIST_AFTER):
        found = finder.search(text)
        if found:
            raw = found.group("items")
            items = [i.strip(" \"'“”") for i in re.split(r"\s*(?:,|;|\band\b)\s*", raw)]
            items = [i for i in items if i]
            rest = (text[: found.start()] + " " + text[found.end() :]).strip()
            break
    else:
        items = [m.group("item").strip() for m in _QUOTED.finditer(text)]
        rest = _QUOTED.sub(" ", text)
    if len(items) < 1:
        return None
    if len(items) > MAX_ITEMS:
        raise PlanningError(f"{len(items)} items; a pipeline takes at most {MAX_ITEMS}")
    rest = _PIPELINE.sub(" ", rest)
    rest = re.sub(r"(?i)\b(?:these|the\s+following)\b\s*\w*\s*:?", " ", rest)
    return items, " ".join(rest.split()).strip(" ,:.")


def _name(text: str) -> str:
    name = "-".join(words(text)[:6]) or "plan"
    return name[:200]


__all__ = ["MAX_ITEMS", "MAX_QUERY", "RulesPlanner"]

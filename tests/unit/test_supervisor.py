"""The supervisor's pure parts: the rules planner, capability matching, templates, plans.

The rules planner is checked on a table of varied queries with the task
structure each must give (ids, capabilities, dependencies, strategy), on bad
queries (each a clear PlanningError), and by properties: it is deterministic
and never fails with anything but a PlanningError.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from agenticflow.cli.ask import print_plan, unattended
from agenticflow.coordinator.supervisor import (
    Catalog,
    Plan,
    PlanStep,
    RulesPlanner,
    Supervisor,
    Templates,
    check_served,
    load_template,
    parse_plan,
)
from agenticflow.coordinator.supervisor.catalog import stem
from agenticflow.coordinator.supervisor.supervisor import Planned, check_permitted
from agenticflow.shared.errors import (
    InvalidPlanError,
    NotFoundError,
    PermissionDeniedError,
    PlanningError,
    UnservedCapabilityError,
    WorkflowDefinitionError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.rbac import Policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "templates"

CATALOG = Catalog.offline(
    {
        "summarize": "Summarise documents into a short brief",
        "translate": "Translate text between languages",
        "research": "Extract candidate claims about a topic",
        "write": "Compose a draft article",
        "fact_check": "Verify claims against references",
        "edit": "Remove unverified claims and polish the text",
        "classify": "Classify messages by category",
        "sentiment_analysis": "Score the sentiment of headlines",
        "technical_analysis": "Moving averages and RSI of a price series",
        "risk_assessment": "Combine analyses into a risk level",
        "position_sizing": "Size a trading position",
        "fetch": "Download a web page",
        "triage": "Classify a customer message by priority",
        "technical_resolution": "Propose a fix for a technical problem",
        "manager_escalation": "Escalate to a manager",
        "email": "Send an email to someone",
    }
)
TEMPLATES = Templates.load([EXAMPLES])
PLANNER = RulesPlanner()

Step = tuple[str, Any, list[str]]
"""(id, capability or the sub-plan's step ids, dependencies)"""


def plan(query: str) -> Plan:
    return PLANNER.plan_now(query, catalog=CATALOG, templates=TEMPLATES)


def shape(found: Plan) -> list[Step]:
    return [
        (s.id, s.capability or [x.id for x in s.steps or ()], list(s.depends_on))
        for s in found.steps
    ]


CASES: list[tuple[str, str, str | None, list[Step]]] = [
    ("Summarize this quarterly report", "single", None, [("summarize", "summarize", [])]),
    (
        "Please translate the release notes into German",
        "single",
        None,
        [("translate", "translate", [])],
    ),
    ("Condense these meeting notes", "single", None, [("summarize", "summarize", [])]),
    (
        "Research the history of coffee, then write an article about it",
        "sequential",
        None,
        [("research", "research", []), ("write", "write", ["research"])],
    ),
    (
        "Research solar panels, then write a summary, then translate it into Spanish",
        "sequential",
        None,
        [
            ("research", "research", []),
            ("write", "write", ["research"]),
            ("translate", "translate", ["write"]),
        ],
    ),
    (
        "Fetch https://example.com and summarize it",
        "sequential",
        None,
        [("fetch", "fetch", []), ("summarize", "summarize", ["fetch"])],
    ),
    (
        "First fetch the page. Then summarize it. Finally email the summary to the team.",
        "sequential",
        None,
        [
            ("fetch", "fetch", []),
            ("summarize", "summarize", ["fetch"]),
            ("email", "email", ["summarize"]),
        ],
    ),
    (
        "Look up the latest research on bees -> write a draft => edit it",
        "sequential",
        None,
        [
            ("research", "research", []),
            ("write", "write", ["research"]),
            ("edit", "edit", ["write"]),
        ],
    ),
    (
        "Verify the claims in this draft and then polish the text",
        "sequential",
        None,
        [("fact_check", "fact_check", []), ("edit", "edit", ["fact_check"])],
    ),
    (
        "Translate the contract into French and German at the same time, then email it to legal",
        "sequential",
        None,
        [("translate", "translate", []), ("email", "email", ["translate"])],
    ),
    (
        "Classify the incoming ticket and email the on-call engineer",
        "parallel",
        None,
        [("classify", "classify", []), ("email", "email", [])],
    ),
    (
        "Analyze sentiment of ACME headlines and run technical analysis on its prices in "
        "parallel, then assess the risk, then size the position",
        "parallel",
        None,
        [
            ("sentiment_analysis", "sentiment_analysis", []),
            ("technical_analysis", "technical_analysis", []),
            ("risk_assessment", "risk_assessment", ["sentiment_analysis", "technical_analysis"]),
            ("position_sizing", "position_sizing", ["risk_assessment"]),
        ],
    ),
    (
        "Summarize the report, summarize the appendix, then translate both",
        "parallel",
        None,
        [
            ("summarize", "summarize", []),
            ("summarize-2", "summarize", []),
            ("translate", "translate", ["summarize", "summarize-2"]),
        ],
    ),
    (
        "For each of [q1.pdf, q2.pdf, q3.pdf]: summarize then translate",
        "pipeline",
        None,
        [
            ("summarize-1", "summarize", []),
            ("translate-1", "translate", ["summarize-1"]),
            ("summarize-2", "summarize", []),
            ("translate-2", "translate", ["summarize-2"]),
            ("summarize-3", "summarize", []),
            ("translate-3", "translate", ["summarize-3"]),
        ],
    ),
    (
        'Translate "good morning", "thank you" and "goodbye" one by one',
        "pipeline",
        None,
        [
            ("translate-1", "translate", []),
            ("translate-2", "translate", []),
            ("translate-3", "translate", []),
        ],
    ),
    (
        "Each of these documents: a.txt, b.txt -- summarize, translate, then email",
        "pipeline",
        None,
        [
            ("summarize-1", "summarize", []),
            ("translate-1", "translate", ["summarize-1"]),
            ("email-1", "email", ["translate-1"]),
            ("summarize-2", "summarize", []),
            ("translate-2", "translate", ["summarize-2"]),
            ("email-2", "email", ["translate-2"]),
        ],
    ),
    (
        "Write a blog post about coffee",
        "parallel",
        "content-pipeline",
        [
            ("research", "research", []),
            ("write", "write", ["research"]),
            ("fact_check", "fact_check", ["research"]),
            ("edit", "edit", ["write", "fact_check"]),
        ],
    ),
    (
        "Draft an essay on renewable energy",
        "parallel",
        "content-pipeline",
        [
            ("research", "research", []),
            ("write", "write", ["research"]),
            ("fact_check", "fact_check", ["research"]),
            ("edit", "edit", ["write", "fact_check"]),
        ],
    ),
    (
        'A customer wrote "our dashboard has been down for two hours"',
        "sequential",
        "customer-service",
        [
            ("triage", "triage", []),
            ("resolution", "technical_resolution", ["triage"]),
            ("escalation", "manager_escalation", ["triage", "resolution"]),
        ],
    ),
    (
        "Should I buy ACME? Use capital 20000",
        "parallel",
        "trading",
        [
            ("sentiment", "sentiment_analysis", []),
            ("technical", "technical_analysis", []),
            ("risk", "risk_assessment", ["sentiment", "technical"]),
            ("sizing", "position_sizing", ["risk"]),
        ],
    ),
    (
        "Write an article about honeybees and fact check it, then translate it into French",
        "hierarchical",
        None,
        [
            ("content-pipeline", ["research", "write", "fact_check", "edit"], []),
            ("translate", "translate", ["content-pipeline"]),
        ],
    ),
    (
        "Research bees and write an essay about them, then email it to my boss",
        "hierarchical",
        None,
        [
            ("content-pipeline", ["research", "write", "fact_check", "edit"], []),
            ("email", "email", ["content-pipeline"]),
        ],
    ),
]


@pytest.mark.parametrize(
    ("query", "strategy", "template", "steps"), CASES, ids=[c[0][:40] for c in CASES]
)
def test_rules_planner_gives_the_expected_structure(
    query: str, strategy: str, template: str | None, steps: list[Step]
) -> None:
    found = plan(query)
    assert found.strategy == strategy
    assert found.template == template
    assert shape(found) == steps
    assert found.planner == "rules"
    assert not found.problems()
    check_served(found, CATALOG)
    for step in found.steps:
        if step.capability:
            assert step.why  # every choice says why
    definition = found.to_workflow()
    assert [t.id for t in definition.tasks] == [s[0] for s in steps]
    for task, step in zip(definition.tasks, found.steps, strict=True):
        if step.steps:  # a sub-plan runs as a child workflow
            assert task.workflow is not None
            assert [t.id for t in task.workflow.tasks] == [x.id for x in step.steps]


def test_the_case_table_is_varied_enough() -> None:
    assert len(CASES) >= 20
    assert {c[1] for c in CASES} == {"single", "sequential", "parallel", "pipeline", "hierarchical"}


def test_template_parameters_come_from_the_query() -> None:
    assert plan("Write a blog post about coffee").input["topic"] == "coffee"
    trade = plan("Should I buy ACME? Use capital 20000")
    assert trade.input["symbol"] == "ACME"
    assert trade.input["capital"] == 20000.0
    assert trade.input["risk_per_trade"] == 0.01  # the default
    service = plan('A customer wrote "our dashboard has been down for two hours"')
    assert service.input["message"] == "our dashboard has been down for two hours"


def test_pipeline_steps_carry_their_item() -> None:
    found = plan("For each of [q1.pdf, q2.pdf]: summarize then translate")
    assert found.input["items"] == ["q1.pdf", "q2.pdf"]
    assert [s.params["item"] for s in found.steps] == ["q1.pdf", "q1.pdf", "q2.pdf", "q2.pdf"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "empty"),
        ("    \n\t ", "empty"),
        ("?!? ... ---", "no words"),
        ("the and of", "no words"),
        ("asdf qwer zxcv", "no live agent can do 'asdf qwer zxcv'"),
        ("Dance a jig, then summarize the report", "no live agent can do 'Dance a jig'"),
        ("x" * 10_001, "at most 10000"),
        ("For each of [a, b]: juggle", "no live agent can do 'juggle'"),
    ],
)
def test_bad_queries_are_refused_with_the_reason(query: str, reason: str) -> None:
    with pytest.raises(PlanningError, match=reason) as caught:
        plan(query)
    assert caught.value.code == "planning_error"


def test_an_empty_cluster_is_told_to_start_workers() -> None:
    with pytest.raises(PlanningError, match="no live agents"):
        PLANNER.plan_now("summarize this", catalog=Catalog([]), templates=TEMPLATES)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_plans_deterministically_or_fails_clearly(query: str) -> None:
    try:
        first = plan(query)
    except PlanningError as exc:
        reason = str(exc)
    else:
        assert plan(query) == first
        assert not first.problems()
        return
    assert reason


def test_a_long_query_plans_a_dozen_steps_quickly() -> None:
    stages = ["fetch the page", "summarize it", "translate it", "classify it", "email it"] * 3
    query = ", then ".join(stages)
    started = time.perf_counter()
    found = plan(query)
    elapsed = time.perf_counter() - started
    assert found.count() == 15
    assert [s.depends_on for s in found.steps[1:]] == [(s.id,) for s in found.steps[:-1]]
    assert elapsed < 5  # generous: the number is measured in benchmarks/supervisor.py


# Capability matching ---------------------------------------------------------


def entry(worker: str, agent: str, caps: list[str], **more: Any) -> dict[str, Any]:
    return {
        "role": "worker",
        "worker": worker,
        "agent": agent,
        "capabilities": caps,
        "instances": 4,
        "load": 0,
        "suspended": 0,
        "heartbeat": 1_000_000_000_000,
        **more,
    }


def test_catalog_from_registry_keeps_live_public_capabilities() -> None:
    catalog = Catalog.from_registry(
        [
            entry("w1", "sum", ["summarize"], load=3, description="Summarise text"),
            entry("w2", "sum", ["summarize"], load=1),
            entry("w3", "old", ["translate"], heartbeat=1),  # stale
            entry("w4", "fork", ["summarize~fork-1"], route="fork-1"),  # a private route
            entry("w5", "held", ["classify"], suspended=4),  # every instance suspended
            {"role": "coordinator", "heartbeat": 1_000_000_000_000},
        ],
        now_ns=1_000_000_000_000,
        ttl_s=20,
    )
    assert catalog.names() == ["classify", "summarize"]
    summarize = catalog.capabilities["summarize"]
    assert (summarize.instances, summarize.busy, summarize.workers) == (8, 4, 2)
    assert summarize.load == 0.5
    assert catalog.unserved(["summarize", "classify", "translate"]) == ["classify", "translate"]


def test_matching_prefers_healthy_and_idle_capabilities_on_a_tie() -> None:
    catalog = Catalog.from_registry(
        [
            entry("w1", "a", ["summarize_fast"], load=4, description="summarize"),
            entry("w2", "b", ["summarize_slow"], load=0, description="summarize"),
            entry("w3", "c", ["summarize_flaky"], open_breakers=["llm"], description="summarize"),
        ],
        now_ns=1_000_000_000_000,
        ttl_s=20,
    )
    ranked = [m.capability for m in catalog.match("summarize the doc", limit=3)]
    assert ranked == ["summarize_slow", "summarize_fast", "summarize_flaky"]
    best = catalog.best("summarize the doc")
    assert best is not None
    assert "load 0%" in best.why


def test_synonyms_and_stems_join_words() -> None:
    assert stem("summaries") == stem("summarize") == stem("summarising")
    best = CATALOG.best("give me the tl;dr digest of this")
    assert best is not None
    assert best.capability == "summarize"


def test_an_unserved_capability_is_reported_before_anything_runs() -> None:
    found = Plan(
        query="q",
        strategy="sequential",
        steps=(
            PlanStep(id="a", capability="summarize"),
            PlanStep(id="b", capability="dance", depends_on=("a",)),
        ),
    )
    with pytest.raises(UnservedCapabilityError, match="no live agent serves dance") as caught:
        check_served(found, CATALOG)
    assert caught.value.capabilities == ["dance"]


# Plans -------------------------------------------------------------------------


def test_plan_problems_name_every_fault() -> None:
    with pytest.raises(InvalidPlanError) as caught:
        parse_plan(
            {
                "strategy": "sequential",
                "steps": [
                    {"id": "a", "capability": "x", "depends_on": ["c"]},
                    {"id": "b", "capability": "x", "depends_on": ["a"]},
                    {"id": "c", "capability": "x", "depends_on": ["b"]},
                    {"id": "d"},
                    {"id": "e", "capability": "x", "steps": [{"id": "f", "capability": "x"}]},
                    {"id": "g", "capability": "x", "depends_on": ["nope"]},
                ],
            },
            query="q",
            planner="test",
        )
    text = " | ".join(caught.value.problems)
    assert "steps[3] (d): needs a capability or a sub-plan" in text
    assert "steps[4] (e): has both a capability and a sub-plan" in text
    assert "depends on unknown task 'nope'" in text


def test_plan_cycles_are_reported_with_the_path() -> None:
    with pytest.raises(InvalidPlanError, match=r"dependency cycle: a -> c -> b -> a"):
        parse_plan(
            {
                "strategy": "sequential",
                "steps": [
                    {"id": "a", "capability": "x", "depends_on": ["c"]},
                    {"id": "b", "capability": "x", "depends_on": ["a"]},
                    {"id": "c", "capability": "x", "depends_on": ["b"]},
                ],
            },
            query="q",
            planner="test",
        )


def test_parse_plan_refuses_wrong_shapes() -> None:
    with pytest.raises(InvalidPlanError, match="JSON object"):
        parse_plan(["not", "a", "plan"], query="q", planner="t")
    with pytest.raises(InvalidPlanError, match="strategy"):
        parse_plan(
            {"strategy": "chaotic", "steps": [{"id": "a", "capability": "x"}]},
            query="q",
            planner="t",
        )
    with pytest.raises(InvalidPlanError, match="steps"):
        parse_plan({"strategy": "single", "steps": []}, query="q", planner="t")
    with pytest.raises(InvalidPlanError, match="step id"):
        parse_plan(
            {"strategy": "single", "steps": [{"id": "a b", "capability": "x"}]},
            query="q",
            planner="t",
        )


def test_sub_plans_nest_at_most_four_deep() -> None:
    step: dict[str, Any] = {"id": "leaf", "capability": "x"}
    for depth in range(5):
        step = {"id": f"level{depth}", "steps": [step]}
    with pytest.raises(InvalidPlanError, match="deeper than 4"):
        parse_plan({"strategy": "hierarchical", "steps": [step]}, query="q", planner="t")


def test_a_plan_becomes_the_workflow_it_describes() -> None:
    found = plan("Research the history of coffee, then write an article about it")
    definition = found.to_workflow()
    assert [(t.id, t.capability, t.depends_on) for t in definition.tasks] == [
        ("research", "research", ()),
        ("write", "write", ("research",)),
    ]
    assert definition.input == {"query": found.query}
    assert definition.tasks[0].params["instruction"] == "Research the history of coffee"


# Templates ---------------------------------------------------------------------


def test_examples_templates_load_and_render_with_parameters() -> None:
    assert TEMPLATES.names() == ["content-pipeline", "customer-service", "trading"]
    trading = TEMPLATES.get("trading").render({"capital": "5000", "symbol": "ZETA"})
    assert trading.input == {"symbol": "ZETA", "capital": 5000.0, "risk_per_trade": 0.01}
    assert [t.id for t in trading.tasks] == ["sentiment", "technical", "risk", "sizing"]


def test_template_parameters_are_checked() -> None:
    trading = TEMPLATES.get("trading")
    with pytest.raises(WorkflowDefinitionError) as caught:
        trading.render({"capital": "lots", "colour": "red"})
    problems = " | ".join(caught.value.problems)
    assert "has no parameter 'colour' (it takes: capital, risk_per_trade, symbol)" in problems
    assert "parameter 'capital' must be float: 'lots'" in problems
    with pytest.raises(
        NotFoundError, match="no template 'nope'; known templates: content-pipeline"
    ):
        TEMPLATES.get("nope")


def test_placeholders_are_filled_typed_or_as_text(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        """
template: digest
keywords: [digest]
params:
  count: {type: int, default: 3}
  lang: {required: true}
  items: {type: list}
workflow:
  name: digest
  tasks:
    - id: s
      capability: summarize
      params: {n: "{{count}}", note: "in {{ lang }} please", items: "{{items}}"}
""",
        encoding="utf-8",
    )
    template = Templates.load([tmp_path]).get("digest")
    rendered = template.render({"lang": "fr", "items": "a, b"})
    assert rendered.tasks[0].params == {"n": 3, "note": "in fr please", "items": ["a", "b"]}
    assert rendered.input == {"count": 3, "lang": "fr", "items": ["a", "b"]}
    with pytest.raises(WorkflowDefinitionError, match="needs parameter 'lang'"):
        template.render({})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tasks: []", "a mapping with 'template: NAME'"),
        ("template: Bad Name\nworkflow: {tasks: [{id: a, capability: b}]}", "template name"),
        (
            "template: x\nworkflow: {tasks: [{id: a, capability: b}]}\n"
            "params: {p: {extract: ['(']}}",
            "extract pattern",
        ),
        (
            "template: x\nworkflow: {tasks: [{id: a, capability: b}]}\n"
            "params: {p: {extract: ['a']}}",
            "needs a (?P<value>",
        ),
        ("template: x\nworkflow_file: missing.yaml", "cannot read"),
        ("template: x\nworkflow: {tasks: [{id: a, capability: b, depends_on: [a]}]}", ""),
        ("template: [unclosed", "cannot read template"),
    ],
)
def test_bad_template_files_name_the_file_and_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(WorkflowDefinitionError, match=r"bad\.yaml") as caught:
        load_template(file)
    assert problem in str(caught.value)


def test_the_planning_benchmark_plans_every_shape() -> None:
    from benchmarks.supervisor import QUERIES, TEMPLATES, catalog, measure

    rows = {
        name: measure(make(), 2, RulesPlanner(), catalog(), Templates.load([TEMPLATES]))
        for name, make in QUERIES.items()
    }
    assert rows["chain 12"]["steps"] == 12
    assert rows["parallel 12"]["strategy"] == "parallel"
    assert rows["pipeline 200"]["steps"] == 200
    assert rows["hierarchical"]["strategy"] == "hierarchical"


def test_the_guides_template_loads_and_reads_its_parameter(tmp_path: Path) -> None:
    import re
    import shutil

    guide = Path(__file__).resolve().parents[2] / "docs" / "guides" / "supervisor.md"
    block = next(
        m.group(1)
        for m in re.finditer(r"```yaml\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
        if m.group(1).startswith("# templates/articles.yaml")
    )
    (tmp_path / "templates").mkdir()
    (tmp_path / "examples" / "content_pipeline").mkdir(parents=True)
    shutil.copy(
        EXAMPLES.parent / "content_pipeline" / "workflow.yaml",
        tmp_path / "examples" / "content_pipeline",
    )
    (tmp_path / "templates" / "articles.yaml").write_text(block, encoding="utf-8")
    template = Templates.load([tmp_path / "templates"]).get("articles")
    assert template.extract("an essay about coffee") == {"topic": "coffee"}
    assert template.render({"topic": "tea"}).input["topic"] == "tea"


def test_a_template_with_a_child_workflow_plans_a_sub_plan(tmp_path: Path) -> None:
    (tmp_path / "nested.yaml").write_text(
        """
template: nested
workflow:
  name: nested
  tasks:
    - {id: gather, capability: fetch}
    - id: digest
      depends_on: [gather]
      workflow:
        name: digest
        tasks:
          - {id: short, capability: summarize}
          - {id: french, capability: translate, depends_on: [short]}
""",
        encoding="utf-8",
    )
    template = Templates.load([tmp_path]).get("nested")
    assert template.describe()["capabilities"] == ["fetch", "summarize", "translate"]
    found = template.to_plan("q", {}, planner="rules")
    assert found.capabilities() == {"fetch", "summarize", "translate"}
    digest = found.steps[1]
    assert digest.capability is None
    assert [(s.id, s.capability) for s in digest.steps or ()] == [
        ("short", "summarize"),
        ("french", "translate"),
    ]
    assert found.to_workflow().tasks[1].workflow is not None


# Submission rights ------------------------------------------------------------
REPORTER = Policy.from_dict(
    {
        "roles": {
            "reporter": {"permissions": ["workflow:submit:summarize", "workflow:submit:tr*"]}
        },
        "principals": {"bob": ["reporter"]},
    }
)
NESTED_TEMPLATE = """
template: nested
keywords: [dossier, compile]
workflow:
  name: nested
  tasks:
    - {id: short, capability: summarize}
    - id: deep
      depends_on: [short]
      workflow:
        tasks:
          - {id: gather, capability: fetch}
"""


def _supervisor(tmp_path: Path, **options: Any) -> Supervisor:
    (tmp_path / "nested.yaml").write_text(NESTED_TEMPLATE, encoding="utf-8")
    templates = Templates.load([EXAMPLES, tmp_path])
    return Supervisor(client=None, settings=Settings(), templates=templates, **options)


class Recording:
    """A planner (as the llm one is used) that plans one summarize step and keeps
    the catalog it was shown."""

    name = "llm"

    def __init__(self) -> None:
        self.shown: list[Catalog] = []

    async def plan(self, query: str, *, catalog: Catalog, templates: Templates) -> Plan:
        self.shown.append(catalog)
        return Plan(
            query=query, strategy="single", steps=(PlanStep(id="s", capability="summarize"),)
        )


async def test_a_model_is_shown_only_what_the_principal_may_submit(tmp_path: Path) -> None:
    model = Recording()
    supervisor = _supervisor(tmp_path, policy=REPORTER, principal="bob", planners={"llm": model})
    planned = await supervisor.plan("Summarize the report", planner="llm", catalog=CATALOG)
    assert model.shown[-1].names() == ["summarize", "translate", "triage"]
    (note,) = planned.plan.notes
    assert note.startswith("planned without the capabilities bob may not submit: classify, ")
    assert "fetch" in note
    # The control: without a policy the model sees the whole catalog.
    await _supervisor(tmp_path, planners={"llm": model}).plan(
        "Summarize the report", planner="llm", catalog=CATALOG
    )
    assert model.shown[-1].names() == CATALOG.names()
    nothing = _supervisor(tmp_path, policy=REPORTER, principal="eve", planners={"llm": model})
    with pytest.raises(PermissionDeniedError, match="eve may submit none of the live"):
        await nothing.plan("Summarize the report", planner="llm", catalog=CATALOG)


async def test_a_rules_plan_with_a_forbidden_capability_is_refused_by_name(
    tmp_path: Path,
) -> None:
    supervisor = _supervisor(tmp_path, policy=REPORTER, principal="bob")
    planned = await supervisor.plan("Summarize the report, then translate it", catalog=CATALOG)
    assert planned.plan.capabilities() == {"summarize", "translate"}
    assert not planned.plan.notes  # the rules planner matched as for anyone
    with pytest.raises(PermissionDeniedError, match=r"bob may not submit capability 'fetch'"):
        await supervisor.plan("Download the page", catalog=CATALOG)
    free = await _supervisor(tmp_path).plan("Download the page", catalog=CATALOG)
    assert free.plan.capabilities() == {"fetch"}


async def test_a_template_with_a_forbidden_capability_is_refused_before_submitting(
    tmp_path: Path,
) -> None:
    supervisor = _supervisor(tmp_path, policy=REPORTER, principal="bob")
    with pytest.raises(PermissionDeniedError, match=r"bob may not submit capability 'fetch'"):
        await supervisor.plan("compile the dossier", catalog=CATALOG)
    allowed = await _supervisor(tmp_path).plan("compile the dossier", catalog=CATALOG)
    assert allowed.plan.capabilities() == {"summarize", "fetch"}
    with pytest.raises(PermissionDeniedError, match="lacks workflow:submit:fetch"):
        await supervisor.submit(allowed.plan)  # a plan made elsewhere is checked too


def test_check_permitted_names_the_missing_permission() -> None:
    found = plan("Summarize this quarterly report")
    check_permitted(found, REPORTER.context("bob"))
    with pytest.raises(PermissionDeniedError) as caught:
        check_permitted(found, REPORTER.context("mallory"))
    assert str(caught.value) == (
        "the plan cannot be submitted: mallory may not submit capability 'summarize' "
        "(it lacks workflow:submit:summarize; roles: none)"
    )


def test_a_plan_is_printed_as_text_whatever_its_strings_say() -> None:
    """A model wrote the plan: its markup is shown, its escape sequences are inert."""
    evil = Plan(
        query="q",
        name="[bold red]PAID[/bold red]",
        strategy="single",
        steps=(
            PlanStep(
                id="s",
                capability="summarize",
                description="\x1b]8;;http://x\x07click\x1b[2J",
                why="[link=http://x]y[/link]",
            ),
        ),
        notes=("[red]note\u202e",),
    )
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system="truecolor", width=200)
    print_plan(console, Planned(plan=evil, catalog=CATALOG, planning_ms=1.0))
    shown = screen.getvalue()
    for literal in ("[bold red]PAID[/bold red]", "[link=http://x]y[/link]", "[red]note\\u202e"):
        assert literal in shown
    assert "\\x1b]8;;http://x\\x07click\\x1b[2J" in shown
    assert "\x07" not in shown
    assert "\u202e" not in shown
    # The only escape sequences are the console's own styles (SGR: ESC [ ... m).
    assert not re.findall(r"\x1b(?!\[[0-9;]*m)", shown)
    assert unattended(None, "client") is False
    robot = Policy.from_dict(
        {"roles": {"r": {"permissions": ["planner:unattended"]}}, "principals": {"cron": ["r"]}}
    )
    assert unattended(robot, "cron")
    assert not unattended(robot, "client")

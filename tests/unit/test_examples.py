"""The example apps: workflows load, every capability is served, handlers behave.

Handlers run here without a worker, but with what a worker gives them: the
apps' services are started as a worker starts them (each example's scripted
model, the customer service's ``kb`` MCP server), and each task's ``ctx.llm``
calls its agent's model.

Handlers run in dependency order without a bus; each result goes through the
msgpack codec first, as it would on the wire, so the examples only return
data a worker can publish.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import math
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenticflow import AgentApp, NonRetryableError, TaskContext, ToolBox
from agenticflow.cluster.llm_stub import read_script
from agenticflow.examples.content_pipeline import app as content
from agenticflow.examples.content_pipeline import corpus
from agenticflow.examples.customer_service import app as support
from agenticflow.examples.local_model import CONFIGURED, KEPT_REQUESTS, LocalModel
from agenticflow.examples.trading import app as trading
from agenticflow.shared.graph.dag import validate_graph
from agenticflow.shared.graph.workflow import TaskSpec, WorkflowDefinition, load_workflow_file
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.worker.app import load_app
from agenticflow.worker.llm import LLM
from agenticflow.worker.llm_provider import ChatProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS: dict[str, AgentApp] = {
    "customer_service": support.app,
    "content_pipeline": content.app,
    "trading": trading.app,
}


@pytest.fixture(scope="module", autouse=True)
async def served() -> AsyncIterator[None]:
    """The apps' services, started as a worker starts them, for the module
    (the scripted models, whatever model this shell may have configured)."""
    with pytest.MonkeyPatch.context() as env:
        for name in CONFIGURED:
            env.delenv(name, raising=False)
        async with contextlib.AsyncExitStack() as stack:
            for app in APPS.values():
                for service in app.services:
                    await service.start(app)
                    stack.push_async_callback(service.close)
            yield


def workflow(name: str) -> WorkflowDefinition:
    """The example's workflow definition."""
    return load_workflow_file(EXAMPLES / name / "workflow.yaml")


def example_input(name: str) -> dict[str, Any]:
    """The example's bundled input."""
    data = json.loads((EXAMPLES / name / "input.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dependency_order(definition: WorkflowDefinition) -> list[TaskSpec]:
    """Tasks in an order where every dependency comes first (Kahn's algorithm)."""
    pending = {task.id: set(task.depends_on) for task in definition.tasks}
    by_id = {task.id: task for task in definition.tasks}
    order: list[TaskSpec] = []
    while pending:
        ready = sorted(task_id for task_id, deps in pending.items() if not deps)
        assert ready, "the workflow has a cycle"
        for task_id in ready:
            order.append(by_id[task_id])
            del pending[task_id]
        for deps in pending.values():
            deps.difference_update(ready)
    return order


async def run(
    app: AgentApp, definition: WorkflowDefinition, data: dict[str, Any]
) -> dict[str, Any]:
    """Run every task of ``definition`` with ``app``; results by task id."""
    results: dict[str, Any] = {}
    for task in dependency_order(definition):
        spec = app.for_capability(task.capability)
        endpoint = app.llm_endpoints.get(spec.name)
        llm = None
        if endpoint is not None:
            llm = LLM(provider=ChatProvider(base_url=endpoint.base_url), model=endpoint.model)
        ctx = TaskContext(
            workflow_id="wf-test",
            task_id=task.id,
            attempt=1,
            capability=task.capability,
            params=dict(task.params),
            inputs={dep: results[dep] for dep in task.depends_on},
            input=data,
            agent=spec.name,
            worker="test-worker",
            timeout_s=definition.timeout_of(task),
            tools=ToolBox(spec.tools, workflow_id="wf-test", task_id=task.id, agent=spec.name),
            llm=llm,
        )
        result = spec.handler(ctx)
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, dict), f"{task.id} returned {type(result).__name__}"
        results[task.id] = unpack(pack(result))
    return results


async def run_example(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the named example with ``data`` or its bundled input."""
    return await run(APPS[name], workflow(name), example_input(name) if data is None else data)


# --- every example -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(APPS))
def test_workflow_is_a_valid_dag_served_by_the_app(name: str) -> None:
    definition = workflow(name)
    validate_graph(definition)
    served = set(APPS[name].capabilities)
    missing = {task.capability for task in definition.tasks} - served
    assert not missing, f"{name}: no agent serves {sorted(missing)}"
    assert all(task.timeout_s and task.retry for task in definition.tasks)


@pytest.mark.parametrize("name", sorted(APPS))
def test_app_loads_from_its_import_spec(name: str) -> None:
    assert load_app(f"agenticflow.examples.{name}.app:app") is APPS[name]


@pytest.mark.parametrize("name", sorted(APPS))
async def test_example_runs_deterministically(name: str) -> None:
    first = await run_example(name)
    assert set(first) == {task.id for task in workflow(name).tasks}
    assert await run_example(name) == first


# --- customer service --------------------------------------------------------------


async def test_outage_is_high_priority_and_escalated() -> None:
    results = await run_example("customer_service")
    triage = results["triage"]
    assert triage["category"] == "outage"
    assert triage["priority"] in {"high", "critical"}
    assert triage["sentiment"] == "negative"
    assert results["resolution"]["article_id"] == "KB-101"
    escalation = results["escalation"]
    assert escalation["escalate"] is True
    assert escalation["assigned_to"] == "duty-manager"
    assert escalation["reasons"]
    assert escalation["response"].startswith("Hi Dana Whitfield,")


async def test_escalation_uses_its_tools() -> None:
    results = await run_example("customer_service")
    escalation = results["escalation"]
    assert escalation["open_tickets"] == 2  # acme-retail's seed tickets, via sql_query
    assert "repeat contact: 2 other open tickets on the account" in escalation["reasons"]
    assert escalation["case_note"] == "wf-test-escalation.md"
    note = (support.DATA_DIR / "notes" / escalation["case_note"]).read_text(encoding="utf-8")
    assert note.startswith("# Escalation: Dana Whitfield")
    assert escalation["page_id"] == "wf-test:escalation:2:tool:page_manager"
    pages = (support.DATA_DIR / "pager.log").read_text(encoding="utf-8")
    assert escalation["page_id"] in pages


async def test_confident_how_to_is_answered_without_escalation() -> None:
    message = "How do I configure webhooks for new orders? Thanks, love the product!"
    results = await run_example("customer_service", {"customer": "Sam", "message": message})
    assert results["triage"]["category"] == "how-to"
    assert results["triage"]["priority"] == "low"
    assert results["triage"]["sentiment"] == "positive"
    assert results["resolution"]["article_id"] == "KB-401"
    assert results["resolution"]["confidence"] >= 0.6
    escalation = results["escalation"]
    assert escalation["escalate"] is False
    assert escalation["reasons"] == []
    assert "1. Open Settings" in escalation["response"]


async def test_unknown_request_escalates_for_low_confidence() -> None:
    results = await run_example("customer_service", {"customer": "Sam", "message": "Hello there"})
    assert results["triage"]["category"] == "general"
    assert results["resolution"]["article_id"] is None
    assert results["escalation"]["escalate"] is True
    assert "confidence" in results["escalation"]["reasons"][0]


@pytest.mark.parametrize(
    ("message", "category", "priority"),
    [
        ("I was charged twice on my invoice, please refund one charge", "billing", "medium"),
        ("The CSV export is broken and the dates are wrong", "bug", "medium"),
        ("URGENT: checkout crashes in production with an exception", "bug", "high"),
        ("The site is down and returns 502", "outage", "high"),
    ],
)
def test_classify_by_keywords(message: str, category: str, priority: str) -> None:
    result = support.classify(message)
    assert result["category"] == category
    assert result["priority"] == priority


def test_sentiment_handles_negation() -> None:
    assert support.score_sentiment("I am happy with it") > 0
    assert support.score_sentiment("I am not happy with it") < 0
    assert support.score_sentiment("The report is ready") == 0


@pytest.mark.parametrize(
    "data",
    [{"customer": "Sam"}, {"customer": "Sam", "message": "  "}, {"message": "My API is down"}],
)
async def test_customer_service_rejects_bad_input(data: dict[str, Any]) -> None:
    with pytest.raises(NonRetryableError, match=r"input '(message|customer)'"):
        await run_example("customer_service", data)


async def test_the_resolution_model_searches_the_knowledge_base_over_mcp() -> None:
    resolution = (await run_example("customer_service"))["resolution"]
    # Step 1: the model called the kb MCP server's tool; step 2: it wrote the reply.
    assert resolution["model_steps"] == 2
    assert [s["category"] for s in resolution["searches"]] == ["outage"]
    assert resolution["article_id"] == "KB-101"
    assert resolution["draft"].startswith("This looks like a service outage")
    assert "1. Check status.example.com" in resolution["draft"]


def test_the_kb_server_is_declared_for_the_resolution_agent_only() -> None:
    assert support.kb.argv[1:] == ["-m", "agenticflow.examples.customer_service.kb_server"]
    assert support.kb.agents == ("technical_resolution",)
    resolver = support.app.for_capability("technical_resolution")
    assert resolver.tools.get(support.KB_SEARCH) is not None  # listed when the server started
    assert support.app.for_capability("triage").tools.get(support.KB_SEARCH) is None


async def test_a_configured_endpoint_means_no_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTICFLOW_LLM_BASE_URL", "https://llm.example.com/v1")
    owner = AgentApp("configured")
    owner.add_agent(lambda ctx: None, capabilities=["x"], name="x")
    model = LocalModel.serve(owner, EXAMPLES / "trading" / "llm-script.yaml")
    await model.start(owner)
    try:
        assert (model.url, owner.llm_endpoints) == ("", {})
    finally:
        await model.close()


async def test_the_local_model_points_its_apps_agents_at_it_until_closed() -> None:
    owner = AgentApp("scripted")
    owner.add_agent(lambda ctx: None, capabilities=["x"], name="x")
    served = AgentApp("served").include(owner)
    model = LocalModel.serve(owner, EXAMPLES / "trading" / "llm-script.yaml")
    await model.start(served)
    await model.start(served)  # a second worker of the process shares the server
    assert served.llm_endpoints["x"].base_url == model.url
    assert model.url.startswith("http://127.0.0.1:")
    await model.close()
    assert model.url
    await model.close()
    assert (model.url, served.llm_endpoints) == ("", {})


async def test_the_local_model_remembers_only_its_latest_requests() -> None:
    owner = AgentApp("chatty")
    model = LocalModel.serve(owner, EXAMPLES / "trading" / "llm-script.yaml")
    await model.start(owner)
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "Direction: flat"}]}
        async with httpx.AsyncClient(base_url=model.url.removesuffix("/v1")) as http:
            for _ in range(KEPT_REQUESTS + 5):
                answer = await http.post("/v1/chat/completions", json=body)
                assert answer.json()["choices"][0]["message"]["content"].startswith("Flat:")
            assert (await http.get("/stub/requests")).json()["count"] == KEPT_REQUESTS
    finally:
        await model.close()


# --- content pipeline --------------------------------------------------------------


async def test_content_pipeline_removes_unverified_claims() -> None:
    results = await run_example("content_pipeline")
    facts = results["research"]["facts"]
    documents = " ".join(d.text for d in corpus.TOPICS["honeybees"].documents)
    assert facts
    assert all(fact["text"] in documents for fact in facts)

    checks = results["fact_check"]["checks"]
    assert {c["claim_id"] for c in checks} == {f["id"] for f in facts}
    unverified = {c["claim_id"] for c in checks if c["status"] != "verified"}
    assert results["fact_check"]["contradicted"] >= 1
    assert results["fact_check"]["unsupported"] >= 1

    edited = results["edit"]
    assert {r["claim_id"] for r in edited["removed_claims"]} == unverified
    for removed in edited["removed_claims"]:
        assert removed["claim"] not in edited["text"]
    for check in checks:
        if check["status"] == "verified":
            assert check["claim"] in edited["text"]
    assert edited["kept_claims"] == len(checks) - len(unverified)
    assert "5 million flowers" not in edited["text"]


async def test_content_pipeline_readability_stats() -> None:
    edited = (await run_example("content_pipeline"))["edit"]
    stats = edited["stats"]
    body = edited["text"].split("\n\n", 1)[1]
    assert stats["word_count"] == len(content.words(body))
    assert stats["sentence_count"] >= edited["kept_claims"]
    assert stats["avg_sentence_length"] == pytest.approx(
        stats["word_count"] / stats["sentence_count"], abs=0.01
    )
    assert 0 < stats["flesch_reading_ease"] < 121


def test_a_draft_is_parsed_into_sentences_tagged_with_their_citations() -> None:
    facts = [{"id": "a#1", "source": "A"}, {"id": "b#2", "source": "B"}]
    text = (
        "Bees are busy. They dance [a#1]. They sting.  [b#2]\n\n"
        "Both hold [a#1, b#2]. Unknown too [z#9]."
    )
    draft = content.parse_draft("Bees", text, facts)
    assert [[(s["claim_ids"], s["text"]) for s in p] for p in draft["paragraphs"]] == [
        [([], "Bees are busy."), (["a#1"], "They dance."), (["b#2"], "They sting.")],
        [(["a#1", "b#2"], "Both hold."), (["z#9"], "Unknown too.")],
    ]
    assert draft["sources"] == ["A", "B"]
    assert (
        draft["text"] == "Bees\n\nBees are busy. They dance. They sting.\n\nBoth hold. Unknown too."
    )
    review = {"checks": [{"claim_id": "a#1", "status": "verified"}]}
    edited = content.edit(draft, review)
    assert edited["text"] == "Bees\n\nBees are busy. They dance."
    assert [(r["claim_id"], r["status"]) for r in edited["removed_claims"]] == [
        ("b#2", "unchecked"),
        ("b#2", "unchecked"),
        ("z#9", "unchecked"),
    ]


@pytest.mark.parametrize("topic", sorted(corpus.TOPICS))
def test_the_scripted_draft_cites_every_fact_research_finds(topic: str) -> None:
    script = read_script(EXAMPLES / "content_pipeline" / "llm-script.yaml")
    found = corpus.TOPICS[topic]
    rule = next(r for r in script["rules"] if r.get("match") == f"Topic: {found.title}")
    facts = content.extract_facts(found, max_facts=10)
    draft = content.parse_draft(found.title, rule["content"], facts)
    cited = [s for p in draft["paragraphs"] for s in p if s["claim_ids"]]
    assert [s["claim_id"] for s in cited] == [f["id"] for f in facts]
    assert [s["text"] for s in cited] == [f["text"] for f in facts]


def test_readability_counts() -> None:
    stats = content.readability("One two three. Four five!\nSix 2,000 eight-ounce seven?")
    assert stats["word_count"] == 9
    assert stats["sentence_count"] == 3
    assert stats["avg_sentence_length"] == 3.0


@pytest.mark.parametrize(
    ("claim", "status"),
    [
        ("Honeybees fly at about 25 kilometres per hour.", "verified"),
        ("Honeybees fly at about 40 kilometres per hour.", "contradicted"),
        ("Coffee was first discovered in Ethiopia in the 9th century.", "verified"),
        ("Coffee was first discovered in Brazil in the 9th century.", "contradicted"),
        ("Honeybees enjoy jazz music.", "unsupported"),
    ],
)
def test_check_claim(claim: str, status: str) -> None:
    reference = (*corpus.TOPICS["honeybees"].reference, *corpus.TOPICS["coffee"].reference)
    assert content.check_claim(claim, reference)["status"] == status


async def test_content_pipeline_other_topic_by_alias() -> None:
    results = await run_example("content_pipeline", {"topic": "Espresso"})
    assert results["research"]["topic"] == "coffee"
    removed = {r["claim"] for r in results["edit"]["removed_claims"]}
    assert "Coffee was first discovered in Brazil in the 9th century." in removed
    assert "Brazil is the largest coffee producer in the world." in results["edit"]["text"]


async def test_content_pipeline_max_facts_param() -> None:
    definition = workflow("content_pipeline")
    tasks = tuple(
        task.model_copy(update={"params": {"max_facts": 3}}) if task.id == "research" else task
        for task in definition.tasks
    )
    narrowed = definition.model_copy(update={"tasks": tasks})
    results = await run(content.app, narrowed, {"topic": "honeybees"})
    assert len(results["research"]["facts"]) == 3


@pytest.mark.parametrize("data", [{}, {"topic": ""}, {"topic": "volcanoes"}])
async def test_content_pipeline_rejects_bad_topic(data: dict[str, Any]) -> None:
    with pytest.raises(NonRetryableError, match="topic"):
        await run_example("content_pipeline", data)


# --- trading -----------------------------------------------------------------------


def _closes() -> list[float]:
    with (EXAMPLES / "trading" / "prices.csv").open(encoding="utf-8", newline="") as file:
        return [float(row["close"]) for row in csv.DictReader(file)]


async def test_trading_indicators() -> None:
    closes = _closes()
    assert 50 <= len(closes) <= 80
    technical = (await run_example("trading"))["technical"]
    assert 0 <= technical["rsi"] <= 100
    assert technical["sma_short"] == pytest.approx(statistics.fmean(closes[-5:]), abs=1e-3)
    assert technical["sma_long"] == pytest.approx(statistics.fmean(closes[-20:]), abs=1e-3)
    assert technical["daily_volatility"] > 0
    assert technical["annualized_volatility"] == pytest.approx(
        technical["daily_volatility"] * math.sqrt(252), rel=1e-3
    )
    assert technical["last_close"] == closes[-1]
    assert -1 <= technical["score"] <= 1


def test_rsi_extremes() -> None:
    rising = [float(n) for n in range(1, 40)]
    assert trading.rsi(rising) == 100
    assert trading.rsi(rising[::-1]) == 0
    assert trading.rsi([5.0] * 30) == 50
    assert 0 < trading.rsi(_closes()) < 100
    with pytest.raises(ValueError, match="RSI"):
        trading.rsi([1.0, 2.0], 14)


async def test_trading_sentiment_scores_only_the_symbol() -> None:
    sentiment = (await run_example("trading"))["sentiment"]
    assert -1 <= sentiment["score"] <= 1
    assert sentiment["headline_count"] == sum(
        1 for h in trading.load_headlines() if h.symbol == "ACME"
    )
    assert all(-1 <= h["score"] <= 1 for h in sentiment["headlines"])
    assert trading.score_headline("Acme beats forecasts") > 0
    assert trading.score_headline("Acme hit by lawsuit and recall") < 0
    assert trading.score_headline("no fine for Acme") > trading.score_headline("fine for Acme")


async def test_trading_position_respects_risk_budget() -> None:
    data = example_input("trading")
    results = await run_example("trading")
    risk, sizing = results["risk"], results["sizing"]
    assert risk["direction"] in {"long", "short", "flat"}
    assert sizing["shares"] >= 0
    assert isinstance(sizing["shares"], int)
    assert sizing["max_loss"] <= data["capital"] * data["risk_per_trade"] + 1e-9
    assert sizing["notional"] <= data["capital"]
    if risk["direction"] == "long":
        assert risk["stop_price"] < risk["entry_price"]


async def test_the_model_writes_the_desk_a_note_on_the_position() -> None:
    sizing = (await run_example("trading"))["sizing"]
    assert sizing["direction"] == "long"
    assert sizing["note"].startswith("Long: ")
    prompt = trading.note_prompt({"signal": 0.5, "risk_level": "low"}, sizing, "ACME")
    assert "Direction: long" in prompt  # what the script answers by


@given(
    capital=st.floats(min_value=100, max_value=1e9),
    risk_per_trade=st.floats(min_value=0.0001, max_value=0.1),
    entry=st.floats(min_value=0.5, max_value=5000),
    stop_pct=st.floats(min_value=0.001, max_value=0.5),
    direction=st.sampled_from(["long", "short", "flat"]),
    multiplier=st.sampled_from([1.0, 0.6, 0.3, 0.15]),
)
def test_position_never_exceeds_risk_budget(
    capital: float,
    risk_per_trade: float,
    entry: float,
    stop_pct: float,
    direction: str,
    multiplier: float,
) -> None:
    stop = entry * (1 + stop_pct) if direction == "short" else entry * (1 - stop_pct)
    risk = {
        "direction": direction,
        "entry_price": entry,
        "stop_price": stop,
        "risk_multiplier": multiplier,
    }
    sized = trading.size_position(risk, capital=capital, risk_per_trade=risk_per_trade)
    assert sized["shares"] >= 0
    assert sized["shares"] * abs(entry - stop) <= capital * risk_per_trade * (1 + 1e-9)
    assert sized["shares"] * entry <= capital * 0.25 * (1 + 1e-9)
    if direction == "flat":
        assert sized["shares"] == 0


def test_opposing_signals_halve_the_size() -> None:
    technical = {
        "score": 0.9,
        "annualized_volatility": 0.2,
        "daily_volatility": 0.01,
        "last_close": 100.0,
    }
    agree = trading.assess_risk(technical, {"score": 0.5})
    disagree = trading.assess_risk(technical, {"score": -0.5})
    assert agree["direction"] == disagree["direction"] == "long"
    assert disagree["risk_multiplier"] == agree["risk_multiplier"] / 2
    short = trading.assess_risk({**technical, "score": -0.9}, {"score": -0.5})
    assert short["direction"] == "short"
    assert short["stop_price"] > short["entry_price"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"symbol": "ACME"}, "capital"),
        ({"capital": -5}, "capital"),
        ({"capital": "lots"}, "capital"),
        ({"capital": 1000, "risk_per_trade": 0.5}, "risk_per_trade"),
        ({"symbol": "GLOBEX", "capital": 1000}, "symbol"),
    ],
)
async def test_trading_rejects_bad_input(data: dict[str, Any], match: str) -> None:
    with pytest.raises(NonRetryableError, match=match):
        await run_example("trading", data)

"""Customer-service escalation: triage → technical resolution → manager escalation.

Run with ``agenticflow worker --app agenticflow.examples.customer_service.app:app`` and submit
``workflow.yaml`` with an input such as ``input.json``::

    {"customer": "Dana" | {"name": "Dana", ...}, "message": "Our API is down ..."}

Triage and the escalation decision are rules (the pure functions
:func:`classify` and :func:`decide_escalation`); the resolution is a model's
work: ``ctx.run_agent`` lets it search the knowledge base, a tool of the
``kb`` MCP server (:mod:`.kb_server`, started by each worker over stdio), and
write the reply, streamed to whoever watches the workflow as it is written.
The model is the scripted one of ``llm-script.yaml`` unless the workers have
a real one (``AGENTICFLOW_LLM_BASE_URL``; see
:mod:`agenticflow.examples.local_model`), so every run gives the same answer.

The escalation uses tools (``ctx.tools``): it looks up the account's open
tickets with the built-in ``sql_query`` (read-only, parameterised, on a small
SQLite database the example creates), and when it escalates it writes the
case note with ``file_write`` (confined to a notes directory) and pages the
duty manager through ``page_manager``, a tool declared here with its own input
model, permission and rate limit. Its data lives in ``$CUSTOMER_SERVICE_DATA``
(default: ``<tmp>/agenticflow-customer-service``).
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agenticflow import (
    AgentApp,
    NonRetryableError,
    TaskContext,
    ToolBox,
    ToolCall,
    file_tools,
    sql_tool,
    tool,
)
from agenticflow.examples.customer_service.knowledge import (
    KNOWLEDGE_BASE,
    propose_resolution,
    tokenize,
)
from agenticflow.examples.local_model import LocalModel

app = AgentApp("customer-service")
LocalModel.serve(app, Path(__file__).with_name("llm-script.yaml"))
kb = app.mcp(
    "kb",
    command=[sys.executable, "-m", "agenticflow.examples.customer_service.kb_server"],
    agents=["technical_resolution"],
    timeout_s=10,
)
"""The knowledge base's MCP server: its ``search_articles`` tool is the
resolution agent's ``kb__search_articles`` (permission ``mcp:kb``)."""
KB_SEARCH = "kb__search_articles"

RESOLUTION_INSTRUCTIONS = (
    "You are a support engineer. Search the knowledge base for the customer's problem "
    "with the search_articles tool (the triage category, and the words that describe "
    "the problem), then write the body of the reply to the customer: one sentence, "
    "then the article's steps as a numbered list, at most {max_steps}. Plain text; no "
    "greeting, no signature. If no article fits, say that a support engineer will "
    "review the request."
)
"""The resolution agent's instructions (the model's system message)."""

PRIORITIES = ("low", "medium", "high", "critical")
"""Priority levels, lowest first."""

CATEGORY_KEYWORDS: dict[str, dict[str, int]] = {
    "outage": {
        "outage": 4,
        "down": 3,
        "offline": 3,
        "unavailable": 3,
        "unreachable": 3,
        "503": 3,
        "502": 3,
        "500": 2,
        "timeout": 2,
        "timeouts": 2,
        "not loading": 2,
        "cannot access": 3,
        "can't access": 3,
    },
    "billing": {
        "billing": 4,
        "refund": 4,
        "invoice": 3,
        "charged": 3,
        "charge": 3,
        "payment": 3,
        "subscription": 2,
        "card": 2,
        "twice": 1,
        "price": 1,
        "plan": 1,
    },
    "bug": {
        "bug": 4,
        "glitch": 3,
        "crash": 3,
        "crashes": 3,
        "exception": 3,
        "error": 2,
        "errors": 2,
        "broken": 2,
        "wrong": 2,
        "incorrect": 2,
        "fails": 2,
    },
    "how-to": {
        "how do i": 3,
        "how can i": 3,
        "configure": 3,
        "tutorial": 3,
        "how to": 2,
        "set up": 2,
        "setup": 2,
        "guide": 2,
        "documentation": 2,
        "where": 1,
    },
}
"""Weighted keywords (single words or phrases) per category."""

CATEGORY_ORDER = ("outage", "bug", "billing", "how-to")
"""Tie-break order: the more severe category wins a tie."""

BASE_PRIORITY = {"outage": "high", "bug": "medium", "billing": "medium", "how-to": "low"}
"""Priority of each category before urgency is taken into account."""

URGENCY_KEYWORDS = frozenset(
    {"urgent", "urgently", "asap", "immediately", "critical", "emergency", "production"}
)
"""Words that raise the priority by one level."""

NEGATIVE_WORDS = {
    "unacceptable": 3,
    "furious": 3,
    "worst": 3,
    "hate": 3,
    "angry": 2,
    "terrible": 2,
    "awful": 2,
    "frustrated": 2,
    "frustrating": 2,
    "ridiculous": 2,
    "disappointed": 2,
    "useless": 2,
    "losing": 2,
    "again": 1,
}
"""Sentiment lexicon, negative side (word → weight)."""

POSITIVE_WORDS = {
    "great": 2,
    "love": 2,
    "appreciate": 2,
    "happy": 2,
    "awesome": 2,
    "excellent": 2,
    "thanks": 1,
    "thank": 1,
}
"""Sentiment lexicon, positive side (word → weight)."""

NEGATIONS = frozenset({"not", "no", "never", "don't", "isn't", "wasn't", "aren't"})
"""Words that flip the sentiment of the word right after them."""

SLA_BY_PRIORITY = {
    "critical": "1 hour",
    "high": "4 hours",
    "medium": "1 business day",
    "low": "2 business days",
}
"""Promised response time per priority."""


def _count_phrase(normalized: str, phrase: str) -> int:
    return len(re.findall(rf"(?<![a-z0-9']){re.escape(phrase)}(?![a-z0-9'])", normalized))


def score_categories(message: str) -> tuple[dict[str, int], list[str]]:
    """Keyword score of every category, and the keywords that matched."""
    normalized = " ".join(tokenize(message))
    scores: dict[str, int] = {}
    matched: list[str] = []
    for category in CATEGORY_ORDER:
        total = 0
        for keyword, weight in CATEGORY_KEYWORDS[category].items():
            hits = _count_phrase(normalized, keyword)
            if hits:
                total += hits * weight
                matched.append(keyword)
        scores[category] = total
    return scores, matched


def score_sentiment(message: str) -> float:
    """Sentiment in [-1, 1] from the word lexicon, with simple negation handling."""
    positive = negative = 0
    previous = ""
    for token in tokenize(message):
        weight = POSITIVE_WORDS.get(token, 0) - NEGATIVE_WORDS.get(token, 0)
        if previous in NEGATIONS:
            weight = -weight
        if weight > 0:
            positive += weight
        else:
            negative -= weight
        previous = token
    if positive + negative == 0:
        return 0.0
    return round((positive - negative) / (positive + negative), 3)


def sentiment_label(score: float) -> str:
    """``negative``, ``neutral`` or ``positive`` for a score in [-1, 1]."""
    if score <= -0.25:
        return "negative"
    if score >= 0.25:
        return "positive"
    return "neutral"


def classify(message: str) -> dict[str, Any]:
    """Triage a message: category, priority, urgency and sentiment, by rules."""
    scores, matched = score_categories(message)
    best = max(CATEGORY_ORDER, key=lambda c: (scores[c], -CATEGORY_ORDER.index(c)))
    category = best if scores[best] > 0 else "general"
    tokens = set(tokenize(message))
    urgent = bool(tokens & URGENCY_KEYWORDS)
    level = PRIORITIES.index(BASE_PRIORITY.get(category, "low"))
    if urgent:
        level = min(level + 1, len(PRIORITIES) - 1)
    sentiment = score_sentiment(message)
    return {
        "category": category,
        "category_scores": scores,
        "matched_keywords": matched,
        "priority": PRIORITIES[level],
        "urgent": urgent,
        "sentiment": sentiment_label(sentiment),
        "sentiment_score": sentiment,
    }


def decide_escalation(
    triage: Mapping[str, Any],
    resolution: Mapping[str, Any],
    *,
    customer: str,
    min_confidence: float = 0.6,
    open_tickets: int = 0,
) -> dict[str, Any]:
    """Decide whether a manager takes the case, and write the reply to the customer.

    ``open_tickets``: the account's other open tickets; two or more escalate.
    A case not escalated is answered with the resolution's ``draft`` (the
    model's reply) when it has one, else with the article's steps."""
    priority = str(triage["priority"])
    sentiment = str(triage["sentiment"])
    confidence = float(resolution["confidence"])
    reasons: list[str] = []
    if confidence < min_confidence:
        reasons.append(f"resolution confidence {confidence:.2f} is below {min_confidence:.2f}")
    if priority == "critical":
        reasons.append("critical priority")
    elif priority == "high" and sentiment == "negative":
        reasons.append("high priority with negative sentiment")
    if open_tickets >= 2:
        reasons.append(f"repeat contact: {open_tickets} other open tickets on the account")
    escalate = bool(reasons)
    sla = SLA_BY_PRIORITY.get(priority, SLA_BY_PRIORITY["low"])
    steps = [str(step) for step in resolution.get("steps", [])]
    lines = [f"Hi {customer},"]
    if sentiment == "negative":
        lines.append("I'm sorry for the trouble this has caused you.")
    if escalate:
        lines.append(
            f"I have escalated your case to the manager on duty, who will contact you within {sla}."
        )
        if steps:
            lines.append(f"In the meantime: {steps[0]}")
    else:
        draft = str(resolution.get("draft") or "").strip()
        if draft:  # the model's reply, grounded in the article it found
            lines.append(draft)
        else:
            lines.append(f"Here is how to resolve this ({resolution.get('title', 'support')}):")
            lines.extend(f"{n}. {step}" for n, step in enumerate(steps, start=1))
        lines.append(f"If this does not help, reply and we will get back to you within {sla}.")
    return {
        "escalate": escalate,
        "reasons": reasons,
        "assigned_to": "duty-manager" if escalate else "support-agent",
        "priority": priority,
        "sla": sla,
        "response": "\n".join(lines),
    }


def customer_name(value: Any) -> str:
    """The customer's display name from a string or a mapping with a ``name``."""
    if isinstance(value, Mapping):
        value = value.get("name")
    if not isinstance(value, str) or not value.strip():
        raise NonRetryableError(
            "input 'customer' must be a non-empty name or a mapping with a 'name'"
        )
    return value.strip()


def _require_message(ctx: TaskContext) -> str:
    message = ctx.input.get("message")
    if not isinstance(message, str) or not message.strip():
        raise NonRetryableError("input 'message' is required and must be a non-empty string")
    return message


def _dependency(ctx: TaskContext, task_id: str) -> Mapping[str, Any]:
    result = ctx.inputs.get(task_id)
    if not isinstance(result, Mapping):
        raise NonRetryableError(
            f"task {ctx.task_id!r} needs the result of task {task_id!r}; "
            "check depends_on in the workflow"
        )
    return result


# --- tools of the escalation ---------------------------------------------------------

DATA_DIR = Path(
    os.environ.get(
        "CUSTOMER_SERVICE_DATA", Path(tempfile.gettempdir()) / "agenticflow-customer-service"
    )
)
"""Where the example keeps its ticket database, case notes and pager log."""

TICKETS = [
    ("T-1001", "acme-retail", "open", "Checkout page slow during peak hours"),
    ("T-1002", "acme-retail", "open", "Webhook deliveries delayed"),
    ("T-1003", "acme-retail", "closed", "Invoice address wrong"),
    ("T-2001", "globex", "open", "CSV export dates in wrong timezone"),
]
"""The seed tickets: (id, account, status, subject)."""


def ensure_data(directory: Path) -> Path:
    """Create the ticket database and the notes directory if missing (atomic:
    several worker processes may start at once); returns the database path."""
    (directory / "notes").mkdir(parents=True, exist_ok=True)
    database = directory / "tickets.db"
    if database.exists():
        return database
    fd, draft = tempfile.mkstemp(dir=directory, suffix=".db")
    os.close(fd)
    with sqlite3.connect(draft) as conn:
        conn.execute(
            "CREATE TABLE tickets (id TEXT PRIMARY KEY, account TEXT, status TEXT, subject TEXT)"
        )
        conn.executemany("INSERT INTO tickets VALUES (?, ?, ?, ?)", TICKETS)
    conn.close()
    os.replace(draft, database)
    return database


class Page(BaseModel):
    """Input of ``page_manager``."""

    manager: str = Field(min_length=1, max_length=64)
    customer: str = Field(min_length=1)
    priority: Literal["low", "medium", "high", "critical"]
    reason: str = Field(min_length=1, max_length=500)


@tool(permissions={"pager:send"}, rate_limit="30/min", timeout_s=10)
def page_manager(params: Page, call: ToolCall) -> dict[str, Any]:
    """Page the manager on duty about a case (appends to the pager log).

    The call's idempotency key goes with the page, so a pager that deduplicates
    on it never pages twice for one escalation."""
    line = f"{call.key}\t{params.manager}\t{params.priority}\t{params.customer}\t{params.reason}\n"
    with (DATA_DIR / "pager.log").open("a", encoding="utf-8") as log:
        log.write(line)
    return {"paged": params.manager, "page_id": call.key}


query_tickets = sql_tool(ensure_data(DATA_DIR), tables=["tickets"], max_rows=50)
_, write_note = file_tools(DATA_DIR / "notes", max_bytes=64 * 1024)


def _tools(ctx: TaskContext) -> ToolBox:
    if ctx.tools is None:
        raise NonRetryableError(f"agent {ctx.agent!r} runs without its tools")
    return ctx.tools


def case_note(customer: str, account: str | None, decision: Mapping[str, Any]) -> str:
    """The escalation's case note (Markdown)."""
    reasons = "\n".join(f"- {reason}" for reason in decision["reasons"])
    return (
        f"# Escalation: {customer}\n\n"
        f"Account: {account or 'unknown'}  \nPriority: {decision['priority']} "
        f"(SLA {decision['sla']})\n\n## Why\n\n{reasons}\n\n"
        f"## Reply sent\n\n{decision['response']}\n"
    )


@app.agent(capabilities=["triage"])
async def triage(ctx: TaskContext) -> dict[str, Any]:
    """Classify the customer's message: category, priority and sentiment."""
    message = _require_message(ctx)
    if "customer" not in ctx.input:
        raise NonRetryableError("input 'customer' is required")
    return {"customer": customer_name(ctx.input["customer"]), **classify(message)}


def resolution_prompt(triaged: Mapping[str, Any], message: str) -> str:
    """What the resolution agent's model is asked: the triage and the message."""
    return (
        f"Category: {triaged['category']}\nPriority: {triaged['priority']}\n"
        f"Sentiment: {triaged['sentiment']}\nCustomer message:\n{message}"
    )


def found_article(tool_calls: list[Any], *, max_steps: int) -> dict[str, Any]:
    """The article of the model's last knowledge-base search (no search: none found)."""
    searches = [c for c in tool_calls if c.name == KB_SEARCH and isinstance(c.result, Mapping)]
    if not searches:
        return propose_resolution("none", "", max_steps=max_steps)
    article = dict(searches[-1].result)
    article["steps"] = [str(step) for step in article.get("steps", [])][:max_steps]
    return article


@app.agent(capabilities=["technical_resolution"], permissions={"mcp:kb"})
async def technical_resolution(ctx: TaskContext) -> dict[str, Any]:
    """A model searches the knowledge base (an MCP tool) and drafts the reply, streamed."""
    triaged = _dependency(ctx, "triage")
    max_steps = ctx.params.get("max_steps", 3)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise NonRetryableError("param 'max_steps' must be a positive integer")
    result = await ctx.run_agent(
        None,  # the configured model (the example's scripted one by default)
        RESOLUTION_INSTRUCTIONS.format(max_steps=max_steps),
        resolution_prompt(triaged, _require_message(ctx)),
        tools=[KB_SEARCH],
        max_steps=4,
        stream=True,  # the reply's tokens reach watchers as the model writes them
        tool_errors="tell_model",  # a search it got wrong: the model is told, and may retry
    )
    return {
        **found_article(result.tool_calls, max_steps=max_steps),
        "draft": result.output,
        "searches": [c.arguments for c in result.tool_calls if c.name == KB_SEARCH],
        "model_steps": result.steps,
    }


@app.agent(
    capabilities=["manager_escalation"],
    tools=[query_tickets, write_note, page_manager],
    permissions={"db:read", "fs:write", "pager:send"},
)
async def manager_escalation(ctx: TaskContext) -> dict[str, Any]:
    """Escalate risky cases to a manager (case note, page) and write the final response."""
    triaged = _dependency(ctx, "triage")
    resolution = _dependency(ctx, "resolution")
    min_confidence = ctx.params.get("min_confidence", 0.6)
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, int | float):
        raise NonRetryableError("param 'min_confidence' must be a number")
    if not 0.0 <= min_confidence <= 1.0:
        raise NonRetryableError("param 'min_confidence' must be between 0 and 1")
    tools = _tools(ctx)
    customer = ctx.input.get("customer")
    account = customer.get("account") if isinstance(customer, Mapping) else None
    open_tickets = 0
    if isinstance(account, str) and account:
        found = await tools.call(
            "sql_query",
            query="SELECT count(*) FROM tickets WHERE account = ? AND status = 'open'",
            params=[account],
        )
        open_tickets = int(found["rows"][0][0])
    decision = decide_escalation(
        triaged,
        resolution,
        customer=str(triaged["customer"]),
        min_confidence=float(min_confidence),
        open_tickets=open_tickets,
    )
    decision["open_tickets"] = open_tickets
    if decision["escalate"]:
        note = await tools.call(
            "file_write",
            path=f"{ctx.workflow_id}-{ctx.task_id}.md",
            content=case_note(str(triaged["customer"]), account, decision),
        )
        page = await tools.call(
            "page_manager",
            manager=decision["assigned_to"],
            customer=str(triaged["customer"]),
            priority=decision["priority"],
            reason="; ".join(decision["reasons"]),
        )
        decision["case_note"] = note["path"]
        decision["page_id"] = page["page_id"]
    return decision


__all__ = [
    "DATA_DIR",
    "KNOWLEDGE_BASE",
    "app",
    "case_note",
    "classify",
    "customer_name",
    "decide_escalation",
    "ensure_data",
    "found_article",
    "kb",
    "page_manager",
    "propose_resolution",
    "resolution_prompt",
    "score_sentiment",
]

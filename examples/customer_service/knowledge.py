"""The customer-service knowledge base, and the search the ``kb`` MCP server serves.

Pure data and functions: :mod:`.kb_server` serves :func:`propose_resolution` as an
MCP tool (``search_articles``); the app's triage uses :func:`tokenize`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOKEN_RE = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits and apostrophes)."""
    return _TOKEN_RE.findall(text.lower().replace("\u2019", "'"))


@dataclass(frozen=True, slots=True)
class Article:
    """One knowledge-base article: when it applies and what it tells the customer."""

    id: str
    title: str
    keywords: frozenset[str]
    steps: tuple[str, ...]
    base_confidence: float


KNOWLEDGE_BASE: dict[str, tuple[Article, ...]] = {
    "outage": (
        Article(
            id="KB-101",
            title="Service outage or degraded API",
            keywords=frozenset({"down", "outage", "api", "503", "502", "dashboard", "timeout"}),
            steps=(
                "Check status.example.com for an open incident and subscribe to updates.",
                "Retry failed requests with exponential backoff; writes are idempotent.",
                "Send us the request ids of failing calls so we can trace them.",
            ),
            base_confidence=0.55,
        ),
        Article(
            id="KB-102",
            title="Cannot sign in or access the workspace",
            keywords=frozenset({"login", "sign", "access", "password", "sso", "locked"}),
            steps=(
                "Reset your password from the sign-in page.",
                "If you use SSO, ask your identity-provider admin to re-sync your account.",
            ),
            base_confidence=0.7,
        ),
    ),
    "billing": (
        Article(
            id="KB-201",
            title="Duplicate charge or refund request",
            keywords=frozenset({"charged", "twice", "duplicate", "refund", "invoice"}),
            steps=(
                "Open Billing → Invoices and note the ids of the duplicate charges.",
                "We reverse duplicate charges within 5 business days of the request.",
            ),
            base_confidence=0.85,
        ),
        Article(
            id="KB-202",
            title="Update a payment method",
            keywords=frozenset({"card", "payment", "expired", "update", "declined"}),
            steps=(
                "Open Billing → Payment methods and add the new card.",
                "Set it as default; the failed invoice is retried automatically.",
            ),
            base_confidence=0.9,
        ),
    ),
    "bug": (
        Article(
            id="KB-301",
            title="Export produces a wrong or corrupted file",
            keywords=frozenset({"export", "csv", "wrong", "corrupted", "incorrect", "file"}),
            steps=(
                "Update to the latest release, which fixes known CSV encoding issues.",
                "Export again with 'UTF-8 with BOM' selected.",
            ),
            base_confidence=0.7,
        ),
        Article(
            id="KB-302",
            title="Application crashes",
            keywords=frozenset({"crash", "crashes", "start", "launch", "freeze", "exception"}),
            steps=(
                "Clear the application cache and restart.",
                "Attach the crash log from Settings → Diagnostics to this ticket.",
            ),
            base_confidence=0.65,
        ),
    ),
    "how-to": (
        Article(
            id="KB-401",
            title="Configure webhooks",
            keywords=frozenset({"webhook", "webhooks", "configure", "setup", "notifications"}),
            steps=(
                "Open Settings → Integrations → Webhooks and add your endpoint URL.",
                "Choose the events to send and use 'Send test event' to verify.",
            ),
            base_confidence=0.9,
        ),
        Article(
            id="KB-402",
            title="Export your data",
            keywords=frozenset({"export", "download", "csv", "data", "backup"}),
            steps=(
                "Open Settings → Data → Export and pick CSV or JSON.",
                "Large exports are emailed to you as a download link.",
            ),
            base_confidence=0.9,
        ),
    ),
}
"""Built-in knowledge base, by triage category."""


def propose_resolution(category: str, message: str, *, max_steps: int = 3) -> dict[str, Any]:
    """Pick the best knowledge-base article for the category and rate the match."""
    articles = KNOWLEDGE_BASE.get(category, ())
    if not articles:
        return {
            "article_id": None,
            "title": "No matching article",
            "steps": ["A support engineer will review your request."],
            "matched_terms": [],
            "confidence": 0.1,
        }
    tokens = set(tokenize(message))
    # max() keeps the first of equal scores, so article order breaks ties.
    article = max(articles, key=lambda a: len(a.keywords & tokens))
    matched = sorted(article.keywords & tokens)
    confidence = article.base_confidence * (0.6 + 0.4 * min(len(matched), 2) / 2)
    return {
        "article_id": article.id,
        "title": article.title,
        "steps": list(article.steps[:max_steps]),
        "matched_terms": matched,
        "confidence": round(confidence, 3),
    }


__all__ = ["KNOWLEDGE_BASE", "Article", "propose_resolution", "tokenize"]

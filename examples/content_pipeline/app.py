"""Content pipeline: research → (write ∥ fact-check) → edit.

Run with ``agenticflow worker --app agenticflow.examples.content_pipeline.app:app`` and submit
``workflow.yaml`` with an input such as ``input.json``: ``{"topic": "honeybees"}``.

Research pulls candidate claims about the topic out of the bundled corpus
(:mod:`agenticflow.examples.content_pipeline.corpus`); a model writes the draft
from them (``ctx.llm``, streamed to whoever watches as it is written), citing
each claim's id in brackets, while the fact-checker compares each claim with
the trusted reference facts; a person approves the draft (through the HTTP
gateway, or ``agenticflow approve``); the editor keeps only sentences whose
claims were verified and reports readability statistics.

The model is the scripted one of ``llm-script.yaml`` unless the workers have
a real one (``AGENTICFLOW_LLM_BASE_URL``; see
:mod:`agenticflow.examples.local_model`), so every run gives the same article.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agenticflow import AgentApp, NonRetryableError, TaskContext
from agenticflow.examples.content_pipeline.corpus import TOPICS, Topic
from agenticflow.examples.local_model import LocalModel

app = AgentApp("content-pipeline")
LocalModel.serve(app, Path(__file__).with_name("llm-script.yaml"))

WRITER_INSTRUCTIONS = (
    "You write short, plain articles from research notes. State only the facts given, "
    "in their own words where you can, and end each sentence that states one with the "
    "fact's id in square brackets, e.g. 'Bees dance [bee-handbook#2].'. Open with one "
    "sentence that introduces the topic; then paragraphs of about {per_paragraph} "
    "sentences, separated by blank lines. No title, no headings."
)
"""The writer's instructions (the model's system message)."""

STOPWORDS = frozenset(
    {
        "a",
        "about",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "per",
        "than",
        "that",
        "the",
        "their",
        "there",
        "these",
        "this",
        "those",
        "to",
        "up",
        "was",
        "were",
        "when",
        "where",
        "which",
        "who",
        "with",
        "roughly",
        "approximately",
        "almost",
        "nearly",
        "much",
        "many",
    }
)
"""Words ignored when comparing a claim with a reference fact."""

OPINION_WORDS = frozenset(
    {"fascinating", "amazing", "wonderful", "beautiful", "best", "worst", "love", "think"}
)
"""A sentence with one of these words is an opinion, not a claim to report."""

SUPPORT_THRESHOLD = 0.6
"""Share of a claim's content words a reference fact must contain to support it."""

_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['\u2019,.-][A-Za-z0-9]+)*")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_CITATION_RE = re.compile(r"\s*\[(?P<ids>[A-Za-z0-9_.#:, -]+)\]")
_CITATION_AFTER_STOP_RE = re.compile(r"([.!?])((?:\s*\[[A-Za-z0-9_.#:, -]+\])+)")


def find_topic(name: str) -> Topic | None:
    """The corpus topic called ``name`` (by key or alias, any case), or None."""
    wanted = " ".join(re.findall(r"[a-z0-9]+", name.lower()))
    for topic in TOPICS.values():
        names = (topic.key, topic.title, *topic.aliases)
        if wanted in {" ".join(re.findall(r"[a-z0-9]+", n.lower())) for n in names}:
            return topic
    return None


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ``.``, ``!`` or ``?`` followed by whitespace."""
    return [s.strip() for s in _SENTENCE_END_RE.split(text.strip()) if s.strip()]


def words(text: str) -> list[str]:
    """Words of ``text``; numbers such as ``2,000`` and words such as ``8-ounce`` count once."""
    return _WORD_RE.findall(text)


def numbers(text: str) -> set[str]:
    """The numbers mentioned in ``text``, without thousands separators."""
    return {n.replace(",", "") for n in _NUMBER_RE.findall(text)}


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased, lightly stemmed non-stopwords of ``text``, without bare numbers."""
    tokens = re.findall(r"[a-z0-9]+", text.lower().replace("'s", "").replace("\u2019s", ""))
    return {_stem(t) for t in tokens if t not in STOPWORDS and not t.isdigit()}


def names(text: str) -> set[str]:
    """Capitalised words after the first word of ``text``: the names it mentions."""
    tokens = re.findall(r"[A-Za-z]+", text)
    return {t.lower() for t in tokens[1:] if t[0].isupper()}


def extract_facts(topic: Topic, *, max_facts: int = 10) -> list[dict[str, Any]]:
    """Candidate claims about ``topic`` from its documents, opinions left out.

    Sentences are ranked by how much they say (a number counts 2, each topic
    keyword 1); the best ``max_facts`` are returned in document order, each with
    a stable id ``<document>#<n>`` and its source.
    """
    candidates: list[tuple[int, int, dict[str, Any]]] = []
    for document in topic.documents:
        for n, sentence in enumerate(split_sentences(document.text), start=1):
            lowered = {w.lower() for w in words(sentence)}
            if lowered & OPINION_WORDS:
                continue
            score = (2 if numbers(sentence) else 0) + len(lowered & topic.keywords)
            fact = {
                "id": f"{document.id}#{n}",
                "text": sentence,
                "document": document.id,
                "source": document.source,
            }
            candidates.append((score, len(candidates), fact))
    best = sorted(candidates, key=lambda c: (-c[0], c[1]))[:max_facts]
    return [fact for _, _, fact in sorted(best, key=lambda c: c[1])]


def compose_draft(
    title: str, facts: Sequence[Mapping[str, Any]], *, sentences_per_paragraph: int = 3
) -> dict[str, Any]:
    """A draft article: an intro, then the claims in paragraphs, each sentence tagged.

    Every sentence carries the ``claim_id`` of the fact it states (None for the
    writer's own connecting sentences) so the editor can drop unverified claims.
    """
    intro = {"claim_id": None, "text": f"Here is what our research found about {title.lower()}."}
    paragraphs: list[list[dict[str, Any]]] = [[intro]]
    for start in range(0, len(facts), sentences_per_paragraph):
        chunk = facts[start : start + sentences_per_paragraph]
        paragraphs.append([{"claim_id": f["id"], "text": str(f["text"])} for f in chunk])
    sources = sorted({str(f["source"]) for f in facts})
    return {
        "title": title,
        "paragraphs": paragraphs,
        "sources": sources,
        "text": render(title, paragraphs),
    }


def writer_prompt(title: str, facts: Sequence[Mapping[str, Any]]) -> str:
    """What the writer's model is asked: the topic and the facts, each with its id."""
    return "\n".join([f"Topic: {title}", "Facts:", *(f"[{f['id']}] {f['text']}" for f in facts)])


def parse_draft(title: str, text: str, facts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The model's draft as paragraphs of sentences, each tagged with the claims it cites.

    A sentence's ``claim_ids`` are the ids in its brackets (``[a#1]`` or
    ``[a#1, b#2]``, before or after the full stop), removed from its text;
    ``claim_id`` is the first (None for the writer's own connecting sentences).
    ``sources`` are those of the cited facts known to the research.
    """
    known = {str(f["id"]): f for f in facts}
    paragraphs: list[list[dict[str, Any]]] = []
    cited: set[str] = set()
    for block in re.split(r"\n\s*\n", text.strip()):
        # "Fact. [id]" reads as "Fact [id].": the id stays with its sentence.
        joined = _CITATION_AFTER_STOP_RE.sub(r"\2\1", " ".join(block.split()))
        sentences = []
        for sentence in split_sentences(joined):
            ids = [
                part.strip()
                for found in _CITATION_RE.finditer(sentence)
                for part in found["ids"].split(",")
                if part.strip()
            ]
            plain = _CITATION_RE.sub("", sentence).strip()
            if plain:
                sentences.append(
                    {"claim_id": ids[0] if ids else None, "claim_ids": ids, "text": plain}
                )
                cited.update(ids)
        if sentences:
            paragraphs.append(sentences)
    sources = sorted({str(known[i]["source"]) for i in cited if i in known})
    return {
        "title": title,
        "paragraphs": paragraphs,
        "sources": sources,
        "text": render(title, paragraphs),
    }


def render(title: str, paragraphs: Iterable[Iterable[Mapping[str, Any]]]) -> str:
    """The article as plain text: the title, then one line per paragraph."""
    body = [" ".join(str(s["text"]) for s in paragraph) for paragraph in paragraphs]
    return "\n\n".join([title, *[p for p in body if p]])


def check_claim(claim: str, reference: Iterable[str]) -> dict[str, Any]:
    """Compare one claim with the reference facts.

    The claim is ``verified`` when a reference fact contains at least
    :data:`SUPPORT_THRESHOLD` of its content words and every number and name it
    mentions; ``contradicted`` when such a fact exists but a number or a name
    differs; ``unsupported`` when no reference fact covers it.
    """
    claim_words = content_words(claim)
    best_fact: str | None = None
    best_score = 0.0
    for fact in reference:
        score = len(claim_words & content_words(fact)) / max(len(claim_words), 1)
        if score > best_score:
            best_fact, best_score = fact, score
    if best_fact is None or best_score < SUPPORT_THRESHOLD:
        return {"status": "unsupported", "support": None, "score": round(best_score, 3)}
    fact_tokens = {w.lower() for w in re.findall(r"[A-Za-z]+", best_fact)}
    mismatch = sorted(numbers(claim) - numbers(best_fact)) + sorted(names(claim) - fact_tokens)
    return {
        "status": "contradicted" if mismatch else "verified",
        "support": best_fact,
        "score": round(best_score, 3),
        "mismatch": mismatch,
    }


def fact_check(facts: Iterable[Mapping[str, Any]], reference: Sequence[str]) -> dict[str, Any]:
    """Check every fact against the reference; counts by status and one row per claim."""
    checks = [
        {
            "claim_id": str(f["id"]),
            "claim": str(f["text"]),
            **check_claim(str(f["text"]), reference),
        }
        for f in facts
    ]
    counts = {
        status: sum(1 for c in checks if c["status"] == status)
        for status in ("verified", "contradicted", "unsupported")
    }
    return {"checks": checks, **counts}


def count_syllables(word: str) -> int:
    """A rough English syllable count: vowel groups, minus a silent final ``e``."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if not letters:
        return 1
    groups = len(re.findall(r"[aeiouy]+", letters))
    if letters.endswith("e") and not letters.endswith(("le", "ee")) and groups > 1:
        groups -= 1
    return max(groups, 1)


def readability(text: str) -> dict[str, Any]:
    """Word count, sentence count, average sentence length and Flesch reading ease."""
    sentences = [s for line in text.splitlines() for s in split_sentences(line)]
    all_words = words(text)
    n_words, n_sentences = len(all_words), max(len(sentences), 1)
    syllables = sum(count_syllables(w) for w in all_words)
    avg_sentence = n_words / n_sentences
    flesch = 206.835 - 1.015 * avg_sentence - 84.6 * (syllables / max(n_words, 1))
    return {
        "word_count": n_words,
        "sentence_count": len(sentences),
        "avg_sentence_length": round(avg_sentence, 2),
        "avg_word_length": round(sum(len(w) for w in all_words) / max(n_words, 1), 2),
        "flesch_reading_ease": round(flesch, 1),
    }


def edit(draft: Mapping[str, Any], review: Mapping[str, Any]) -> dict[str, Any]:
    """Merge draft and fact-check: drop every claim not verified, then measure the text."""
    status = {str(c["claim_id"]): c for c in review.get("checks", [])}
    kept: list[list[dict[str, Any]]] = []
    removed: list[dict[str, Any]] = []
    kept_claims = 0
    for paragraph in draft["paragraphs"]:
        sentences: list[dict[str, Any]] = []
        for sentence in paragraph:
            ids = [str(i) for i in sentence.get("claim_ids") or []]
            if not ids and sentence.get("claim_id") is not None:
                ids = [str(sentence["claim_id"])]
            if not ids:
                sentences.append(dict(sentence))
                continue
            # A sentence stays only when every claim it cites was verified.
            failed = [i for i in ids if status.get(i, {}).get("status") != "verified"]
            if not failed:
                sentences.append(dict(sentence))
                kept_claims += 1
            else:
                check = status.get(failed[0], {})
                removed.append(
                    {
                        "claim_id": failed[0],
                        "claim": sentence["text"],
                        "status": check.get("status", "unchecked"),
                        "correction": check.get("support"),
                    }
                )
        if sentences:
            kept.append(sentences)
    title = str(draft["title"])
    body = "\n\n".join(" ".join(str(s["text"]) for s in p) for p in kept)
    return {
        "title": title,
        "text": render(title, kept),
        "kept_claims": kept_claims,
        "removed_claims": removed,
        "stats": readability(body),
    }


def _dependency(ctx: TaskContext, task_id: str) -> Mapping[str, Any]:
    result = ctx.inputs.get(task_id)
    if not isinstance(result, Mapping):
        raise NonRetryableError(
            f"task {ctx.task_id!r} needs the result of task {task_id!r}; "
            "check depends_on in the workflow"
        )
    return result


def _positive_int_param(ctx: TaskContext, name: str, default: int) -> int:
    value = ctx.params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NonRetryableError(f"param {name!r} must be a positive integer, got {value!r}")
    return value


def _topic_of(name: Any) -> Topic:
    if not isinstance(name, str) or not name.strip():
        raise NonRetryableError("input 'topic' is required and must be a non-empty string")
    topic = find_topic(name)
    if topic is None:
        known = ", ".join(sorted(TOPICS))
        raise NonRetryableError(f"no material on topic {name!r}; known topics: {known}")
    return topic


@app.agent(capabilities=["research"])
async def researcher(ctx: TaskContext) -> dict[str, Any]:
    """Extract candidate claims about ``input.topic`` from the bundled corpus."""
    topic = _topic_of(ctx.input.get("topic"))
    facts = extract_facts(topic, max_facts=_positive_int_param(ctx, "max_facts", 10))
    return {"topic": topic.key, "title": topic.title, "facts": facts}


@app.agent(capabilities=["write"])
async def writer(ctx: TaskContext) -> dict[str, Any]:
    """A model writes the draft from the research facts, citing them; streamed as written."""
    found = _dependency(ctx, "research")
    title = ctx.params.get("title") or f"{found['title']}: what the research says"
    per_paragraph = _positive_int_param(ctx, "sentences_per_paragraph", 3)
    if ctx.llm is None:
        raise NonRetryableError(f"agent {ctx.agent!r} runs without a model (ctx.llm)")
    text = await ctx.llm.complete(
        writer_prompt(str(found["title"]), found["facts"]),
        system=WRITER_INSTRUCTIONS.format(per_paragraph=per_paragraph),
        stream=True,  # the draft's tokens reach watchers as the model writes them
    )
    return parse_draft(str(title), text, found["facts"])


@app.agent(capabilities=["fact_check"])
async def fact_checker(ctx: TaskContext) -> dict[str, Any]:
    """Verify each research claim against the topic's reference facts."""
    found = _dependency(ctx, "research")
    topic = _topic_of(found.get("topic"))
    return fact_check(found["facts"], topic.reference)


@app.agent(capabilities=["edit"])
async def editor(ctx: TaskContext) -> dict[str, Any]:
    """Remove unverified claims from the draft and compute readability statistics.

    The workflow gates this task on a reviewer's approval of the first draft;
    the reviewer's comment and any feedback sent to the workflow are kept as
    editor notes."""
    edited = edit(_dependency(ctx, "write"), _dependency(ctx, "fact_check"))
    notes = [ctx.approval.comment] if ctx.approval and ctx.approval.comment else []
    edited["reviewed_by"] = ctx.approval.by if ctx.approval else None
    edited["editor_notes"] = [*notes, *ctx.feedback]
    return edited


__all__ = [
    "app",
    "check_claim",
    "compose_draft",
    "edit",
    "extract_facts",
    "fact_check",
    "find_topic",
    "parse_draft",
    "readability",
    "writer_prompt",
]

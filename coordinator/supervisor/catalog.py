"""What the cluster can do right now: capabilities of the live agents.

Built from the agent registry (KV ``<prefix>_agents``: each worker's agents,
their capabilities, description, load, heartbeat and open circuit breakers).
The planners match a query's words against it, and the supervisor checks a
plan against it before anything runs: a step no live agent serves is
reported up front, not discovered as an ``unserved`` task later.

Registry entries are written by workers, so their text is untrusted:
:meth:`Catalog.from_registry` keeps only capability names a workflow can use
(``ID_RE``), and agent names, descriptions and breaker names cleaned and cut
(:func:`clean_text`, :data:`MAX_DESCRIPTION`); the ``llm`` planner quotes them
as data. Which entries are read at all is decided in one place,
:func:`agenticflow.coordinator.supervisor.supervisor.registry_entries`.

Matching is plain and deterministic: words are lower-cased and reduced to a
rough stem (``summarising`` and ``summaries`` both become ``summar``), a
synonym table maps common verbs onto each other (``condense`` → summarize),
and a capability scores for each query word found in its name (3), its
agents' names (2) or their descriptions (1), plus one for the first word (the
verb, usually). Equal scores go to the healthier and less loaded capability.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agenticflow.shared.wire.ids import ID_RE

_WORD = re.compile(r"[a-z0-9]+")

MAX_DESCRIPTION = 300
"""Characters of one registry description the catalog keeps (more is cut)."""
MAX_DESCRIPTIONS = 3
"""Distinct descriptions kept per capability (agents serving it may differ)."""
MAX_NAME = 64
"""Characters of an agent or breaker name the catalog keeps."""
MAX_BREAKERS = 10
"""Open breaker names kept per capability."""


def clean_text(text: object, limit: int) -> str:
    """Registry text made safe to show and to quote: control, format (zero-width,
    bidi override), private-use and unassigned characters dropped, whitespace
    runs made one space, and at most ``limit`` characters (``...`` marks a cut)."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in str(text)
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: max(limit - 3, 0)] + "..."


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "then",
        "to",
        "of",
        "in",
        "on",
        "for",
        "with",
        "from",
        "by",
        "at",
        "as",
        "is",
        "are",
        "be",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "me",
        "my",
        "our",
        "your",
        "we",
        "you",
        "i",
        "please",
        "can",
        "could",
        "would",
        "should",
        "will",
        "just",
        "into",
        "about",
        "also",
        "after",
        "before",
        "finally",
        "first",
        "next",
        "last",
        "all",
        "each",
        "every",
        "some",
        "any",
        "do",
        "does",
        "did",
        "make",
        "get",
        "give",
        "have",
        "has",
        "using",
        "use",
        "via",
        "over",
        "under",
        "than",
        "so",
        "very",
    ]
)
"""Words that say nothing about which agent is needed."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    "summarize": ("summarise", "summary", "summaries", "condense", "tldr", "digest", "brief"),
    "research": ("investigate", "find", "look", "lookup", "search", "gather", "explore"),
    "write": ("draft", "compose", "author", "article", "essay", "blog", "post"),
    "edit": ("revise", "polish", "proofread", "tighten", "rewrite"),
    "translate": ("translation", "french", "german", "spanish", "english", "language"),
    "analyze": ("analyse", "analysis", "assess", "evaluate", "examine", "study"),
    "classify": ("categorize", "categorise", "triage", "label", "sort", "route"),
    "review": ("check", "verify", "audit", "inspect", "validate"),
    "fact_check": ("fact", "verify", "claims", "accuracy"),
    "respond": ("reply", "answer", "respond", "response"),
    "fetch": ("download", "retrieve", "read", "load", "scrape"),
    "report": ("reporting", "present", "chart", "dashboard"),
    "price": ("prices", "quote", "market", "stock", "ticker"),
    "sentiment": ("mood", "opinion", "tone", "headlines", "news"),
    "risk": ("exposure", "limits", "var"),
    "trade": ("buy", "sell", "order", "execute"),
}
"""Common words for what agents do, by the capability word they usually mean."""

_SUFFIXES = ("isations", "izations", "isation", "ization", "ising", "izing", "ised", "ized",
             "ises", "izes", "ise", "ize", "ations", "ation", "ings", "ing", "ies", "ied",
             "ers", "er", "es", "ed", "s", "y", "e")  # fmt: skip


def stem(word: str) -> str:
    """A rough, deterministic stem: enough to join ``summaries`` and ``summarize``."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """The meaningful words of ``text`` (lower case, stopwords removed), in order."""
    return [w for w in _WORD.findall(text.lower().replace("_", " ")) if w not in STOPWORDS]


_SYNONYM_STEMS: dict[str, set[str]] = {}
for _canonical, _alternatives in SYNONYMS.items():
    for _word in (*_canonical.split("_"), *_alternatives):
        _SYNONYM_STEMS.setdefault(stem(_word), set()).update(
            stem(part) for part in _canonical.split("_")
        )


def expand(stems: Iterable[str]) -> set[str]:
    """The stems plus the canonical stems their synonyms stand for."""
    out = set(stems)
    for s in list(out):
        out |= _SYNONYM_STEMS.get(s, set())
    return out


@dataclass(frozen=True, slots=True)
class CapabilityInfo:
    """One capability as the live registry shows it."""

    name: str
    agents: tuple[str, ...] = ()
    description: str = ""
    instances: int = 0
    """Live agent instances serving it (suspended ones excluded)."""
    busy: int = 0
    workers: int = 0
    open_breakers: tuple[str, ...] = ()

    @property
    def load(self) -> float:
        """Share of its live instances busy with a task (1.0 when none is live)."""
        return self.busy / self.instances if self.instances else 1.0

    @property
    def healthy(self) -> bool:
        """Live instances and no open circuit breaker."""
        return self.instances > 0 and not self.open_breakers

    def summary(self) -> str:
        """``3 instances on 2 workers, load 33%`` (+ open breakers)."""
        text = (
            f"{self.instances} instance{'s' * (self.instances != 1)} on {self.workers} "
            f"worker{'s' * (self.workers != 1)}, load {self.load:.0%}"
        )
        if self.open_breakers:
            text += f", open breakers: {', '.join(self.open_breakers)}"
        return text


@dataclass(frozen=True, slots=True)
class Match:
    """A capability that fits some words, with its score and the reason."""

    capability: str
    score: int
    matched: tuple[str, ...]
    info: CapabilityInfo

    @property
    def why(self) -> str:
        """Why it was chosen, for the plan's reader."""
        return f"matched {', '.join(repr(w) for w in self.matched)}; {self.info.summary()}"


@dataclass(slots=True)
class _Index:
    name: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    description: set[str] = field(default_factory=set)


class Catalog:
    """The capabilities a planner may use, with their live state."""

    def __init__(self, capabilities: Iterable[CapabilityInfo]) -> None:
        self.capabilities: dict[str, CapabilityInfo] = {c.name: c for c in capabilities}
        self._index: dict[str, _Index] = {}
        for info in self.capabilities.values():
            index = _Index()
            index.name = {stem(w) for w in words(info.name)} | {stem(info.name)}
            index.agents = {stem(w) for agent in info.agents for w in words(agent)}
            index.description = {stem(w) for w in words(info.description)}
            self._index[info.name] = index

    @classmethod
    def from_registry(
        cls, entries: Iterable[Mapping[str, Any]], *, now_ns: int, ttl_s: float
    ) -> Catalog:
        """Fold registry entries into capabilities: entries older than ``ttl_s``
        and private routes (forks) are left out."""
        horizon = now_ns - int(ttl_s * 1e9)
        found: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if entry.get("role", "worker") != "worker" or entry.get("route"):
                continue
            if _int(entry.get("heartbeat")) < horizon:
                continue
            live = _int(entry.get("instances")) - _int(entry.get("suspended"))
            capabilities = entry.get("capabilities", ())
            for capability in capabilities if isinstance(capabilities, (list, tuple)) else ():
                # A name a workflow could not use is no capability (and no prompt
                # text); a private route's ``name~route`` fails the pattern too.
                if not isinstance(capability, str) or not ID_RE.match(capability):
                    continue
                slot = found.setdefault(
                    capability,
                    {"agents": set(), "descriptions": [], "instances": 0, "busy": 0,
                     "workers": set(), "breakers": set()},
                )  # fmt: skip
                slot["agents"].add(clean_text(entry.get("agent", ""), MAX_NAME))
                description = clean_text(entry.get("description", "") or "", MAX_DESCRIPTION)
                descriptions: list[str] = slot["descriptions"]
                if (
                    description
                    and description not in descriptions
                    and len(descriptions) < MAX_DESCRIPTIONS
                ):
                    descriptions.append(description)
                slot["instances"] += max(live, 0)
                slot["busy"] += _int(entry.get("load"))
                slot["workers"].add(str(entry.get("worker", "")))
                breakers = entry.get("open_breakers", ()) or ()
                if isinstance(breakers, (list, tuple)):
                    slot["breakers"].update(
                        clean_text(b, MAX_NAME) for b in breakers[:MAX_BREAKERS]
                    )
        return cls(
            CapabilityInfo(
                name=name,
                agents=tuple(sorted(a for a in slot["agents"] if a)),
                description=" ".join(slot["descriptions"]),
                instances=slot["instances"],
                busy=min(slot["busy"], slot["instances"]),
                workers=len(slot["workers"]),
                open_breakers=tuple(sorted(b for b in slot["breakers"] if b)[:MAX_BREAKERS]),
            )
            for name, slot in sorted(found.items())
        )

    @classmethod
    def offline(cls, capabilities: Mapping[str, str]) -> Catalog:
        """A catalog from names and descriptions alone (no live state), for
        planning without a cluster (``--dry-run --offline``) and for tests."""
        return cls(
            CapabilityInfo(name=name, description=text, instances=1, workers=1)
            for name, text in capabilities.items()
        )

    def permitted(self, allowed: Callable[[str], bool]) -> Catalog:
        """The capabilities ``allowed`` accepts (e.g. those a principal may submit)."""
        return Catalog(info for info in self.capabilities.values() if allowed(info.name))

    def __contains__(self, capability: object) -> bool:
        return capability in self.capabilities

    def __len__(self) -> int:
        return len(self.capabilities)

    def names(self) -> list[str]:
        """Capability names, sorted."""
        return sorted(self.capabilities)

    def match(self, text: str, *, limit: int = 3) -> list[Match]:
        """The capabilities that best fit ``text``, best first (empty: none fits)."""
        query = words(text)
        stems = {stem(w): w for w in query}
        wanted = expand(stems)
        # The first word is usually the verb: what the part asks an agent to do.
        lead = expand([stem(query[0])]) if query else set()
        matches: list[Match] = []
        for name, index in self._index.items():
            score = 0
            matched: list[str] = []
            for s in wanted:
                weight = (
                    3 if s in index.name else 2 if s in index.agents else
                    1 if s in index.description else 0
                )  # fmt: skip
                if weight:
                    score += weight + (1 if s in lead else 0)
                    matched.append(stems.get(s) or _origin(s, stems))
            if score:
                info = self.capabilities[name]
                matches.append(Match(name, score, tuple(sorted(set(matched))), info))
        matches.sort(key=_rank)
        return matches[:limit]

    def best(self, text: str) -> Match | None:
        """The best capability for ``text``, or None when nothing fits."""
        found = self.match(text, limit=1)
        return found[0] if found else None

    def unserved(self, capabilities: Iterable[str]) -> list[str]:
        """Those of ``capabilities`` no live, healthy-enough agent serves."""
        return sorted(
            c for c in set(capabilities)
            if c not in self.capabilities or self.capabilities[c].instances == 0
        )  # fmt: skip

    def describe(self) -> list[dict[str, Any]]:
        """Capabilities as plain data (for an LLM prompt or ``--json``)."""
        return [
            {
                "capability": info.name,
                "agents": list(info.agents),
                "description": info.description,
                "instances": info.instances,
                "load": round(info.load, 3),
                "open_breakers": list(info.open_breakers),
            }
            for info in self.capabilities.values()
        ]


def _int(value: object) -> int:
    """A registry number, or 0 for anything else (a writer's junk counts as nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if abs(value) < 2**63 else 0


def _origin(stem_: str, stems: Mapping[str, str]) -> str:
    """The query word whose synonym produced ``stem_``."""
    for s, word in stems.items():
        if stem_ in _SYNONYM_STEMS.get(s, ()):
            return word
    return stem_


def _rank(match: Match) -> tuple[Any, ...]:
    info = match.info
    return (-match.score, not info.healthy, info.load, -info.instances, match.capability)


__all__ = [
    "MAX_DESCRIPTION",
    "STOPWORDS",
    "SYNONYMS",
    "CapabilityInfo",
    "Catalog",
    "Match",
    "clean_text",
    "expand",
    "stem",
    "words",
]

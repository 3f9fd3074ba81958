"""The fenced code blocks of the docs (docs/**/*.md) and the README.

Every block is one of:

- ``python``: run, in page order, in one namespace per page (top-level
  ``await`` allowed); a block whose first line is ``# name.py`` is also
  written to ``name.py`` in the page's directory and imported from there;
- ``bash``: run with ``bash -euo pipefail`` in the page's directory against
  the page's cluster (``AGENTICFLOW_NATS_URL`` and ``AGENTICFLOW_PREFIX`` set);
- ``yaml`` / ``toml`` / ``json``: written (first line ``# path``) and loaded as
  what they are: a workflow, a task list, a template, an RBAC policy;
- ``mermaid`` (a picture) and ``text`` (output, layouts): not code.

A block that cannot run says why in an HTML comment on the line before it,
``<!-- skip: reason -->``; its ``agenticflow`` command lines are still parsed
against the real CLI (commands and options must exist).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

RUN = frozenset({"python", "bash", "yaml", "toml", "json"})
NOT_CODE = frozenset({"mermaid", "text"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    language: str
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file the block stands for, from its first line (``# name.ext``)."""
        first = self.code.split("\n", 1)[0].strip()
        match = re.fullmatch(r"#\s*([\w./-]+\.(?:py|ya?ml|toml|json))", first)
        return match.group(1) if match else None


def pages() -> list[Path]:
    """The README and every Markdown page of the docs, in a stable order."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of one page, in order (blocks nested in a list too)."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match.group("fence"), match.group("indent")
        language = match.group("info").strip().split(" ")[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            text = lines[j]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = _SKIP.search(before)
        found.append(
            Block(
                page=page,
                line=i + 1,
                language=language,
                code="\n".join(body) + "\n",
                skip=skip.group("reason") if skip else None,
            )
        )
        i = j + 1
    return found

"""The security guide's threat model names, for each attack, a test that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "security.md"


def _threat_model() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("## Threat model")
    return text[start : text.index("\n## ", start)]


def test_every_attack_in_the_threat_model_table_names_an_existing_test() -> None:
    text = _threat_model()
    table = text[text.index("| attack | defence | test |") :].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    assert len(rows) >= 10
    cited = [re.findall(r"`(tests/[^`:]+)(?:::(\w+))?`", row) for row in rows]
    assert all(cited), "every row cites a test"
    for path, name in (ref for refs in cited for ref in refs):
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name}"


def test_the_guide_says_plainly_what_default_mode_does_not_protect() -> None:
    text = _threat_model()
    assert "Default mode protects against accidents, not attackers" in text
    assert "anyone who can publish" in text


def test_every_test_the_security_section_cites_exists() -> None:
    # The whole guide is the security section.
    security = GUIDE.read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[^`:\s]+\.py)(?:::(\w+))?`", security)
    assert len(cited) >= 60
    missing = []
    for path, name in cited:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and not re.search(
            rf"^(async )?def {name}\(", file.read_text(encoding="utf-8"), re.M
        ):
            missing.append(f"{path}::{name}")
    assert not missing, missing
    # Every table of defences cites a test in each row.
    for table in re.findall(r"(?:^\|.*\|\n)+", security, re.M):
        rows = table.splitlines()
        if "test" not in rows[0].lower() and "proved by" not in rows[0].lower():
            continue
        for row in rows[2:]:
            assert "`tests/" in row, f"a row cites no test: {row[:120]}"

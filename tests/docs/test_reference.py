"""The generated reference pages cover everything they are generated from.

The pages are built by docs/_scripts/reference.py (a mkdocs hook) when the
site is built; these tests call the same functions without mkdocs.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import typer.main

import agenticflow
from agenticflow.cli import app
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import PAYLOADS, EventType
from tests.docs.blocks import DOCS


def _reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_reference", DOCS / "_scripts" / "reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path] if path else []
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            found += _command_paths(sub, (*path, name))
    return found


def test_the_cli_page_has_every_command_with_its_options() -> None:
    page = _reference().cli_page()
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert len(paths) >= 40
    for path in paths:
        assert f"`agenticflow {' '.join(path)}` {{ #{'-'.join(path)} }}" in page, path
    for option in ("`--nats <str>`", "`-o, --output <table|json|jsonl>`", "`--save-as <str>`"):
        assert option in page, option


def test_the_configuration_page_has_every_setting_and_its_variable() -> None:
    page = _reference().configuration_page()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in page, name
    assert "`AGENTICFLOW_NATS_URL`" in page
    assert "`AGENTICFLOW_LLM_BASE_URL`, `OPENAI_BASE_URL`" in page
    # A field's docstring is its description.
    assert "Subject prefix; lets deployments share a NATS account." in page


def test_the_events_page_has_every_event_type_and_payload_field() -> None:
    page = _reference().events_page()
    for event_type in EventType:
        assert f"## `{event_type.value}`" in page, event_type
        for field in PAYLOADS[event_type].model_fields:
            assert f"| `{field}` |" in page, (event_type, field)


def test_the_api_page_documents_every_public_name() -> None:
    page = _reference().api_page()
    exported = [name for name in agenticflow.__all__ if not name.startswith("__")]
    assert len(exported) >= 80
    for name in exported:
        assert f".{name}\n" in page, name

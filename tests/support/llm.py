"""The local LLM stub (``agenticflow llm-stub``) as a fixture: one real server
process per session; each test loads its own script (which resets the counts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agenticflow.cluster.llm_stub import LLMStubProcess


@pytest.fixture(scope="session")
def llm_stub() -> Iterator[LLMStubProcess]:
    """The stub server, running for the session on a free 127.0.0.1 port."""
    with LLMStubProcess() as stub:
        yield stub


__all__ = ["llm_stub"]

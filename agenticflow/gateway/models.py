"""The request bodies the gateway takes (validated by pydantic; their JSON
schemas go into the OpenAPI document). Unknown fields are refused, so a typo
is a 422 that names it rather than an option silently ignored."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agenticflow.shared.wire.events import Modification

_TEXT = 64 << 10
"""Longest reason, comment or feedback (characters)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartRequest(_Body):
    """Start a workflow: a definition (as in a workflow file) or a template by name."""

    workflow: dict[str, Any] | None = Field(
        default=None, description="A workflow definition: {name, tasks: [...]}, as in a file."
    )
    template: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="The name of a template (`agenticflow templates`); input fills it.",
    )
    input: dict[str, Any] = Field(default_factory=dict, description="The workflow's input.")
    id: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The workflow id; starting again with the same id starts nothing new.",
    )
    route: str | None = Field(
        default=None, max_length=64, description="Run its tasks on the workers of this route."
    )

    @model_validator(mode="after")
    def _one_source(self) -> StartRequest:
        if (self.workflow is None) == (self.template is None):
            raise ValueError("give exactly one of 'workflow' (a definition) or 'template'")
        return self


class Reason(_Body):
    """Cancel or terminate: why (recorded with the intervention)."""

    reason: str = Field(default="", max_length=_TEXT)


class Empty(_Body):
    """Pause or resume: nothing to say (the body may be left out)."""


class Resume(_Body):
    """Resume a paused workflow; or re-run a failed one, keeping its completed
    results; with ``from_task`` also re-run that task and everything after it
    (a completed workflow too)."""

    from_task: str | None = Field(default=None, min_length=1, max_length=128)


class Fork(_Body):
    """Fork a workflow: a new one reusing every result completed up to stream
    sequence ``at`` (default: its end) runs the rest."""

    at: int | None = Field(default=None, ge=1, le=2**63 - 1)


class Login(_Body):
    """A gateway token (``agenticflow gateway-token``), exchanged for a console session."""

    token: str = Field(min_length=1, max_length=512)


class Feedback(_Body):
    """Feedback for the running handlers (``ctx.feedback``) and every later task."""

    text: str = Field(min_length=1, max_length=_TEXT)


class Decision(_Body):
    """Approve or reject the task waiting for approval."""

    task: str = Field(min_length=1, max_length=128)
    comment: str = Field(default="", max_length=_TEXT)


class Modify(_Body):
    """Change tasks that have not started."""

    changes: Modification


class Signal(_Body):
    """A signal's data (the result of the ``wait: {signal: NAME}`` node it completes)."""

    data: Any = None


__all__ = [
    "Decision",
    "Empty",
    "Feedback",
    "Modify",
    "Reason",
    "Resume",
    "Signal",
    "StartRequest",
]

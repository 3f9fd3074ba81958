"""Payload schema versions, and the migrations that read old payloads.

Every event payload type has a current version (sent in the ``AF-Schema``
header) and a pydantic model. When a change to a payload is not merely
additive (a field that old payloads lack and that no default can stand in
for, a renamed or reshaped field), its version goes up and a migration from
the previous version is registered here::

    @REGISTRY.migration(EventType.TASK_STARTED, 1)
    def _started_v1(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "instance": f"{data.get('worker', '')}.{data.get('agent', '')}"}

Whoever reads events back (replay, a recovering coordinator, the client)
gets them at the current version: the codec runs the migrations from the
stored version up, one step at a time. A version newer than this node's, or
older than any migration reaches, is refused with
:class:`UnknownSchemaVersionError` naming both, never guessed at: upgrade
the readers (coordinators, then the CLI) before the writers (workers).

History:

- ``task.started`` v2 (2026-11): adds ``instance``, the agent instance that
  ran the attempt. v1 payloads name the worker and agent only; the migration
  names the agent's registry entry on that worker (``worker.agent``).
- ``workflow.cancelled`` v1 (2026-12, issue 21): new, the end of a cooperative
  cancel. ``workflow.intervention_requested`` gains the actions ``cancel`` and
  ``terminate`` (``abort`` stays terminate's name): additive, no version change;
  a coordinator of an older version refuses them as unknown interventions.
- ``task.completed``, ``task.failed``, ``task.approval_requested`` (2026-12,
  issue 23): gain ``instance`` (default empty), so that the per-task moves of
  agent instances need no events of their own (see
  :func:`~agenticflow.shared.wire.events.agent_moves`): additive, no version
  change.
- ``task.wait_elapsed`` v1 (2026-12, issue 24): new, a ``wait:`` node's timer.
  ``workflow.intervention_requested`` gains the action ``signal`` and the
  fields ``signal`` and ``data``: additive, no version change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from agenticflow.shared.errors import MalformedMessageError, UnknownSchemaVersionError
from agenticflow.shared.wire.events import PAYLOADS, EventType, Payload

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload of version N (plain data) into one of version N + 1."""


class SchemaRegistry:
    """Current model and version of each payload kind, and the migrations up to it."""

    def __init__(self) -> None:
        self._current: dict[str, tuple[int, type[BaseModel]]] = {}
        self._migrations: dict[tuple[str, int], Migration] = {}

    def register(self, kind: str, model: type[BaseModel], *, version: int = 1) -> None:
        """Declare ``model`` as version ``version`` (the current one) of ``kind``."""
        self._current[kind] = (version, model)

    def migration(self, kind: str, from_version: int) -> Callable[[Migration], Migration]:
        """Decorator: register the migration of ``kind`` from ``from_version`` to the next."""

        def add(fn: Migration) -> Migration:
            self._migrations[(kind, from_version)] = fn
            return fn

        return add

    def version(self, kind: str) -> int:
        """The current version of ``kind``."""
        return self._current[kind][0]

    def oldest(self, kind: str) -> int:
        """The oldest version of ``kind`` that migrations reach the current one from."""
        version = self.version(kind)
        while (kind, version - 1) in self._migrations:
            version -= 1
        return version

    def read(self, kind: str, version: int, data: dict[str, Any]) -> BaseModel:
        """Validate ``data`` stored at ``version`` as the current model of ``kind``,
        migrating it first. Raises UnknownSchemaVersionError or MalformedMessageError
        (pydantic's ValidationError when the migrated data does not fit)."""
        current, model = self._current[kind]
        if version > current:
            raise UnknownSchemaVersionError(
                f"{kind} payload has schema version {version}, newer than this node "
                f"understands ({current}): upgrade it"
            )
        if version < current and version < self.oldest(kind):
            raise UnknownSchemaVersionError(
                f"{kind} payload has schema version {version}, older than any this node "
                f"migrates from ({self.oldest(kind)})"
            )
        for step in range(version, current):
            try:
                data = self._migrations[(kind, step)](dict(data))
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedMessageError(
                    f"{kind} payload of schema version {step} cannot be migrated: {exc!r}"
                ) from exc
        return model.model_validate(data)

    def kinds(self) -> list[str]:
        """Every registered kind."""
        return sorted(self._current)


REGISTRY = SchemaRegistry()
"""The payload schemas of this version of AgenticFlow."""

for _type, _model in PAYLOADS.items():
    REGISTRY.register(_type.value, _model)

REGISTRY.register(EventType.TASK_STARTED.value, PAYLOADS[EventType.TASK_STARTED], version=2)


@REGISTRY.migration(EventType.TASK_STARTED.value, 1)
def _task_started_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "instance": f"{data.get('worker', '')}.{data.get('agent', '')}"}


def read_payload(event_type: EventType, version: int, data: dict[str, Any]) -> Payload:
    """An event payload stored at ``version``, as the current model."""
    payload = REGISTRY.read(event_type.value, version, data)
    assert isinstance(payload, Payload)
    return payload


__all__ = [
    "REGISTRY",
    "Migration",
    "SchemaRegistry",
    "read_payload",
]

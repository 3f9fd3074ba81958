"""The framework's own audit records: what coordinators and workers append to
their chains in ``<PREFIX>_AUDIT`` (see :mod:`shared.audit`).

- at start, ``keys.loaded``: which signing key, trust store and data key the
  process runs with, and whether an RBAC policy is loaded;
- workers: every tool call (``tool.called``) and every refused one
  (``tool.denied``, with the reason), and every task message they reject;
- coordinators: every intervention applied or refused, every approval decided,
  every request refused by the policy (``access.denied``) and every event
  rejected (forged, replayed, malformed).

An :class:`Auditor` never fails the work it records: a record that cannot be
stored (the server unreachable past the publish retries) is logged as an
error, and the chain goes on from its stored head.
"""

from __future__ import annotations

from typing import Any

import structlog

from shared.audit import AuditKind, AuditLog
from shared.errors import AgenticFlowError
from shared.security import Seal
from shared.transport import Bus

log = structlog.get_logger("agenticflow.audit")


def key_summary(seal: Seal) -> dict[str, Any]:
    """What a process's seal holds, without a secret."""
    return {
        "signing_key": seal.identity.kid if seal.identity else None,
        "principal": seal.signer or None,
        "trusted_keys": sorted(seal.trust.keys) if seal.trust else [],
        "data_key": seal.data_keys.current if seal.data_keys else None,
        "data_keys": sorted(seal.data_keys.keys) if seal.data_keys else [],
    }


class Auditor:
    """One process's audit chain, for the framework's records."""

    def __init__(self, bus: Bus, node: str) -> None:
        self.bus = bus
        self.node = node
        self._log: AuditLog | None = None

    async def start(self, **detail: Any) -> None:
        """Open the chain and record ``keys.loaded``."""
        try:
            self._log = await AuditLog.open(self.bus, self.bus.seal, self.node)
        except AgenticFlowError as exc:
            log.error("audit trail unavailable", node=self.node, error=str(exc))
            return
        await self.note(AuditKind.KEYS_LOADED, **key_summary(self.bus.seal), **detail)

    async def note(
        self,
        kind: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Append a record; logs (never raises) when it cannot be stored."""
        if self._log is None:
            return
        try:
            await self._log.record(kind, workflow_id=workflow_id, task_id=task_id, **detail)
        except AgenticFlowError as exc:
            log.error("audit record not stored", kind=kind, workflow_id=workflow_id, error=str(exc))

    async def close(self) -> None:
        """Close the chain (idempotent)."""
        if self._log is not None:
            await self._log.close()
            self._log = None


__all__ = ["Auditor", "key_summary"]

"""The framework's own audit records: what coordinators and workers append to
their chains in ``<PREFIX>_AUDIT`` (see :mod:`agenticflow.shared.security.audit`).

- at start, ``keys.loaded``: which signing key, trust store and data key the
  process runs with, and whether an RBAC policy is loaded;
- workers: every tool call (``tool.called``) and every refused one
  (``tool.denied``, with the reason), and every task message they reject;
- coordinators: every intervention applied or refused, every approval decided,
  every request refused by the policy (``access.denied``) and every event
  rejected (forged, replayed, malformed).

Each chain's head is anchored, signed, in the anchors stream, so that
``agenticflow audit verify`` can tell a truncated, deleted or re-created audit
stream without a local file (see :mod:`agenticflow.shared.security.audit`).

An :class:`Auditor` never fails the work it records: a record that cannot be
stored (the server unreachable past the publish retries) is logged as an
error, and the chain goes on from its stored head.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import AgenticFlowError
from agenticflow.shared.security.audit import AuditKind, AuditLog
from agenticflow.shared.security.seal import Seal

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
    """One process's audit chain, for the framework's records, and its anchors.

    The chain's head is anchored (:meth:`AuditLog.anchor`) at start, at most
    every ``Settings.audit_anchor_interval_s`` after a record (by a timer this
    object owns), and at close.
    """

    def __init__(self, bus: Bus, node: str) -> None:
        self.bus = bus
        self.node = node
        self._log: AuditLog | None = None
        self._interval = bus.settings.audit_anchor_interval_s
        self._anchored_at = 0.0
        self._timer: asyncio.Task[None] | None = None

    async def start(self, *, role: str, **detail: Any) -> None:
        """Open the chain (scope: ``Settings.audit_scope``, else ``role``), record
        ``keys.loaded`` and anchor the head."""
        scope = self.bus.settings.audit_scope or role
        try:
            self._log = await AuditLog.open(self.bus, self.bus.seal, self.node, scope=scope)
        except AgenticFlowError as exc:
            log.error("audit trail unavailable", node=self.node, error=str(exc))
            return
        try:
            await self._log.record(
                AuditKind.KEYS_LOADED, role=role, **key_summary(self.bus.seal), **detail
            )
        except AgenticFlowError as exc:
            # Not one slow failure per record from here on: the trail is off, loudly.
            log.error(
                "audit trail unavailable: its first record was not stored (an audit stream "
                "created by an earlier version may need an admin to update it: start a "
                "coordinator once with the admin's credentials)",
                chain=self._log.chain,
                error=str(exc),
            )
            self._log = None
            return
        await self._anchor()

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
            log.error(
                "audit record not stored",
                chain=self._log.chain,
                kind=kind,
                workflow_id=workflow_id,
                error=str(exc),
            )
            return
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(
                self._anchor_later(), name=f"audit-anchor-{self.node}"
            )

    async def _anchor_later(self) -> None:
        """Anchor once the interval since the last anchor is over."""
        await asyncio.sleep(max(0.0, self._anchored_at + self._interval - time.monotonic()))
        await self._anchor()

    async def _anchor(self) -> None:
        if self._log is None:
            return
        self._anchored_at = time.monotonic()
        try:
            await self._log.anchor()
        except AgenticFlowError as exc:
            log.error("audit chain head not anchored", chain=self._log.chain, error=str(exc))

    async def close(self) -> None:
        """Anchor the head, then close the chain (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._log is not None:
            await self._anchor()
            await self._log.close()
            self._log = None


__all__ = ["Auditor", "key_summary"]

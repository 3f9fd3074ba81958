"""Process identities: one key pair per worker process, issued by a coordinator.

Without them every worker process of a group signs as the group's principal
(``worker``), so any one of them could settle another's task or write another's
audit chain. With keys configured, a worker asks at start-up
(:func:`take_process_identity`): it makes a fresh key pair and sends the public
half, signed with its group key, to ``<prefix>.identity.issue``; a coordinator
(:func:`serve_identities`) checks the request and issues a
:class:`~agenticflow.shared.security.seal.Certificate` for principal ``<group principal>/<node>``,
once per node id (the first request wins: the certificate is created in KV
``<prefix>_identities``, which only coordinators write). From then on the worker
signs its messages with the process key and sends the certificate with them.
KV records stay signed by the group key.

A worker with keys therefore needs a coordinator to start: it retries for
``Settings.identity_timeout_s`` (default 120 s), then stops with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import structlog

from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import (
    ConfigError,
    MalformedMessageError,
    StateConflictError,
    TransportError,
)
from agenticflow.shared.resilience import backoff_delay
from agenticflow.shared.security.seal import CERT_TTL_S, Certificate

log = structlog.get_logger("agenticflow.identity")

_ASK_TIMEOUT_S = 2.0


async def take_process_identity(bus: Bus, node: str, *, timeout: float) -> Certificate | None:
    """Ask a coordinator for this process's identity and sign with it from now
    on; None when the process has no signing key or no trust store (nothing to
    certify). Raises ConfigError when a coordinator refuses, TransportError
    when none answers within ``timeout``."""
    seal = bus.seal
    if seal.identity is None or seal.trust is None or seal.certificate is not None:
        return seal.certificate
    request, fresh = seal.identity_request(node)
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        try:
            answer = json.loads(
                await bus.request(bus.names.identity_subject, request, timeout=_ASK_TIMEOUT_S)
            )
        except TimeoutError:
            attempts += 1
            delay = backoff_delay(attempts, initial_s=0.1, backoff=2.0, max_s=2.0, jitter=False)
            if time.monotonic() + delay > deadline:
                raise TransportError(
                    f"no coordinator issued this worker's process identity within {timeout:g}s "
                    "(a worker with keys needs a running coordinator to start; see "
                    "AGENTICFLOW_IDENTITY_TIMEOUT_S)"
                ) from None
            await asyncio.sleep(delay)
            continue
        except ValueError as exc:
            raise TransportError(f"unreadable answer to the identity request: {exc}") from exc
        if not isinstance(answer, dict) or "cert" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise ConfigError(f"the coordinator refused this worker's process identity: {error}")
        certificate = Certificate.decode(str(answer["cert"]))
        seal.verify_certificate(fresh.kid, certificate)
        seal.adopt(fresh, certificate)
        log.info("process identity taken", principal=certificate.principal, kid=fresh.kid)
        return certificate


async def serve_identities(bus: Bus) -> Callable[[], Awaitable[None]] | None:
    """Issue process identities (a coordinator with its key and a trust store);
    returns what stops it, None when this coordinator cannot issue."""
    seal = bus.seal
    if seal.identity is None or seal.trust is None:
        return None
    store = await bus.kv(bus.names.identities_bucket, ttl=float(CERT_TTL_S))

    async def answer(request: bytes) -> bytes:
        try:
            certificate = seal.issue(request)
        except (MalformedMessageError, ConfigError) as exc:
            log.warning("process identity refused", error=str(exc))
            return json.dumps({"error": str(exc)}).encode()
        encoded = certificate.encode()
        try:
            await bus.kv_put_cas(store, certificate.node, encoded.encode(), 0)
        except StateConflictError:
            stored = await bus.kv_read(store, certificate.node)
            known = Certificate.decode(stored.value.decode()) if stored is not None else None
            if known is None or known.public != certificate.public:
                log.warning("process identity refused: node id taken", node=certificate.node)
                return json.dumps(
                    {"error": f"node {certificate.node!r} has a process identity already"}
                ).encode()
            encoded = stored.value.decode() if stored is not None else encoded  # a retry
        log.info("process identity issued", principal=certificate.principal)
        return json.dumps({"cert": encoded}).encode()

    return await bus.serve(bus.names.identity_subject, answer, queue="identity-issuers")


__all__ = ["serve_identities", "take_process_identity"]

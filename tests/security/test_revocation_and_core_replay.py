"""Secrets (issue 20, item 9): revocation applies live, core messages are replay-checked.

- ``agenticflow keys revoke`` rewrites ``trust.json``; every node re-reads it
  (at most a second later) and refuses the revoked key from then on, without a
  restart.
- Events that arrive over core subscriptions (interventions to workers,
  auction calls) have no stored time: a copy captured and re-sent is refused
  whether it comes late (signed long ago) or at once (a second copy).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.shared.errors import (
    InterventionRefusedError,
    MalformedMessageError,
    ReplayedMessageError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import add_identity, init_keys, revoke
from agenticflow.shared.wire.codec import encode_event
from agenticflow.shared.wire.events import EventType, InterventionRequested
from tests.conftest import unique_prefix
from tests.security.conftest import Target, forged
from tests.security.test_attacks import _listening
from tests.support.natsbus import connected

pytestmark = pytest.mark.timeout(120)


async def test_a_revoked_client_is_refused_without_a_restart(target: Target) -> None:
    if target.keys is None:
        pytest.skip("no keys, nothing to revoke (the default mode trusts the bus)")
    add_identity(target.keys, "eve", "client")
    settings = target.cluster.settings.model_copy(update={"principal": "eve"})
    running = await _listening(target)
    workflow_id = running.workflow_id
    async with connected(settings, name="eve") as bus:
        eve = Client(bus=bus, node_id="eve")

        async def answer() -> str:
            """What the coordinator makes of eve's feedback: ``forbidden`` (her key
            is trusted, RBAC gives her no role) or ``no answer`` (refused at
            the seal: recorded as a rejected message, never an intervention)."""
            try:
                await eve.feedback(workflow_id, "from eve", timeout=3)
            except InterventionRefusedError as exc:
                return exc.code
            except TimeoutError:
                return "no answer"
            return "applied"

        # The control: eve's key, added while the cluster runs, is taken.
        deadline = time.monotonic() + 30
        while (got := await answer()) != "forbidden":
            assert got == "no answer"
            assert time.monotonic() < deadline, "eve's new key was never trusted"
        revoke(target.keys, "eve")
        # Within about a second every node re-reads trust.json: eve is refused.
        deadline = time.monotonic() + 30
        while (got := await answer()) != "no answer":
            assert got == "forbidden"
            assert time.monotonic() < deadline, "the revoked key is still accepted"
        assert await answer() == "no answer"  # and from then on
    await target.client.feedback(workflow_id, "go on")
    state = await target.client.wait(workflow_id, timeout=60)
    assert state.tasks["s"].result["got"] == "go on"


async def test_a_core_message_is_taken_once_and_never_late(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    keys = tmp_path_factory.mktemp("core-keys")
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker")])
    base = Settings(nats_url=nats_server.url, prefix=unique_prefix("core"), security_dir=keys)
    async with (
        connected(base.model_copy(update={"principal": "coordinator"}), name="c") as sender,
        connected(base.model_copy(update={"principal": "worker"}), name="w", role="worker") as bus,
    ):
        inbox: asyncio.Queue[object] = asyncio.Queue()

        async def on_message(msg: object) -> None:
            try:
                inbox.put_nowait(bus.decode_event(msg))  # type: ignore[arg-type]
            except MalformedMessageError as exc:
                inbox.put_nowait(exc)

        event = forged(
            "wf-core",
            EventType.INTERVENTION_REQUESTED,
            InterventionRequested(request_id="r1", action="feedback", by="coordinator"),
            source="coordinator",
        )
        subject, headers, body = encode_event(event, sender.names, seal=sender.seal)
        await bus.nc.subscribe(subject, cb=on_message)  # the workflow's events, no stream
        await bus.nc.flush()
        await sender.nc.publish(subject, body, headers=headers)
        first = await asyncio.wait_for(inbox.get(), 10)
        assert str(getattr(first, "id", "")).startswith(event.id)  # (+ the keyed digest)
        await sender.nc.publish(subject, body, headers=headers)  # the same bytes again
        second = await asyncio.wait_for(inbox.get(), 10)
        assert isinstance(second, ReplayedMessageError)
        assert "received already" in str(second)
        # A message signed long ago (captured, then held back) is refused on arrival.
        late = forged(
            "wf-core",
            EventType.INTERVENTION_REQUESTED,
            InterventionRequested(request_id="r2", action="feedback", by="coordinator"),
            source="coordinator",
        )
        subject_late, headers, plain = encode_event(late, sender.names)
        assert subject_late == subject
        body = sender.seal.close(subject, headers, plain, now_ns=time.time_ns() - 10**12)
        await sender.nc.publish(subject, body, headers=headers)
        third = await asyncio.wait_for(inbox.get(), 10)
        assert isinstance(third, ReplayedMessageError)

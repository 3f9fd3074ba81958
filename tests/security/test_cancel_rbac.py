"""Cancel and terminate go through admission and RBAC like every intervention.

A secure cluster with a policy: the operator may do anything, a commenter may
only comment, a canceller may cancel but not terminate, and a worker process
(a compromised one, holding its group's key) may steer nothing: its signed
request is refused before admission (wrong role for the event). Each refused
attempt leaves the workflow as it was and is recorded once; a malformed
cancel request is rejected as poison. The control: the canceller's cancel and
the operator's terminate are applied.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.transport import connected
from agenticflow.shared.errors import InterventionRefusedError
from agenticflow.shared.wire.codec import encode_event, pack, unpack
from agenticflow.shared.wire.events import (
    EventType,
    InterventionRefused,
    InterventionRequested,
)
from agenticflow.shared.wire.ids import new_workflow_id
from tests.integration.helpers import wf
from tests.security.conftest import Target, _target, attack_keys, forged, settings_as

pytestmark = pytest.mark.timeout(180)

POLICY = """
[roles.operator]
permissions = ["workflow:*"]

[roles.commenter]
permissions = ["workflow:feedback"]

[roles.canceller]
permissions = ["workflow:cancel"]

[principals]
client = ["operator"]
mallory = ["commenter"]
carol = ["canceller"]
"""


@pytest.fixture(scope="module")
async def secure(
    nats_server: NatsServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    principals = [("client", "client"), ("mallory", "client"), ("carol", "client")]
    keys = attack_keys(tmp_path_factory, "cancel-keys", principals, POLICY)
    async for target in _target("secure", nats_server, log_dir, keys):
        yield target


async def running(target: Target) -> str:
    """A workflow whose one task runs until its workflow is cancelled."""
    workflow_id = await target.client.submit_workflow(
        wf({"id": "c", "capability": "cancellable", "params": {"seconds": 120}})
    )
    await target.client.wait_for(
        workflow_id, lambda s: s.tasks["c"].status == TaskStatus.RUNNING, timeout=30
    )
    return workflow_id


def refusals(target: Target, workflow_id: str, action: str) -> list[InterventionRefused]:
    return [
        e.data
        for e in target.seen(workflow_id, EventType.INTERVENTION_REFUSED)
        if isinstance(e.data, InterventionRefused) and e.data.action == action
    ]


async def test_a_principal_without_the_permission_cannot_cancel_or_terminate(
    secure: Target,
) -> None:
    workflow_id = await running(secure)
    before = await secure.client.status(workflow_id)
    async with connected(settings_as(secure, "mallory"), name="mallory") as bus:
        mallory = Client(bus=bus, node_id="mallory")
        for action in ("cancel", "terminate", "abort"):
            with pytest.raises(InterventionRefusedError, match="mallory lacks permission") as no:
                await mallory.intervene(workflow_id, action, reason="mine now")
            assert no.value.code == "forbidden"
    async with connected(settings_as(secure, "carol"), name="carol") as bus:
        carol = Client(bus=bus, node_id="carol")
        with pytest.raises(InterventionRefusedError, match="workflow:terminate") as no:
            await carol.terminate(workflow_id)
        assert no.value.code == "forbidden"
        after = await secure.client.status(workflow_id)
        assert after.status == WorkflowStatus.RUNNING
        assert not after.cancelling
        assert after.tasks == before.tasks
        assert after.interventions == before.interventions
        # Recorded once each (the coordinator's record of the refusal).
        await secure.observer.until(
            lambda _: len(refusals(secure, workflow_id, "terminate")) >= 2, timeout=30
        )
        assert len(refusals(secure, workflow_id, "cancel")) == 1
        assert len(refusals(secure, workflow_id, "terminate")) == 2
        assert len(refusals(secure, workflow_id, "abort")) == 1
        # The control: a canceller may cancel; the task sees it and stops.
        applied = await carol.cancel(workflow_id, "carol stops it")
        assert applied.action == "cancel"
    state = await secure.client.wait(workflow_id, timeout=30)
    assert state.status == WorkflowStatus.CANCELLED
    assert state.reason == "cancelled by carol: carol stops it"


async def test_a_worker_process_cannot_cancel_and_a_malformed_cancel_is_poison(
    secure: Target,
) -> None:
    workflow_id = await running(secure)
    node = f"evil-{new_workflow_id()[-6:]}"
    principal = await secure.process(node)
    request = InterventionRequested(request_id=f"evil-{node}", action="cancel", by=principal)
    first = seq = await secure.publish(
        forged(workflow_id, EventType.INTERVENTION_REQUESTED, request, source=node), as_=node
    )
    # Refused before admission: a worker may not sign a workflow-level event at all.
    rejected = await secure.rejection(seq)
    assert rejected.code == "forged_message"
    assert f"{principal} (worker) may not send 'workflow.intervention_requested'" in (
        rejected.reason
    )
    assert not refusals(secure, workflow_id, "cancel")  # not folded, so no verdict either
    # A cancel whose request id is not one (it would become part of message ids).
    cancel = forged(
        workflow_id,
        EventType.INTERVENTION_REQUESTED,
        InterventionRequested(request_id="placeholder", action="cancel", by="client"),
        source="client",
    )
    _, _, plain = encode_event(cancel, secure.bus.names)
    body = unpack(plain)
    body["data"]["request_id"] = "no spaces\nallowed"
    seq = await secure.publish(cancel, as_="client", body=pack(body))
    rejected = await secure.rejection(seq)
    assert rejected.code == "malformed_message"
    once = [
        e
        for e in secure.seen(workflow_id, EventType.MESSAGE_REJECTED)
        if getattr(e.data, "stream_seq", None) in (seq, first)
    ]
    assert len(once) == 2  # each attempt recorded once
    state = await secure.client.status(workflow_id)
    assert state.status == WorkflowStatus.RUNNING
    assert not state.cancelling
    # The control: the operator terminates it.
    await secure.client.terminate(workflow_id, "cleanup")
    assert (await secure.client.wait(workflow_id, timeout=30)).status == WorkflowStatus.ABORTED

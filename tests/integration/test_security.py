"""Signed and encrypted envelopes and RBAC on a real cluster, attacked.

One cluster (coordinator and worker processes) runs with a key directory: every
message is signed and encrypted, interventions are checked against a policy.
The attacks publish straight onto the bus with a connection that passes the
NATS permissions (the defence under test is the envelope, not the server), and
each test has its control: the same thing done properly is accepted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator import replay
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.errors import InterventionRefusedError, MalformedMessageError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.audit import read_audit, verify_audit
from agenticflow.shared.security.seal import DataKeys, Identity, Seal, init_keys
from agenticflow.shared.wire.codec import TaskMessage, encode_event, encode_task
from agenticflow.shared.wire.events import Event, EventType, InterventionRequested, MessageRejected
from agenticflow.shared.wire.ids import uuid7 as new_event_id
from agenticflow.shared.wire.vclock import VectorClock
from agenticflow.worker.memory import AgentMemory
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type, run, wf

pytestmark = pytest.mark.timeout(120)

MARKER = "PLAINTEXT-MARKER-7f3a"
POLICY = """
[roles.operator]
permissions = ["workflow:*"]

[roles.commenter]
permissions = ["workflow:feedback"]

[principals]
client = ["operator"]
mallory = ["commenter"]
"""


@dataclass
class Secure:
    keys: Path
    settings: Settings
    bus: Bus
    client: Client
    observer: Observer


@pytest.fixture(scope="module")
async def secure(
    nats_server: NatsServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Secure]:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(
        keys,
        [
            ("coordinator", "coordinator"),
            ("worker", "worker"),
            ("client", "client"),
            ("mallory", "client"),
        ],
    )
    (keys / "policy.toml").write_text(POLICY)
    prefix = unique_prefix("secure")
    async with (
        DevCluster(
            app="tests.support.app:app",
            workers=1,
            nats_url=nats_server.url,
            prefix=prefix,
            settings={"security_dir": str(keys)},
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name="secure-tests") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        yield Secure(keys, cluster.settings, bus, Client(bus=bus, node_id="secure"), observer)


def _seal(keys: Path, principal: str) -> Seal:
    return Seal.from_dir(keys, principal)


def _abort(workflow_id: str, by: str) -> Event:
    return Event(
        id=new_event_id(),
        type=EventType.INTERVENTION_REQUESTED,
        workflow_id=workflow_id,
        source=by,
        timestamp=time.time_ns(),
        vclock=VectorClock(),
        data=InterventionRequested(request_id=new_event_id(), action="abort", by=by),
    )


async def _rejections(s: Secure, workflow_id: str, count: int) -> list[MessageRejected]:
    def found() -> list[MessageRejected]:
        return [
            e.data
            for _, e in s.observer.seen
            if e.workflow_id == workflow_id
            and e.type == EventType.MESSAGE_REJECTED
            and isinstance(e.data, MessageRejected)
        ]

    await s.observer.until(lambda _: len(found()) >= count, timeout=30)
    return found()


async def test_a_workflow_runs_signed_and_encrypted_and_its_stream_reveals_nothing(
    secure: Secure,
) -> None:
    state = await run(
        secure.client, wf({"id": "a", "capability": "echo", "params": {"note": MARKER}})
    )
    assert state.status == WorkflowStatus.COMPLETED
    assert MARKER in repr(state.tasks["a"].result)  # the control: a key holder reads it
    stored = await secure.bus.read_stored(
        secure.bus.names.events_stream, secure.bus.names.workflow_events(state.workflow_id)
    )
    assert len(stored) >= 4
    for msg in stored:
        assert MARKER.encode() not in msg.data
        headers = msg.headers or {}
        assert {"AF-Key", "AF-Sig", "AF-TS", "AF-Enc"} <= set(headers)
    signers = {secure.bus.decode_event(m).signer for m in stored}
    assert {"client", "coordinator"} <= signers
    # Each worker process signs with its own identity, issued by a coordinator.
    assert any(str(signer).startswith("worker/") for signer in signers)
    plain = Settings(nats_url=secure.settings.nats_url, prefix=secure.settings.prefix)
    async with connected(plain, name="no-keys") as outsider:
        for msg in stored:
            with pytest.raises(MalformedMessageError):
                outsider.decode_event(msg)


async def test_forged_and_replayed_interventions_are_rejected_and_never_applied(
    secure: Secure,
) -> None:
    s = secure
    workflow_id = await s.client.submit(
        wf({"id": "long", "capability": "slow", "params": {"seconds": 2}})
    )
    await s.observer.until(
        lambda o: any(
            e.workflow_id == workflow_id and e.type == EventType.TASK_STARTED for _, e in o.seen
        )
    )
    names = s.bus.names
    data_keys = DataKeys.load(s.keys / "data-keys.json")
    attacks: list[tuple[str, tuple[str, dict[str, str], bytes]]] = []
    # 1. unsigned (but encrypted with the right key: the attacker stole the data key)
    attacks.append(
        (
            "unsigned",
            encode_event(_abort(workflow_id, "eve"), names, seal=Seal(data_keys=data_keys)),
        )
    )
    # 2. signed by a key nobody trusts
    eve = Seal(identity=Identity.generate("eve", "client"), data_keys=data_keys)
    attacks.append(("unknown key", encode_event(_abort(workflow_id, "eve"), names, seal=eve)))
    # 3. properly signed by the client, then altered
    subject, headers, body = encode_event(
        _abort(workflow_id, "client"), names, seal=_seal(s.keys, "client")
    )
    attacks.append(("bad signature", (subject, headers, body[:-1] + bytes([body[-1] ^ 1]))))
    # 4. signed by a worker, whose role may not steer workflows
    attacks.append(
        (
            "wrong role",
            encode_event(_abort(workflow_id, "worker"), names, seal=_seal(s.keys, "worker")),
        )
    )
    # 5. a request the client really signed, ten minutes ago, replayed now
    old = _abort(workflow_id, "client")
    subject, headers, body = encode_event(old, names)
    headers = dict(headers)
    body = _seal(s.keys, "client").close(
        subject, headers, body, now_ns=time.time_ns() - 600 * 10**9
    )
    attacks.append(("replay", (subject, headers, body)))
    for _, (subject, headers, body) in attacks:
        await s.bus.publish_raw(subject, body, headers)

    rejected = await _rejections(s, workflow_id, len(attacks))
    reasons = sorted(r.reason for r in rejected)
    assert sorted(r.code for r in rejected) == ["forged_message"] * 4 + ["replayed_message"]
    assert any("unsigned" in r for r in reasons)
    assert any("unknown key" in r for r in reasons)
    assert any("bad signature" in r for r in reasons)
    assert any("worker (worker) may not send" in r for r in reasons)
    assert any("a replay" in r for r in reasons)
    state = await s.client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED  # none of the aborts applied
    events = await s.client.events(workflow_id)
    assert not of_type(events, EventType.WORKFLOW_ABORTED)
    assert replay.verify(events, state) == []

    # the control: re-publishing a genuine message within the dedupe window is a duplicate
    stored = await s.bus.read_stored(names.events_stream, names.workflow_events(workflow_id))
    first = stored[0]
    _, duplicate = await s.bus.publish_raw(first.subject, first.data, dict(first.headers or {}))
    assert duplicate


async def test_a_task_not_signed_by_a_coordinator_is_refused_and_fails_nothing(
    secure: Secure,
) -> None:
    s = secure
    workflow_id = "forged-task-" + new_event_id()[-8:]
    task = TaskMessage(workflow_id=workflow_id, task_id="t", attempt=1, capability="echo")
    subject, headers, body = encode_task(task, s.bus.names, seal=_seal(s.keys, "client"))
    await s.bus.publish_raw(subject, body, headers)
    rejected = await _rejections(s, workflow_id, 1)
    assert rejected[0].code == "forged_message"
    assert "client (client) may not send 'task' messages" in rejected[0].reason
    assert not [
        e
        for _, e in s.observer.seen
        if e.workflow_id == workflow_id and e.type != EventType.MESSAGE_REJECTED
    ]
    # the control: the worker still serves genuine tasks
    state = await run(s.client, wf({"id": "a", "capability": "echo"}))
    assert state.status == WorkflowStatus.COMPLETED


async def test_interventions_are_checked_against_the_senders_roles(secure: Secure) -> None:
    s = secure
    workflow_id = await s.client.submit(
        wf({"id": "long", "capability": "slow", "params": {"seconds": 3}})
    )
    mallory_settings = s.settings.model_copy(update={"principal": "mallory"})
    async with connected(mallory_settings, name="mallory") as bus:
        mallory = Client(bus=bus, node_id="mallory")
        with pytest.raises(
            InterventionRefusedError,
            match="mallory lacks permission workflow:terminate or workflow:abort",
        ) as refused:
            await mallory.abort(workflow_id, reason="because")
        assert refused.value.code == "forbidden"
        applied = await mallory.feedback(workflow_id, "looks fine")  # a commenter may comment
        assert applied.action == "feedback"
    paused = await s.client.pause(workflow_id)  # the operator may steer
    assert paused.action == "pause"
    await s.client.intervene(workflow_id, "resume")
    state = await s.client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED
    events = await s.client.events(workflow_id)
    assert not of_type(events, EventType.WORKFLOW_ABORTED)
    # replay skips the refused request as the coordinator did
    assert replay.verify(events, state) == []


async def test_agent_memory_is_msgpack_encrypted_and_bound_to_its_key(secure: Secure) -> None:
    s = secure
    first = await run(
        s.client, wf({"id": "m", "capability": "remember", "params": {"note": MARKER}})
    )
    second = await run(s.client, wf({"id": "m", "capability": "remember"}))
    assert first.tasks["m"].result["runs"] + 1 == second.tasks["m"].result["runs"]
    assert second.tasks["m"].result["note"] == MARKER  # remembered across tasks
    assert second.tasks["m"].result["keys"] == ["note", "runs"]
    store = await s.bus.kv(s.bus.names.memory_bucket)
    note = await store.get("remember.note")
    assert note.value is not None
    assert MARKER.encode() not in note.value  # encrypted at rest
    # a value moved to another key is refused: its signature (and AES-GCM) bind it
    await store.put("remember.runs", note.value)
    with pytest.raises(MalformedMessageError, match="moved from another key"):
        await AgentMemory(s.bus, "remember").get("runs")
    await store.put("remember.runs", b"\x81\xa1x\x01")  # plaintext msgpack: refused too
    with pytest.raises(MalformedMessageError, match="not signed"):
        await AgentMemory(s.bus, "remember").get("runs")
    await store.delete("remember.runs")


async def test_the_cluster_keeps_a_verifiable_audit_trail_of_what_it_decided(
    secure: Secure,
) -> None:
    s = secure
    workflow_id = await s.client.submit(
        wf({"id": "long", "capability": "slow", "params": {"seconds": 2}})
    )
    mallory_settings = s.settings.model_copy(update={"principal": "mallory"})
    async with connected(mallory_settings, name="mallory-audit") as bus:
        with pytest.raises(InterventionRefusedError):
            await Client(bus=bus, node_id="mallory").pause(workflow_id)
    await s.client.feedback(workflow_id, "go on")
    forged = encode_event(_abort(workflow_id, "eve"), s.bus.names)  # unsigned, unencrypted
    await s.bus.publish_raw(forged[0], forged[2], forged[1])
    await _rejections(s, workflow_id, 1)
    await s.client.wait(workflow_id, timeout=60)

    entries = [
        e for e in await read_audit(s.bus, s.bus.seal) if e.workflow_id in (workflow_id, None)
    ]
    kinds = {(e.kind, e.signer) for e in entries}
    assert ("keys.loaded", "coordinator") in kinds
    assert any(kind == "keys.loaded" and str(by).startswith("worker/") for kind, by in kinds)
    denied = [e for e in entries if e.kind == "access.denied"]
    assert [(e.detail or {}).get("principal") for e in denied] == ["mallory"]
    applied = [e for e in entries if e.kind == "intervention.applied"]
    assert [(e.detail or {}).get("action") for e in applied] == ["feedback"]
    rejected = [e for e in entries if e.kind == "message.rejected"]
    assert [(e.detail or {}).get("code") for e in rejected] == ["forged_message"]
    assert all(e.error is None for e in entries)
    report = await verify_audit(s.bus, s.bus.seal)
    assert report.ok, report.problems

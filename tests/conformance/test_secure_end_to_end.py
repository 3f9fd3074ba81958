"""Security is the same on every backend: with keys, a task gated on an
approval cannot be completed by a forged outcome, a client's signature
cannot stand in for a worker's, and an unsigned event is refused. Each
refusal is recorded once (``message.rejected``) and changes no state."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import agenticflow.testing
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.base import Bus
from agenticflow.shared.errors import WorkflowCancelledError
from agenticflow.shared.security.seal import init_keys
from agenticflow.shared.wire.codec import encode_event
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    MessageRejected,
    OutputChunk,
    TaskCompleted,
    TaskOutput,
    WorkflowCompleted,
)
from tests.conformance.conftest import BACKENDS
from tests.conformance.test_end_to_end import APP, backend_url
from tests.integration.helpers import wf
from tests.security.conftest import forged


@pytest.mark.parametrize("backend", BACKENDS)
async def test_forged_outcomes_of_a_gated_task_are_refused_on_every_backend(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    settings = {"prefix": f"sec{os.getpid()}x{os.urandom(3).hex()}", "security_dir": str(keys)}
    url = backend_url(backend, request)
    async with agenticflow.testing.cluster(APP, url=url, settings=settings) as client:
        handle = await client.start(
            wf({"id": "a", "capability": "context", "approval": {"reason": "ok?"}})
        )
        await client.wait_for(
            handle.id, lambda s: s.tasks["a"].status == TaskStatus.WAITING_APPROVAL, timeout=30
        )
        rejected: asyncio.Queue[MessageRejected] = asyncio.Queue()

        async def on_event(msg: object) -> None:
            try:
                event = client.bus.decode_event(msg)  # type: ignore[arg-type]
            except Exception:
                return
            if isinstance(event.data, MessageRejected):
                rejected.put_nowait(event.data)

        names = client.bus.names
        watch = await client.bus.subscribe(
            names.event_subject(handle.id, EventType.MESSAGE_REJECTED.value), on_event
        )
        outcome = forged(
            handle.id,
            EventType.TASK_COMPLETED,
            TaskCompleted(result="forged", worker="mallory", agent="context"),
            task_id="a",
            attempt=1,
        )
        seqs = [
            await _publish(client.bus, outcome, sealed=False),  # unsigned
            await _publish(client.bus, _again(outcome), sealed=True),  # signed, by a client
        ]
        got = [await asyncio.wait_for(rejected.get(), 30) for _ in seqs]
        await watch.unsubscribe()
        assert sorted(r.stream_seq or 0 for r in got) == sorted(seqs)
        state = await client.status(handle.id)
        assert state.tasks["a"].status == TaskStatus.WAITING_APPROVAL, "a forged outcome landed"
        await client.approve(handle.id, "a", "go", by="ann")
        final = await handle.wait(timeout=30)
    assert final.status == WorkflowStatus.COMPLETED
    assert final.tasks["a"].result["approval"]["comment"] == "go"
    assert rejected.empty(), "a refusal was recorded twice"


def _again(event: Event) -> Event:
    return event.model_copy(update={"id": f"{event.id}-2"})


async def _publish(bus: Bus, event: Event, *, sealed: bool) -> int:
    subject, headers, body = encode_event(event, bus.names, seal=bus.seal if sealed else None)
    seq, _ = await bus.publish_raw(subject, body, headers)
    return seq


@pytest.mark.parametrize("backend", BACKENDS)
async def test_result_does_not_take_a_forged_completion(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """result() learns a completion from the coordinator's event, sooner than
    from the snapshot: a client-signed workflow.completed must not end it."""
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    settings = {"prefix": f"sec{os.getpid()}x{os.urandom(3).hex()}", "security_dir": str(keys)}
    async with agenticflow.testing.cluster(
        APP, url=backend_url(backend, request), settings=settings
    ) as client:
        handle = await client.start(wf({"id": "a", "capability": "cancellable"}))
        await client.wait_for(
            handle.id, lambda s: s.tasks["a"].status == TaskStatus.RUNNING, timeout=30
        )
        result = asyncio.ensure_future(handle.result(timeout=30))
        for _ in range(5):  # let result() subscribe first (one connection: in order after it)
            await asyncio.sleep(0)
        fake = forged(
            handle.id, EventType.WORKFLOW_COMPLETED, WorkflowCompleted(output={"a": "forged"})
        )
        await _publish(client.bus, fake, sealed=True)
        await _publish(client.bus, _again(fake), sealed=False)
        await handle.cancel()
        with pytest.raises(WorkflowCancelledError):
            await result


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_reader_never_shows_streamed_output_a_worker_did_not_sign(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    settings = {"prefix": f"sec{os.getpid()}x{os.urandom(3).hex()}", "security_dir": str(keys)}
    async with agenticflow.testing.cluster(
        APP, url=backend_url(backend, request), settings=settings
    ) as client:
        handle = await client.start(
            wf({"id": "n", "capability": "narrate", "params": {"wait": True}})
        )
        reader = handle.stream()
        first = await asyncio.wait_for(anext(reader), 30)
        assert first.data == "Hello"
        fake = forged(
            handle.id,
            EventType.TASK_OUTPUT,
            TaskOutput(index=7, chunks=[OutputChunk(kind="token", data="FORGED")]),
            task_id="n",
            attempt=1,
        )
        await _publish(client.bus, fake, sealed=True)  # signed, by a client
        await _publish(client.bus, _again(fake), sealed=False)  # unsigned
        await handle.feedback("there")
        rest = [chunk.data async for chunk in reader]
        assert "FORGED" not in rest
        assert rest[:2] == ["there", " world"]
        late = [chunk.data async for chunk in handle.stream()]
        assert "FORGED" not in late
        assert late[:3] == ["Hello", "there", " world"]


async def test_a_schedule_runs_only_what_its_author_may_submit(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[roles.echoer]\npermissions = ["workflow:submit:echo"]\n'
        '[principals]\n"client" = ["echoer"]\n'
    )
    settings = {
        "prefix": f"sec{os.getpid()}x{os.urandom(3).hex()}",
        "security_dir": str(keys),
        "policy_file": str(policy),
    }
    async with agenticflow.testing.cluster(APP, settings=settings) as client:
        allowed = wf({"id": "a", "capability": "echo"})
        denied = wf({"id": "a", "capability": "context"})
        await client.create_schedule("ok", allowed, every="1s")
        await client.create_schedule("no", denied, every="1s")
        info = await client.wait_for_schedule("no", lambda i: i.state.skipped >= 1)
        assert "workflow:submit:context" in (info.state.last_error or "")
        assert info.state.fired == 0
        assert info.state.last_workflow_id is None
        ok = await client.wait_for_schedule("ok", lambda i: i.state.fired >= 1)
        assert ok.state.last_workflow_id is not None
        await client.handle(ok.state.last_workflow_id).result(timeout=30)
        # A firing state not signed by a coordinator is not believed: the
        # schedule's state reads as new, and listing it says nothing forged.
        store = await client.bus.kv(client.names.schedule_state_bucket)
        await store.put("state.ok", b"\x81\xacfired\x00")
        listed = {i.spec.name: i.state for i in await client.schedules()}
        assert listed["ok"].fired == 0


async def test_a_registered_workflow_names_its_verified_signer(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")])
    settings = {"prefix": f"sec{os.getpid()}x{os.urandom(3).hex()}", "security_dir": str(keys)}
    async with agenticflow.testing.cluster(APP, settings=settings) as client:
        definition = wf({"id": "a", "capability": "echo"}, name="signed")
        await client.register_workflow(definition, by="mallory")  # a claim, not a proof
        (found,) = await client.registered_workflows("signed")
        assert found.registered_by == "client"
        # A record nobody signed is not believed (left out, logged).
        store = await client.bus.kv(client.names.definitions_bucket)
        await store.put("forged.1", b"\x81\xa4name\xa6forged")
        assert await client.registered_workflows("forged") == []
        assert await client.run("signed@1", timeout=30) is not None

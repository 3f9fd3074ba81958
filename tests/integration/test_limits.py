"""Workflows that outgrow NATS's message size: a clear end, never a wedged coordinator."""

from __future__ import annotations

from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.wire.events import EventType
from tests.integration.helpers import of_type, run, wf


async def test_a_workflow_whose_state_outgrows_max_payload_is_aborted_with_the_reason(
    client: Client,
) -> None:
    # Three 800 kB results in a chain, then a task that waits: each message
    # fits, the running state holding all of them does not (about 1.2 MB
    # compressed), and the wait lets the snapshot interval pass.
    chain = [
        {"id": f"n{i}", "capability": "noise", "params": {"bytes": 400_000}}
        | ({"depends_on": [f"n{i - 1}"]} if i else {})
        for i in range(3)
    ]
    chain.append({"id": "wait", "capability": "listen", "depends_on": ["n2"]})
    final = await run(client, wf(*chain), timeout=120)
    assert final.status == WorkflowStatus.ABORTED
    assert final.reason is not None
    assert "outgrew the largest snapshot NATS accepts" in final.reason
    assert "max_payload" in final.reason
    # The stored snapshot left the results out; the events still have them.
    assert {t.result for t in final.tasks.values()} == {None}
    assert any("still have them" in p for p in final.problems)
    events = await client.events(final.workflow_id)
    assert len(of_type(events, EventType.TASK_COMPLETED)) == 3
    assert final.tasks["wait"].status.value == "cancelled"
    # The coordinator goes on serving other workflows.
    after = await run(client, wf({"id": "a", "capability": "echo"}), timeout=60)
    assert after.status == WorkflowStatus.COMPLETED


async def test_a_completion_too_large_for_one_event_is_recorded_without_the_bulk(
    client: Client,
) -> None:
    # Two parallel 600 kB results: each fits in a message and the state fits
    # compressed, but workflow.completed with both outputs would not.
    parts = [{"id": f"p{i}", "capability": "noise", "params": {"bytes": 300_000}} for i in range(2)]
    final = await run(client, wf(*parts), timeout=120)
    assert final.status == WorkflowStatus.COMPLETED
    events = await client.events(final.workflow_id)
    (completed,) = of_type(events, EventType.WORKFLOW_COMPLETED)
    assert all("omitted" in v for v in completed.data.output.values())  # type: ignore[attr-defined]

"""Submission rights (issue 20, planner): a principal submits only the
capabilities its roles grant (``workflow:submit:<capability>``), child workflows
included, whoever it claims to be; against a real cluster, with and without keys.

The secure cluster's policy lets ``bob`` submit ``echo`` only, ``mallory`` only
comment, ``client`` (the operator) do anything, and ``cron`` submit anything
and run ``ask`` unattended. The default cluster has no
keys and no policy: every submission runs, as before (the control that the
refusals come from the policy and nothing else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.wire.events import EventType, WorkflowSubmitted
from agenticflow.shared.wire.ids import uuid7
from tests.integration.helpers import ROOT, of_type, wf
from tests.security.conftest import Target, _target, attack_keys, forged

pytestmark = pytest.mark.timeout(180)

POLICY = """
[roles.operator]
permissions = ["workflow:*"]

[roles.echoer]
permissions = ["workflow:submit:echo"]

[roles.commenter]
permissions = ["workflow:feedback"]

[roles.robot]
permissions = ["workflow:submit:*", "planner:unattended"]

[principals]
client = ["operator"]
bob = ["echoer"]
mallory = ["commenter"]
cron = ["robot"]
"""

ECHO = wf({"id": "say", "capability": "echo", "params": {"value": "hi"}})
NESTED = wf(
    {"id": "say", "capability": "echo", "params": {"value": "hi"}},
    {
        "id": "sum",
        "depends_on": ["say"],
        "workflow": {"tasks": [{"id": "two", "capability": "add", "params": {"value": 2}}]},
    },
)
"""``echo``, and ``add`` one level down in a child workflow."""


@pytest.fixture(scope="module", params=["default", "secure"])
async def target(
    request: pytest.FixtureRequest,
    nats_server: NatsServer,
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Target]:
    """A cluster without keys or policy, then one with this module's policy."""
    keys = None
    if request.param == "secure":
        principals = [(name, "client") for name in ("client", "bob", "mallory", "cron")]
        keys = attack_keys(tmp_path_factory, "submit-keys", principals, POLICY)
    async for found in _target(request.param, nats_server, log_dir, keys):
        yield found


async def _submit(
    target: Target, definition: WorkflowDefinition, *, as_: str, claims: str | None = None
) -> tuple[str, int]:
    """``as_`` submits ``definition`` (claiming to be ``claims``); its id and stream seq."""
    workflow_id = f"sub-{uuid7()}"
    data = WorkflowSubmitted(definition=definition, submitted_by=claims or as_)
    event = forged(workflow_id, EventType.WORKFLOW_SUBMITTED, data, source=as_)
    return workflow_id, await target.publish(event, as_=as_)


async def _refused(target: Target, workflow_id: str, seq: int) -> str:
    """The refusal's reason, after checking that nothing of the workflow ran."""
    rejected = await target.rejection(seq)
    assert rejected.code == "forbidden"
    state = await target.client.wait(workflow_id, timeout=30)
    assert state.status == WorkflowStatus.REJECTED
    assert not state.tasks
    events = await target.client.events(workflow_id)
    for kind in (EventType.WORKFLOW_STARTED, EventType.TASK_SCHEDULED, EventType.TASK_STARTED):
        assert not of_type(events, kind), kind
    return rejected.reason


async def test_a_principal_submits_only_the_capabilities_its_roles_grant(target: Target) -> None:
    allowed, _ = await _submit(target, ECHO, as_="bob")
    done = await target.client.wait(allowed, timeout=60)
    assert done.status == WorkflowStatus.COMPLETED  # the control: echo is bob's
    nested, seq = await _submit(target, NESTED, as_="bob")
    if not target.secure:
        state = await target.client.wait(nested, timeout=60)
        assert state.status == WorkflowStatus.COMPLETED  # no policy: as before
        return
    reason = await _refused(target, nested, seq)
    assert reason == (
        "bob may not submit capability 'add' (it lacks workflow:submit:add; roles: echoer)"
    )
    # the child was never started either: no event names a workflow derived from it
    head = nested[:32]  # a child's id begins with this much of its parent's
    named = {e.workflow_id for _, e in target.observer.seen if e.workflow_id.startswith(head)}
    assert named == {nested}


async def test_a_principal_without_submit_rights_starts_nothing(target: Target) -> None:
    workflow_id, seq = await _submit(target, ECHO, as_="mallory")
    if not target.secure:
        state = await target.client.wait(workflow_id, timeout=60)
        assert state.status == WorkflowStatus.COMPLETED
        return
    reason = await _refused(target, workflow_id, seq)
    assert reason.startswith("mallory may not submit capability 'echo'")


async def test_the_signer_is_checked_not_the_name_a_submission_gives(target: Target) -> None:
    if not target.secure:
        pytest.skip("without keys the name a submission gives is all there is (documented)")
    workflow_id, seq = await _submit(target, NESTED, as_="bob", claims="client")
    reason = await _refused(target, workflow_id, seq)
    assert reason.startswith("bob may not submit capability 'add'")
    # the control: the operator itself submits the same workflow
    state = await target.client.wait(await target.client.submit(NESTED), timeout=60)
    assert state.status == WorkflowStatus.COMPLETED


def _ask(target: Target, *args: str, principal: str) -> subprocess.CompletedProcess[str]:
    """``agenticflow ask ARGS`` signing as ``principal`` (stdin is no terminal)."""
    settings = target.cluster.settings
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": settings.nats_url,
        "AGENTICFLOW_PREFIX": settings.prefix,
        "AGENTICFLOW_SECURITY_DIR": str(target.keys),
        "AGENTICFLOW_PRINCIPAL": principal,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "agenticflow", "ask", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=90,
        check=False,
    )


async def test_ask_refuses_a_plan_its_principal_may_not_submit(target: Target) -> None:
    """The client reads the same policy: the refusal comes before anything is sent."""
    if not target.secure:
        pytest.skip("the policy lives in the key directory")
    before = len(target.observer.seen)
    refused = _ask(target, "Summarize the memo", "--yes", principal="bob")
    assert refused.returncode == 5, refused.stderr
    assert "refused (forbidden)" in refused.stderr
    assert "bob may not submit capability 'summarize'" in refused.stderr
    asked = [
        e
        for _, e in target.observer.seen[before:]
        if e.type == EventType.WORKFLOW_SUBMITTED and e.signer == "bob"
    ]
    assert not asked
    # the control: the operator's plan of the same query runs
    done = _ask(target, "Summarize the memo", "--yes", "--wait", "--json", principal="client")
    assert done.returncode == 0, done.stderr


async def test_only_a_policy_lets_ask_run_unattended(target: Target) -> None:
    if not target.secure:
        pytest.skip("the policy lives in the key directory")
    operator = _ask(target, "Summarize the memo", "--json", principal="client")
    assert operator.returncode == 6, operator.stderr  # workflow:* is no planner:unattended
    assert "not run: pass --yes" in operator.stderr
    unattended = _ask(target, "Summarize the memo", "--wait", "--json", principal="cron")
    assert unattended.returncode == 0, unattended.stderr
    assert json.loads(unattended.stdout)["state"] == "completed"

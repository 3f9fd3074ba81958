"""With keys, the gateway signs each request as its token's principal: the
coordinator checks the signer against its policy, whatever name a request
gives, exactly as for any client."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

import agenticflow
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.service import Coordinator
from agenticflow.gateway import GatewayServer, GatewaySettings
from agenticflow.gateway.auth import Access, Tokens
from agenticflow.gateway.service import Gateway
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import init_keys
from agenticflow.shared.wire.events import EventType
from agenticflow.worker.runtime import Worker
from tests.conftest import unique_prefix
from tests.integration.gateway_support import ALICE, BOB, POLICY, app, auth, workflow

pytestmark = pytest.mark.timeout(120)


async def test_the_gateway_signs_as_each_principal_and_the_coordinator_checks_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    identities = [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")]
    init_keys(keys, [*identities, ("alice", "client"), ("bob", "client")])
    (keys / "policy.toml").write_text(POLICY)
    settings = Settings(
        nats_url=nats_server.url,
        prefix=unique_prefix("gwk"),
        security_dir=keys,
        heartbeat_s=0.5,
        snapshot_interval_s=0.05,
    )
    async with contextlib.AsyncExitStack() as stack:
        for role in ("coordinator", "worker"):
            bus = await Bus.connect(settings, name=f"gwk-{role}", role=role)
            stack.push_async_callback(bus.close)
            service = (
                Coordinator(bus=bus, node_id="gwk-coord")
                if role == "coordinator"
                else Worker(bus=bus, app=app, node_id="gwk-worker", concurrency=4)
            )
            await stack.enter_async_context(service)
        reader = await stack.enter_async_context(agenticflow.connect(settings=settings))
        tokens = f"alice={ALICE},bob={BOB}"
        config = GatewaySettings(port=0, tokens=tokens, allow_no_policy=True)
        gateway = Gateway(  # its own check off (allowed): only the coordinator decides
            settings=settings, config=config, tokens=Tokens.load(None, tokens), access=Access(None)
        )
        server = await stack.enter_async_context(
            GatewayServer(settings, config, gateway=gateway, grace_s=1)
        )
        alice = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, headers=auth(ALICE), timeout=60)
        )
        bob = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, headers=auth(BOB), timeout=60)
        )

        started = await alice.post(
            "/workflows",
            json={
                "workflow": workflow({"id": "l", "capability": "listen", "params": {"timeout": 60}})
            },
        )
        workflow_id = started.json()["id"]
        submitted = next(
            e
            for e in await reader.handle(workflow_id).events()
            if e.type == EventType.WORKFLOW_SUBMITTED
        )
        assert submitted.signer == "alice"
        await reader.wait_for(
            workflow_id, lambda s: s.tasks["l"].status.value == "running", timeout=30
        )
        stop = await bob.post(f"/workflows/{workflow_id}/terminate", json={"reason": "mine"})
        assert stop.status_code == 403
        assert stop.json()["error"]["message"] == (
            "bob lacks permission workflow:terminate or workflow:abort"
        )
        feedback = await alice.post(f"/workflows/{workflow_id}/feedback", json={"text": "ok"})
        assert feedback.status_code == 200
        result = await alice.get(f"/workflows/{workflow_id}/result", params={"wait": 30})
        assert result.json()["output"]["got"] == "ok"

        refused = await bob.post(
            "/workflows", json={"workflow": workflow({"id": "a", "capability": "add"})}
        )
        rejected = await bob.get(f"/workflows/{refused.json()['id']}/result", params={"wait": 30})
        assert rejected.json()["state"] == "rejected"
        assert "bob may not submit capability 'add'" in rejected.json()["reason"]

    carol = GatewaySettings(port=0, tokens=f"carol={'c' * 20}")
    with pytest.raises(ConfigError, match="no key for principal 'carol'"):
        async with GatewayServer(settings, carol):
            pass


async def test_the_gateway_refuses_cluster_keys_reserved_names_and_keys_without_a_policy(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Finding #3 of the gateway review: a token for principal 'coordinator'
    signed as the coordinator (exempt from RBAC), and with no policy seen the
    gateway's own check was silently off."""
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("ops", "worker"), ("alice", "client")])
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("gwr"), security_dir=keys)
    for name in ("coordinator", "worker", "coord", "coordinator-2", "w-host-41-a1b2c3"):
        with pytest.raises(ConfigError, match="reserved for the cluster's own processes"):
            GatewayServer(settings, GatewaySettings(port=0, tokens=f"{name}={ALICE}"))
    with pytest.raises(ConfigError, match="has role 'worker'"):
        async with GatewayServer(settings, GatewaySettings(port=0, tokens=f"ops={ALICE}")):
            pass
    with pytest.raises(ConfigError, match="has a trust store but the gateway found no policy"):
        async with GatewayServer(settings, GatewaySettings(port=0, tokens=f"alice={ALICE}")):
            pass
    (keys / "policy.toml").write_text(POLICY)
    config = GatewaySettings(port=0, tokens=f"alice={ALICE}")
    async with (
        GatewayServer(settings, config) as server,
        httpx.AsyncClient(base_url=server.url, headers=auth(ALICE)) as http,
    ):
        assert (await http.get("/whoami")).json() == {"principal": "alice"}

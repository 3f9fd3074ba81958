"""Two real clusters to attack: the default one (no keys: anyone on the bus) and
a secure one (signed and encrypted envelopes, an RBAC policy).

Attackers publish straight onto the bus with a connection NATS lets through:
what is under test is what the coordinator and the workers accept, not the
server's permissions. Each attack has its control (the honest action works).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowState
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.identity import take_process_identity
from agenticflow.shared.security.seal import Seal, init_keys
from agenticflow.shared.wire.codec import encode_event
from agenticflow.shared.wire.events import Event, EventType, MessageRejected, Payload
from agenticflow.shared.wire.ids import uuid7
from agenticflow.shared.wire.vclock import VectorClock
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix

POLICY = """
[roles.operator]
permissions = ["workflow:*"]

[roles.commenter]
permissions = ["workflow:feedback"]

[principals]
client = ["operator"]
mallory = ["commenter"]
"""
"""``client`` may do anything; ``mallory`` (a client key) may only comment."""


@dataclass
class Target:
    """One cluster under attack and the means to attack it."""

    mode: str
    cluster: DevCluster
    bus: Bus
    client: Client
    observer: Observer
    keys: Path | None
    seals: dict[str, Seal] = field(default_factory=dict)
    buses: list[Bus] = field(default_factory=list)

    @property
    def secure(self) -> bool:
        return self.keys is not None

    def seal(self, principal: str) -> Seal | None:
        """The attacker signing as ``principal`` (None in default mode: no keys)."""
        if self.keys is None:
            return None
        if principal not in self.seals:
            self.seals[principal] = Seal.from_dir(self.keys, principal)
        return self.seals[principal]

    async def process(self, node: str) -> str:
        """Sign as a worker *process* from now on when publishing ``as_=node``:
        a process identity for ``node`` asked of the cluster's coordinator with
        the worker group's key (what a compromised worker process holds).
        Returns the principal (``worker/<node>``)."""
        assert self.keys is not None
        settings = self.bus.settings.model_copy(update={"principal": "worker"})
        bus = await Bus.connect(settings, name=f"attacker-{node}", role="worker")
        self.buses.append(bus)
        certificate = await take_process_identity(bus, node, timeout=30)
        assert certificate is not None
        self.seals[node] = bus.seal
        return certificate.principal

    async def publish(
        self,
        event: Event,
        *,
        as_: str,
        headers: Callable[[dict[str, str]], None] | None = None,
        body: bytes | None = None,
    ) -> int:
        """Publish ``event`` signed (secure mode) by ``as_``, after ``headers``
        altered its headers or ``body`` replaced its body; returns its stream seq."""
        subject, plain_headers, plain = encode_event(event, self.bus.names)
        out = dict(plain_headers)
        if headers is not None:
            headers(out)
        content = plain if body is None else body
        seal = self.seal(as_)
        if seal is not None:
            content = seal.close(subject, out, content)
        seq, _ = await self.bus.publish_raw(subject, content, out)
        return seq

    async def rejection(self, seq: int, *, timeout: float = 30) -> MessageRejected:
        """The coordinator's record of refusing the event stored at ``seq``."""

        def found(o: Observer) -> list[MessageRejected]:
            return [
                e.data
                for _, e in o.seen
                if isinstance(e.data, MessageRejected)
                and e.data.stream_seq == seq
                and e.id.startswith(f"rejected:{self.bus.names.events_stream}:")
            ]

        await self.observer.until(lambda o: bool(found(o)), timeout=timeout)
        return found(self.observer)[0]

    async def until_state(
        self, workflow_id: str, predicate: Callable[[WorkflowState], bool], timeout: float = 30
    ) -> WorkflowState:
        """The workflow's first snapshot for which ``predicate`` holds."""

        async def first() -> WorkflowState:
            async for state in self.client.states(workflow_id):
                if predicate(state):
                    return state
            raise AssertionError("the state stream ended")

        import asyncio

        return await asyncio.wait_for(first(), timeout)

    def seen(self, workflow_id: str, event_type: EventType) -> list[Event]:
        return [
            e
            for _, e in self.observer.seen
            if e.workflow_id == workflow_id and e.type == event_type
        ]


def forged(
    workflow_id: str,
    event_type: EventType,
    data: Payload,
    *,
    source: str = "mallory",
    vclock: VectorClock | None = None,
    task_id: str | None = None,
    attempt: int | None = None,
    **extra: Any,
) -> Event:
    """An event as an attacker writes it (a fresh id: never deduplicated)."""
    return Event(
        id=f"attack-{uuid7()}",
        type=event_type,
        workflow_id=workflow_id,
        source=source,
        timestamp=time.time_ns(),
        vclock=vclock or VectorClock({source: 1}),
        data=data,
        task_id=task_id,
        attempt=attempt,
        **extra,
    )


async def _target(
    mode: str,
    nats_server: NatsServer,
    log_dir: Path,
    keys: Path | None,
    *,
    app: str = "tests.support.app:app",
    concurrency: int = 24,
) -> AsyncIterator[Target]:
    prefix = unique_prefix(f"atk{mode[0]}")
    overrides: dict[str, Any] = {"security_dir": str(keys)} if keys else {}
    async with (
        DevCluster(
            app=app,
            workers=1,
            concurrency=concurrency,
            nats_url=nats_server.url,
            prefix=prefix,
            settings=overrides,
            log_dir=log_dir / prefix,
        ) as cluster,
        connected(cluster.settings, name=f"attacks-{mode}") as bus,
    ):
        observer = Observer(bus)
        await observer.start()
        target = Target(
            mode, cluster, bus, Client(bus=bus, node_id=f"{mode}-client"), observer, keys
        )
        try:
            yield target
        finally:
            for extra in target.buses:
                await extra.close()


@pytest.fixture(scope="module", params=["default", "secure"])
async def target(
    request: pytest.FixtureRequest,
    nats_server: NatsServer,
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Target]:
    """The default cluster, then the secure one (each test runs against both)."""
    keys = None
    if request.param == "secure":
        principals = [("worker-2", "worker"), ("client", "client"), ("mallory", "client")]
        keys = attack_keys(tmp_path_factory, "attack-keys", principals, POLICY)
    async for target in _target(request.param, nats_server, log_dir, keys):
        yield target


def attack_keys(
    factory: pytest.TempPathFactory,
    name: str,
    principals: list[tuple[str, str]],
    policy: str | None = None,
) -> Path:
    """A key directory: a coordinator, a worker, ``principals`` ((name, role)),
    and ``policy`` as its policy.toml."""
    keys = factory.mktemp(name)
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker"), *principals])
    if policy is not None:
        (keys / "policy.toml").write_text(policy)
    return keys


def settings_as(target: Target, principal: str) -> Settings:
    """The target's settings for a process signing as ``principal``."""
    return target.cluster.settings.model_copy(update={"principal": principal})

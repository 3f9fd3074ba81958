"""Least-privilege NATS users, against a real nats-server started with the
configuration ``agenticflow nats-config`` writes (TLS, one nkey user per role).

A refused publish or request is not answered: nats-py times out, and the
reason reaches only the connection's ``error_cb``. So every refusal below is
asserted twice (the operation fails, the server said why) and next to its
positive control: the same operation with credentials that allow it works.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import SecretStr

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_auth import (
    ADMIN,
    CLIENT,
    COORDINATOR,
    NatsAuthFiles,
    WorkerGroup,
    generate,
    read_env_file,
)
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.schedules import ScheduleSpec
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import NotFoundError, TransportError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.credentials import connect_options
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import ROOT, wf

WORKER = "worker-alpha"
CAPS = ("echo", "add")
"""What the ``alpha`` worker group may serve; ``other`` is someone else's."""
DENIED_S = 0.5
"""How long a request that the server refuses is waited for (it never answers)."""


@dataclass
class Secure:
    """A nats-server running a generated configuration."""

    files: NatsAuthFiles
    server: NatsServer

    @property
    def prefix(self) -> str:
        return self.files.prefix

    def settings(self, role: str, **changes: Any) -> Settings:
        return self.files.settings(role, url=self.server.url).model_copy(update=changes)


def start_secure(tmp: Path, *, auth: str = "nkey", tls: bool = True) -> Secure:
    files = generate(
        tmp / "auth",
        prefix=unique_prefix("sec"),
        workers=[WorkerGroup("alpha", CAPS)],
        tls=tls,
        port=4222,
        auth="password" if auth == "password" else "nkey",
        store_dir=tmp / "store",
    )
    server = NatsServer(store_dir=tmp / "log", config_file=files.config)
    server.start()
    files.write_env(url=server.url)
    return Secure(files, server)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """A TLS server with nkey users, for this module."""
    running = start_secure(tmp_path_factory.mktemp("secure"))
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
async def topology(secure: Secure) -> AsyncIterator[Bus]:
    """The coordinator's connection, after creating streams, buckets and the
    task consumers of ``echo``, ``add`` and ``other``."""
    bus = await Bus.connect(secure.settings(COORDINATOR), name="test-coordinator")
    await bus.ensure_topology()
    for queue in (*CAPS, "other"):
        await bus.ensure_task_consumer(queue)
    yield bus
    await bus.close()


class Watched:
    """A raw connection of one role and what its ``error_cb`` was told."""

    def __init__(self) -> None:
        self.nc: NatsClient
        self.errors: list[str] = []
        self._told = asyncio.Event()

    @classmethod
    async def connect(cls, settings: Settings) -> Watched:
        watched = cls()
        watched.nc = await nats.connect(
            servers=settings.servers,
            error_cb=watched._on_error,
            max_reconnect_attempts=1,
            connect_timeout=2,
            **connect_options(settings),
        )
        return watched

    async def _on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self._told.set()

    async def told(self, *fragments: str, timeout: float = 2.0) -> str:
        """The first error that names every fragment (case-insensitively)."""
        wanted = [f.lower() for f in fragments]
        async with asyncio.timeout(timeout):
            while True:
                self._told.clear()
                for error in self.errors:
                    if all(f in error.lower() for f in wanted):
                        return error
                await self._told.wait()

    async def close(self) -> None:
        await self.nc.close()


@pytest.fixture
async def as_role(secure: Secure) -> AsyncIterator[Any]:
    """``await as_role(role)``: a :class:`Watched` connection, closed afterwards."""
    opened: list[Watched] = []

    async def open_as(role: str) -> Watched:
        watched = await Watched.connect(secure.settings(role))
        opened.append(watched)
        return watched

    yield open_as
    for watched in opened:
        await watched.close()


def pull_request(*, no_wait: bool = True) -> bytes:
    return json.dumps({"batch": 1, "no_wait": no_wait, "expires": int(DENIED_S * 1e9)}).encode()


async def pull_one(nc: NatsClient, subject: str, *, timeout: float) -> Msg:
    """One message from a pull consumer (``subject``: its ``MSG.NEXT``); raises
    nats' TimeoutError when nothing answers. Not ``nc.request``: a delivered
    message carries its own subject, not the inbox's, so only a subscription
    of its own receives it."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(subject, pull_request(), reply=inbox)
        return await sub.next_msg(timeout=timeout)
    finally:
        await sub.unsubscribe()


async def stored(bus: Bus, stream: str) -> int:
    return int((await bus.js.stream_info(stream)).state.messages)


# End to end ---------------------------------------------------------------


async def test_a_workflow_runs_end_to_end_on_a_secure_dev_cluster(
    log_dir: Path, tmp_path: Path
) -> None:
    logs = log_dir / "secure-dev"
    async with DevCluster(
        app=TEST_APP, workers=1, prefix=unique_prefix("sdev"), secure=True, log_dir=logs
    ) as cluster:
        assert cluster.url.startswith("tls://")
        assert cluster.auth is not None
        bus = await Bus.connect(cluster.settings_for(CLIENT), name="test-client")
        try:
            client = Client(bus=bus, node_id="secure-client")
            definition = wf(
                {"id": "a", "capability": "add", "params": {"value": 1}},
                {"id": "b", "capability": "add", "params": {"value": 2}, "depends_on": ["a"]},
                {"id": "c", "capability": "echo", "depends_on": ["b"]},
            )
            workflow_id = await client.submit(definition)
            state = await client.wait(workflow_id, timeout=60)
            assert state.status.value == "completed", state
            assert state.tasks["b"].result == 3
            # The workflow index is readable (and watchable) with client credentials.
            index = await bus.kv(bus.names.workflow_index_bucket)
            watcher = await index.watch(workflow_id, inactive_threshold=5.0)
            try:
                async with asyncio.timeout(30):
                    while not [
                        s
                        for s in await client.workflows(state="completed", limit=None)
                        if s.id == workflow_id
                    ]:
                        await watcher.updates(timeout=30)
            finally:
                await watcher.stop()
            # Streamed output is readable with client credentials (a consumer of
            # its own, by name: an unnamed create is not granted on the events).
            narrated = await client.submit(wf({"id": "n", "capability": "narrate"}))
            async with asyncio.timeout(60):
                chunks = [c.data async for c in client.stream(narrated, kinds=["token"])]
            assert chunks == ["Hello", " world"]
            # A schedule created with client credentials fires (the coordinator
            # writes its state); the client may not write that state itself.
            await client.put_schedule(
                ScheduleSpec.model_validate(
                    {"name": "sec", "every": 1, "definition": wf({"id": "e", "capability": "echo"})}
                )
            )
            fired = await client.wait_for_schedule("sec", lambda i: i.state.fired >= 1, timeout=60)
            assert fired.state.last_workflow_id is not None
            await client.wait(fired.state.last_workflow_id, timeout=60)
            schedules = await bus.kv(bus.names.schedule_state_bucket)
            with pytest.raises(TransportError, match="no answer from the server"):
                await schedules.put("state.sec", b"forged")
            await client.delete_schedule("sec")
        finally:
            await bus.close()

        # A CLI command with nothing but the client's env file.
        flow = tmp_path / "flow.yaml"
        flow.write_text("tasks:\n  - {id: one, capability: add, params: {value: 5}}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICFLOW_")}
        env.update(read_env_file(cluster.auth.env_file(CLIENT)))
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agenticflow", "submit", str(flow), "--wait", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["tasks"]["one"]["result"] == 5
    # Every process ran within its permissions (a refusal is logged as a nats error).
    for log in logs.glob("*.log"):
        assert "permissions violation" not in log.read_text().lower(), log


# A worker's credentials ---------------------------------------------------


async def test_a_worker_cannot_publish_a_task(secure: Secure, topology: Bus, as_role: Any) -> None:
    subject = topology.names.task_subject("echo")
    stream = topology.names.tasks_stream
    before = await stored(topology, stream)
    worker = await as_role(WORKER)
    with pytest.raises(nats.errors.TimeoutError):
        await worker.nc.jetstream().publish(subject, b"forged", timeout=DENIED_S)
    await worker.told("permissions violation", "publish", subject)
    assert await stored(topology, stream) == before

    # Control: the coordinator may.
    await topology.js.publish(subject, b"genuine", timeout=2)
    assert await stored(topology, stream) == before + 1
    # Its own queue's consumer hands it over to the worker (and the worker acks it).
    names = topology.names
    msg = await pull_one(
        worker.nc, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{names.task_consumer('echo')}", timeout=2
    )
    assert msg.data == b"genuine"
    await msg.ack()


async def test_a_worker_cannot_pull_another_capabilitys_queue(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    names, stream = topology.names, topology.names.tasks_stream
    await topology.js.publish(names.task_subject("other"), b"not yours", timeout=2)
    other = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{names.task_consumer('other')}"
    worker = await as_role(WORKER)
    with pytest.raises(nats.errors.TimeoutError):
        await pull_one(worker.nc, other, timeout=DENIED_S)
    await worker.told("permissions violation", "publish", other)
    # Nor by redefining its own consumer to filter the other queue: the server
    # holds a create request to the filter its subject names...
    own = names.task_consumer("echo")
    redefine = {
        "stream_name": stream,
        "config": {"name": own, "durable_name": own, "filter_subject": names.task_subject("other")},
    }
    allowed = f"$JS.API.CONSUMER.CREATE.{stream}.{own}.{names.task_subject('echo')}"
    answer = json.loads((await worker.nc.request(allowed, json.dumps(redefine).encode())).data)
    assert answer["error"]["err_code"] == 10131, answer  # filter does not match the subject
    # ...and the subject naming the other filter is refused.
    forged = f"$JS.API.CONSUMER.CREATE.{stream}.{own}.{names.task_subject('other')}"
    with pytest.raises(nats.errors.TimeoutError):
        await worker.nc.request(forged, json.dumps(redefine).encode(), timeout=DENIED_S)
    await worker.told("permissions violation", forged)

    # Control: the task is there, and the coordinator's credentials may pull it.
    msg = await pull_one(topology.nc, other, timeout=2)
    assert msg.data == b"not yours"
    await msg.ack()


async def test_a_worker_cannot_subscribe_to_another_capabilitys_task_subject(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    names = topology.names
    worker = await as_role(WORKER)
    spied: list[bytes] = []
    allowed: asyncio.Queue[bytes] = asyncio.Queue()

    async def spy(msg: Any) -> None:
        spied.append(msg.data)

    async def heard(msg: Any) -> None:
        await allowed.put(msg.data)

    await worker.nc.subscribe(names.task_subject("other"), cb=spy)
    await worker.nc.subscribe(names.event_subject("*", "workflow.aborted"), cb=heard)
    await worker.nc.flush()
    await worker.told("permissions violation", "subscription", names.task_subject("other"))

    # The coordinator publishes on both, in this order: once the allowed one has
    # arrived, the refused one would have arrived before it.
    await topology.nc.publish(names.task_subject("other"), b"secret task")
    await topology.nc.publish(names.event_subject("wf-1", "workflow.aborted"), b"aborted")
    async with asyncio.timeout(2):
        assert await allowed.get() == b"aborted"
    assert spied == []
    msg = await pull_one(
        topology.nc,
        f"$JS.API.CONSUMER.MSG.NEXT.{names.tasks_stream}.{names.task_consumer('other')}",
        timeout=2,
    )
    await msg.ack()  # the task stored by the core publish above


async def test_a_worker_cannot_create_a_stream_and_waits_for_the_coordinators(
    tmp_path: Path,
) -> None:
    running = start_secure(tmp_path)
    try:
        worker_settings = running.settings(WORKER)
        assert worker_settings.manage_topology is False
        worker = await Bus.connect(worker_settings, name="test-worker")
        try:
            # It does not try to create what it may not: it waits for the coordinator.
            waiting = asyncio.create_task(worker.ensure_topology())
            coordinator = await Bus.connect(running.settings(COORDINATOR), name="test-coord")
            try:
                await coordinator.ensure_topology()
                async with asyncio.timeout(10):
                    await waiting
                await worker.kv(worker.names.control_bucket)  # found, not created
            finally:
                await coordinator.close()
            # Creating a stream itself is refused.
            watched = await Watched.connect(worker_settings)
            try:
                subject = f"$JS.API.STREAM.CREATE.{running.prefix.upper()}_MINE"
                body = json.dumps({"name": f"{running.prefix.upper()}_MINE", "subjects": ["x"]})
                with pytest.raises(nats.errors.TimeoutError):
                    await watched.nc.request(subject, body.encode(), timeout=DENIED_S)
                await watched.told("permissions violation", subject)
            finally:
                await watched.close()
        finally:
            await worker.close()
    finally:
        running.server.stop()


async def test_without_a_coordinator_a_worker_gives_up_with_a_clear_error(
    tmp_path: Path,
) -> None:
    running = start_secure(tmp_path)
    try:
        worker = await Bus.connect(
            running.settings(WORKER, topology_wait_s=0.2), name="test-worker"
        )
        try:
            with pytest.raises(NotFoundError, match="coordinator"):
                await worker.ensure_topology()
        finally:
            await worker.close()
    finally:
        running.server.stop()


# Authentication and TLS ---------------------------------------------------


async def test_connecting_without_credentials_or_with_unknown_ones_is_refused(
    secure: Secure, tmp_path: Path
) -> None:
    anonymous = secure.settings(CLIENT, nats_nkey_seed_file=None)
    with pytest.raises(TransportError, match="Authorization Violation"):
        await Bus.connect(anonymous, name="test-anonymous")
    # A well-formed nkey the server does not know.
    stranger = generate(
        tmp_path / "stranger", prefix=secure.prefix, workers=[WorkerGroup("x", ("echo",))]
    )
    seed = Path(stranger.credentials[CLIENT]["AGENTICFLOW_NATS_NKEY_SEED_FILE"])
    unknown = secure.settings(CLIENT, nats_nkey_seed_file=seed)
    with pytest.raises(TransportError, match="Authorization Violation"):
        await Bus.connect(unknown, name="test-stranger")
    # Control: the client's own key.
    bus = await Bus.connect(secure.settings(CLIENT), name="test-client")
    await bus.close()


async def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    running = start_secure(tmp_path, auth="password", tls=False)
    try:
        right = running.settings(CLIENT)
        assert right.nats_user == CLIENT
        assert right.nats_password is not None
        with pytest.raises(TransportError, match="Authorization Violation"):
            await Bus.connect(right.model_copy(update={"nats_password": None}), name="t")
        wrong = right.model_copy(update={"nats_password": SecretStr("wrong")})
        with pytest.raises(TransportError, match="Authorization Violation"):
            await Bus.connect(wrong, name="test-wrong")
        bus = await Bus.connect(right, name="test-right")  # control
        await bus.close()
    finally:
        running.server.stop()


async def test_tls_without_the_ca_fails_verification(secure: Secure) -> None:
    assert secure.server.url.startswith("tls://")
    without_ca = secure.settings(CLIENT, nats_tls_ca_file=None)
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        await Bus.connect(without_ca, name="test-no-ca")
    # Control: the same with the CA (the certificate names 127.0.0.1).
    bus = await Bus.connect(secure.settings(CLIENT), name="test-ca")
    await bus.close()


# A client's credentials ---------------------------------------------------


async def test_client_credentials_cannot_publish_a_task(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    names, stream = topology.names, topology.names.tasks_stream
    subject = names.task_subject("add")
    before = await stored(topology, stream)
    client = await as_role(CLIENT)
    js = client.nc.jetstream()
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(subject, b"forged", timeout=DENIED_S)
    await client.told("permissions violation", "publish", subject)
    assert await stored(topology, stream) == before
    # Control: it may publish a submission (that is what it is for).
    ack = await js.publish(names.event_subject("wf-x", "workflow.submitted"), b"x", timeout=2)
    assert ack.seq > 0


async def test_client_credentials_cannot_take_over_the_coordinators_consumer(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    names, stream = topology.names, topology.names.events_stream
    client = await as_role(CLIENT)
    refused: dict[str, bytes] = {}
    # The single coordinator's consumer, and a partition's (AGENTICFLOW_PARTITIONS > 1).
    for consumer in (names.coordinator_consumer, names.partition_consumer(63, 64)):
        # Reading through it would steal the coordinator's events.
        refused[f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"] = pull_request()
        # Redefining it: by name, or through an unnamed create whose body names it.
        refused[f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{names.event_subjects}"] = b"{}"
        refused[f"$JS.API.CONSUMER.CREATE.{stream}"] = json.dumps(
            {"stream_name": stream, "config": {"name": consumer, "filter_subject": "x"}}
        ).encode()
        # Deleting it (a client may delete the consumers it reads output with).
        refused[f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}"] = b""
    for subject, body in refused.items():
        with pytest.raises(nats.errors.TimeoutError):
            await client.nc.request(subject, body, timeout=DENIED_S)
        await client.told("permissions violation", subject)
    # Control: it reads events through a consumer of its own.
    bus = await Bus.connect(secure.settings(CLIENT), name="test-reader")
    try:
        await topology.js.publish(names.event_subject("wf-read", "test.note"), b"hello")
        msgs = await bus.read_stored(stream, names.workflow_events("wf-read"))
        assert [m.data for m in msgs] == [b"hello"]
    finally:
        await bus.close()


async def test_admin_credentials_may_do_what_the_coordinator_does(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    admin = await as_role(ADMIN)
    ack = await admin.nc.jetstream().publish(
        topology.names.task_subject("other"), b"by an operator", timeout=2
    )
    assert ack.stream == topology.names.tasks_stream
    msg = await pull_one(
        topology.nc,
        f"$JS.API.CONSUMER.MSG.NEXT.{ack.stream}.{topology.names.task_consumer('other')}",
        timeout=2,
    )
    await msg.ack()


async def test_a_worker_receives_its_own_direct_tasks_and_no_other_queues(
    secure: Secure, topology: Bus, as_role: Any
) -> None:
    """Auctions: a worker opens a direct consumer of its own queues only (pushing
    into its own inbox), acks what it won, and may publish its bids."""
    names = topology.names
    worker = await Bus.connect(secure.settings(WORKER), name="test-worker", role="worker")
    try:
        inbox = worker.nc.new_inbox()
        got: asyncio.Queue[Any] = asyncio.Queue()
        await worker.nc.subscribe(inbox, cb=got.put)
        await worker.open_direct("echo", "w-1", deliver_subject=inbox, max_ack_pending=2)
        await topology.js.publish(names.direct_subject("echo", "w-1"), b"won", timeout=2)
        msg = await asyncio.wait_for(got.get(), timeout=5)
        assert msg.data == b"won"
        await msg.ack_sync(timeout=2)
        assert (await topology.js.stream_info(names.direct_stream)).state.messages == 0
        # Another group's queue: refused (its direct tasks are not this worker's to see).
        with pytest.raises(TransportError):
            await worker.open_direct("other", "w-1", deliver_subject=inbox, max_ack_pending=2)
        # A bid is a task event: allowed.
        ack = await worker.js.publish(
            names.event_subject("wf-1", "task.bid"), b"bid", headers={"Nats-Msg-Id": "b1"}
        )
        assert ack.stream == names.events_stream
    finally:
        await worker.close()
    # Nor may a worker publish a direct task itself.
    raw = await as_role(WORKER)
    subject = names.direct_subject("echo", "w-1")
    with pytest.raises(nats.errors.TimeoutError):
        await raw.nc.jetstream().publish(subject, b"forged", timeout=DENIED_S)
    await raw.told("permissions violation", "publish", subject)

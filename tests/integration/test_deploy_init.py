"""The compose deployment's first start, for real but without Docker.

The ``init`` service's command is taken from deploy/compose.yaml as written
(with Compose's ``$$`` escapes undone) and run twice in a temporary directory
standing in for its volumes. Then three nats-server processes run
deploy/compose/nats.conf, each with a copy of the ``nats-secrets`` volume,
exactly as the ``nats-N`` containers mount them (only ports, addresses and the
data directory change, so that three nodes fit on one host), and a
coordinator, a worker and the ``cli`` run with their compose environment and
their own role's volume. Attacks on that cluster:

- a connection without TLS, and one with TLS but no user, are refused;
- a worker's user cannot delete or purge a stream (it can read its info);
- a server without the route password cannot join the cluster;
- a role's volume holds that role's secrets and nothing else.

A workflow submitted through the ``cli`` service's settings completes: the
shipped settings work together.
"""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import yaml

from agenticflow.cluster.nats_server import NatsServer, nats_server_binary
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.credentials import connect_options
from tests.integration.helpers import ROOT
from tests.support.natsbus import nats_of

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
NODE_CONF = ROOT / "deploy" / "compose" / "nats.conf"
SECRETS_ROOT = "/etc/agenticflow"
"""Where init generates everything (volume ``secrets``) and where every other
service mounts its role's volume."""
EXPORT_ROOT = "/srv/agenticflow"
"""Where init mounts the role volumes it fills."""
DENIED_S = 0.5
"""How long a request the server refuses is waited for (it never answers)."""

pytestmark = pytest.mark.timeout(240)

Doc = dict[str, Any]


# Compose, read the way Compose reads it ------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value: ``$$`` is a literal ``$``,
    ``${NAME:-default}``, ``${NAME}`` and ``$NAME`` come from ``env``."""
    parts = text.split("$$")

    def value(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("bare")
        return env.get(name) or (match.group("default") or "")

    return "$".join(_VARIABLE.sub(value, part) for part in parts)


def load_compose() -> Doc:
    data: Doc = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, interpolated with an empty host environment."""
    env = service.get("environment", {})
    return {str(k): interpolate(str(v), {}) for k, v in env.items()}


def init_command(compose: Mapping[str, Any]) -> list[str]:
    """The init service's entrypoint and command, as the container runs them."""
    init = compose["services"]["init"]
    return [interpolate(arg, {}) for arg in [*init["entrypoint"], *init["command"]]]


def volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Named volume -> mount path (short syntax)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if not source.startswith("."):
            mounts[source] = target
    return mounts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The deployment ----------------------------------------------------------------


@dataclass
class Deployment:
    """The init's output and three NATS nodes running the compose config."""

    root: Path
    compose: Doc
    secrets: Path
    export: Path
    nodes: list[NatsServer] = field(default_factory=list)
    route_ports: list[int] = field(default_factory=list)

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def volume_dir(self, volume: str) -> Path:
        """Where the test keeps a named volume's content (as init filled it)."""
        init_mounts = volume_mounts(self.compose["services"]["init"])
        target = init_mounts[volume]
        if target == SECRETS_ROOT:
            return self.secrets
        return self.export / Path(target).relative_to(EXPORT_ROOT)

    def role_dir(self, service: str) -> Path:
        """The volume a service mounts on /etc/agenticflow."""
        mounts = volume_mounts(self.compose["services"][service])
        (volume,) = [v for v, target in mounts.items() if target == SECRETS_ROOT]
        return self.volume_dir(volume)

    def env(self, service: str, **changes: str) -> dict[str, str]:
        """A service's compose environment, its paths in its volume's copy here,
        pointed at the test's nodes."""
        here = str(self.role_dir(service))
        env = {
            k: here + v.removeprefix(SECRETS_ROOT) if v.startswith(SECRETS_ROOT + "/") else v
            for k, v in service_env(self.compose["services"][service]).items()
        }
        env["AGENTICFLOW_NATS_URL"] = self.urls
        env.update(changes)
        return env

    def settings(self, service: str) -> Settings:
        fields = {
            k.removeprefix("AGENTICFLOW_").lower(): v
            for k, v in self.env(service).items()
            if k.startswith("AGENTICFLOW_")
        }
        return Settings.model_validate(fields)


def run_init(compose: Mapping[str, Any], secrets: Path, export: Path) -> None:
    init = compose["services"]["init"]
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(secrets.parent),
        **service_env(init),
        # The volumes' mount points, moved into the temporary directory.
        "AF_SECRETS": str(secrets),
        "AF_EXPORT": str(export),
    }
    done = subprocess.run(
        init_command(compose), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def start_nodes(deployment: Deployment) -> None:
    """The compose NATS nodes, each with its copy of the nats-secrets volume."""
    compose = deployment.compose
    nats_services = [n for n in compose["services"] if re.fullmatch(r"nats-\d", n)]
    ports = {name: free_port() for name in nats_services}
    deployment.route_ports = list(ports.values())
    for name in nats_services:
        service = compose["services"][name]
        node = deployment.root / name
        etc = node / "etc"
        # The volume, as the container sees it: generated paths point into it.
        (volume,) = [v for v, t in volume_mounts(service).items() if t == SECRETS_ROOT]
        shutil.copytree(deployment.volume_dir(volume), etc / "agenticflow")
        for file in (etc / "agenticflow").rglob("*"):
            if file.is_file():
                text = file.read_text().replace(str(deployment.secrets), str(etc / "agenticflow"))
                for peer, port in ports.items():
                    text = text.replace(f"@{peer}:6222", f"@127.0.0.1:{port}")
                file.write_text(text)
        (etc / "nats").mkdir(parents=True)
        conf = NODE_CONF.read_text()
        for old, new in (
            ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{ports[name]}"),
            ("http: 127.0.0.1:8222", f"http: 127.0.0.1:{free_port()}"),
            ("store_dir: /data", f"store_dir: {json.dumps(str(node / 'data'))}"),
        ):
            assert old in conf, old
            conf = conf.replace(old, new)
        (etc / "nats" / "agenticflow.conf").write_text(conf)
        server = NatsServer(store_dir=node / "log", config_file=etc / "nats" / "agenticflow.conf")
        with pytest.MonkeyPatch.context() as patch:
            for key, value in service_env(service).items():
                patch.setenv(key, value)
            server.start()
        deployment.nodes.append(server)


def monitoring_url(node: NatsServer) -> str:
    assert node.config_file is not None
    port = re.search(r"http: 127\.0\.0\.1:(\d+)", node.config_file.read_text())
    assert port is not None
    return f"http://127.0.0.1:{port.group(1)}"


def wait_healthy(nodes: list[NatsServer], timeout: float = 60) -> None:
    """Every node's /healthz answers 200 (JetStream current with the cluster)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            try:
                with urllib.request.urlopen(f"{monitoring_url(node)}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "the compose NATS cluster did not form"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy-init")
    compose = load_compose()
    running = Deployment(root, compose, root / "secrets", root / "export")
    run_init(compose, running.secrets, running.export)
    try:
        start_nodes(running)
        wait_healthy(running.nodes)
        yield running
    finally:
        for node in running.nodes:
            node.stop()


@pytest.fixture(scope="module")
async def coordinator_bus(deployment: Deployment) -> AsyncIterator[Bus]:
    """The coordinator's connection, after it created the topology (R3)."""
    bus = await Bus.connect(deployment.settings("coordinator"), name="deploy-coordinator")
    await bus.ensure_topology()
    yield bus
    await bus.close()


# Init ---------------------------------------------------------------------


def test_init_is_idempotent_and_every_role_gets_only_its_own_files(
    deployment: Deployment,
) -> None:
    before = {v: snapshot(deployment.volume_dir(v)) for v in ("secrets", "worker-secrets")}
    run_init(deployment.compose, deployment.secrets, deployment.export)
    after = {v: snapshot(deployment.volume_dir(v)) for v in ("secrets", "worker-secrets")}
    assert after == before, "a second start regenerated credentials or keys"

    files = {
        service: sorted(snapshot(deployment.role_dir(service)))
        for service in ("nats-1", "coordinator", "worker", "cli")
    }
    assert files == {
        "nats-1": [
            "nats/cluster.conf",
            "nats/nats-server.conf",
            "nats/server-key.pem",
            "nats/server.pem",
        ],
        "coordinator": [
            "keys/coordinator.key",
            "keys/data-keys.json",
            "keys/trust.json",
            "nats/ca.pem",
            "nats/coordinator.nk",
        ],
        "worker": [
            "keys/data-keys.json",
            "keys/trust.json",
            "keys/worker.key",
            "nats/ca.pem",
            "nats/worker-agents.nk",
        ],
        "cli": [
            "keys/client.key",
            "keys/data-keys.json",
            "keys/trust.json",
            "nats/admin.nk",
            "nats/ca.pem",
        ],
    }
    for service in ("nats-1", "coordinator", "worker", "cli"):
        for path in deployment.role_dir(service).rglob("*"):
            if path.is_file():
                assert path.stat().st_mode & 0o077 == 0, f"{service}: {path} readable by others"
    # What each role got is what init generated (no stale copy).
    assert filecmp.cmp(
        deployment.secrets / "keys" / "worker.key",
        deployment.role_dir("worker") / "keys" / "worker.key",
        shallow=False,
    )


def test_the_compose_environment_is_what_nats_config_writes_for_each_role(
    deployment: Deployment,
) -> None:
    """The credentials part of each service's environment is the env file
    `agenticflow nats-config` wrote for its NATS user (URL aside)."""
    from agenticflow.cluster.nats_auth import read_env_file

    for service, user in (
        ("coordinator", "coordinator"),
        ("worker", "worker-agents"),
        ("cli", "admin"),
    ):
        generated = read_env_file(deployment.secrets / "nats" / f"{user}.env")
        env = service_env(deployment.compose["services"][service])
        expected = {
            k: v.replace(str(deployment.secrets), SECRETS_ROOT)
            for k, v in generated.items()
            if k not in ("AGENTICFLOW_NATS_URL", "AGENTICFLOW_TOPOLOGY_WAIT_S")
        }
        assert {k: env.get(k) for k in expected} == expected, service


# Attacks on the running cluster ---------------------------------------------


async def _refused(settings: Settings, **overrides: Any) -> str:
    """Connect; returns what the server or the TLS layer said."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")

    options = {**connect_options(settings), **overrides}
    try:
        nc = await nats.connect(
            servers=settings.servers,
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=2,
            **options,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    else:
        await nc.close()
        pytest.fail(f"connected to {settings.servers} with {sorted(options)}")
    return " | ".join(errors)


async def test_nats_refuses_a_client_without_tls_or_without_a_user(
    deployment: Deployment, coordinator_bus: Bus
) -> None:
    worker = deployment.settings("worker")
    # Plain text: the server announces TLS as required and never answers a PING.
    host, port = deployment.nodes[0].url.removeprefix("tls://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = json.loads((await reader.readline()).removeprefix(b"INFO "))
        assert info["tls_required"] is True
        assert info["auth_required"] is True
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()  # until the server closes the connection
        assert b"PONG" not in answer, answer
    finally:
        writer.close()
    anonymous = worker.model_copy(update={"nats_nkey_seed_file": None})
    said = await _refused(anonymous)
    assert "authorization violation" in said.lower(), said
    # Control: the same settings with the worker's seed connect.
    nc = await nats.connect(servers=worker.servers, connect_timeout=2, **connect_options(worker))
    await nc.close()


async def test_a_worker_cannot_delete_or_purge_a_stream(
    deployment: Deployment, coordinator_bus: Bus
) -> None:
    worker = deployment.settings("worker")
    errors: list[str] = []
    told = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        told.set()

    nc = await nats.connect(
        servers=worker.servers, error_cb=on_error, connect_timeout=2, **connect_options(worker)
    )
    try:
        names = coordinator_bus.names
        stream = names.tasks_stream
        # Control: what its permissions allow is answered (the registry's info).
        registry = f"KV_{names.agents_bucket}"
        info = await nc.request(f"$JS.API.STREAM.INFO.{registry}", b"", timeout=5)
        assert json.loads(info.data)["config"]["name"] == registry
        for verb in ("DELETE", "PURGE"):
            subject = f"$JS.API.STREAM.{verb}.{stream}"
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, b"", timeout=DENIED_S)
            # nats-py reports the server's -ERR lower-cased.
            said = f'permissions violation for publish to "{subject.lower()}"'
            async with asyncio.timeout(5):
                while not any(said in e.lower() for e in errors):
                    told.clear()
                    await told.wait()
    finally:
        await nc.close()
    assert (await coordinator_bus.js.stream_info(stream)).config.name == stream


def test_a_server_without_the_route_password_cannot_join(deployment: Deployment) -> None:
    log = deployment.root / "rogue.log"
    rogue_route = free_port()
    args = [
        nats_server_binary(),
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "--cluster_name",
        "agenticflow",
        "--cluster_listen",
        f"nats://127.0.0.1:{rogue_route}",
        "--routes",
        f"nats-route://127.0.0.1:{deployment.route_ports[0]}",
    ]
    with log.open("wb") as out:
        rogue = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "Authorization Violation" not in log.read_text():
            assert rogue.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with urllib.request.urlopen(
            f"{monitoring_url(deployment.nodes[0])}/routez", timeout=2
        ) as r:
            routes = json.loads(r.read())["routes"]
        assert all(route.get("port") != rogue_route for route in routes)
        names = {route.get("remote_name") for route in routes}
        assert len(names) == 2, names  # the two genuine peers only
    finally:
        rogue.terminate()
        rogue.wait(10)


# The shipped settings work together ------------------------------------------


def test_a_workflow_runs_on_the_compose_settings(deployment: Deployment) -> None:
    logs = deployment.root / "logs"
    logs.mkdir(exist_ok=True)
    base = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(deployment.root),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for service in ("coordinator", "worker"):
            command = deployment.compose["services"][service]["command"]
            with (logs / f"{service}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "agenticflow", *command],
                        env={**base, **deployment.env(service, AGENTICFLOW_METRICS_PORT="0")},
                        cwd=ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        example = ROOT / "examples" / "customer_service"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agenticflow",
                "submit",
                str(example / "workflow.yaml"),
                "--input",
                f"@{example / 'input.json'}",
                "--wait",
                "--json",
                "--timeout",
                "90",
            ],
            env={**base, **deployment.env("cli", AGENTICFLOW_METRICS_PORT="0")},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert done.returncode == 0, (done.stderr, [p.poll() for p in procs])
        state = json.loads(done.stdout)
        assert state["state"] == "completed"
        assert state["output"]["escalation"]["page_id"].endswith(":tool:page_manager")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for log in logs.glob("*.log"):
        assert "permissions violation" not in log.read_text().lower(), log


# Kubernetes: the init Job's script, against a stand-in for the API server -------

K8S_BASE = ROOT / "deploy" / "k8s" / "base"
K8S_INIT = K8S_BASE / "init"
CHART_CONF_DIR = "nats-config"
"""The NATS chart's config directory; its includes are relative to it."""
CHART_CERTS = "nats-certs/nats"
"""Where the chart mounts config.nats.tls.secretName (nats-values.yaml)."""
TOKEN = "test-token"


class SecretsApi:
    """The part of the Kubernetes API the init Job uses (get and create Secrets),
    over TLS, checking the service account's token."""

    def __init__(self, tls: tuple[Path, Path]) -> None:
        import http.server
        import ssl
        import threading

        self.secrets: dict[tuple[str, str], Doc] = {}
        self.posts = 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, body: Doc | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _where(self) -> list[str] | None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401)
                    return None
                return self.path.strip("/").split("/")  # api v1 namespaces NS secrets [NAME]

            def do_GET(self) -> None:
                where = self._where()
                if where is not None:
                    secret = api.secrets.get((where[3], where[5]))
                    self._answer(200 if secret else 404, secret)

            def do_POST(self) -> None:
                where = self._where()
                if where is None:
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (where[3], body["metadata"]["name"])
                api.posts += 1
                if key in api.secrets:
                    self._answer(409)
                else:
                    api.secrets[key] = body
                    self._answer(201, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    def files(self, namespace: str, name: str) -> dict[str, bytes]:
        import base64

        data = self.secrets[(namespace, name)]["data"]
        return {key: base64.b64decode(value) for key, value in data.items()}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class K8sInit:
    root: Path
    api: SecretsApi
    job: Doc

    def run(self) -> subprocess.CompletedProcess[str]:
        """init/init.sh as the Job's container runs it, its directories moved here."""
        (container,) = self.job["spec"]["template"]["spec"]["containers"]
        work = self.root / f"run-{time.monotonic_ns()}"
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "HOME": str(self.root),
            "AGENTICFLOW_PREFIX": "af",  # configmap.yaml's
            **{e["name"]: e["value"] for e in container["env"] if "value" in e},
            "AF_SECRETS": str(work / "generated"),
            "AF_EXPORT": str(work / "export"),
            "AF_INIT": str(K8S_INIT),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.api.port),
            "SERVICE_ACCOUNT_DIR": str(self.root / "serviceaccount"),
        }
        command = [*container["command"][:-1], str(K8S_INIT / "init.sh")]
        return subprocess.run(  # the Job's own command
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture(scope="module")
def k8s_init(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sInit]:
    from agenticflow.cluster.nats_auth import make_test_ca

    root = tmp_path_factory.mktemp("k8s-init")
    account = root / "serviceaccount"
    account.mkdir()
    ca, cert, key = make_test_ca(account, ["127.0.0.1"])
    shutil.copy(ca, account / "ca.crt")
    (account / "token").write_text(TOKEN + "\n")
    api = SecretsApi((cert, key))
    jobs = [
        d
        for d in yaml.safe_load_all((K8S_BASE / "init-job.yaml").read_text())
        if d and d["kind"] == "Job"
    ]
    try:
        yield K8sInit(root, api, jobs[0])
    finally:
        api.stop()


def test_the_k8s_init_job_publishes_each_roles_secret_once(k8s_init: K8sInit) -> None:
    first = k8s_init.run()
    assert first.returncode == 0, first.stderr + first.stdout
    api = k8s_init.api
    assert sorted(api.secrets) == [
        ("agenticflow", "agenticflow-cli"),
        ("agenticflow", "agenticflow-coordinator"),
        ("agenticflow", "agenticflow-worker"),
        ("nats", "nats-auth"),
    ]
    assert sorted(api.files("agenticflow", "agenticflow-worker")) == [
        "ca.pem",
        "data-keys.json",
        "trust.json",
        "worker-agents.nk",
        "worker.key",
    ]
    assert sorted(api.files("nats", "nats-auth")) == [
        "auth.conf",
        "cluster.conf",
        "server-key.pem",
        "server.pem",
    ]
    posts, before = api.posts, {k: json.dumps(v) for k, v in api.secrets.items()}
    again = k8s_init.run()
    assert again.returncode == 0, again.stderr
    assert "already in place" in again.stdout
    assert (api.posts, {k: json.dumps(v) for k, v in api.secrets.items()}) == (posts, before)

    # Some Secrets but not all: stop, never generate a second set beside them.
    saved = api.secrets.pop(("nats", "nats-auth"))
    try:
        partial = k8s_init.run()
        assert partial.returncode != 0
        assert "only some Secrets exist" in partial.stdout
        assert api.posts == posts
    finally:
        api.secrets[("nats", "nats-auth")] = saved


def _materialize(api: SecretsApi, deployment: Doc, into: Path) -> None:
    """A Deployment's Secret volume as the kubelet lays it out (items -> paths)."""
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    files = api.files("agenticflow", volume["secret"]["secretName"])
    for item in volume["secret"]["items"]:
        target = into / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[item["key"]])


async def test_nats_as_the_chart_runs_it_refuses_anonymous_and_admits_the_worker(
    k8s_init: K8sInit,
) -> None:
    """The nats-auth Secret where the chart mounts it, the includes of
    nats-values.yaml, and the worker pod's Secret volume: TLS and users work."""
    if not k8s_init.api.secrets:
        assert k8s_init.run().returncode == 0
    etc = k8s_init.root / "etc"
    certs = etc / CHART_CERTS
    certs.mkdir(parents=True, exist_ok=True)
    for name, data in k8s_init.api.files("nats", "nats-auth").items():
        (certs / name).write_bytes(data)
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "nats-values.yaml").read_text())["config"]
    tls = values["nats"]["tls"]
    conf_dir = etc / CHART_CONF_DIR
    conf_dir.mkdir(exist_ok=True)
    # What the chart renders from these values, minus the cluster (one server here).
    conf = conf_dir / "nats.conf"
    conf.write_text(
        f"include {values['merge']['00$include']};\n"
        f"listen: 127.0.0.1:{free_port()}\n"
        f"tls {{ cert_file: {json.dumps(str(certs / tls['cert']))}, "
        f"key_file: {json.dumps(str(certs / tls['key']))} }}\n"
        f"jetstream {{ store_dir: {json.dumps(str(k8s_init.root / 'data'))} }}\n"
    )
    # The cluster block, as rendered, parses with init's cluster.conf.
    clustered = conf_dir / "clustered.conf"
    routes = values["cluster"]["merge"]["00$include"]
    clustered.write_text(
        conf.read_text() + f"cluster {{ include {routes}; name: nats; port: 6222 }}\n"
    )
    checked = await asyncio.to_thread(
        subprocess.run,
        [nats_server_binary(), "-c", str(clustered), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    workers = [
        d
        for d in yaml.safe_load_all((K8S_BASE / "worker.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    pod = k8s_init.root / "worker-pod"
    _materialize(k8s_init.api, workers[0], pod)
    server = NatsServer(store_dir=k8s_init.root / "log", config_file=conf)
    server.start()
    try:
        env = {
            e["name"]: e["value"]
            for e in workers[0]["spec"]["template"]["spec"]["containers"][0]["env"]
            if "value" in e and e["name"].startswith("AGENTICFLOW_")
        }
        configmap = yaml.safe_load((K8S_BASE / "configmap.yaml").read_text())["data"]
        fields = {
            k.removeprefix("AGENTICFLOW_").lower(): str(v).replace(SECRETS_ROOT, str(pod))
            for k, v in {**configmap, **env}.items()
            if k.startswith("AGENTICFLOW_")
        }
        fields["nats_url"] = server.url
        worker = Settings.model_validate(fields)
        nc = await nats.connect(servers=[server.url], connect_timeout=2, **connect_options(worker))
        await nc.close()
        said = await _refused(worker.model_copy(update={"nats_nkey_seed_file": None}))
        assert "authorization violation" in said.lower(), said
    finally:
        server.stop()


# agenticflow dev --secure: the same material as the deploy init ----------------


async def test_dev_secure_generates_the_deploy_init_layout_and_signs_everything(
    deployment: Deployment, tmp_path: Path, log_dir: Path
) -> None:
    from agenticflow.cluster.dev import DevCluster
    from agenticflow.cluster.nats_auth import CLIENT
    from agenticflow.coordinator.client import Client
    from tests.conftest import TEST_APP, unique_prefix
    from tests.integration.helpers import wf

    secure_dir = tmp_path / "secure"
    async with DevCluster(
        app=TEST_APP,
        workers=1,
        prefix=unique_prefix("dsec"),
        secure_dir=secure_dir,
        log_dir=log_dir / "dev-secure",
    ) as cluster:
        assert cluster.auth is not None
        assert cluster.auth.directory == secure_dir.resolve() / "nats"
        assert cluster.keys == secure_dir / "keys"
        # The keys directory holds what the deploy init's does.
        assert sorted(p.name for p in cluster.keys.iterdir()) == sorted(
            p.name for p in (deployment.secrets / "keys").iterdir()
        )
        client_env = cluster.auth.env_file(CLIENT).read_text()
        assert f"AGENTICFLOW_SECURITY_DIR={cluster.keys}" in client_env
        assert "AGENTICFLOW_PRINCIPAL=client" in client_env

        bus = await Bus.connect(cluster.settings_for(CLIENT), name="dev-secure-client")
        try:
            client = Client(bus=bus, node_id="dev-secure-client")
            workflow_id = await client.submit(
                wf({"id": "a", "capability": "add", "params": {"value": 2}})
            )
            state = await client.wait(workflow_id, timeout=60)
            assert state.status.value == "completed", state.reason
        finally:
            await bus.close()
        # What is on the stream is signed (and its body sealed): every process had keys.
        admin = await Bus.connect(cluster.settings, name="dev-secure-admin")
        try:
            names = admin.names
            info = await admin.js.stream_info(names.events_stream)
            assert info.state.messages > 0
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await admin.js.get_msg(names.events_stream, seq)
                assert msg.headers is not None
                assert "AF-Sig" in msg.headers, (seq, msg.subject)
                assert b"value" not in (msg.data or b""), (seq, msg.subject)
        finally:
            await admin.close()


# The worker's seccomp profile, loaded into the kernel ---------------------------

SECCOMP_PROFILE = ROOT / "deploy" / "k8s" / "seccomp" / "agenticflow-worker.json"
NOBODY = 65534

SECCOMP_HOST = r"""
import asyncio, ctypes, json, os, sys

profile = json.load(open(sys.argv[1]))
left_out = set(filter(None, sys.argv[2].split(",")))
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def action(where, key, errno_key):
    if where[key] == "SCMP_ACT_ALLOW":
        return 0x7FFF0000
    assert where[key] == "SCMP_ACT_ERRNO", where[key]
    return 0x00050000 | (where.get(errno_key, 1) & 0xFFFF)


# As runc loads a Localhost profile: the native architecture, every rule.
ctx = lib.seccomp_init(action(profile, "defaultAction", "defaultErrnoRet"))
for rule in profile["syscalls"]:
    args = rule.get("args") or []
    cmps = (Cmp * max(len(args), 1))(
        *[Cmp(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args])
    for name in rule["names"]:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if name in left_out or number < 0:
            continue
        code = lib.seccomp_rule_add_array(
            ctx, action(rule, "action", "errnoRet"), number, len(args), cmps)
        assert code == 0, (name, code)
assert lib.seccomp_load(ctx) == 0
# Then the pod's user: not root, no capability.
os.setgroups([])
os.setresgid(NOBODY, NOBODY, NOBODY)
os.setresuid(NOBODY, NOBODY, NOBODY)

from agenticflow.shared.errors import AgenticFlowError
from tests.support.tools_app import env_in_sandbox
from agenticflow.worker.tools.sandbox import sandbox_run
from agenticflow.worker.tools.spec import ToolCall, vars_of

try:
    done = asyncio.run(sandbox_run(env_in_sandbox, {}, ToolCall(key="k", tool=env_in_sandbox.name)))
    print(json.dumps({"isolation": vars_of(done.isolation)}))
except AgenticFlowError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
""".replace("NOBODY", str(NOBODY))


def _python_for_nobody(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """An interpreter of this Python version that the unprivileged user can
    run with the project's packages (this one may live where only root reads,
    e.g. under /root); skips the test when there is none."""
    import site

    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *site.getsitepackages()]),
        "HOME": str(tmp_path),
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version), f"/usr/bin/{version}"):
        if candidate is None or not Path(candidate).exists():
            continue
        try:
            works = subprocess.run(
                [
                    candidate,
                    "-c",
                    "import _decimal, pydantic_core, agenticflow.worker.tools.sandbox",
                ],
                user=NOBODY,
                env=env,
                cwd="/",
                capture_output=True,
                check=False,
                timeout=60,
            )
        except OSError:  # not even executable for that user
            continue
        if works.returncode == 0:
            return candidate, env
    pytest.skip(f"no {version} the unprivileged user can run with the project's packages")


def _under_profile(tmp_path: Path, left_out: str = "") -> dict[str, Any]:
    import ctypes.util
    import platform

    if (
        platform.machine() not in ("x86_64", "aarch64")
        or ctypes.util.find_library("seccomp") is None
    ):
        pytest.skip("needs libseccomp on x86_64 or aarch64")
    if os.geteuid() != 0:
        pytest.skip("needs root to become the pod's unprivileged user")
    probe = subprocess.run(
        ["unshare", "--user", "true"],
        user=NOBODY,
        capture_output=True,
        check=False,
        timeout=10,
    )
    if probe.returncode != 0:
        pytest.skip("this kernel refuses unprivileged user namespaces")
    python, env = _python_for_nobody(tmp_path)
    tmp_path.chmod(0o755)
    done = subprocess.run(
        [python, "-c", SECCOMP_HOST, str(SECCOMP_PROFILE), left_out],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_worker_seccomp_profile_gives_the_sandbox_its_namespaces(tmp_path: Path) -> None:
    """The shipped profile, loaded by the kernel, with the pod's non-root user:
    the tool runs in its own user, pid and network namespaces, chrooted."""
    answer = _under_profile(tmp_path)
    assert "isolation" in answer, answer
    isolation = answer["isolation"]
    assert isolation["user_namespace"] is True
    assert isolation["pid_namespace"] is True
    assert isolation["network_isolated"] is True
    assert isolation["jail"] == "chroot"
    assert isolation["same_user"] is False


def test_without_its_two_additions_the_profile_is_runtime_default_and_the_tool_refuses(
    tmp_path: Path,
) -> None:
    """The control: the same profile minus unshare and chroot (what
    RuntimeDefault allows a container without capabilities) and the sandboxed
    tool is not run (no --allow-weak-sandbox)."""
    answer = _under_profile(tmp_path, "unshare,chroot")
    assert answer.get("error") == "SandboxIsolationError", answer


# agenticflow cluster up --secure: the same material, on a 3-node cluster ----------


async def test_cluster_up_secure_runs_the_deploy_init_material_and_refuses_attacks(
    deployment: Deployment, tmp_path: Path
) -> None:
    from agenticflow.cluster.local import ClusterSpec, LocalCluster
    from agenticflow.cluster.nats_auth import ADMIN
    from tests.conftest import TEST_APP, unique_prefix

    spec = ClusterSpec.build(
        nodes=3,
        coordinators=1,
        workers=1,
        app=TEST_APP,
        prefix=unique_prefix("csec"),
        secure=True,
        cwd=str(ROOT),
    )
    directory = tmp_path / "cluster"
    async with LocalCluster(spec, directory=directory) as cluster:
        assert cluster.auth is not None
        assert cluster.keys is not None
        assert cluster.urls.startswith("tls://")
        assert sorted(p.name for p in cluster.keys.iterdir()) == sorted(
            p.name for p in (deployment.secrets / "keys").iterdir()
        )
        # A CLI with nothing but the admin's env file (what `cluster up` prints).
        env_file = cluster.to_json()["env_file"]
        assert env_file == str(cluster.auth.env_file(ADMIN))
        from agenticflow.cluster.nats_auth import read_env_file

        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICFLOW_")}
        env.update(read_env_file(Path(env_file)))
        flow = tmp_path / "flow.yaml"
        flow.write_text("tasks:\n  - {id: one, capability: add, params: {value: 5}}\n")
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agenticflow", "submit", str(flow), "--wait", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["tasks"]["one"]["result"] == 5

        worker_settings = cluster.settings_for("worker-cluster")
        said = await _refused(worker_settings.model_copy(update={"nats_nkey_seed_file": None}))
        assert "authorization violation" in said.lower(), said
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(
            servers=worker_settings.servers,
            error_cb=on_error,
            connect_timeout=2,
            **connect_options(worker_settings),
        )
        try:
            subject = f"$JS.API.STREAM.DELETE.{worker_settings.names.events_stream}"
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, b"", timeout=DENIED_S)
        finally:
            await nc.close()
        assert any("permissions violation" in e for e in errors), errors
        assert cluster.bus is not None
        admin = nats_of(cluster.bus)
        info = await admin.js.stream_info(worker_settings.names.events_stream)
        # Every event is signed: the processes had their keys.
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await admin.js.get_msg(worker_settings.names.events_stream, seq)
            assert msg.headers is not None
            assert "AF-Sig" in msg.headers, seq
    for log in (directory / "logs").glob("*.log"):
        assert "permissions violation" not in log.read_text().lower(), log

"""A JetStream cluster of N nats-server processes on 127.0.0.1, for failure tests.

Each node has its own config file, store directory, client port, cluster
(route) port and monitoring port. Route ports must be known before any node
starts, so they are picked up front; client and monitoring ports are chosen by
the server on the first start (``-1``), read from its ports file, and pinned
for restarts, so clients listing every URL find a restarted node again::

    with NatsCluster() as cluster:
        settings = Settings(nats_url=cluster.urls, replicas=3)
        cluster.kill(cluster.stream_leader("AF_EVENTS"))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from agenticflow.cluster.nats_server import nats_server_binary
from agenticflow.cluster.procs import child_preexec
from agenticflow.shared.errors import TransportError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeSecurity:
    """What a secure cluster's nodes run with (``agenticflow cluster up --secure``):
    the users block ``agenticflow nats-config`` wrote, its server certificate,
    and a user and password every route must present."""

    users: Path
    """A file holding only the ``authorization { ... }`` block."""
    cert: Path
    key: Path
    route_user: str
    route_password: str


@dataclass
class NatsNode:
    """One member of the cluster; ports are pinned after its first start."""

    index: int
    name: str
    directory: Path
    cluster_port: int
    client_port: int | None = None
    http_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "nats"
    """``tls`` when clients must use TLS."""

    @property
    def url(self) -> str:
        """Client URL (known once the node has started)."""
        return f"{self.scheme}://{HOST}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        """Monitoring base URL (known once the node has started)."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        """Where the server writes its log."""
        return self.directory / "nats-server.log"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all bound at once)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsCluster:
    """N nats-server processes forming one JetStream cluster on loopback.

    ``start()`` returns once every node listens and the JetStream meta group
    has a leader that sees every peer as current. ``kill(i)`` SIGKILLs node
    ``i``; ``restart(i)`` brings it back on the same ports and store.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: str | Path | None = None,
        cluster_name: str = "af-test",
        security: NodeSecurity | None = None,
    ) -> None:
        """``security``: clients need TLS and a user of the given users block,
        routes the given user and password (default: neither)."""
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = size
        self.cluster_name = cluster_name
        self.security = security
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="agenticflow-cluster-")
            base_dir = self._tmp.name
        self.base_dir = Path(base_dir)
        self.nodes: list[NatsNode] = []

    # Lifecycle ----------------------------------------------------------
    def start(self, *, timeout: float = 30.0, attempts: int = 3) -> str:
        """Start every node; returns :attr:`urls` once JetStream is ready.

        Route ports are picked before the servers bind them; if another
        process takes one in between, the cluster is started again on new ports.
        """
        for attempt in range(1, attempts + 1):
            ports = _free_ports(self.size)
            self.nodes = [
                NatsNode(
                    index=i,
                    name=f"n{i}",
                    directory=self.base_dir / f"n{i}",
                    cluster_port=ports[i],
                    scheme="nats" if self.security is None else "tls",
                )
                for i in range(self.size)
            ]
            try:
                for node in self.nodes:
                    self._spawn(node)
                for node in self.nodes:
                    self._wait_listening(node, timeout)
            except TransportError:
                self._terminate_all()
                if attempt == attempts:
                    raise
                for node in self.nodes:  # a clean slate on the new ports
                    shutil.rmtree(node.directory, ignore_errors=True)
                continue
            break
        self.wait_ready(timeout=timeout)
        return self.urls

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove a temporary base dir."""
        self._terminate_all(timeout=timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (no leadership hand-over) and reap it."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def restart(self, index: int, *, timeout: float = 30.0) -> None:
        """Start node ``index`` again on its ports and store; returns once it listens."""
        node = self.nodes[index]
        if node.alive:
            raise TransportError(f"node {node.name} is still running")
        self._spawn(node)
        self._wait_listening(node, timeout)

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses ----------------------------------------------------------
    @property
    def urls(self) -> str:
        """Comma-separated client URLs of every node (for ``Settings.nats_url``)."""
        return ",".join(node.url for node in self.nodes)

    # Monitoring ---------------------------------------------------------
    def jsz(self, index: int, **params: str | bool) -> dict[str, Any]:
        """Node ``index``'s ``/jsz`` report; raises TransportError if it does not answer."""
        node = self.nodes[index]
        query = urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
        )
        url = f"{node.monitor_url}/jsz?{query}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - loopback http
                report: dict[str, Any] = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise TransportError(f"{node.name} monitoring did not answer: {exc}") from exc
        return report

    def stream_report(self, index: int, stream: str) -> dict[str, Any] | None:
        """Node ``index``'s view of ``stream`` (``state``, ``cluster``...), or None."""
        report = self.jsz(index, streams=True)
        for account in report.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    found: dict[str, Any] = detail
                    return found
        return None

    def stream_last_seq(self, index: int, stream: str) -> int | None:
        """Last sequence of ``stream`` stored on node ``index`` (None if unknown)."""
        with contextlib.suppress(TransportError):
            detail = self.stream_report(index, stream)
            if detail is not None:
                return int(detail.get("state", {}).get("last_seq", 0))
        return None

    def stream_leader(self, stream: str) -> int | None:
        """Index of the node that leads ``stream`` by its own account, or None."""
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(TransportError):
                detail = self.stream_report(node.index, stream)
                if detail is not None and (detail.get("cluster") or {}).get("leader") == node.name:
                    return node.index
        return None

    def meta_leader(self) -> int | None:
        """Index of the JetStream meta leader, when the live nodes agree on one
        (a single node has no meta group: it leads once its JetStream answers)."""
        if self.size == 1:
            with contextlib.suppress(TransportError):
                if self.nodes[0].alive and self.jsz(0).get("config") is not None:
                    return 0
            return None
        names: set[str] = set()
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                meta = self.jsz(node.index).get("meta_cluster") or {}
            except TransportError:
                return None
            names.add(str(meta.get("leader") or ""))
        if len(names) != 1 or "" in names:
            return None
        (name,) = names
        return next((node.index for node in self.nodes if node.name == name), None)

    def wait_ready(self, *, timeout: float = 30.0) -> int:
        """Wait until the live nodes agree on a meta leader that sees every live
        peer as current; returns the leader's index."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.meta_leader()
            if leader is not None and self._peers_current(leader):
                return leader
            self._check_alive()
            if time.monotonic() > deadline:
                raise TransportError(
                    f"JetStream cluster not ready within {timeout}s; logs in {self.base_dir}"
                )
            time.sleep(0.05)  # polling the monitoring endpoint, bounded by the deadline

    def _peers_current(self, leader: int) -> bool:
        if self.size == 1:
            return True
        try:
            meta = self.jsz(leader).get("meta_cluster") or {}
        except TransportError:
            return False
        if int(meta.get("cluster_size") or 0) != self.size:
            return False
        current = {str(r.get("name")) for r in meta.get("replicas") or [] if r.get("current")}
        live = {node.name for node in self.nodes if node.alive and node.index != leader}
        return live <= current

    # Processes ----------------------------------------------------------
    def _config(self, node: NatsNode) -> str:
        secure = self.security
        auth = ""
        if secure is not None:
            auth = f"{secure.route_user}:{secure.route_password}@"
        routes = "\n".join(f"    nats-route://{auth}{HOST}:{n.cluster_port}" for n in self.nodes)
        client = node.client_port if node.client_port is not None else -1
        http = node.http_port if node.http_port is not None else -1
        route_users = ""
        if secure is not None:
            route_users = (
                f"  authorization {{ user: {json.dumps(secure.route_user)}, "
                f"password: {json.dumps(secure.route_password)} }}\n"
            )
        cluster = (
            "cluster {\n"
            f"  name: {self.cluster_name}\n"
            f"  listen: {HOST}:{node.cluster_port}\n"
            f"{route_users}"
            f"  routes: [\n{routes}\n  ]\n"
            "}\n"
        )
        users = ""
        if secure is not None:
            # Includes are relative to the configuration's directory.
            users = (
                f"include {json.dumps(os.path.relpath(secure.users, node.directory))}\n"
                f"tls {{\n  cert_file: {json.dumps(str(secure.cert))}\n"
                f"  key_file: {json.dumps(str(secure.key))}\n  timeout: 2\n}}\n"
            )
        return (
            f"server_name: {node.name}\n"
            f"host: {HOST}\n"
            f"port: {client}\n"
            f'http: "{HOST}:{http}"\n'
            f'ports_file_dir: "{node.directory / "ports"}"\n'
            f'jetstream {{\n  store_dir: "{node.directory / "store"}"\n}}\n'
            + users
            # One node routing to itself would wait for a second peer forever.
            + (cluster if self.size > 1 else "")
        )

    def _spawn(self, node: NatsNode) -> None:
        (node.directory / "ports").mkdir(parents=True, exist_ok=True)
        config = node.directory / "nats-server.conf"
        config.write_text(self._config(node))
        with node.log_path.open("ab") as log_file:
            node.proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [nats_server_binary(), "-c", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )

    def _wait_listening(self, node: NatsNode, timeout: float) -> None:
        """Wait for the node's ports file (written once its listeners are up); pin ports."""
        assert node.proc is not None
        ports_file = node.directory / "ports" / f"nats-server_{node.proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while (ports := _read_ports(ports_file)) is None:
            if node.proc.poll() is not None:
                raise TransportError(
                    f"{node.name} exited with code {node.proc.returncode}; see {node.log_path}"
                )
            if time.monotonic() > deadline:
                raise TransportError(f"{node.name} did not start within {timeout}s")
            time.sleep(0.02)  # the server writes this file once its listeners are up
        node.client_port = int(ports["nats"][0].rsplit(":", 1)[1])
        node.http_port = int(ports["monitoring"][0].rsplit(":", 1)[1])

    def _check_alive(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() not in (None, -signal.SIGKILL):
                raise TransportError(
                    f"{node.name} exited with code {node.proc.returncode}; see {node.log_path}"
                )

    def _terminate_all(self, *, timeout: float = 10.0) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()


def _read_ports(path: Path) -> dict[str, Any] | None:
    """The server's ports file, or None while it is missing or half written (the
    server creates it, then writes it; it removes it when it exits)."""
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ports if isinstance(ports, dict) else None


__all__ = ["NatsCluster", "NatsNode", "NodeSecurity"]

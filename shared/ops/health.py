"""Health of a coordinator or worker process, for people and for probes.

Every process started by ``agenticflow coordinator|worker`` runs a
:class:`HealthService`:

- it registers as a NATS micro service (``agenticflow-coordinator`` or
  ``agenticflow-worker``), so ``nats micro ls|info|stats`` and
  ``agenticflow health`` discover it: PING, INFO and STATS answer as usual,
  STATS carries the health report in its endpoint's ``data``, and the
  ``health`` endpoint (subject ``<prefix>.health.<node>``) answers with it;
- with a port (``--metrics-port`` / ``AGENTICFLOW_METRICS_PORT``) it serves HTTP:
  ``/healthz`` (liveness: the loop answers and the connection is not closed for
  good), ``/readyz`` (readiness: connected, and the service says it is ready),
  ``/health`` (the report as JSON) and ``/metrics`` (Prometheus text).

The report: process (pid, host, memory, CPU, threads, open files, uptime, from
psutil), the NATS connection (server, reconnects, traffic, buffered bytes),
and the service's own part (a worker's agents, pools and breakers; a
coordinator's role and workload).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import psutil
import structlog

from agenticflow.shared.bus.base import Bus, Message, ServiceInfo
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.metrics import prometheus_text

log = structlog.get_logger("agenticflow.health")

WEAK_SANDBOX_WARNING = (
    "weak sandbox allowed (--allow-weak-sandbox / AGENTICFLOW_ALLOW_WEAK_SANDBOX): where the "
    "kernel refuses namespaces, sandboxed tools run without a chroot jail, network namespace "
    "or user of their own (host network, the worker's user, only an audit hook on files)"
)
"""What a worker that accepts a weak sandbox says at start-up and in its health report."""
SERVICE_PREFIX = "agenticflow-"
"""Micro service names start with this (``agenticflow-worker`` ...)."""
STATS_SUBJECT = "$SRV.STATS"
_MAX_REQUEST = 8192


class Reporting(Protocol):
    """What a service tells about itself (Worker, Coordinator, LeaderElected)."""

    def health(self) -> dict[str, Any]:
        """Its own part of the health report (JSON-able)."""
        ...

    def ready(self) -> str | None:
        """None when ready, else why not."""
        ...


def process_warnings(settings: Settings, kind: str) -> list[str]:
    """What a process of ``kind`` runs without, by the operator's choice."""
    if kind == "worker" and settings.allow_weak_sandbox:
        return [WEAK_SANDBOX_WARNING]
    return []


def version() -> str:
    """The installed AgenticFlow version (semantic, as micro services require)."""
    try:
        return metadata.version("agenticflow")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def process_report(process: psutil.Process, started: float) -> dict[str, Any]:
    """Memory, CPU and the like of ``process`` (psutil)."""
    with process.oneshot():
        memory = process.memory_info()
        report: dict[str, Any] = {
            "pid": process.pid,
            "host": socket.gethostname(),
            "python": sys.version.split()[0],
            "rss_bytes": memory.rss,
            "vms_bytes": memory.vms,
            "cpu_percent": process.cpu_percent(None),
            "cpu_seconds": round(sum(process.cpu_times()[:2]), 3),
            "threads": process.num_threads(),
            "uptime_s": round(time.time() - started, 3),
        }
        with contextlib.suppress(psutil.Error, AttributeError):
            report["open_files"] = process.num_fds()
    return report


def nats_report(bus: Bus) -> dict[str, Any]:
    """The state of the process's connection to the bus."""
    return bus.connection_report()


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


class HealthService:
    """The health of one process: a micro service, and HTTP when given a port.

    ``async with HealthService(bus=..., service=worker, kind="worker",
    node_id=...)``; :attr:`port` is the HTTP port actually bound.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        service: Reporting,
        kind: str,
        node_id: str,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.bus = bus
        self.service = service
        self.kind = kind
        self.name = f"{SERVICE_PREFIX}{kind}"
        self.node_id = node_id
        self.host = host
        self.port = port
        self.started = time.time()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading is meaningless
        self._micro: Callable[[], Awaitable[None]] | None = None
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HealthService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # The report -----------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The whole health report of this process."""
        problem = self.not_ready()
        return {
            "service": self.name,
            "kind": self.kind,
            "node": self.node_id,
            "prefix": self.bus.names.prefix,
            "version": version(),
            "ready": problem is None,
            "problem": problem,
            "warnings": process_warnings(self.bus.settings, self.kind),
            "http": self.url,
            "process": process_report(self._process, self.started),
            "nats": nats_report(self.bus),
            self.kind: self.service.health(),
        }

    def not_ready(self) -> str | None:
        """Why this process is not ready (None when it is)."""
        if self.bus.closed.is_set():
            return f"the {self.bus.backend} connection is closed"
        if not self.bus.is_connected:
            return f"not connected to {self.bus.backend} (reconnecting)"
        return self.service.ready()

    @property
    def url(self) -> str | None:
        """Where the HTTP endpoints are served (None without a port)."""
        if self._server is None or self.port is None:
            return None
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()  # noqa: S104
        return f"http://{host}:{self.port}"

    # Lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Start the HTTP server (with a port), then register the micro service."""
        if self.port is not None and self._server is None:
            self._server = await asyncio.start_server(self._serve_http, self.host, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])
            log.info("health and metrics served", url=self.url)
        if self._micro is None:
            self._micro = await self.bus.add_service(
                ServiceInfo(
                    name=self.name,
                    version=version(),
                    description=f"AgenticFlow {self.kind}",
                    metadata={
                        "prefix": self.bus.names.prefix,
                        "node": self.node_id,
                        "kind": self.kind,
                        "http": self.url or "",
                    },
                ),
                endpoint=f"{self.bus.names.prefix}.health.{self.node_id}",
                handler=lambda: json.dumps(self.report(), default=str).encode(),
                stats=self.report,
            )

    async def stop(self) -> None:
        """Deregister and stop serving HTTP (idempotent)."""
        deregister, self._micro = self._micro, None
        if deregister is not None:
            with contextlib.suppress(Exception):
                await deregister()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    # HTTP -----------------------------------------------------------------
    def _route(self, path: str) -> _Response:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            alive = not self.bus.closed.is_set()
            return _Response(200 if alive else 503, b"ok\n" if alive else b"closed\n", "text/plain")
        if path == "/readyz":
            problem = self.not_ready()
            if problem is None:
                return _Response(200, b"ready\n", "text/plain")
            return _Response(503, f"not ready: {problem}\n".encode(), "text/plain")
        if path == "/health":
            report = self.report()
            return _Response(200 if report["ready"] else 503, json.dumps(report).encode())
        if path == "/metrics":
            return _Response(200, prometheus_text(), "text/plain; version=0.0.4; charset=utf-8")
        return _Response(
            404, b"not found: try /healthz, /readyz, /health or /metrics\n", "text/plain"
        )

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_REQUEST:
                response = _Response(431, b"request header too large\n", "text/plain")
            else:
                parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                    response = _Response(405, b"only GET\n", "text/plain")
                else:
                    response = self._route(parts[1])
                if parts and parts[0] == "HEAD":
                    response = _Response(response.status, b"", response.content_type)
            writer.write(_http(response))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Too Large",
    503: "Unavailable",
}


def _http(response: _Response) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + response.body


async def cluster_health(
    bus: Bus, *, wait_s: float = 1.0, expect: int | None = None
) -> list[dict[str, Any]]:
    """The health reports of every AgenticFlow process of the deployment
    (``bus``'s prefix), found through the micro services' STATS: waits
    ``wait_s`` for answers, or less once ``expect`` processes answered (asking
    again every half second meanwhile, for processes still starting)."""
    reports: dict[str, dict[str, Any]] = {}
    enough = asyncio.Event()
    prefix = bus.names.prefix

    async def on_reply(msg: Message) -> None:
        try:
            stats = json.loads(msg.data)
        except ValueError:
            return
        if not str(stats.get("name", "")).startswith(SERVICE_PREFIX):
            return
        if (stats.get("metadata") or {}).get("prefix") != prefix:
            return
        for endpoint in stats.get("endpoints") or []:
            data = endpoint.get("data")
            if endpoint.get("name") == "health" and isinstance(data, dict):
                reports[str(stats.get("id"))] = data
        if expect is not None and len(reports) >= expect:
            enough.set()

    inbox = bus.new_inbox()
    sub = await bus.subscribe(inbox, on_reply)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while True:
                    await bus.publish(STATS_SUBJECT, b"", reply=inbox)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5 if expect is not None else None):
                            await enough.wait()
                    if enough.is_set():
                        break
    finally:
        await sub.unsubscribe()
    return sorted(reports.values(), key=lambda r: (r.get("kind", ""), r.get("node", "")))


def serve_health(bus: Bus, service: Reporting, *, kind: str, node_id: str) -> HealthService:
    """The :class:`HealthService` of a process, with the port of its settings."""
    settings = bus.settings
    return HealthService(
        bus=bus,
        service=service,
        kind=kind,
        node_id=node_id,
        port=settings.metrics_port,
        host=settings.metrics_host,
    )


__all__ = [
    "SERVICE_PREFIX",
    "WEAK_SANDBOX_WARNING",
    "HealthService",
    "Reporting",
    "cluster_health",
    "nats_report",
    "process_report",
    "process_warnings",
    "serve_health",
    "version",
]

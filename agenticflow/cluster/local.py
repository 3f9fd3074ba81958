"""A production-shaped cluster on one machine, kept running in the background.

``agenticflow cluster up`` starts a detached *supervisor* process (``python -m
agenticflow.cluster.local supervise --dir D``) that owns every part of the
cluster and returns once it is ready:

- a JetStream cluster of ``nodes`` nats-server processes on 127.0.0.1
  (:class:`~agenticflow.cluster.nats_cluster.NatsCluster`; streams and KV buckets are
  R3 when there are 3 nodes or more);
- ``coordinators`` coordinator processes (fail-over by KV leases; with
  ``AGENTICFLOW_PARTITIONS`` > 1 each owns some partitions of the workflows);
- ``workers`` worker processes of an agent app, and optionally an autoscaler
  (:mod:`agenticflow.cluster.autoscaler`) that adds and removes workers from
  the task consumers' pending counts.

The supervisor restarts nothing by itself: a killed node, coordinator or
worker stays dead (``cluster status`` shows it) so that fail-over is what the
cluster relies on, and tests see it. Only the autoscaler, when on, keeps the
worker count within MIN..MAX, so a dead worker is replaced when the count falls
below MIN or the lag asks for it.

Everything lives in the state directory (default ``.agenticflow/cluster``):
``state.json`` (pids, URLs, ports, the settings to use, the autoscaler's
decisions; rewritten every second), ``spec.json`` (what was asked),
``supervisor.lock`` (held by the supervisor while it runs), ``supervisor.log``,
``logs/<process>.log`` and ``nats/n<i>/`` (each node's config, store and log).

With ``secure`` (``cluster up --secure``), ``secure/`` holds what
deploy/compose.yaml's init generates: ``nats/`` (``agenticflow nats-config``:
TLS, one user per role, the worker group ``cluster`` for the app's
capabilities; new each start, like the store) and ``keys/`` (``agenticflow
keys init``: the data key and the coordinator's, worker's and client's signing
keys; kept once made), and the routes need a password. Each process runs with
its own role's NATS user and signing key; clients use the admin's user and the
client's key (``secure/nats/admin.env``).

The autoscaler is a pure decision and an I/O shell: every ``interval_s`` the
:class:`ProcessSupervisor` reads ``num_pending + num_ack_pending`` of the
app's task consumers (the lag, per agent pool), decides, and starts workers
(at once, up to the count the lag needs) or stops one idle worker with SIGTERM
(which drains it: it stops pulling and finishes what it holds) once the
surplus has lasted ``scale_down_after_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import json
import os
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import psutil
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agenticflow.cluster.autoscaler import Autoscaler, ScalePolicy
from agenticflow.cluster.nats_auth import (
    ADMIN,
    COORDINATOR,
    NatsAuthFiles,
    WorkerGroup,
    generate,
    read_env_file,
    settings_from_env,
)
from agenticflow.cluster.nats_cluster import NatsCluster, NodeSecurity
from agenticflow.cluster.procs import child_preexec
from agenticflow.shared.bus.registry import Registered, wait_registered
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import (
    AgenticFlowError,
    ClusterRunningError,
    ConfigError,
    TransportError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.health import cluster_health
from agenticflow.shared.security.seal import TRUST_FILE, init_keys
from agenticflow.shared.wire.ids import node_pid
from agenticflow.shared.wire.names import Names
from agenticflow.worker.app import load_app

log = structlog.get_logger("agenticflow.cluster.local")

DEFAULT_DIR = Path(".agenticflow") / "cluster"
"""Where ``cluster up`` keeps its state, relative to the working directory."""
DEFAULT_APP = "agenticflow.examples.apps:app"
STATE_FILE = "state.json"
SPEC_FILE = "spec.json"
LOCK_FILE = "supervisor.lock"
SUPERVISOR_LOG = "supervisor.log"
_EXITED_KEPT = 50
"""Exited workers kept in the state file (an autoscaled cluster starts many)."""


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` as two integers; raises ConfigError."""
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high))
    except ValueError:
        bounds = (-1, -1)
    if not sep or bounds[0] < 0 or bounds[1] < 1 or bounds[0] > bounds[1]:
        raise ConfigError(f"--autoscale must be MIN:MAX with 0 <= MIN <= MAX, MAX >= 1: {text!r}")
    return bounds


# What was asked -------------------------------------------------------------


class ClusterSpec(BaseModel):
    """What ``cluster up`` asked for (validated before anything starts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: int = Field(default=3, ge=1, le=9)
    coordinators: int = Field(default=2, ge=1, le=16)
    workers: int | None = Field(default=None, ge=0, le=256)
    """Workers at start; default 2, or MIN with ``autoscale``."""
    app: str = DEFAULT_APP
    concurrency: int = Field(default=8, ge=1)
    prefix: str = "af"
    partitions: int | None = Field(default=None, ge=1, le=64)
    """Default: 8 with several coordinators, else 1."""
    autoscale: tuple[int, int] | None = None
    scale_up_cooldown_s: float = Field(default=1.0, ge=0)
    scale_down_after_s: float = Field(default=30.0, ge=0)
    interval_s: float = Field(default=1.0, gt=0)
    """How often the supervisor checks its processes and reads the lag."""
    metrics: bool = False
    """Each coordinator and worker serves /metrics and /health on a free port."""
    secure: bool = False
    """TLS, one NATS user per role, signing and data keys, route passwords."""
    cwd: str = Field(default_factory=os.getcwd)
    """Where the app is imported from (the workers' working directory)."""
    console: bool = True
    """The supervisor serves the web console on 127.0.0.1 (its login token in
    :data:`CONSOLE_TOKEN`, 0600, in the state directory, unless the
    environment gives the gateway tokens)."""
    console_port: int = Field(default=8080, ge=0, le=65535)
    """The console's port (taken: a free one)."""

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if self.autoscale is not None:
            low, high = self.autoscale
            ScalePolicy(minimum=low, maximum=high)  # raises ConfigError
            if self.workers is not None and not low <= self.workers <= high:
                raise ValueError(f"--workers {self.workers} is outside --autoscale {low}:{high}")
        Names(self.prefix)  # raises ConfigError for a bad prefix
        return self

    @classmethod
    def build(cls, **fields: Any) -> ClusterSpec:
        """A validated spec; raises ConfigError."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "")
                + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(problems) from exc

    @property
    def initial_workers(self) -> int:
        """Workers started with the cluster."""
        if self.workers is not None:
            return self.workers
        return self.autoscale[0] if self.autoscale is not None else 2

    @property
    def effective_partitions(self) -> int:
        """Coordinator partitions given to every process."""
        if self.partitions is not None:
            return self.partitions
        return 8 if self.coordinators > 1 else 1

    @property
    def replicas(self) -> int:
        """R3 streams and buckets on 3 nodes or more, else R1."""
        return 3 if self.nodes >= 3 else 1

    def cluster_env(self, urls: str) -> dict[str, str]:
        """The settings that point a process at this cluster."""
        return {
            "AGENTICFLOW_NATS_URL": urls,
            "AGENTICFLOW_REPLICAS": str(self.replicas),
            "AGENTICFLOW_PREFIX": self.prefix,
            "AGENTICFLOW_PARTITIONS": str(self.effective_partitions),
        }


def app_pools(spec: ClusterSpec) -> tuple[dict[str, str], dict[str, int]]:
    """``(queue -> pool, pool -> slots per worker)`` of the spec's app (imported
    from ``spec.cwd``); raises ConfigError or NotFoundError.

    A pool's slots are the tasks of its capabilities one worker runs at once:
    its agent's instances, less the slots the worker keeps for its other
    capabilities' open pull requests (their fair share, see
    ``agenticflow.worker.runtime.Worker._credit``; one each when slots are scarce)."""
    if spec.cwd not in sys.path:
        sys.path.insert(0, spec.cwd)
    app = load_app(spec.app)
    queues = {capability: app.for_capability(capability).name for capability in app.capabilities}
    share = max(1, min(64, spec.concurrency // max(1, len(queues))))
    slots = {
        agent.name: max(
            1,
            min(
                agent.instances or spec.concurrency,
                spec.concurrency - share * (len(queues) - len(agent.capabilities)),
            ),
        )
        for agent in app.agents
    }
    return queues, slots


# Processes ------------------------------------------------------------------

Role = Literal["coordinator", "worker"]

CONSOLE_TOKEN = "console-token"  # noqa: S105 - a file name
"""The console's login token, in the state directory (0600)."""
SECURE_DIR = "secure"
"""Where a secure cluster's credentials and keys live, in the state directory."""
WORKER_GROUP = "cluster"
"""The worker group (NATS role ``worker-cluster``) of a secure cluster's workers."""
_SIGNERS = {COORDINATOR: "coordinator", f"worker-{WORKER_GROUP}": "worker", ADMIN: "client"}
"""Each NATS role's signing principal (clients sign as ``client``)."""


@dataclass
class Member:
    """A coordinator or worker process of the cluster."""

    role: Role
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)
    create_time: float = 0.0
    stopping: bool = False
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        """True while it runs (reaps it once it has exited)."""
        if self.exit_code is None and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
        return self.exit_code is None

    def to_json(self) -> dict[str, Any]:
        """As the state file shows it."""
        alive = self.alive
        return {
            "name": self.name,
            "pid": self.proc.pid,
            "create_time": self.create_time,
            "started": self.started,
            "alive": alive,
            "state": ("stopping" if self.stopping else "running") if alive else "exited",
            "exit_code": self.exit_code,
            "log": str(self.log),
        }


_member_preexec = functools.partial(child_preexec, death_signal=signal.SIGKILL)
"""In a coordinator or worker before exec: its own process group, and SIGKILL
when the supervisor dies. Not SIGTERM: the nodes die with the supervisor, and a
graceful shutdown that needs NATS would then retry forever."""


def _create_time(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process(pid).create_time())
    return 0.0


def process_alive(pid: int, create_time: float = 0.0) -> bool:
    """True if ``pid`` runs and (when given) started at ``create_time``: a pid
    reused by another process does not count; a zombie neither."""
    try:
        process = psutil.Process(pid)
        if create_time and abs(process.create_time() - create_time) > 0.05:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class LocalCluster:
    """The nodes, coordinators and workers of one local cluster, in this process.

    ``async with LocalCluster(spec, directory=D)`` starts everything and
    returns once ready; leaving stops workers, coordinators, then nodes. Start
    it from the main thread: children are signalled when the thread that
    started them ends (``PR_SET_PDEATHSIG``), not only when the process does.
    """

    def __init__(self, spec: ClusterSpec, *, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self.nats = NatsCluster(spec.nodes, base_dir=directory / "nats", cluster_name="agenticflow")
        self.coordinators: list[Member] = []
        self.workers: list[Member] = []
        self.env: dict[str, str] = {}
        """What every child gets on top of this process's environment (minus
        NATS credentials and a fixed metrics port, which would not fit)."""
        self.bus: Bus | None = None
        self._workers_started = 0
        self.auth: NatsAuthFiles | None = None
        """A secure cluster's NATS users and TLS files (once started)."""
        self.keys: Path | None = None
        """A secure cluster's key directory (once started)."""

    # Settings -----------------------------------------------------------
    @property
    def urls(self) -> str:
        """Client URLs of every node, comma-separated."""
        return self.nats.urls

    @property
    def settings(self) -> Settings:
        """Settings of a client of this cluster (a secure cluster's admin)."""
        return settings_from_env(self._child_env(ADMIN))

    def _child_env(self, role: str = ADMIN) -> dict[str, str]:
        """A child's environment; ``role``: whose NATS user and key (secure only)."""
        secret = ("AGENTICFLOW_SECURITY_DIR", "AGENTICFLOW_PRINCIPAL")
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AGENTICFLOW_NATS")
            and k != "AGENTICFLOW_METRICS_PORT"
            and (self.auth is None or k not in secret)
        }
        path = os.pathsep.join(p for p in (self.spec.cwd, os.environ.get("PYTHONPATH", "")) if p)
        metrics = {"AGENTICFLOW_METRICS_PORT": "0"} if self.spec.metrics else {}
        return {**inherited, "PYTHONPATH": path, **metrics, **self.env, **self._role_env(role)}

    def settings_for(self, role: str) -> Settings:
        """Settings of one role's process (``coordinator``, ``worker-cluster``,
        ``client``, ``admin`` in a secure cluster)."""
        return settings_from_env(self._child_env(role))

    def _role_env(self, role: str) -> dict[str, str]:
        """A secure cluster role's NATS user and signing key (nothing otherwise)."""
        if self.auth is None:
            return {}
        env = self.auth.env(role, url=self.urls)
        if self.keys is not None:
            env["AGENTICFLOW_SECURITY_DIR"] = str(self.keys)
            env["AGENTICFLOW_PRINCIPAL"] = _SIGNERS.get(role, "client")
        return env

    def settings_env(self) -> dict[str, str]:
        """The ``AGENTICFLOW_*`` variables a client needs (the cluster's, and
        the overrides this process was started with)."""
        env = self._child_env()
        return {k: env[k] for k in sorted(env) if k.startswith("AGENTICFLOW_")}

    def _prepare_secure(self) -> None:
        """What deploy/compose.yaml's init generates, for these nodes and this app."""
        directory = self.directory / SECURE_DIR
        queues, _ = app_pools(self.spec)
        self.auth = generate(
            directory / "nats",
            prefix=self.spec.prefix,
            workers=[WorkerGroup(WORKER_GROUP, tuple(queues))],
            tls=True,
            force=True,  # new with every start, like the store
        )
        keys = directory / "keys"
        if not (keys / TRUST_FILE).exists():
            init_keys(keys, [(p, p) for p in dict.fromkeys(_SIGNERS.values())])
        self.keys = keys
        users = self.auth.directory / "auth.conf"
        text = self.auth.config.read_text()
        users.write_text(text[text.index("authorization {") :])
        self.nats.security = NodeSecurity(
            users=users,
            cert=self.auth.directory / "server.pem",
            key=self.auth.directory / "server-key.pem",
            route_user="route",
            route_password=secrets.token_urlsafe(24),
        )

    def _write_env_files(self) -> None:
        """Every role's env file with the nodes' URLs and its signing key."""
        assert self.auth is not None
        self.auth.write_env(url=self.urls)
        for role in self.auth.roles:
            path = self.auth.env_file(role)
            known = read_env_file(path)
            extra = {k: v for k, v in self._role_env(role).items() if k not in known}
            with path.open("a", encoding="utf-8") as file:
                file.writelines(f"{k}={shlex.quote(v)}\n" for k, v in extra.items())

    # Lifecycle ----------------------------------------------------------
    async def start(self, *, timeout: float = 120.0) -> None:
        """Start the nodes, coordinators and workers; returns once the JetStream
        meta group has a leader, a coordinator is active and every worker has
        registered. Raises TransportError (a process exited, not ready in time)."""
        deadline = time.monotonic() + timeout
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        # Each start is a fresh cluster: new ports, so a store of an earlier run
        # would name peers that no longer exist.
        shutil.rmtree(self.directory / "nats", ignore_errors=True)
        if self.spec.secure:
            self._prepare_secure()
        self.nats.start(timeout=max(1.0, deadline - time.monotonic()))  # main thread: see above
        self.env = self.spec.cluster_env(self.urls)
        if self.auth is not None:
            self._write_env_files()
        self.bus = await Bus.connect(self.settings, name="agenticflow-cluster")
        await self.bus.ensure_topology()
        for i in range(self.spec.coordinators):
            self.coordinators.append(self._spawn("coordinator", f"coordinator-{i}"))
        for _ in range(self.spec.initial_workers):
            self.add_worker()
        await self.wait_registered(timeout=max(1.0, deadline - time.monotonic()))

    def add_worker(self) -> Member:
        """Start one more worker process."""
        name = f"worker-{self._workers_started}"
        self._workers_started += 1
        member = self._spawn(
            "worker", name, "--app", self.spec.app, "--concurrency", str(self.spec.concurrency)
        )
        self.workers.append(member)
        return member

    def stop_worker(self, member: Member) -> None:
        """SIGTERM a worker: it stops pulling, finishes its tasks (within its
        grace period) and deregisters."""
        member.stopping = True
        with contextlib.suppress(ProcessLookupError):
            member.proc.send_signal(signal.SIGTERM)

    @property
    def live_workers(self) -> list[Member]:
        """Workers running and not told to stop."""
        return [w for w in self.workers if w.alive and not w.stopping]

    def reap(self) -> list[Member]:
        """Processes that exited since the last call; forgets the oldest exited workers."""
        exited = [
            member
            for member in [*self.coordinators, *self.workers]
            if member.exit_code is None and not member.alive
        ]
        gone = [w for w in self.workers if not w.alive]
        for old in gone[: max(0, len(gone) - _EXITED_KEPT)]:
            self.workers.remove(old)
        return exited

    async def stop(self) -> None:
        """Stop workers, then coordinators, then nodes; wait for each (idempotent)."""
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.close(), 5)
            self.bus = None
        for group in (self.workers, self.coordinators):
            for member in group:
                if member.alive:
                    with contextlib.suppress(ProcessLookupError):
                        member.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(_wait_all, [m.proc for m in group], 20.0)
            for member in group:
                _ = member.alive  # record the exit codes
        await asyncio.to_thread(self.nats.stop)

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # Readiness ----------------------------------------------------------
    async def wait_registered(self, *, timeout: float) -> None:
        """Wait until a coordinator of ours is active and every live worker of
        ours has registered in the agents bucket; raises TransportError."""
        assert self.bus is not None
        ours = {c.proc.pid for c in self.coordinators}

        def ready(seen: Registered) -> bool:
            pids = {int(info.get("pid") or 0) for info in seen.workers.values()}
            active = {node_pid(node) for node in seen.coordinators}
            return {w.proc.pid for w in self.live_workers} <= pids and bool(active & ours)

        try:
            await wait_registered(self.bus, ready, timeout=timeout, check=self._check_started)
        except TimeoutError as exc:
            raise TransportError(
                f"not every worker registered, or no coordinator active, within "
                f"{timeout:.0f}s ({exc}); logs in {self.directory}"
            ) from exc

    def _check_started(self) -> None:
        for member in [*self.coordinators, *self.workers]:
            if not member.alive and not member.stopping:
                raise TransportError(
                    f"{member.name} exited with code {member.exit_code} during start-up; "
                    f"see {member.log}"
                )
        for node in self.nats.nodes:
            if not node.alive:
                raise TransportError(f"nats node {node.name} exited; see {node.log_path}")

    # Processes ----------------------------------------------------------
    def _spawn(self, role: Role, name: str, *args: str) -> Member:
        path = self.directory / "logs" / f"{name}.log"
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own entry point
                [sys.executable, "-m", "agenticflow", role, *args],
                env=self._child_env(
                    COORDINATOR if role == "coordinator" else f"worker-{WORKER_GROUP}"
                ),
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_member_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )
        finally:
            os.close(out)
        log.info("started", process=name, pid=proc.pid)
        return Member(role, name, proc, path, create_time=_create_time(proc.pid))

    # State --------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Nodes, coordinators and workers as the state file shows them."""
        return {
            "urls": self.urls,
            "env": self.settings_env(),
            "env_file": str(self.auth.env_file(ADMIN)) if self.auth is not None else None,
            "nodes": [
                {
                    "name": node.name,
                    "pid": node.proc.pid if node.proc is not None else None,
                    "create_time": _create_time(node.proc.pid) if node.proc is not None else 0.0,
                    "alive": node.alive,
                    "exit_code": node.proc.poll() if node.proc is not None else None,
                    "url": node.url,
                    "monitor_url": node.monitor_url,
                    "cluster_port": node.cluster_port,
                    "log": str(node.log_path),
                }
                for node in self.nats.nodes
            ],
            "coordinators": [c.to_json() for c in self.coordinators],
            "workers": [w.to_json() for w in self.workers],
        }


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for every process until ``timeout`` (in all), then SIGKILL the rest."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The supervisor -------------------------------------------------------------


class ProcessSupervisor:
    """Owns a :class:`LocalCluster`: starts it, reports readiness, keeps the
    state file, runs the autoscaler, and stops everything on SIGTERM."""

    def __init__(self, spec: ClusterSpec, *, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self.cluster = LocalCluster(spec, directory=directory)
        self.autoscaler: Autoscaler | None = None
        self.status = "starting"
        self.started_at = time.time()
        self.console: Any = None
        """The console's :class:`~agenticflow.gateway.server.GatewayServer`, once started."""
        self._console_token = False
        """Whether the console's login token was made (and kept in :data:`CONSOLE_TOKEN`)."""
        self._stop = asyncio.Event()

    def shutdown(self) -> None:
        """Stop the cluster and return from :meth:`run` (idempotent)."""
        self._stop.set()

    async def run(self, *, ready: IO[str] | None = None, timeout: float = 120.0) -> int:
        """Start the cluster, tell ``ready`` (a line: ``ready`` or ``error ...``),
        supervise until :meth:`shutdown`, then stop everything. Returns the exit
        code (0, or 3 when the cluster did not start)."""
        self.write_state()
        starting = asyncio.create_task(self.cluster.start(timeout=timeout))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                await asyncio.wait({starting})
                _notify(ready, "error stopped during start-up")
                return 3
            try:
                starting.result()
                await self._start_autoscaler()
                await self._start_console()
            except Exception as exc:  # whatever it was, the user must hear it from `up`
                log.exception("cluster did not start")
                _notify(ready, f"error {exc}")
                return 3
            self.status = "ready"
            self.write_state()
            _notify(ready, "ready")
            log.info("cluster ready", urls=self.cluster.urls)
            await self._supervise()
            return 0
        finally:
            stopping.cancel()
            self.status = "stopping"
            with contextlib.suppress(Exception):
                self.write_state()
            if self.console is not None:
                await self.console.stop()
            await self.cluster.stop()
            (self.directory / STATE_FILE).unlink(missing_ok=True)
            log.info("cluster stopped")

    async def _start_console(self) -> None:
        """Serve the web console for the cluster on 127.0.0.1 (the gateway in
        this process), with a fresh login token kept 0600 beside the state."""
        if not self.spec.console:
            return
        from agenticflow.console.serve import (
            CONSOLE_PRINCIPAL,
            console_config,
            start_server,
            write_token,
        )

        settings = self.cluster.settings
        principal = settings.principal or CONSOLE_PRINCIPAL
        config, token = console_config(
            principal,
            host="127.0.0.1",
            port=self.spec.console_port,
            # The cluster's own admin console: no policy is what `up` starts with.
            allow_no_policy=True,
        )
        self.console = await start_server(settings, config, fallback_port=True)
        if token is not None:
            write_token(self.directory / CONSOLE_TOKEN, token)
            self._console_token = True
        log.info("console serving", url=f"{self.console.url}/console/", principal=principal)

    async def _start_autoscaler(self) -> None:
        if self.spec.autoscale is None:
            return
        assert self.cluster.bus is not None
        pools, slots = app_pools(self.spec)
        for queue in pools:  # so that tasks sent while no worker runs count as lag
            await self.cluster.bus.ensure_task_consumer(queue)
        low, high = self.spec.autoscale
        policy = ScalePolicy(
            minimum=low,
            maximum=high,
            concurrency=self.spec.concurrency,
            slots=slots,
            up_cooldown_s=self.spec.scale_up_cooldown_s,
            down_cooldown_s=self.spec.scale_down_after_s,
        )
        self.autoscaler = Autoscaler(bus=self.cluster.bus, policy=policy, pools=pools)

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            for member in self.cluster.reap():
                if member.stopping:
                    log.info("stopped", process=member.name, code=member.exit_code)
                else:
                    log.warning("exited", process=member.name, code=member.exit_code)
            if self.autoscaler is not None:
                try:
                    await self._autoscale(self.autoscaler)
                except (AgenticFlowError, OSError) as exc:  # e.g. a node failing over
                    log.warning("autoscaler skipped a reading", error=str(exc))
            self.write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.spec.interval_s)

    async def _autoscale(self, autoscaler: Autoscaler) -> None:
        lag = await autoscaler.read_lag()
        live = self.cluster.live_workers
        decision = autoscaler.decide(lag, current=len(live), now=time.monotonic())
        if decision.delta > 0:
            for _ in range(decision.delta):
                self.cluster.add_worker()
            log.info("scaled up", **decision.to_json())
            autoscaler.commit(decision)
        elif decision.delta < 0:
            idle = await self._idle_workers(live)
            victims = idle[decision.delta :]  # the newest idle ones
            for member in victims:
                self.cluster.stop_worker(member)
            if victims:
                log.info("scaled down", stopped=[m.name for m in victims], **decision.to_json())
                autoscaler.commit(decision, done=-len(victims))
            else:
                log.info("scale-down waits for an idle worker", **decision.to_json())
        else:
            autoscaler.commit(decision)

    async def _idle_workers(self, live: list[Member]) -> list[Member]:
        """Our live workers holding no task (their health report's ``in_hand``),
        oldest first."""
        assert self.cluster.bus is not None
        expect = len(live) + sum(1 for c in self.cluster.coordinators if c.alive)
        reports = await cluster_health(self.cluster.bus, wait_s=2.0, expect=expect)
        idle_pids = {
            int((r.get("process") or {}).get("pid") or 0)
            for r in reports
            if r.get("kind") == "worker" and int((r.get("worker") or {}).get("in_hand", 1)) == 0
        }
        return [m for m in live if m.proc.pid in idle_pids]

    def write_state(self) -> None:
        """Rewrite the state file (atomically)."""
        state = {
            "version": 1,
            "status": self.status,
            "dir": str(self.directory),
            "supervisor": {
                "pid": os.getpid(),
                "create_time": _create_time(os.getpid()),
                "log": str(self.directory / SUPERVISOR_LOG),
            },
            "started_at": self.started_at,
            "updated_at": time.time(),
            "spec": self.spec.model_dump(mode="json"),
            "replicas": self.spec.replicas,
            "partitions": self.spec.effective_partitions,
            **self.cluster.to_json(),
            "autoscaler": self.autoscaler.to_json() if self.autoscaler is not None else None,
            "console": None
            if self.console is None
            else {
                "url": f"{self.console.url}/console/",
                # None: the environment's gateway tokens log in (none was made).
                "token_file": str(self.directory / CONSOLE_TOKEN) if self._console_token else None,
            },
        }
        _write_json(self.directory / STATE_FILE, state)


def _notify(ready: IO[str] | None, line: str) -> None:
    if ready is None or ready.closed:
        return
    with contextlib.suppress(OSError):
        ready.write(line.replace("\n", " ") + "\n")
        ready.flush()
        ready.close()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)


# Control from the command line ------------------------------------------------


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state file's content, or None if there is none (or it is unreadable)."""
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def supervisor_running(directory: Path) -> bool:
    """True while a supervisor holds the directory's lock."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def start_supervisor(
    spec: ClusterSpec, directory: Path, *, timeout: float = 120.0
) -> dict[str, Any]:
    """Start a detached supervisor running ``spec`` in ``directory``; returns
    the state once the cluster is ready.

    Raises ClusterRunningError (one runs there already), TransportError (the
    cluster did not start; the supervisor has stopped what it started),
    TimeoutError (not ready in time: the supervisor is stopped)."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            state = read_state(directory) or {}
            pid = (state.get("supervisor") or {}).get("pid", "?")
            raise ClusterRunningError(
                f"a cluster is already running in {directory} (supervisor pid {pid}); "
                f"`agenticflow cluster down --dir {directory}` stops it"
            ) from None
        stale = read_state(directory)
        if stale is not None:  # a supervisor that died without cleaning up
            _kill_leftovers(stale)
            (directory / STATE_FILE).unlink(missing_ok=True)
        _write_json(directory / SPEC_FILE, spec.model_dump(mode="json"))
        read_end, write_end = os.pipe()
        with (directory / SUPERVISOR_LOG).open("ab") as log_file:
            # The lock's open file is inherited: the supervisor holds it while it runs.
            proc = subprocess.Popen(  # noqa: S603 - our own module
                [
                    sys.executable,
                    "-m",
                    "agenticflow.cluster.local",
                    "supervise",
                    "--dir",
                    str(directory),
                    "--ready-fd",
                    str(write_end),
                    "--lock-fd",
                    str(lock),
                    "--timeout",
                    str(timeout),
                ],
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end, lock),
                start_new_session=True,  # outlives this command and its terminal
            )
        os.close(write_end)
    finally:
        os.close(lock)
    try:
        answer = _read_line(read_end, timeout=timeout + 15)
    finally:
        os.close(read_end)
    if answer is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # it stops what it started
        raise TimeoutError(
            f"the cluster was not ready within {timeout:.0f}s; see {directory / SUPERVISOR_LOG}"
        )
    if answer != "ready":
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)  # it stops what it started before exiting
        reason = answer.removeprefix("error ").strip() or "the supervisor exited"
        raise TransportError(
            f"the cluster did not start: {reason}; see {directory / SUPERVISOR_LOG}"
        )
    return read_state(directory) or {}


def _read_line(fd: int, *, timeout: float) -> str | None:
    """One line from ``fd`` ("" at end of file), or None after ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _recorded(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every process the state names: workers, coordinators, nodes (stop order)."""
    return [
        *(state.get("workers") or []),
        *(state.get("coordinators") or []),
        *(state.get("nodes") or []),
    ]


def stop_cluster(directory: Path, *, timeout: float = 60.0) -> dict[str, Any] | None:
    """Stop the cluster running in ``directory`` and wait for every process it
    started; returns what the state file named (None: nothing was running).

    The supervisor stops workers, coordinators, then nodes; processes it left
    behind (it was killed, or did not finish in ``timeout``) are killed here."""
    state = read_state(directory)
    running = supervisor_running(directory)
    if state is None and not running:
        return None
    state = state or {}
    supervisor = state.get("supervisor") or {}
    pid, created = int(supervisor.get("pid") or 0), float(supervisor.get("create_time") or 0)
    if running and pid and process_alive(pid, created):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout)
    elif running:
        raise TransportError(f"the supervisor in {directory} is starting; try again in a moment")
    if pid and process_alive(pid, created):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    state["killed_leftovers"] = _kill_leftovers(state)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return state


def _kill_leftovers(state: Mapping[str, Any]) -> list[str]:
    """SIGKILL the processes of ``state`` still running (the very ones: a reused
    pid is left alone), wait for them; returns their names."""
    left = [
        p
        for p in _recorded(state)
        if p.get("pid") and process_alive(int(p["pid"]), float(p.get("create_time") or 0))
    ]
    for process in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(process["pid"]), signal.SIGKILL)
    for process in left:
        with contextlib.suppress(psutil.Error):
            psutil.Process(int(process["pid"])).wait(5)
    return [str(p.get("name")) for p in left]


def cluster_status(directory: Path) -> dict[str, Any] | None:
    """The state file with each process's liveness checked now (None: no
    cluster here); ``running`` is False when the supervisor is gone."""
    state = read_state(directory)
    if state is None:
        return None
    supervisor = state.get("supervisor") or {}
    state["running"] = supervisor_running(directory) and process_alive(
        int(supervisor.get("pid") or 0), float(supervisor.get("create_time") or 0)
    )
    for process in _recorded(state):
        if process.get("pid"):
            process["alive"] = process_alive(process["pid"], process.get("create_time", 0.0))
    return state


# Entry point of the supervisor process -------------------------------------------


def _supervise_main(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    spec = ClusterSpec.model_validate_json((directory / SPEC_FILE).read_text())
    from agenticflow.shared.ops.logging import configure_logging

    configure_logging(level="info", fmt="json")
    ready = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else None
    supervisor = ProcessSupervisor(spec, directory=directory)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, supervisor.shutdown)
        return await supervisor.run(ready=ready, timeout=args.timeout)

    try:
        return asyncio.run(main())
    finally:
        _notify(ready, "error the supervisor exited")


def main(argv: list[str] | None = None) -> int:
    """``python -m agenticflow.cluster.local supervise --dir D``: run the
    supervisor of the cluster described by ``D/spec.json`` (``cluster up``
    starts it; ``cluster down`` stops it with SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m agenticflow.cluster.local")
    commands = parser.add_subparsers(dest="command", required=True)
    supervise = commands.add_parser("supervise", help="run a cluster's supervisor")
    supervise.add_argument("--dir", required=True)
    supervise.add_argument("--ready-fd", type=int, default=None)
    supervise.add_argument("--lock-fd", type=int, default=None, help="an inherited locked fd")
    supervise.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    return _supervise_main(args)


__all__ = [
    "ClusterRunningError",
    "ClusterSpec",
    "LocalCluster",
    "ProcessSupervisor",
    "cluster_status",
    "parse_autoscale",
    "start_supervisor",
    "stop_cluster",
]

if __name__ == "__main__":
    sys.exit(main())

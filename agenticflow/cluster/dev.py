"""A whole cluster on one machine: nats-server, a coordinator and N workers.

Every part is a real process. Used by ``agenticflow dev``, ``make demo`` and
the integration tests::

    async with DevCluster(app="agenticflow.examples.trading.app:app", workers=2) as cluster:
        print(cluster.url)
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from agenticflow.cluster.nats_auth import (
    ADMIN,
    ALL_CAPABILITIES,
    CLIENT,
    COORDINATOR,
    NatsAuthFiles,
    WorkerGroup,
    generate,
    read_env_file,
    settings_from_env,
)
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.cluster.procs import child_preexec, stop_process
from agenticflow.cluster.redis_server import RedisServer
from agenticflow.shared.bus.registry import wait_registered
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError, TransportError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import TRUST_FILE, init_keys
from agenticflow.worker.app import load_app

DEV_WORKERS = "dev"
"""The worker group (role ``worker-dev``) of a secure dev cluster's workers."""

SIGNERS = {COORDINATOR: "coordinator", f"worker-{DEV_WORKERS}": "worker", CLIENT: "client"}
"""The signing principal of each NATS role of a secure dev cluster (admin signs
as the client), as in deploy/compose.yaml's init: ``keys init`` makes these."""


def app_capabilities(app_spec: str) -> list[str]:
    """The capabilities of an app (imported from the working directory, as the
    worker processes import it); raises ConfigError or NotFoundError."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return list(load_app(app_spec).capabilities)


class DevCluster:
    """Start and stop an embedded server (optional), a coordinator and workers."""

    def __init__(
        self,
        *,
        app: str,
        workers: int = 2,
        concurrency: int = 8,
        nats_url: str | None = None,
        port: int | None = None,
        store_dir: str | Path | None = None,
        prefix: str = "af",
        coordinator: bool = True,
        coordinators: int = 1,
        log_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        settings: dict[str, Any] | None = None,
        secure: bool = False,
        secure_dir: str | Path | None = None,
        backend: str = "nats",
    ) -> None:
        """``settings`` are Settings fields (e.g. ``{"task_ack_wait_s": 2}``) given to
        every process, as ``AGENTICFLOW_*`` variables, and to :attr:`settings`.

        ``secure``: the embedded server runs with TLS and one least-privilege
        user per role (see :mod:`agenticflow.cluster.nats_auth`), and every process signs
        and encrypts with keys of its own: ``secure_dir`` (default: a temporary
        directory, removed on stop) gets the layout of deploy/compose.yaml's
        init, ``nats/`` (``agenticflow nats-config``, new each start) and
        ``keys/`` (``agenticflow keys init``, kept once made). The coordinator
        and the workers (group ``dev``: the app's capabilities) run with their
        role's credentials, :attr:`settings` are the admin's.

        ``coordinators``: coordinator processes to start (with ``coordinator``);
        one is active, the others stand by, unless ``settings={"partitions": P}``
        with P above 1: then they share the partitions (give it as a setting, not
        in ``env``: this process creates the events stream too, and its
        partition count is fixed then).

        ``backend``: ``nats`` (an embedded nats-server unless ``nats_url``) or
        ``redis`` (an embedded redis-server, see
        :mod:`agenticflow.cluster.redis_server`; not with ``secure``, whose
        server-side users are NATS's). ``memory`` runs in one process: see
        :mod:`agenticflow.testing`. Raises ConfigError."""
        if workers < 0:
            raise ConfigError("--workers must be 0 or more")
        if coordinators < 1:
            raise ConfigError("coordinators must be 1 or more")
        if secure and nats_url is not None:
            raise ConfigError("a secure dev cluster starts its own server: give no nats_url")
        if backend not in ("nats", "redis"):
            raise ConfigError(
                f"a dev cluster's processes share a nats or redis server, not {backend!r}: "
                "the memory backend runs in one process (agenticflow.testing, "
                "or `agenticflow dev --backend memory`)"
            )
        if backend == "redis" and (secure or secure_dir is not None):
            raise ConfigError("--secure makes NATS users and TLS: it needs --backend nats")
        self.backend = backend
        self.app = app
        self.workers = workers
        self.concurrency = concurrency
        self.prefix = prefix
        self.with_coordinator = coordinator
        self.coordinator_count = coordinators if coordinator else 0
        self.log_dir = Path(log_dir) if log_dir else None
        self.overrides = dict(settings or {})
        self.env = {
            **{f"AGENTICFLOW_{k.upper()}": str(v) for k, v in self.overrides.items()},
            **(env or {}),
        }
        self.server: NatsServer | RedisServer | None = None
        if backend == "redis":
            self.server = RedisServer(port=port, data_dir=store_dir)
        elif nats_url is None:
            self.server = NatsServer(port=port, store_dir=store_dir)
        self.url = nats_url or ""
        self.secure = secure or secure_dir is not None
        self.secure_dir = Path(secure_dir) if secure_dir is not None else None
        self._secure_tmp: Path | None = None
        self.auth: NatsAuthFiles | None = None
        """A secure cluster's credentials and TLS files (once started)."""
        self.keys: Path | None = None
        """A secure cluster's key directory (once started)."""
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.coordinators: list[subprocess.Popen[bytes]] = []
        self.worker_procs: list[subprocess.Popen[bytes]] = []

    @property
    def settings(self) -> Settings:
        """Settings a client of this cluster uses (a secure cluster's admin)."""
        if self.auth is not None:
            return self.settings_for(ADMIN)
        if self.backend == "redis":
            return Settings(**{**self.overrides, "url": self.url, "prefix": self.prefix})
        return Settings(**{**self.overrides, "nats_url": self.url, "prefix": self.prefix})

    def settings_for(self, role: str) -> Settings:
        """Settings of one role of a started secure cluster (``client``,
        ``worker-dev``, ``coordinator``, ``admin``); raises ConfigError."""
        if self.auth is None:
            raise ConfigError("only a started secure dev cluster has roles")
        return settings_from_env({**self._role_env(role), **self._overrides_env})

    def _role_env(self, role: str) -> dict[str, str]:
        """A secure cluster role's variables: its NATS user and its signing key."""
        assert self.auth is not None
        env = self.auth.env(role, url=self.url)
        if self.keys is not None:
            env["AGENTICFLOW_SECURITY_DIR"] = str(self.keys)
            env["AGENTICFLOW_PRINCIPAL"] = SIGNERS.get(role, SIGNERS[CLIENT])
        return env

    @property
    def _overrides_env(self) -> dict[str, str]:
        return {f"AGENTICFLOW_{k.upper()}": str(v) for k, v in self.overrides.items()}

    def _spawn(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        inherited = dict(os.environ)
        secure: dict[str, str] = {}
        if self.auth is not None:
            # Only the role's own credentials and keys: none inherited from this process.
            inherited = {
                k: v
                for k, v in inherited.items()
                if not k.startswith("AGENTICFLOW_NATS")
                and k not in ("AGENTICFLOW_SECURITY_DIR", "AGENTICFLOW_PRINCIPAL")
            }
            secure = self._role_env(
                COORDINATOR if role == "coordinator" else f"worker-{DEV_WORKERS}"
            )
        env = {
            **inherited,
            **(
                {"AGENTICFLOW_URL": self.url, "AGENTICFLOW_BACKEND": "redis"}
                if self.backend == "redis"
                else {"AGENTICFLOW_NATS_URL": self.url}
            ),
            "AGENTICFLOW_PREFIX": self.prefix,
            "PYTHONPATH": os.pathsep.join(
                p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p
            ),
            **secure,
            **self.env,
        }
        out: int | None = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            index = len(self.worker_procs) if role == "worker" else len(self.coordinators)
            out = os.open(
                self.log_dir / f"{role}-{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
            )
        try:
            return subprocess.Popen(  # noqa: S603 - our own entry point
                [sys.executable, "-m", "agenticflow", role, *args],
                env=env,
                stdout=out,
                stderr=out,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )
        finally:
            if isinstance(out, int) and out != subprocess.DEVNULL:
                os.close(out)

    async def start(self, *, timeout: float = 60.0) -> None:
        """Start every part; returns once every worker has registered its agents,
        a coordinator is active and every process is still running."""
        if isinstance(self.server, RedisServer):
            self.url = await asyncio.to_thread(self.server.start)
        elif self.server is not None:
            if self.secure:
                self._prepare_secure(self.server)
            self.url = await asyncio.to_thread(self.server.start)
            if self.auth is not None:
                self.auth.write_env(url=self.url)
                self._write_key_env()
        for _ in range(self.coordinator_count):
            self.add_coordinator()
        for _ in range(self.workers):
            self.add_worker()
        # One active coordinator is enough: the others may stand by (or still be
        # taking their partitions); they must not have died, though.
        await self.wait_for_processes(
            self.workers, coordinators=min(self.coordinator_count, 1), timeout=timeout
        )
        self._check_children()

    def _prepare_secure(self, server: NatsServer) -> None:
        """Write the credentials, TLS files and server configuration."""
        directory = self.secure_dir
        if directory is None:
            directory = self._secure_tmp = Path(tempfile.mkdtemp(prefix="agenticflow-secure-"))
        group = WorkerGroup(name=DEV_WORKERS, queues=tuple(app_capabilities(self.app)))
        self.auth = generate(
            directory / "nats",
            prefix=self.prefix,
            workers=[group],
            tls=True,
            host=server.host,
            port=server.port if server.port is not None else 4222,
            store_dir=server.store_dir,
            force=True,  # a dev cluster's keys are its own: new ones every start
        )
        server.config_file = self.auth.config
        keys = directory / "keys"
        if not (keys / TRUST_FILE).exists():
            init_keys(
                keys, [(principal, principal) for principal in dict.fromkeys(SIGNERS.values())]
            )
        self.keys = keys

    def _write_key_env(self) -> None:
        """Add the key directory and principal to every role's env file."""
        assert self.auth is not None
        for role in self.auth.roles:
            path = self.auth.env_file(role)
            known = read_env_file(path)
            extra = {k: v for k, v in self._role_env(role).items() if k not in known}
            with path.open("a", encoding="utf-8") as file:
                file.writelines(f"{k}={shlex.quote(v)}\n" for k, v in extra.items())

    def add_coordinator(self) -> subprocess.Popen[bytes]:
        """Start one more coordinator process (a standby when one is active)."""
        proc = self._spawn("coordinator")
        self.coordinators.append(proc)
        if self.coordinator is None or self.coordinator.poll() is not None:
            self.coordinator = proc
        return proc

    def add_worker(self, app: str | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker process (in a secure cluster, of an app whose
        capabilities the worker group's credentials cover; else ConfigError)."""
        if self.auth is not None and app is not None:
            allowed = set(self.auth.worker_queues(f"worker-{DEV_WORKERS}"))
            extra = sorted(set(app_capabilities(app)) - allowed - {ALL_CAPABILITIES})
            if extra:
                raise ConfigError(f"the dev workers' credentials do not cover {', '.join(extra)}")
        proc = self._spawn(
            "worker", "--app", app or self.app, "--concurrency", str(self.concurrency)
        )
        self.worker_procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process of this cluster (failure tests) and reap it."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    async def wait_for_processes(
        self, workers: int, *, coordinators: int = 0, timeout: float = 60.0
    ) -> None:
        """Wait until ``workers`` worker and ``coordinators`` coordinator processes
        have registered in the agents bucket."""
        if workers == 0 and coordinators == 0:
            return
        bus = await Bus.connect(self.settings, name="agenticflow-dev")
        try:
            await bus.ensure_topology()
            try:
                await wait_registered(
                    bus,
                    lambda seen: (
                        len(seen.workers) >= workers and len(seen.coordinators) >= coordinators
                    ),
                    timeout=timeout,
                    check=self._check_children,
                )
            except TimeoutError as exc:
                raise TransportError(
                    f"not every process registered ({workers} workers and "
                    f"{coordinators} coordinators wanted): {exc}"
                ) from exc
        finally:
            await bus.close()

    def _check_children(self) -> None:
        for proc in [*self.coordinators, *self.worker_procs]:
            if proc.poll() is not None and proc.returncode != -9:
                raise ConfigError(
                    f"process {proc.args!r} exited with code {proc.returncode} during start-up"
                )

    async def stop(self) -> None:
        """Stop workers, then the coordinator, then the server (idempotent)."""

        def stop_all() -> None:
            for proc in self.worker_procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.worker_procs:
                stop_process(proc)
            for proc in self.coordinators:
                stop_process(proc)
            if self.server is not None:
                self.server.stop()
            if self._secure_tmp is not None:
                shutil.rmtree(self._secure_tmp, ignore_errors=True)
                self._secure_tmp = None

        await asyncio.to_thread(stop_all)

    async def __aenter__(self) -> DevCluster:
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


__all__ = ["DevCluster"]

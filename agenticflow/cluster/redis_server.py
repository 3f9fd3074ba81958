"""An embedded ``redis-server`` for ``agenticflow dev --backend redis``, the
demo and the tests: a free port on 127.0.0.1, its own directory, stopped with
the cluster.

Like the NATS server of a dev cluster it keeps nothing by default (no RDB
snapshots, no append-only file); ``persist=True`` turns on the append-only
file with ``appendfsync everysec``, the setting production deployments use
(see the backends guide for what a crash may lose then).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from agenticflow.shared.errors import ConfigError, TransportError

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_ping(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a Redis server on ``host:port`` answers PING (inline command)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``url = server.start()`` ... ``server.stop()`` (idempotent)."""

    def __init__(
        self, *, port: int | None = None, data_dir: str | Path | None = None, persist: bool = False
    ) -> None:
        self.port = port
        self.host = "127.0.0.1"
        self.persist = persist
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._tmp: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (once started)."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> str:
        """Start it and wait until it answers; returns its URL. Raises
        ConfigError when ``redis-server`` is not installed, TransportError when
        it does not come up."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed (Debian: apt-get install redis-server; "
                "`make` installs it on CI)"
            )
        directory = self._data_dir
        if directory is None:
            directory = self._tmp = Path(tempfile.mkdtemp(prefix="agenticflow-redis-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        persistence = ["yes", "--appendfsync", "everysec"] if self.persist else ["no"]
        self.process = subprocess.Popen(  # noqa: S603 - our arguments, no shell
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                *persistence,
                "--dir",
                str(directory),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers_ping(self.port, self.host):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TransportError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polling the child's start, bounded by the deadline
        return self.url

    def stop(self) -> None:
        """Stop the server and remove its temporary directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._tmp)
            self._tmp = None


__all__ = ["RedisServer", "answers_ping", "free_port"]

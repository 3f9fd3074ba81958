"""Run a server process until it listens on a local port (the MCP tests' HTTP servers)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx


@contextlib.contextmanager
def listening(
    argv: list[str], port: int, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, return once 127.0.0.1:``port`` answers HTTP (any status),
    terminate it at the end. Raises AssertionError if it exits first or does not
    listen within about 20 s."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client() as probe:
            for _ in range(400):
                try:
                    probe.get(f"http://127.0.0.1:{port}/", timeout=0.1)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, f"{argv} exited with {process.returncode}"
                    # Waits on the process (it may exit), not for time to pass.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=0.05)
            else:
                raise AssertionError(f"{argv} does not listen on port {port}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)

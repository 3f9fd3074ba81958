"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1

# Loaded in the parent so the child only makes the prctl system call between
# fork and exec (no allocation, no locks: safe even when the parent has threads).
_LIBC: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def child_preexec(death_signal: int = signal.SIGTERM) -> None:
    """Run in a child before exec: own process group, ``death_signal`` if the
    parent dies.

    The own group keeps a terminal's Ctrl-C from reaching children directly, so
    the parent stops them in order (workers, coordinator, then the server).
    """
    os.setpgrp()
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, death_signal)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


__all__ = ["child_preexec", "stop_process"]

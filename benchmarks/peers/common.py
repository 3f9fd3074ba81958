"""What every peer benchmark shares: its command line, its report, its child processes.

A peer benchmark (``python -m benchmarks.peers.<peer>_bench``) takes the sizes
and the number of runs on its command line, measures W1-W3 ``--runs`` times
and writes ``{"config": {...}, "runs": [{"w1": {...}, "w2": {...}, "w3": {...}},
...]}`` to ``--output``. The servers and workers it starts are children of its
own that never outlive it (own process group, SIGTERM when it dies) and are
stopped when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from agenticflow.cluster.procs import child_preexec, stop_process

RunFigures = dict[str, dict[str, float]]
"""One run's figures by workload key (``w1``, ``w2``, ``w3``)."""


class PeerError(Exception):
    """A peer could not be started or a workload did not complete in time."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One of W1-W3 and the figure the table shows for it."""

    key: str
    title: str
    metric: str
    unit: str
    higher_is_better: bool

    def describe(self, fanout: int, chain: int, diamonds: int) -> str:
        """What the workload does at these sizes."""
        return {
            "w1": f"1 job of {fanout:,} independent tasks",
            "w2": f"{chain:,} sequential tasks",
            "w3": f"{diamonds:,} diamonds a -> (b, c) -> d at once",
        }[self.key]


WORKLOADS = (
    Workload("w1", "W1 fan-out", "tasks_per_s", "tasks/s", higher_is_better=True),
    Workload("w2", "W2 chain", "ms_per_hop", "ms/hop", higher_is_better=False),
    Workload("w3", "W3 diamonds", "workflows_per_s", "workflows/s", higher_is_better=True),
)


@dataclass(frozen=True, slots=True)
class BenchArgs:
    """A peer benchmark's command line."""

    fanout: int
    chain: int
    diamonds: int
    runs: int
    timeout: float
    """Seconds to wait for one workload (and for a server or worker to start)."""
    output: Path
    log_dir: Path
    extra: argparse.Namespace
    """The peer's own options."""


def parse_bench_args(
    argv: Sequence[str] | None,
    prog: str,
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> BenchArgs:
    """Read a peer benchmark's command line."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--fanout", type=int, required=True, help="W1 tasks")
    parser.add_argument("--chain", type=int, required=True, help="W2 tasks")
    parser.add_argument("--diamonds", type=int, required=True, help="W3 workflows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, required=True, help="JSON figures go here")
    parser.add_argument("--log-dir", type=Path, required=True, help="server and worker logs")
    if add_options is not None:
        add_options(parser)
    args = parser.parse_args(argv)
    return BenchArgs(
        fanout=args.fanout,
        chain=args.chain,
        diamonds=args.diamonds,
        runs=args.runs,
        timeout=args.timeout,
        output=args.output,
        log_dir=args.log_dir,
        extra=args,
    )


def write_output(path: Path, config: dict[str, Any], runs: list[RunFigures]) -> None:
    """Write a peer benchmark's figures for the orchestrator."""
    path.write_text(json.dumps({"config": config, "runs": runs}, indent=2) + "\n", "utf-8")


def progress(message: str) -> None:
    """A progress line (stderr: stdout may belong to a library)."""
    print(message, file=sys.stderr, flush=True)


def shown(figures: RunFigures) -> str:
    """One run's headline figures, e.g. ``W1 1,234.5 tasks/s, ...``."""
    return ", ".join(
        f"{w.title.split()[0]} {figures[w.key][w.metric]:,.1f} {w.unit}"
        for w in WORKLOADS
        if w.key in figures
    )


def figures_w1(n: int, seconds: float) -> dict[str, float]:
    """W1's figures from its wall time."""
    return {"tasks_per_s": n / seconds, "seconds": seconds}


def figures_w2(n: int, seconds: float) -> dict[str, float]:
    """W2's figures from its wall time."""
    return {"ms_per_hop": seconds * 1000 / n, "seconds": seconds}


def figures_w3(n: int, seconds: float) -> dict[str, float]:
    """W3's figures from its wall time."""
    return {"workflows_per_s": n / seconds, "tasks_per_s": 4 * n / seconds, "seconds": seconds}


def timed_runs(
    name: str,
    args: BenchArgs,
    fanout: Callable[[int], object],
    chain: Callable[[int], object],
    diamonds: Callable[[int], object],
) -> list[RunFigures]:
    """W1, W2 and W3 ``args.runs`` times with blocking workload functions (each
    raises PeerError on a wrong result); the figures of every run."""
    runs: list[RunFigures] = []
    for run in range(1, args.runs + 1):
        figures: RunFigures = {}
        for key, workload, n, figured in (
            ("w1", fanout, args.fanout, figures_w1),
            ("w2", chain, args.chain, figures_w2),
            ("w3", diamonds, args.diamonds, figures_w3),
        ):
            started = time.perf_counter()
            workload(n)
            figures[key] = figured(n, time.perf_counter() - started)
        progress(f"  {name} run {run}/{args.runs}: {shown(figures)}")
        runs.append(figures)
    return runs


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop our children."""

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def find_binary(name: str) -> str | None:
    """An executable next to our Python (where pip puts a package's binaries), or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def run_bench(args: BenchArgs, bench: Callable[[], tuple[dict[str, Any], list[RunFigures]]]) -> int:
    """Run a peer benchmark's body; write its figures, or its error, to ``args.output``.

    SIGTERM becomes SystemExit first, so the body's ``finally`` and ``with``
    blocks stop what it started. Returns the exit code (1 on an error).
    """
    exit_on_sigterm()
    try:
        config, runs = bench()
    except Exception as exc:
        if not isinstance(exc, PeerError):
            traceback.print_exc()
        error = str(exc) or type(exc).__name__
        args.output.write_text(json.dumps({"error": error}) + "\n", "utf-8")
        return 1
    write_output(args.output, config, runs)
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment, with the repository on PYTHONPATH (children import ``benchmarks``)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p
        ),
        **(extra or {}),
    }


class Processes:
    """The servers and workers of one benchmark; all stopped on exit, however it exits.

    Each child gets its own process group and SIGTERM when this process dies
    (:func:`agenticflow.cluster.procs.child_preexec`), and logs to ``<log_dir>/<name>.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.servers: set[str] = set()

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
        server: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``command``; with ``stdout_pipe`` its stdout is a pipe we read.

        A ``server`` is stopped after every other child (its clients).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(command),
                env=child_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                preexec_fn=child_preexec,  # noqa: PLW1509 - only setpgrp + prctl
            )
        self.procs.append((name, proc))
        if server:
            self.servers.add(name)
        return proc

    def check(self) -> None:
        """Raise PeerError if a child has exited."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise PeerError(
                    f"{name} exited with code {proc.returncode} "
                    f"(see {self.log_dir / (name + '.log')})"
                )

    def stop(self) -> None:
        """Stop the clients (SIGTERM to all at once, then wait for each, SIGKILL after
        15 s), then the servers the same way."""
        clients = [(n, p) for n, p in self.procs if n not in self.servers]
        servers = [(n, p) for n, p in self.procs if n in self.servers]
        for group in (clients, servers):
            for _, proc in group:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
            for _, proc in group:
                stop_process(proc)
                if proc.stdout is not None:
                    proc.stdout.close()
        self.procs.clear()
        self.servers.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise PeerError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:g}s")
        try:
            proc.wait(0.05)  # the pause between attempts, which also notices an exit
        except subprocess.TimeoutExpired:
            continue
        raise PeerError(f"{name} exited with code {proc.returncode} during start-up")


def wait_for_line(proc: subprocess.Popen[bytes], expected: str, name: str, timeout: float) -> None:
    """Wait until ``proc`` prints a line equal to ``expected`` on its stdout pipe."""
    stream: IO[bytes] | None = proc.stdout
    if stream is None:
        raise PeerError(f"{name}: no stdout pipe to read")
    fd = stream.fileno()
    pending = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerError(f"{name} was not ready within {timeout:g}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            raise PeerError(f"{name} exited with code {proc.returncode} during start-up")
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if any(line.decode(errors="replace").strip() == expected for line in lines):
            return


def server_version(command: Sequence[str]) -> str:
    """The first line a ``--version`` command prints, or ``?``."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


__all__ = [
    "WORKLOADS",
    "BenchArgs",
    "PeerError",
    "Processes",
    "RunFigures",
    "Workload",
    "child_env",
    "exit_on_sigterm",
    "figures_w1",
    "figures_w2",
    "figures_w3",
    "find_binary",
    "free_port",
    "parse_bench_args",
    "progress",
    "run_bench",
    "server_version",
    "shown",
    "wait_for_line",
    "wait_for_port",
    "write_output",
]

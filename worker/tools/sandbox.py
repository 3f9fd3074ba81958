"""Run a tool in a separate, limited process (Linux).

A tool declared with ``sandbox=True`` runs, per call, in a fresh interpreter
(``python -I``) started in a new session, with a scrubbed environment (``PATH``,
``LANG``, ``HOME``/``TMPDIR``: no secret of the worker leaks in) and a temporary
working directory that is removed afterwards. Three processes take part::

    worker ── supervisor ── init ── tool process (and whatever it forks)

The **supervisor** reads the request (msgpack on stdin), imports the tool's
module and validates the params with the worker's user and files (the
module's top-level code is trusted like the worker's own; only the call is
confined). It then enters the namespaces and forks the **init** (pid 1 of
the new pid namespace), which forks the **tool process**: that one jails
itself, drops its privileges, sets its limits and calls the tool. The
supervisor kills the init at the timeout (counted from the interpreter's
start), collects the answer, kills and reaps whatever is left, and answers.
If the supervisor itself does not answer within the timeout plus
``_GRACE_S``, the worker kills it (and, as root, every process of the tool's
uid).

What the tool process gets:

==========  ===========================================================
limits      RLIMIT_CPU (SIGXCPU, SIGKILL a second later), RLIMIT_AS,
            RLIMIT_NOFILE, RLIMIT_FSIZE, no core dumps
processes   RLIMIT_NPROC (``SandboxLimits.processes``, threads included),
            counted per call: a root worker runs each tool as a uid of its
            own (``UID_BASE + supervisor pid``, from zero); another user's
            tool counts in its own user namespace
files       ``chroot`` into the working directory, then no privilege left
            to climb out (root: the tool's own uid; in a user namespace:
            every capability and the bounding set dropped), and
            ``PR_SET_NO_NEW_PRIVS``
network     its own, empty network namespace (``network=False``)
signals     its own pid namespace: it can signal nothing outside; when the
            init dies, every process of the call dies with it
leftovers   killed and reaped by the supervisor, a subreaper (so a detached
            ``setsid`` child is still its descendant), and, as root, by uid
==========  ===========================================================

Where the kernel cannot (no user namespaces for unprivileged users, a seccomp
filter against ``unshare`` as in Docker's and Kubernetes' RuntimeDefault
profile, no CAP_SYS_CHROOT), the sandbox **fails closed**: the tool is not
run, and the call fails with :class:`~agenticflow.shared.errors.SandboxIsolationError`
(non-retryable) naming what is missing. Full isolation means a chroot jail,
a network namespace when ``network=False``, and a user of its own (the
worker's user only inside a user namespace). Only the operator may accept
less, by name: ``agenticflow worker --allow-weak-sandbox``
(``AGENTICFLOW_ALLOW_WEAK_SANDBOX=1``, ``Settings.allow_weak_sandbox``); the
worker then warns at start-up and in its health report, and a tool declared
with ``SandboxLimits(require_isolation=True)`` is still refused. What such a
weak sandbox gives:

- as root, the pid and network namespaces need no user namespace and chroot
  needs none either; without ``unshare`` the tool keeps the host's network,
  and its leftovers are found by uid and by descent;
- as another user without a user namespace there is no chroot: a Python audit
  hook (with guards on the ``os`` functions Python does not audit) refuses
  file access outside the directory, whether by path or through a directory
  descriptor (``dir_fd``, ``os.scandir(fd)``, ``os.fchdir``), paths with
  ``..``, symbolic links pointing out, new programs, ctypes and signals to
  other processes (``jail="audit-hook"``): so ``/proc`` (the worker's
  ``environ``) and the key directory are out of reach of ordinary Python
  code. **It is not a security boundary**: a C extension or a ctypes object
  made before goes around it. The tool keeps the host's network and runs as
  the worker's user, and RLIMIT_NPROC counts all that user's processes (the
  limit is raised by their number when the tool starts).

What one call got is an :class:`Isolation` (:func:`sandbox_run` returns it);
a weak call allowed by the operator is logged once per tool.

The tool process inherits nothing secret from the worker: its environment is
``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` and ``PYTHONDONTWRITEBYTECODE`` only
(no ``AGENTICFLOW_*`` setting, no NATS credentials), no descriptor but its
pipes, and the interpreter runs isolated (``-I``: no ``PYTHON*`` variables,
no user site).

A tool author must know: the tool sees only its working directory (``/``
inside the chroot, also ``HOME`` and ``TMPDIR``), so what it imports must be
imported with its module (a lazy import inside the function finds no standard
library), and host names do not resolve (no ``/etc/resolv.conf``). Not
limited: the working directory's total size (only each file's).

A failure comes back as :class:`~agenticflow.shared.errors.SandboxError` saying what
happened (the tool raised, ran out of memory, CPU time, processes or open
files, wrote too big a file, reached for the network or a file outside its
directory, was killed), or :class:`~agenticflow.shared.errors.ToolTimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import selectors
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    SandboxError,
    SandboxIsolationError,
    ToolTimeoutError,
)
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.worker.tools.spec import SandboxLimits, Tool, ToolCall, plain, vars_of

log = logging.getLogger(__name__)

_BOOT = (
    "import os, sys, time; started = time.monotonic(); "
    "sys.path[:0] = [p for p in sys.argv[1].split(os.pathsep) if p]; "
    "from agenticflow.worker.tools.sandbox import main; main(started)"
)
MECHANISMS = frozenset({"namespaces", "chroot", "root"})
"""What ``without=`` can switch off, to run as on a kernel (or as a user) that
cannot have it: ``root`` makes a root worker's supervisor drop to ``nobody``
first, as a worker running as an ordinary user."""
UID_BASE = 2_000_000_000
"""Root workers run each tool as ``UID_BASE + pid of its supervisor``."""
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NOBODY = 65534
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_CAP_VERSION_3 = 0x20080522
_MIB = 1024 * 1024
_MAX_ANSWER = 16 * _MIB
_STDERR_TAIL = 4096
_GRACE_S = 5.0
"""How long past its timeout the worker waits for the supervisor's answer."""
_STOP_S = 2.0
_DRAIN_S = 1.0
_PRELOAD = ("encodings.idna", "encodings.ascii", "encodings.latin_1")
"""Imported before the jail: ``socket`` and ``open`` load these lazily."""
_NO_NETWORK = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


@dataclass(frozen=True, slots=True)
class Isolation:
    """How one sandboxed call was isolated: what the kernel allowed."""

    jail: str = "none"
    """``chroot`` (the working directory is all the file system the tool sees),
    ``audit-hook`` (a Python audit hook refuses paths outside it: not a
    security boundary) or ``none`` (the tool process was not reached)."""
    network_isolated: bool = False
    pid_namespace: bool = False
    user_namespace: bool = False
    uid: int = -1
    """The user the tool ran as, seen from outside any user namespace."""
    same_user: bool = False
    """The tool ran as the worker's own user outside any user namespace (it
    may signal, trace and read the files of the worker's processes)."""

    def gaps(self, limits: SandboxLimits) -> list[str]:
        """What falls short of full isolation under ``limits`` (empty: nothing)."""
        missing = []
        if self.jail != "chroot":
            missing.append("no chroot jail (only an audit hook guards the files)")
        if not limits.network and not self.network_isolated:
            missing.append("no network namespace (the host's network is reachable)")
        if self.same_user:
            missing.append("no user of its own (it runs as the worker's user)")
        return missing


@dataclass(frozen=True, slots=True)
class SandboxRun:
    """A sandboxed call that succeeded: its result and how it was isolated."""

    result: Any
    isolation: Isolation = field(default_factory=Isolation)


async def run_sandboxed(
    tool: Tool,
    params: dict[str, Any],
    call: ToolCall,
    *,
    without: Collection[str] = (),
    allow_weak: bool = False,
) -> Any:
    """Run ``tool`` with ``params`` in a sandboxed process; returns its result.

    ``allow_weak``: the operator accepts less than full isolation
    (``Settings.allow_weak_sandbox``). Raises SandboxIsolationError where the
    kernel cannot isolate the tool as declared (the tool is not run),
    ToolTimeoutError after ``tool.timeout_s`` (every process of the call is
    killed) and SandboxError when the tool fails in any other way.
    """
    return (await sandbox_run(tool, params, call, without=without, allow_weak=allow_weak)).result


async def sandbox_run(
    tool: Tool,
    params: dict[str, Any],
    call: ToolCall,
    *,
    without: Collection[str] = (),
    allow_weak: bool = False,
) -> SandboxRun:
    """:func:`run_sandboxed`, also reporting how the call was isolated.

    ``without`` names :data:`MECHANISMS` to do without, as on a kernel (or a
    user) that cannot have them: for tests. Raises ConfigError for an unknown
    mechanism, SandboxIsolationError, ToolTimeoutError and SandboxError.
    """
    unknown = set(without) - MECHANISMS
    if unknown:
        raise ConfigError(
            f"unknown sandbox mechanisms {sorted(unknown)}; known: {sorted(MECHANISMS)}"
        )
    workdir = tempfile.mkdtemp(prefix="af-sandbox-")
    request = pack(
        {
            "target": tool.target,
            "params": params,
            "call": call.to_dict(),
            "limits": vars_of(tool.limits),
            "timeout_s": tool.timeout_s,
            "without": sorted(without),
            "allow_weak": allow_weak,
        }
    )
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _BOOT,
            os.pathsep.join(p or os.getcwd() for p in sys.path),
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(tool.timeout_s + _GRACE_S):
                out, err = await _exchange(proc, request)
        except TimeoutError:
            raise _timed_out(tool) from None
        finally:
            await _stop(proc)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return _answer(tool, proc.returncode or 0, out, err, allow_weak=allow_weak)


async def _exchange(proc: asyncio.subprocess.Process, request: bytes) -> tuple[bytes, bytes]:
    """Feed the request, collect the answer (bounded) and the tail of stderr.

    The readers get a moment after the supervisor exits, no more: the pipes
    stay open while any process of the tool holds them.
    """
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    answer, errors = bytearray(), bytearray()
    async with asyncio.TaskGroup() as group:
        group.create_task(_feed(proc.stdin, request))
        readers = [
            group.create_task(_collect(proc.stdout, answer, _MAX_ANSWER + _MIB, tail=False)),
            group.create_task(_collect(proc.stderr, errors, _STDERR_TAIL, tail=True)),
        ]
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_S):
                await asyncio.gather(*readers)
    return bytes(answer), bytes(errors)


async def _feed(stdin: asyncio.StreamWriter, request: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(request)
        await stdin.drain()
        stdin.close()


async def _collect(
    stream: asyncio.StreamReader, into: bytearray, limit: int, *, tail: bool
) -> None:
    while chunk := await stream.read(65536):
        if tail:
            into += chunk
            del into[:-limit]
        elif len(into) <= limit:
            into += chunk[: limit + 1 - len(into)]


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """End a supervisor that has not answered: SIGTERM (it kills every process
    of the call and reaps them), SIGKILL after a moment."""
    if proc.returncode is not None:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_S):
                await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if os.geteuid() == 0:
                _kill_user(UID_BASE + proc.pid)


def _timed_out(tool: Tool) -> ToolTimeoutError:
    return ToolTimeoutError(
        f"sandboxed tool {tool.name!r} ran longer than {tool.timeout_s:g}s and was killed",
        tool=tool.name,
    )


@functools.cache
def _warn_once(tool: str, gaps: str) -> None:
    log.warning(
        "sandboxed tool %r runs with weaker isolation here (allowed by --allow-weak-sandbox): %s",
        tool,
        gaps,
    )


def _refused(tool: Tool, gaps: list[str], *, allowed: bool) -> SandboxIsolationError:
    """The error of a call the sandbox did not run for want of isolation."""
    missing = "; ".join(gaps) or "isolation the kernel refused"
    if allowed and tool.limits.require_isolation:
        how = (
            "SandboxLimits(require_isolation=True) refuses it even where the operator "
            "allows a weak sandbox"
        )
    elif allowed:
        how = "the sandbox cannot fall back to a weak one from inside a namespace it entered"
    else:
        how = (
            "give the worker user namespaces (see the README's Sandbox section: seccomp and "
            "AppArmor profiles that allow unshare) or accept weaker isolation by name: "
            "agenticflow worker --allow-weak-sandbox (AGENTICFLOW_ALLOW_WEAK_SANDBOX=1)"
        )
    return SandboxIsolationError(
        f"sandboxed tool {tool.name!r} was not run: the sandbox here has {missing}; {how}",
        tool=tool.name,
        missing=gaps,
    )


def _answer(tool: Tool, code: int, out: bytes, err: bytes, *, allow_weak: bool) -> SandboxRun:
    """The supervisor's answer as a result, or the error it describes."""
    answer: Any = None
    if out and len(out) <= _MAX_ANSWER + _MIB:
        with contextlib.suppress(AgenticFlowError):
            answer = unpack(out)
    tail = err.decode(errors="replace").strip()[-500:]
    if not isinstance(answer, dict):
        what = f"exited with code {code}" if code >= 0 else f"was killed by {_signame(-code)}"
        raise SandboxError(
            f"sandboxed tool {tool.name!r}: its sandbox {what} without an answer"
            + (f": {tail}" if tail else ""),
            tool=tool.name,
            error_type="ProcessDied",
        )
    isolation = Isolation(**answer.get("isolation", {}))
    gaps = isolation.gaps(tool.limits)
    kind = str(answer.get("type", "Exception"))
    if kind == "IsolationUnavailable":
        if isolation.jail == "none":  # refused before the tool process: the reason is all
            gaps = [str(answer.get("message") or "isolation the kernel refused")]
        raise _refused(tool, gaps, allowed=allow_weak)
    if gaps and isolation.jail != "none":
        _warn_once(tool.name, "; ".join(gaps))
    if answer.get("ok") is True:
        return SandboxRun(answer.get("result"), isolation)
    if kind == "Timeout":
        raise _timed_out(tool)
    if kind == "ProcessDied":
        raise SandboxError(
            f"sandboxed tool {tool.name!r} {_death(tool.limits, answer, tail)}"
            + (f": {tail}" if tail else ""),
            tool=tool.name,
            error_type=kind,
        )
    raise SandboxError(
        f"sandboxed tool {tool.name!r} {_failure(tool.limits, isolation, answer)}",
        tool=tool.name,
        error_type=kind,
    )


def _failure(limits: SandboxLimits, isolation: Isolation, answer: dict[str, Any]) -> str:
    """What the tool's exception means, in words."""
    kind = str(answer.get("type", "Exception"))
    message = str(answer.get("message", ""))
    number = answer.get("errno")
    what = f"failed: {kind}: {message}"
    if kind == "MemoryError":
        what = f"failed: MemoryError: ran out of memory (limit {limits.memory_mb} MiB)"
    elif kind == "TooLarge":
        what = f"failed: its answer is over {_MAX_ANSWER // _MIB} MiB"
    elif (kind == "BlockingIOError" and number == errno.EAGAIN) or (
        kind == "RuntimeError" and "can't start new thread" in message
    ):
        what = f"hit its process limit ({limits.processes} processes): {kind}: {message}"
    elif number == errno.EFBIG:
        what = f"wrote a file over its size limit ({limits.file_size_mb} MiB): {kind}: {message}"
    elif number == errno.EMFILE:
        what = f"hit its open files limit ({limits.open_files}): {kind}: {message}"
    elif isolation.network_isolated and (number in _NO_NETWORK or kind == "gaierror"):
        what += " (the sandbox has no network; SandboxLimits(network=True) allows it)"
    elif kind in {"FileNotFoundError", "PermissionError", "NotADirectoryError"} and (
        "sandbox: " not in message  # the audit hook's own words say it already
    ):
        what += " (a sandboxed tool sees only its own working directory)"
    return what


def _death(limits: SandboxLimits, answer: dict[str, Any], tail: str) -> str:
    """How the tool process died, in words."""
    number = answer.get("signal")
    if number == signal.SIGXCPU:
        return f"used up its CPU time limit ({limits.cpu_s}s) and was killed"
    if number == signal.SIGXFSZ:
        return f"wrote a file over its size limit ({limits.file_size_mb} MiB) and was killed"
    if "MemoryError" in tail:
        return f"ran out of memory (limit {limits.memory_mb} MiB)"
    if number == signal.SIGKILL:
        return "was killed (CPU or memory limit)"
    if number:
        return f"was killed by {_signame(int(number))}"
    return f"exited with code {answer.get('code')} without an answer"


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_user(uid: int, *, reap: bool = False) -> None:
    """SIGKILL every process of ``uid`` until none is left (a root worker's
    tools each have a uid of their own, so this is exactly the call's).
    ``reap``: in the supervisor, a subreaper, reap the orphans that come to it
    (never in the worker: its event loop reaps its own children)."""
    for _ in range(500):
        alive = _processes_of(uid)
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if reap:
            _reap()
        time.sleep(0.002)
    log.warning("processes of sandbox user %d outlived 500 rounds of SIGKILL", uid)


def _processes_of(uid: int, *, zombies: bool = False) -> list[int]:
    """Processes whose real uid is ``uid`` (from ``/proc/PID/status``: a
    process that changed its uid has a /proc directory owned by root)."""
    found = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            state = status.get("State", "").split()[:1]
            uids = status.get("Uid", "").split()[:1]
            if uids == [str(uid)] and (zombies or state not in (["Z"], ["X"])):
                found.append(int(entry.name))
    return found


def _kill_descendants() -> None:
    """SIGKILL every descendant of this process until none is left. The
    supervisor is a subreaper: a process the tool detached (setsid, double
    fork) is still its descendant."""
    me = os.getpid()
    for _ in range(500):
        parents: dict[int, int] = {}
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = Path(f"/proc/{entry.name}/stat").read_text(encoding="ascii")
                    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                    if state not in {"Z", "X"}:
                        parents[int(entry.name)] = int(ppid)
        doomed = {me}
        grew = True
        while grew:
            found = {pid for pid, ppid in parents.items() if ppid in doomed} - doomed
            doomed |= found
            grew = bool(found)
        doomed.discard(me)
        if not doomed:
            return
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap()
        time.sleep(0.002)
    log.warning("descendants of sandbox supervisor %d outlived 500 rounds of SIGKILL", me)


def _reap(wait_s: float = 0.0) -> None:
    """Reap our children; for up to ``wait_s`` while some are still alive."""
    until = time.monotonic() + wait_s
    with contextlib.suppress(ChildProcessError):
        while True:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
            if time.monotonic() >= until:
                return
            time.sleep(0.002)


# The supervisor, the init and the tool process ------------------------------
class _Kernel:
    """The few system calls Python's ``os`` does not have (via libc)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def prctl(self, option: int, value: int) -> int:
        zero = ctypes.c_ulong(0)
        return int(self.libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), zero, zero, zero))

    def must_prctl(self, option: int, value: int) -> None:
        if self.prctl(option, value) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")

    def unshare(self, flags: int) -> bool:
        return int(self.libc.unshare(ctypes.c_int(flags))) == 0

    def drop_capabilities(self) -> None:
        """Empty the bounding set, then every capability set: nothing left to
        leave a chroot with, nor to regain on exec."""
        cap = 0
        while self.prctl(_PR_CAPBSET_DROP, cap) == 0:
            cap += 1
        if ctypes.get_errno() != errno.EINVAL:  # EINVAL: past the last capability
            raise OSError(ctypes.get_errno(), "cannot drop the capability bounding set")

        class Header(ctypes.Structure):
            _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

        class Data(ctypes.Structure):
            _fields_ = (
                ("effective", ctypes.c_uint32),
                ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32),
            )

        if self.libc.capset(ctypes.byref(Header(_CAP_VERSION_3, 0)), (Data * 2)()) != 0:
            raise OSError(ctypes.get_errno(), "cannot drop capabilities")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the supervisor obtained from the kernel before forking."""

    uid: int
    """The tool's user, seen from outside any user namespace."""
    own_user: bool
    """Root: ``uid`` is the call's own, the tool process switches to it."""
    user_namespace: bool
    pid_namespace: bool
    network_isolated: bool
    chroot: bool
    """Whether the tool process may try to chroot."""

    def isolation(self, jail: str) -> Isolation:
        return Isolation(
            jail=jail,
            network_isolated=self.network_isolated,
            pid_namespace=self.pid_namespace,
            user_namespace=self.user_namespace,
            uid=self.uid,
            same_user=not self.own_user and not self.user_namespace,
        )


def _prepare(kernel: _Kernel, limits: SandboxLimits, without: set[str]) -> _Plan:
    """Enter what namespaces the kernel allows (the supervisor itself, so that
    its next child is pid 1 of the new pid namespace)."""
    wanted = _CLONE_NEWPID | (0 if limits.network else _CLONE_NEWNET)
    may = "namespaces" not in without
    if "root" in without and os.geteuid() == 0:
        os.chown(".", _NOBODY, _NOBODY)
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
        kernel.prctl(_PR_SET_DUMPABLE, 1)  # else /proc/self/uid_map stays root's
    if os.geteuid() == 0:
        uid = UID_BASE + os.getpid()
        os.chown(".", uid, uid)
        got = 0
        if may:
            for flags in (wanted, _CLONE_NEWPID, wanted & _CLONE_NEWNET):
                if flags and not got & flags and kernel.unshare(flags):
                    got |= flags
        return _Plan(
            uid=uid,
            own_user=True,
            user_namespace=False,
            pid_namespace=bool(got & _CLONE_NEWPID),
            network_isolated=bool(got & _CLONE_NEWNET),
            chroot="chroot" not in without,
        )
    outside_uid, outside_gid = os.geteuid(), os.getegid()
    if may and kernel.unshare(_CLONE_NEWUSER | wanted):
        # Map only ourselves (what an unprivileged process may): root inside,
        # the worker's user outside. setgroups must be denied first.
        try:
            for name, text in (
                ("setgroups", "deny"),
                ("uid_map", f"0 {outside_uid} 1"),
                ("gid_map", f"0 {outside_gid} 1"),
            ):
                with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
                    f.write(text)
        except OSError as exc:  # e.g. an AppArmor policy that restricts user namespaces
            raise _IsolationUnavailableError(f"an unusable user namespace ({exc})") from exc
        return _Plan(
            uid=outside_uid,
            own_user=False,
            user_namespace=True,
            pid_namespace=True,
            network_isolated=not limits.network,
            chroot="chroot" not in without,
        )
    return _Plan(
        uid=outside_uid,
        own_user=False,
        user_namespace=False,
        pid_namespace=False,
        network_isolated=False,
        chroot=False,
    )


def _resolve(target: str) -> Tool:
    import importlib

    module_name, _, qualname = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    if not isinstance(value, Tool):
        raise SandboxError(f"{target} is not a tool declared with @tool")
    return value


def _tasks_of(uid: int) -> int:
    """Processes and threads of ``uid`` now (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in _processes_of(uid, zombies=True):  # a zombie counts until reaped
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def _limit(limits: SandboxLimits, processes: int) -> None:
    import resource

    cpu = max(int(limits.cpu_s), 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * _MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    size = limits.file_size_mb * _MIB
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


_PATH_EVENTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # event: (indexes of paths, indexes of directory descriptors) in its args.
    # "open" carries no dir_fd: os.open is wrapped for that (see _Jail.guard).
    "open": ((0,), ()),
    "os.listdir": ((0,), ()),
    "os.scandir": ((0,), ()),
    "os.chdir": ((0,), ()),
    "os.mkdir": ((0,), (2,)),
    "os.remove": ((0,), (1,)),
    "os.rmdir": ((0,), (1,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.link": ((0, 1), (2, 3)),
    "os.symlink": ((1,), (2,)),
    "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)),
    "os.truncate": ((0,), ()),
    "os.utime": ((0,), (3,)),
    "os.listxattr": ((0,), ()),
    "os.getxattr": ((0,), ()),
    "os.setxattr": ((0,), ()),
    "os.removexattr": ((0,), ()),
    "os.walk": ((0,), ()),
    "os.fwalk": ((0,), (4,)),
    "glob.glob/2": ((0, 2), (3,)),
    "shutil.copyfile": ((0, 1), ()),
    "shutil.rmtree": ((0,), (1,)),
}
_FORBIDDEN = (
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "os.startfile",
    "subprocess.Popen",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.call_function",
    "os.chroot",
)
_UNAUDITED = ("open", "stat", "lstat", "access", "readlink", "mkfifo", "mknod", "statvfs")
"""``os`` functions that take a path or ``dir_fd`` without an audit event of
their own with it (``os.open`` raises ``open`` without its ``dir_fd``)."""
_METADATA = frozenset({"stat", "lstat", "access", "readlink", "statvfs"})
"""Of those, the ones that only look: allowed on the jail's ancestors too (so
``os.path.realpath`` works inside it)."""


class _Jail:
    """Where the kernel allows no chroot: a Python audit hook, and guards on the
    ``os`` functions Python does not audit, that keep ordinary Python code in
    the working directory ``root``.

    The rules hold together: every path must be inside ``root`` (absolute) or
    relative without ``..``; every directory descriptor it is relative to
    (``dir_fd``, ``os.scandir(fd)``, ``os.fchdir``) must name a directory
    inside ``root`` (read from ``/proc/self/fd``); no symbolic link may point
    out (its target, too, inside or relative without ``..``). So whatever is
    renamed or swapped meanwhile, no path resolves outside: ``/proc`` (the
    worker's ``environ``), the key directory and every other file stay out
    of reach. Also refused: new programs, ctypes, chroot, and signals to other
    processes.

    Not a security boundary: code that reaches the system calls without going
    through an audited function (ctypes objects made before, a C extension)
    is not stopped. It only stands in where the kernel allows no chroot, and
    only when the operator accepts a weak sandbox.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.me = os.getpid()
        self.readlink = os.readlink
        self.above = {root}
        parent = root
        while parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
            self.above.add(parent)

    def refuse(self, what: Any, why: str = "") -> NoReturn:
        raise PermissionError(
            errno.EACCES,
            f"sandbox: {what!r} is outside the tool's working directory" + why,
        )

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def check_path(self, path: Any, *, look: bool = False) -> None:
        """Refuse ``path`` unless it stays inside (``look``: a metadata call,
        which may also name the jail's ancestors)."""
        if path is None:
            return  # the current directory
        if isinstance(path, int):
            self.check_fd(path)
            return
        text = os.fsdecode(path)
        if ".." in text.split(os.sep):
            self.refuse(path, " (no '..' in a sandboxed path)")
        if os.path.isabs(text):
            normal = os.path.normpath(text)
            if not (self.inside(normal) or (look and normal in self.above)):
                self.refuse(path)

    def check_fd(self, fd: Any) -> None:
        """Refuse a descriptor that names a file or directory outside (a
        negative one: the current directory, as audit events pass no dir_fd)."""
        if fd is None or not isinstance(fd, int) or fd < 0:
            return
        try:
            target = self.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            self.refuse(fd, " (its descriptor cannot be checked)")
        if target.startswith(os.sep) and not self.inside(target.removesuffix(" (deleted)")):
            self.refuse(fd, f" (descriptor {fd} is {target!r})")

    def check_target(self, target: Any) -> None:
        """A symbolic link's target: inside, or relative without ``..``."""
        text = os.fsdecode(target)
        if ".." in text.split(os.sep) or (
            os.path.isabs(text) and not self.inside(os.path.normpath(text))
        ):
            self.refuse(target, " (a symbolic link may not point out)")

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event in _PATH_EVENTS:
            paths, fds = _PATH_EVENTS[event]
            for index in paths:
                if index < len(args):
                    self.check_path(args[index])
            for index in fds:
                if index < len(args):
                    self.check_fd(args[index])
            if event == "os.symlink" and args:
                self.check_target(args[0])
        elif event.startswith(_FORBIDDEN):
            raise PermissionError(errno.EPERM, f"sandbox: {event} is not allowed")
        elif (
            event in {"os.kill", "os.killpg"} and args and args[0] not in {0, self.me, os.getpid()}
        ):
            raise PermissionError(errno.EPERM, f"sandbox: {event}{args} is not allowed")

    def guard(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (an ``os`` function) checking its path and ``dir_fd`` first."""
        look = name in _METADATA

        @functools.wraps(fn)
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            self.check_path(path, look=look)
            self.check_fd(kwargs.get("dir_fd"))
            return fn(path, *args, **kwargs)

        return guarded

    def install(self) -> None:
        """Guard the unaudited functions (in ``os`` and ``posix``), add the hook."""
        import posix

        for name in _UNAUDITED:
            guarded = self.guard(name, getattr(posix, name))
            setattr(posix, name, guarded)
            setattr(os, name, guarded)
        sys.addaudithook(self.hook)


def _confine(kernel: _Kernel, plan: _Plan, limits: SandboxLimits) -> str:
    """Jail the tool process and drop its privileges; returns the jail."""
    jail = "audit-hook"
    if plan.chroot:
        try:
            os.chroot(".")
            os.chdir("/")
            jail = "chroot"
        except OSError:
            pass  # no CAP_SYS_CHROOT here: the audit hook below
    workdir = os.getcwd()
    if plan.own_user:
        os.setgroups([])
        os.setresgid(plan.uid, plan.uid, plan.uid)
        os.setresuid(plan.uid, plan.uid, plan.uid)  # from root: all capabilities go
        processes = limits.processes
    elif plan.user_namespace:
        kernel.drop_capabilities()
        processes = limits.processes + 2  # the supervisor and the init count too
    else:
        processes = limits.processes + _tasks_of(os.geteuid())
    _limit(limits, processes)
    kernel.must_prctl(_PR_SET_NO_NEW_PRIVS, 1)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    tempfile.tempdir = workdir
    if jail == "audit-hook":
        _Jail(os.path.realpath(workdir)).install()
    return jail


class _IsolationUnavailableError(Exception):
    """The kernel refuses the isolation the tool declares, and the operator did
    not accept less (or the tool requires it anyway)."""


def _check_isolation(isolation: Isolation, limits: SandboxLimits, *, allow_weak: bool) -> None:
    """Fail closed: a gap is allowed only by the operator (``allow_weak``), and
    never for a tool with ``require_isolation``."""
    missing = isolation.gaps(limits)
    if missing and (limits.require_isolation or not allow_weak):
        raise _IsolationUnavailableError("; ".join(missing))


@dataclass(frozen=True, slots=True)
class _Job:
    tool: Tool
    model: Any
    """The validated params."""
    call: ToolCall
    limits: SandboxLimits
    allow_weak: bool


def _tool_process(kernel: _Kernel, plan: _Plan, job: _Job, answer_fd: int) -> NoReturn:
    """Confine, call, answer, exit. Processes the tool forks come back through
    here and leave without answering."""
    tool, model, call, limits = job.tool, job.model, job.call, job.limits
    me = os.getpid()
    body = b""
    jail = "none"
    try:
        kernel.must_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setpgid(0, 0)
        jail = _confine(kernel, plan, limits)
        _check_isolation(plan.isolation(jail), limits, allow_weak=job.allow_weak)
        args: tuple[Any, ...] = (model, call) if tool.takes_call else (model,)
        result = tool.fn(*args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        body = pack({"ok": True, "result": plain(result), "jail": jail})
    except MemoryError:
        body = pack({"ok": False, "type": "MemoryError", "message": "out of memory", "jail": jail})
    except _IsolationUnavailableError as exc:
        body = pack(
            {"ok": False, "type": "IsolationUnavailable", "message": str(exc), "jail": jail}
        )
    except Exception as exc:
        number = exc.errno if isinstance(exc, OSError) else None
        body = pack(
            {
                "ok": False,
                "type": type(exc).__name__,
                "message": str(exc),
                "errno": number,
                "jail": jail,
            }
        )
    finally:
        if os.getpid() == me:
            with contextlib.suppress(OSError):
                view = memoryview(body)
                while view:
                    view = view[os.write(answer_fd, view) :]
        os._exit(0 if os.getpid() == me else 1)


def _init_process(kernel: _Kernel, tool_pid: int, status_fd: int) -> NoReturn:
    """Pid 1 of the tool's namespace: waits for the tool process and passes
    its end on (a pid-namespace init ignores SIGXCPU, so the tool is not it).
    When this process exits, the kernel kills everything left in the namespace."""
    try:
        kernel.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _, status = os.waitpid(tool_pid, 0)
        os.write(status_fd, status.to_bytes(4, "little", signed=True))
    finally:
        os._exit(0)


def _spawn(kernel: _Kernel, plan: _Plan, job: _Job, answer_fd: int) -> tuple[int, int, int]:
    """Fork the init and, from it, the tool process; returns the init's pid and
    the read ends of the answer and status pipes. On SIGTERM (the worker
    gives up on the call) the init is killed, and with it the tool."""
    reader, writer = os.pipe()
    status_r, status_w = os.pipe()
    inits: list[int] = []

    def stop(signum: int, frame: object) -> None:
        for pid in inits:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    init = os.fork()
    if init == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in (answer_fd, reader, status_r):
            os.close(fd)
        tool_pid = os.fork()
        if tool_pid == 0:
            os.close(status_w)
            _tool_process(kernel, plan, job, writer)
        os.close(writer)
        with contextlib.suppress(OSError):
            os.setpgid(tool_pid, tool_pid)
        _init_process(kernel, tool_pid, status_w)
    inits.append(init)
    os.close(writer)
    os.close(status_w)
    return init, reader, status_r


def _supervise(
    init: int, reader: int, status_fd: int, deadline: float
) -> tuple[bytes, bytes, bool]:
    """Wait for the init, reading the tool's answer; kill the init (so the whole
    pid namespace) at the deadline. Returns (answer, status bytes, timed out)."""
    answer = bytearray()
    timed_out = False
    pidfd = os.pidfd_open(init)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(reader, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            ended = False
            while not ended:
                left = deadline - time.monotonic()
                if left <= 0 and not timed_out:
                    timed_out = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(init, signal.SIGKILL)
                for key, _ in selector.select(None if timed_out else left):
                    if key.fd == pidfd:
                        ended = True
                    elif not _read_into(reader, answer):
                        selector.unregister(reader)
    finally:
        os.close(pidfd)
    os.waitpid(init, 0)
    os.set_blocking(reader, False)
    with contextlib.suppress(BlockingIOError):
        while _read_into(reader, answer):
            pass
    os.set_blocking(status_fd, False)
    status = b""
    with contextlib.suppress(BlockingIOError):
        status = os.read(status_fd, 64)
    return bytes(answer), status, timed_out


def _read_into(fd: int, into: bytearray) -> bool:
    """Read a chunk; False at EOF. Past the answer limit, chunks are dropped
    (still read, so the writer does not block)."""
    chunk = os.read(fd, 65536)
    if len(into) <= _MAX_ANSWER:
        into += chunk
    return bool(chunk)


def _clean_up(plan: _Plan) -> None:
    """Kill what the tool left (with a pid namespace, the kernel already did)
    and reap it, so that no zombie outlives the call."""
    if plan.own_user:
        _kill_user(plan.uid, reap=True)
    _kill_descendants()
    _reap(wait_s=_DRAIN_S)


def _compose(body: bytes, status: bytes, timed_out: bool) -> dict[str, Any]:
    """The supervisor's answer from what the tool process wrote and how it ended."""
    if timed_out:
        return {"ok": False, "type": "Timeout"}
    if len(body) > _MAX_ANSWER:
        return {"ok": False, "type": "TooLarge"}
    if body:
        try:
            answer = unpack(body)
        except AgenticFlowError:
            answer = None
        if isinstance(answer, dict):
            return answer
        return {"ok": False, "type": "BadAnswer", "message": "the tool process wrote garbage"}
    died: dict[str, Any] = {"ok": False, "type": "ProcessDied", "code": None, "signal": None}
    if len(status) >= 4:
        code = int.from_bytes(status[:4], "little", signed=True)
        died["signal"] = os.WTERMSIG(code) if os.WIFSIGNALED(code) else None
        died["code"] = os.WEXITSTATUS(code) if os.WIFEXITED(code) else None
    return died


def _run(
    kernel: _Kernel, request: dict[str, Any], started: float, answer_fd: int
) -> dict[str, Any]:
    """Everything the supervisor does between reading the request and answering."""
    limits = SandboxLimits(**request["limits"])
    tool = _resolve(str(request["target"]))
    job = _Job(
        tool,
        tool.validate(request["params"]),
        ToolCall(**request["call"]),
        limits,
        allow_weak=request.get("allow_weak") is True,
    )
    for name in _PRELOAD:
        __import__(name)
    kernel.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    plan = _prepare(kernel, limits, set(request.get("without", ())))
    init, reader, status_r = _spawn(kernel, plan, job, answer_fd)
    deadline = started + float(request["timeout_s"])
    body, status, timed_out = _supervise(init, reader, status_r, deadline)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the init is reaped: its pid is not ours
    _clean_up(plan)
    answer = _compose(body, status, timed_out)
    answer["isolation"] = vars_of(plan.isolation(str(answer.pop("jail", "none"))))
    return answer


def main(started: float | None = None) -> None:
    """Entry point of the sandbox's supervisor (see :func:`run_sandboxed`);
    ``started``: when its interpreter started (the timeout counts from there)."""
    started = time.monotonic() if started is None else started
    kernel = _Kernel()
    kernel.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if len(sys.argv) > 2 and os.getppid() != int(sys.argv[2]):
        os._exit(1)  # the worker is already gone
    answer_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the tool's prints go to stderr, not into the answer
    try:
        request = unpack(sys.stdin.buffer.read())
        answer = _run(kernel, request, started, answer_to.fileno())
    except Exception as exc:
        kind = "IsolationUnavailable" if isinstance(exc, _IsolationUnavailableError) else None
        answer = {
            "ok": False,
            "type": kind or type(exc).__name__,
            "message": str(exc) if kind else f"sandbox setup: {exc}",
        }
    answer_to.write(pack(answer))
    answer_to.flush()


__all__ = [
    "MECHANISMS",
    "UID_BASE",
    "Isolation",
    "SandboxRun",
    "main",
    "run_sandboxed",
    "sandbox_run",
]

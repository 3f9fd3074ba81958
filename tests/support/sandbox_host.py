"""A worker stand-in that runs one sandboxed call, optionally where the kernel
refuses namespaces, and prints what happened (JSON on stdout).

``python -m tests.support.sandbox_host`` reads a request on stdin::

    {"target": "tests.support.tools_app:connect_out", "params": {...},
     "without": [...], "allow_weak": false, "no_namespaces": true}

(``"allow_unshare": true`` instead of ``no_namespaces``: the same filter but
``unshare`` allowed, the Localhost profile a deployment gives the worker.)

With ``no_namespaces`` it first installs a seccomp filter, as Docker's and
Kubernetes' RuntimeDefault profiles do for a process without CAP_SYS_ADMIN:
``unshare`` and ``setns`` fail with EPERM, ``clone`` with a namespace flag too,
and ``clone3`` with ENOSYS (so libc falls back to ``clone``). The filter is
the kernel's own and is inherited by every process the call starts: nothing of
the sandbox is mocked. The answer says whether ``unshare`` was indeed refused.

``python -m tests.support.sandbox_host worker --app ...`` runs a whole worker
(``agenticflow worker``) under the same filter.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import importlib
import json
import os
import platform
import struct
import sys
from typing import Any

from agenticflow.shared.errors import AgenticFlowError, NonRetryableError, SandboxIsolationError
from agenticflow.worker.tools.sandbox import sandbox_run
from agenticflow.worker.tools.spec import Tool, ToolCall, vars_of

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""
_CLONE_NEWUSER = 0x10000000
_ARCHES = {
    # machine: (AUDIT_ARCH_*, unshare, setns, clone, clone3)
    "x86_64": (0xC000003E, 272, 308, 56, 435),
    "aarch64": (0xC00000B7, 97, 268, 220, 435),
}
# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06


def _filter(*, allow_unshare: bool = False) -> bytes:
    """The BPF program: namespaces refused, everything else allowed
    (``allow_unshare``: but ``unshare``, as the Localhost profile the sandbox
    asks deployments for)."""
    arch, unshare, setns, clone, clone3 = _ARCHES[platform.machine()]
    program = [
        (_LD_W_ABS, 0, 0, 4),  # 0: A = arch
        (_JEQ_K, 0, 7, arch),  # 1: another ABI: allow (9)
        (_LD_W_ABS, 0, 0, 0),  # 2: A = syscall number
        (_JEQ_K, 0 if allow_unshare else 6, 0, unshare),  # 3: -> EPERM (10)
        (_JEQ_K, 5, 0, setns),  # 4: -> EPERM (10)
        (_JEQ_K, 5, 0, clone3),  # 5: -> ENOSYS (11)
        (_JEQ_K, 0, 2, clone),  # 6: not clone: allow (9)
        (_LD_W_ABS, 0, 0, 16),  # 7: A = low word of the flags (args[0])
        (_JSET_K, 1, 0, _NAMESPACE_FLAGS),  # 8: a namespace flag -> EPERM (10), else allow
        (_RET_K, 0, 0, _RET_ALLOW),  # 9
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),  # 10
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),  # 11
    ]
    return b"".join(struct.pack("=HBBI", *op) for op in program)


def install_filter(*, allow_unshare: bool = False) -> None:
    """Install the filter on this (single-threaded) process and all it starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    code = _filter(allow_unshare=allow_unshare)
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    program = Program(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    zero = ctypes.c_ulong(0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), zero, zero) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP failed")


def unshare_refused() -> bool:
    """Whether ``unshare(CLONE_NEWUSER)`` fails with EPERM here (tried in a
    child, so that this process stays in its namespaces)."""
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(ctypes.c_int(_CLONE_NEWUSER)) == 0:
            os._exit(0)
        os._exit(1 if ctypes.get_errno() == errno.EPERM else 2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 1


def refuse_namespaces() -> bool:
    """Install the RuntimeDefault-like filter; True when ``unshare`` is then refused."""
    install_filter()
    return unshare_refused()


def _tool(target: str) -> Tool:
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name)
    assert isinstance(found, Tool)
    return found


async def _call(request: dict[str, Any]) -> dict[str, Any]:
    tool = _tool(str(request["target"]))
    try:
        done = await sandbox_run(
            tool,
            dict(request.get("params", {})),
            ToolCall(key="k", tool=tool.name),
            without=list(request.get("without", [])),
            allow_weak=bool(request.get("allow_weak")),
        )
    except AgenticFlowError as exc:
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "missing": getattr(exc, "missing", None),
            "isolation_error": isinstance(exc, SandboxIsolationError),
            "retryable": not isinstance(exc, NonRetryableError),
        }
    return {"ok": True, "result": done.result, "isolation": vars_of(done.isolation)}


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        # ``python -m tests.support.sandbox_host worker ...``: a real worker
        # (``agenticflow worker ...``) where the kernel refuses namespaces.
        if not refuse_namespaces():
            raise SystemExit("the seccomp filter did not refuse unshare")
        from agenticflow.cli import app

        app(sys.argv[1:], prog_name="agenticflow")
        return
    request = json.loads(sys.stdin.read())
    refused = None
    if request.get("no_namespaces"):
        refused = refuse_namespaces()
    elif request.get("allow_unshare"):
        install_filter(allow_unshare=True)
        refused = unshare_refused()
    answer = asyncio.run(_call(request))
    answer["unshare_refused"] = refused
    answer["pid"] = os.getpid()
    sys.stdout.write(json.dumps(answer, default=str))


if __name__ == "__main__":
    main()

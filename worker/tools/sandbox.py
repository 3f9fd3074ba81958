"""Run a tool in a separate, limited process.

A tool declared with ``sandbox=True`` runs in a fresh interpreter
(``python -I``) started per call, which:

- has resource limits (:class:`~worker.tools.spec.SandboxLimits`): CPU
  seconds, address space, open files, file size, no core dumps;
- gets a scrubbed environment (``PATH``, ``LANG``, and ``HOME``/``TMPDIR``
  pointing at its own temporary directory, which is also its working
  directory and is removed afterwards): no secret of the worker leaks in;
- gets its own empty network namespace where the kernel lets an unprivileged
  process make one (``network=False``); otherwise it keeps the host's network;
- receives the validated params and the call as msgpack on stdin, imports the
  tool by its import path, and answers with msgpack (its own stdout goes to
  stderr, so ``print`` cannot corrupt the answer).

The wall-clock timeout kills the whole process group. A failure comes back as
:class:`~shared.errors.SandboxError` saying what happened (the tool raised,
ran out of memory, used up its CPU time, was killed), or
:class:`~shared.errors.ToolTimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from shared.codec import pack, unpack
from shared.errors import AgenticFlowError, SandboxError, ToolTimeoutError
from worker.tools.spec import SandboxLimits, Tool, ToolCall, vars_of

_BOOT = (
    "import os, sys; sys.path[:0] = [p for p in sys.argv[1].split(os.pathsep) if p]; "
    "from worker.tools.sandbox import main; main()"
)
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MIB = 1024 * 1024


async def run_sandboxed(tool: Tool, params: dict[str, Any], call: ToolCall) -> Any:
    """Run ``tool`` with ``params`` in a sandboxed process; returns its result.

    Raises ToolTimeoutError after ``tool.timeout_s`` (the process is killed) and
    SandboxError when the tool fails in any other way.
    """
    workdir = tempfile.mkdtemp(prefix="af-sandbox-")
    paths = [p or os.getcwd() for p in sys.path]
    request = pack(
        {
            "target": tool.target,
            "params": params,
            "call": call.to_dict(),
            "limits": vars_of(tool.limits),
        }
    )
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-c",
        _BOOT,
        os.pathsep.join(paths),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(tool.timeout_s):
            out, err = await proc.communicate(request)
    except TimeoutError:
        raise ToolTimeoutError(
            f"sandboxed tool {tool.name!r} ran longer than {tool.timeout_s:g}s and was killed",
            tool=tool.name,
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await proc.wait()
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return _answer(tool, proc.returncode or 0, out, err)


def _answer(tool: Tool, code: int, out: bytes, err: bytes) -> Any:
    limits = tool.limits
    answer: Any = None
    if out:
        with contextlib.suppress(AgenticFlowError):
            answer = unpack(out)
    if isinstance(answer, dict) and answer.get("ok") is True:
        return answer.get("result")
    if isinstance(answer, dict) and answer.get("ok") is False:
        kind = str(answer.get("type", "Exception"))
        message = str(answer.get("message", ""))
        if kind == "MemoryError":
            message = f"ran out of memory (limit {limits.memory_mb} MiB)"
        raise SandboxError(
            f"sandboxed tool {tool.name!r} failed: {kind}: {message}",
            tool=tool.name,
            error_type=kind,
        )
    tail = err.decode(errors="replace").strip()[-500:]
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and "MemoryError" not in tail):
        what = f"used up its CPU time limit ({limits.cpu_s}s) and was killed"
        if code == -signal.SIGKILL:
            what = "was killed (CPU or memory limit)"
    elif code == -signal.SIGXFSZ:
        what = f"wrote a file over its size limit ({limits.file_size_mb} MiB) and was killed"
    elif "MemoryError" in tail:
        what = f"ran out of memory (limit {limits.memory_mb} MiB)"
    elif code < 0:
        what = f"was killed by signal {signal.Signals(-code).name}"
    else:
        what = f"exited with code {code} without an answer"
    raise SandboxError(
        f"sandboxed tool {tool.name!r} {what}" + (f": {tail}" if tail else ""),
        tool=tool.name,
        error_type="ProcessDied",
    )


# The sandboxed process --------------------------------------------------
def _limit(limits: SandboxLimits) -> None:
    import resource

    cpu = max(int(limits.cpu_s), 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * _MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    size = limits.file_size_mb * _MIB
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _cut_network() -> bool:
    """An own, empty network namespace, if unprivileged user namespaces are allowed."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)) == 0
    except (OSError, AttributeError):
        return False


def _resolve(target: str) -> Tool:
    import importlib

    module_name, _, qualname = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    if not isinstance(value, Tool):
        raise SandboxError(f"{target} is not a tool declared with @tool")
    return value


async def _call(tool: Tool, params: dict[str, Any], call: ToolCall) -> Any:
    from worker.tools.spec import plain

    model = tool.validate(params)
    args: tuple[Any, ...] = (model, call) if tool.takes_call else (model,)
    result = tool.fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    return plain(result)


def main() -> None:
    """Entry point of the sandboxed process (see :func:`run_sandboxed`)."""
    answer_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the tool's prints go to stderr, not into the answer
    try:
        request = unpack(sys.stdin.buffer.read())
        limits = SandboxLimits(**request["limits"])
        isolated = False if limits.network else _cut_network()
        _limit(limits)
        tool = _resolve(str(request["target"]))
        result = asyncio.run(_call(tool, request["params"], ToolCall(**request["call"])))
        body = pack({"ok": True, "result": result, "network_isolated": isolated})
    except MemoryError:
        body = pack({"ok": False, "type": "MemoryError", "message": "out of memory"})
    except Exception as exc:
        body = pack({"ok": False, "type": type(exc).__name__, "message": str(exc)})
    answer_to.write(body)
    answer_to.flush()


__all__ = ["main", "run_sandboxed"]

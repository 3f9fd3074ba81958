"""An agent app with tools, served by the tool tests' worker processes.

The tools leave traces in files named by their params (each test uses its own
``tmp_path``), so a test can count side effects across processes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agenticflow import AgentApp, TaskContext
from agenticflow.worker.tools import BreakerPolicy, RateLimit, SandboxLimits, ToolCall, tool

app = AgentApp("tools-tests")


class Trace(BaseModel):
    """Where a tool appends one line per real call."""

    path: str
    value: int = Field(default=0, ge=0, le=1000)


@tool(permissions={"fs:write"})
def bump(params: Trace, call: ToolCall) -> dict[str, Any]:
    """Append the call's idempotency key to a file (one line per side effect)."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{call.key} {os.getpid()}\n")
    return {"value": params.value, "key": call.key}


@tool(
    permissions={"remote"},
    provider="remote-api",
    breaker=BreakerPolicy(failure_threshold=3, recovery_timeout_s=120),
)
def remote_call(params: Trace) -> str:
    """A remote API that is down: counts the attempt, then fails."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    raise ConnectionError("remote-api: connection refused")


@tool(
    permissions={"remote"},
    provider="other-api",
    breaker=BreakerPolicy(failure_threshold=2, recovery_timeout_s=120),
)
def other_call(params: Trace) -> str:
    """Another remote API, for the other direction of the breaker test."""
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    raise ConnectionError("other-api: connection refused")


@tool(permissions={"limited"}, rate_limit=RateLimit(3, per_s=1.0, max_wait_s=30), breaker=None)
def limited(params: Trace) -> float:
    """Record when the call ran (wall clock) and by which process."""
    now = time.time()
    with open(params.path, "a", encoding="utf-8") as out:
        out.write(f"{now!r} {os.getpid()}\n")
    return now


@tool(permissions={"admin"})
def purge_everything(params: Trace) -> str:
    """A tool the agent is not granted."""
    Path(params.path).write_text("purged", encoding="utf-8")
    return "purged"


class Nothing(BaseModel):
    """No params."""


@tool(sandbox=True, timeout_s=30)
def env_in_sandbox(params: Nothing) -> dict[str, Any]:
    """What a sandboxed process sees of its environment."""
    return {"secret": os.environ.get("TOOL_SECRET"), "env": sorted(os.environ)}


@tool(timeout_s=30)
def env_in_process(params: Nothing) -> dict[str, Any]:
    """The same, in the worker process (the control)."""
    return {"secret": os.environ.get("TOOL_SECRET"), "env": sorted(os.environ)}


class Alloc(BaseModel):
    """How much memory to take."""

    mb: int = Field(ge=1)


@tool(sandbox=True, timeout_s=30, limits=SandboxLimits(memory_mb=400))
def hog(params: Alloc) -> int:
    """Allocate ``mb`` MiB."""
    block = bytearray(params.mb * 1024 * 1024)
    return len(block)


@tool(sandbox=True, timeout_s=30, limits=SandboxLimits(cpu_s=1))
def spin(params: Nothing) -> int:
    """Loop for ever (burns CPU)."""
    n = 0
    while True:
        n += 1


@tool(sandbox=True, timeout_s=1)
def nap(params: Nothing) -> str:
    """Sleep past the timeout."""
    time.sleep(60)
    return "woke"


@tool(sandbox=True, timeout_s=30)
def sandboxed_add(params: Trace, call: ToolCall) -> dict[str, Any]:
    """A sandboxed tool that works: gets its params and call."""
    return {"value": params.value + 1, "key": call.key, "cwd": os.getcwd()}


# --- hostile tools: each attacks the sandbox (tests/unit/test_tools_sandbox.py) ---------


@tool(sandbox=True, timeout_s=10, limits=SandboxLimits(processes=8))
def fork_bomb(params: Nothing) -> None:
    """Fork in a loop; every child detaches (setsid), forks too, and keeps
    trying when it cannot (so only the sandbox ends them). The first process
    gives up and raises."""
    first = os.getpid()
    while True:
        try:
            if os.fork() == 0:
                os.setsid()
        except OSError:
            if os.getpid() == first:
                raise
            time.sleep(0.01)


class Count(BaseModel):
    """How many processes to hold at once."""

    n: int = Field(ge=1, le=64)


@tool(sandbox=True, timeout_s=20, limits=SandboxLimits(processes=8))
def forks(params: Count) -> int:
    """Hold ``n`` processes at once (itself included), then let them end."""
    r, w = os.pipe()
    children: list[int] = []
    try:
        for _ in range(params.n - 1):
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)  # until the parent closes its end
                os._exit(0)
            children.append(pid)
    finally:
        os.close(w)
        for pid in children:
            os.waitpid(pid, 0)
    return len(children) + 1


class Where(BaseModel):
    """A path to read (a file) or list (a directory), optionally written first."""

    path: str
    write: str | None = None


@tool(sandbox=True, timeout_s=20)
def snoop(params: Where) -> Any:
    """Read a file or list a directory, wherever it is."""
    if params.write is not None:
        with open(params.path, "w", encoding="utf-8") as out:
            out.write(params.write)
    if os.path.isdir(params.path):
        return sorted(os.listdir(params.path))
    with open(params.path, encoding="utf-8", errors="replace") as source:
        return source.read(4096)


class Address(BaseModel):
    """Where to connect."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


def _connect(params: Address) -> str:
    with socket.create_connection((params.host, params.port), timeout=5) as conn:
        conn.sendall(b"hello from the sandbox\n")
    return "connected"


@tool(sandbox=True, timeout_s=20)
def connect_out(params: Address) -> str:
    """Open a TCP connection (no network allowed)."""
    return _connect(params)


@tool(sandbox=True, timeout_s=20, limits=SandboxLimits(network=True))
def connect_allowed(params: Address) -> str:
    """The same with the network allowed (the control)."""
    return _connect(params)


@tool(sandbox=True, timeout_s=20)
def kill_all(params: Nothing) -> str:
    """SIGKILL every process it may signal (as the worker's user: the worker too)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return "alone"  # nothing but itself to signal
    return "killed some"


@tool(sandbox=True, timeout_s=60, limits=SandboxLimits(network=True))
def linger(params: Address) -> str:
    """Start a detached child (setsid), tell the test by connecting, then sleep."""
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    with socket.create_connection((params.host, params.port), timeout=5) as conn:
        conn.sendall(b"lingering\n")
        time.sleep(60)
    return "woke"


@tool(sandbox=True, timeout_s=20, limits=SandboxLimits(require_isolation=True))
def must_be_isolated(params: Nothing) -> str:
    """Runs only with a chroot jail and a network namespace."""
    return "isolated"


@tool(sandbox=True, timeout_s=20)
def look(params: Where) -> int:
    """The size of a file, wherever it is (``os.stat`` raises no audit event)."""
    return os.stat(params.path).st_size


class Pid(BaseModel):
    """A process to spy on."""

    pid: int = Field(ge=1)


@tool(sandbox=True, timeout_s=20)
def read_environ(params: Pid) -> str:
    """Read another process's environment (the worker's: its secrets)."""
    with open(f"/proc/{params.pid}/environ", "rb") as source:
        return source.read().decode(errors="replace")


class KeyFile(BaseModel):
    """A file in a key directory, and how to reach it."""

    directory: str
    name: str
    how: Literal["dir_fd", "symlink", "passed_fd"]
    socket: str = ""
    """With ``passed_fd``: the abstract unix socket an accomplice passes the
    directory's descriptor on."""


@tool(sandbox=True, timeout_s=20)
def steal_key(params: KeyFile) -> str:
    """Read a key file through a directory descriptor (``openat``): of the
    directory itself; of a directory inside holding a link that leads out,
    under a name that is a plain directory in the working directory (what a
    check of the path alone sees); or one an accomplice outside passes in."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    name = params.name
    if params.how == "dir_fd":
        where = os.open(params.directory, flags)
    elif params.how == "symlink":
        os.makedirs("keys", exist_ok=True)
        os.makedirs("a", exist_ok=True)
        os.symlink(params.directory, "a/keys")
        where = os.open("a", flags)
        name = f"keys/{params.name}"
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect("\0" + params.socket)
            _, fds, _, _ = socket.recv_fds(conn, 16, 1)
        where = fds[0]
    fd = os.open(name, os.O_RDONLY, dir_fd=where)
    return os.read(fd, 4096).decode(errors="replace")


@tool(sandbox=True, timeout_s=20)
def escape(params: Nothing) -> str:
    """The classic chroot escape (chroot deeper, climb out, chroot there), then read."""
    os.makedirs("deeper", exist_ok=True)
    os.chroot("deeper")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    with open("/etc/passwd", encoding="utf-8") as source:
        return source.read(100)


@tool(sandbox=True, timeout_s=20, limits=SandboxLimits(file_size_mb=1))
def fill_disk(params: Alloc) -> int:
    """Write ``mb`` MiB to one file."""
    with open("big", "wb") as out:
        for _ in range(params.mb):
            out.write(b"x" * 1024 * 1024)
    return params.mb


@tool(sandbox=True, timeout_s=20, limits=SandboxLimits(open_files=16))
def open_many(params: Count) -> int:
    """Hold ``n`` files open at once."""
    files = [open(f"f{i}", "w", encoding="utf-8") for i in range(params.n)]  # noqa: SIM115
    for f in files:
        f.close()
    return len(files)


TOOLS = [
    bump,
    remote_call,
    other_call,
    limited,
    purge_everything,
    env_in_sandbox,
    env_in_process,
    hog,
    spin,
    nap,
    sandboxed_add,
    fork_bomb,
    forks,
    snoop,
    connect_out,
    connect_allowed,
    must_be_isolated,
    escape,
    fill_disk,
    open_many,
    linger,
    kill_all,
    read_environ,
    steal_key,
    look,
]
GRANTED = {"fs:*", "remote", "limited"}
"""Everything but ``admin``."""


@app.agent(capabilities=["use_tool"], tools=TOOLS, permissions=GRANTED)
async def use_tool(ctx: TaskContext) -> Any:
    """Call ``params.tool`` with ``params.args`` ``params.times`` times; the last result.

    With ``params.on_feedback``, first wait for feedback to the workflow (the
    test sends it once every task runs, so that they call at the same time)."""
    assert ctx.tools is not None
    if ctx.params.get("on_feedback") and not ctx.feedback:
        await ctx.feedback.next(timeout=120)
    result: Any = None
    for _ in range(int(ctx.params.get("times", 1))):
        result = await ctx.tools.call(ctx.params["tool"], **ctx.params.get("args", {}))
    return result


@app.agent(capabilities=["use_many"], tools=TOOLS, permissions=GRANTED)
async def use_many(ctx: TaskContext) -> list[dict[str, Any]]:
    """``call_many`` over ``params.calls`` (``[[tool, args], ...]``)."""
    assert ctx.tools is not None
    outcomes = await ctx.tools.call_many(
        [(name, args) for name, args in ctx.params["calls"]], concurrency=2
    )
    return [
        {"tool": o.tool, "ok": o.ok, "value": o.value, "error": type(o.error).__name__}
        if o.error
        else {"tool": o.tool, "ok": o.ok, "value": o.value, "error": None}
        for o in outcomes
    ]


@app.agent(capabilities=["effect_then_wait"], tools=[bump], permissions={"fs:write"})
async def effect_then_wait(ctx: TaskContext) -> dict[str, Any]:
    """Make one side effect, then wait for feedback to the workflow (the test
    SIGKILLs the worker meanwhile)."""
    assert ctx.tools is not None
    done = await ctx.tools.call("bump", path=ctx.params["counter"], value=1)
    if not ctx.feedback:
        await ctx.feedback.next(timeout=120)
    return {"effect": done, "worker": ctx.worker}

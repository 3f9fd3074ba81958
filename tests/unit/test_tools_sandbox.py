"""Sandboxed tools run in a separate, limited process with a scrubbed environment.

Hostile tools (``tests.support.tools_app``) attack each defence; each test also
runs a control that succeeds, so it fails if the defence is taken away. Tests
with ``without=`` run as on a kernel (or as a user) that cannot have a
mechanism, to check what the sandbox does there: it refuses to run the tool
unless the operator allows a weak sandbox (``allow_weak``). The same attacks
under a real seccomp filter that refuses ``unshare`` are in
``tests/security/test_sandbox_attacks.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agenticflow.shared.errors import (
    ConfigError,
    NonRetryableError,
    SandboxError,
    SandboxIsolationError,
    ToolTimeoutError,
)
from agenticflow.worker.tools import MemoryToolState, SandboxLimits, ToolBox, ToolRegistry
from agenticflow.worker.tools import sandbox as sandbox_module
from agenticflow.worker.tools.sandbox import (
    UID_BASE,
    Isolation,
    SandboxRun,
    run_sandboxed,
    sandbox_run,
)
from agenticflow.worker.tools.spec import Tool, ToolCall
from tests.support import tools_app

pytestmark = pytest.mark.timeout(90)

NOBODY = 65534
WORKER_SOURCE = Path(sandbox_module.__file__).resolve()


def box() -> ToolBox:
    return ToolBox(
        ToolRegistry(tools_app.TOOLS, permissions={"*"}),
        state=MemoryToolState(),
        workflow_id="wf",
        task_id="t",
        agent="sandboxed",
    )


async def run(
    tool: Tool, without: Collection[str] = (), *, allow_weak: bool = False, **params: Any
) -> SandboxRun:
    return await sandbox_run(
        tool, params, ToolCall(key="k", tool=tool.name), without=without, allow_weak=allow_weak
    )


def processes_of_call(supervisor: int) -> list[str]:
    """Every process, zombies included, of the call whose supervisor had this
    pid: in its session or process group, or running as the call's own uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        state, _ppid, group, session = stat.rsplit(")", 1)[1].split()[:4]
        uid_line = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        uid = int(uid_line.group(1)) if uid_line else -1
        if supervisor in (int(group), int(session)) or uid == UID_BASE + supervisor:
            found.append(f"pid {entry} state {state} uid {uid}")
    return found


def assert_gone(supervisor: int) -> None:
    assert processes_of_call(supervisor) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(supervisor, 0)  # the process group is gone too


@pytest.fixture
def supervisors(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the sandboxes' supervisors started during the test."""
    return spy_on_sandboxes(monkeypatch)[0]


@pytest.fixture
def workdirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The working directories of the sandboxes started during the test."""
    return spy_on_sandboxes(monkeypatch)[1]


def spy_on_sandboxes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[str]]:
    pids: list[int] = []
    dirs: list[str] = []
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kwargs)
        pids.append(proc.pid)
        dirs.append(str(kwargs["cwd"]))
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    return pids, dirs


@dataclass
class Listener:
    port: int
    received: asyncio.Queue[bytes]


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A TCP listener on 127.0.0.1 that queues what each connection sends."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.put_nowait(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield Listener(server.sockets[0].getsockname()[1], received)
    server.close()
    await server.wait_closed()


# --- the process, its environment and its directory -----------------------------------


async def test_a_sandboxed_tool_gets_params_and_call_and_not_the_parents_secrets(
    monkeypatch: pytest.MonkeyPatch, workdirs: list[str]
) -> None:
    monkeypatch.setenv("TOOL_SECRET", "hunter2")
    tools = box()
    outside = await tools.call("env_in_process")
    assert outside["secret"] == "hunter2"  # the control: the worker has it
    inside = await tools.call("env_in_sandbox")
    assert inside["secret"] is None
    assert set(inside["env"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "LC_CTYPE",
    }
    added = await tools.call("sandboxed_add", path="unused", value=41)
    assert added["value"] == 42
    assert added["key"] == "wf:t:2:tool:sandboxed_add"
    assert added["cwd"] == "/"  # its directory is its whole file system
    assert len(workdirs) == 2
    for workdir in workdirs:
        assert os.path.basename(workdir).startswith("af-sandbox-")
        assert not os.path.exists(workdir)  # and is gone afterwards


async def test_the_isolation_of_a_call_is_reported() -> None:
    done = await run(tools_app.sandboxed_add, path="-", value=1)
    assert done.result["value"] == 2
    assert done.isolation == Isolation(
        jail="chroot",
        network_isolated=True,
        pid_namespace=True,
        user_namespace=False,
        uid=done.isolation.uid,
    )
    assert done.isolation.uid >= UID_BASE  # a root worker's tool runs as a user of its own
    assert done.isolation.gaps(SandboxLimits()) == []


def test_sandbox_limits_and_mechanisms_are_checked() -> None:
    with pytest.raises(ConfigError, match="at least 1: processes"):
        SandboxLimits(processes=0)
    with pytest.raises(ConfigError, match="at least 1: cpu_s, memory_mb"):
        SandboxLimits(cpu_s=0, memory_mb=0)


async def test_an_unknown_mechanism_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown sandbox mechanisms \['seccomp'\]"):
        await run(tools_app.sandboxed_add, without={"seccomp"}, path="-")


# --- resource limits ---------------------------------------------------------------------


async def test_a_sandboxed_tool_that_takes_too_much_memory_fails_clearly() -> None:
    tools = box()
    assert await tools.call("hog", mb=10) == 10 * 1024 * 1024
    with pytest.raises(
        SandboxError, match=r"'hog' failed: MemoryError: ran out of memory \(limit 400 MiB\)"
    ):
        await tools.call("hog", mb=2048)


async def test_a_sandboxed_tool_that_loops_for_ever_is_killed_by_its_cpu_limit(
    supervisors: list[int],
) -> None:
    with pytest.raises(SandboxError, match=r"'spin' used up its CPU time limit \(1s\)"):
        await box().call("spin")
    assert_gone(supervisors[0])


async def test_a_sandboxed_tool_past_its_timeout_is_killed(supervisors: list[int]) -> None:
    with pytest.raises(ToolTimeoutError, match=r"'nap' ran longer than 1s and was killed"):
        await box().call("nap")
    assert_gone(supervisors[0])


async def test_a_file_over_the_size_limit_cannot_be_written() -> None:
    assert await box().call("fill_disk", mb=1) == 1
    with pytest.raises(
        SandboxError, match=r"'fill_disk' wrote a file over its size limit \(1 MiB\): OSError"
    ):
        await box().call("fill_disk", mb=2)


async def test_no_more_files_than_the_limit_can_be_open() -> None:
    assert await box().call("open_many", n=8) == 8
    with pytest.raises(
        SandboxError, match=r"'open_many' hit its open files limit \(16\): OSError: \[Errno 24\]"
    ):
        await box().call("open_many", n=16)


# --- processes -----------------------------------------------------------------------


async def test_a_fork_bomb_is_stopped_and_leaves_no_process(supervisors: list[int]) -> None:
    with pytest.raises(
        SandboxError,
        match=r"'fork_bomb' hit its process limit \(8 processes\): BlockingIOError: \[Errno 11\]",
    ):
        await box().call("fork_bomb")
    assert_gone(supervisors[0])


async def test_the_process_limit_counts_the_tools_processes_exactly() -> None:
    assert (await run(tools_app.forks, n=8)).result == 8
    with pytest.raises(SandboxError, match=r"'forks' hit its process limit \(8 processes\)"):
        await run(tools_app.forks, n=9)


async def test_cancelling_a_call_kills_every_process_of_it_even_a_detached_one(
    supervisors: list[int], listener: Listener
) -> None:
    call = asyncio.create_task(run(tools_app.linger, port=listener.port))
    async with asyncio.timeout(30):
        assert await listener.received.get() == b"lingering\n"  # it runs, its child too
    assert processes_of_call(supervisors[0])
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert_gone(supervisors[0])


# --- files -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", str(WORKER_SOURCE)])
async def test_a_tool_cannot_read_outside_its_directory(path: str) -> None:
    assert Path(path).is_file()  # the control: the file is there, and the worker reads it
    with pytest.raises(
        SandboxError,
        match=r"'snoop' failed: FileNotFoundError: .*No such file.* \(a sandboxed tool sees "
        r"only its own working directory\)",
    ):
        await box().call("snoop", path=path)


async def test_a_tool_sees_its_own_files_and_nothing_above_them() -> None:
    tools = box()
    assert await tools.call("snoop", path="note.txt", write="mine") == "mine"
    for above in ("..", "../..", "/"):
        assert await tools.call("snoop", path=above) == []  # a fresh, empty directory
    assert os.listdir(WORKER_SOURCE.parents[2])  # the control: the worker's tree is not empty


async def test_a_tool_cannot_climb_out_of_its_chroot() -> None:
    with pytest.raises(SandboxError, match=r"'escape' failed: PermissionError: \[Errno 1\]"):
        await box().call("escape")


async def test_a_tool_can_signal_only_its_own_processes() -> None:
    assert await box().call("kill_all") == "alone"  # a user of its own, not even its init


# --- network ---------------------------------------------------------------------------


async def test_a_tool_without_network_cannot_connect_and_one_with_it_can(
    listener: Listener,
) -> None:
    tools = box()
    with pytest.raises(
        SandboxError,
        match=r"'connect_out' failed: OSError: \[Errno 101\] Network is unreachable "
        r"\(the sandbox has no network; SandboxLimits\(network=True\) allows it\)",
    ):
        await tools.call("connect_out", port=listener.port)
    assert listener.received.empty()
    assert await tools.call("connect_allowed", port=listener.port) == "connected"
    async with asyncio.timeout(10):
        assert await listener.received.get() == b"hello from the sandbox\n"


async def test_require_isolation_runs_where_the_kernel_allows_it() -> None:
    assert (await run(tools_app.must_be_isolated)).result == "isolated"


# --- where the kernel (or the user) cannot -------------------------------------------


async def test_without_namespaces_a_tool_is_not_run_unless_the_operator_allows_it(
    listener: Listener, supervisors: list[int]
) -> None:
    with pytest.raises(
        SandboxIsolationError,
        match=r"'connect_out' was not run: the sandbox here has no network namespace \(the "
        r"host's network is reachable\); .* agenticflow worker --allow-weak-sandbox "
        r"\(AGENTICFLOW_ALLOW_WEAK_SANDBOX=1\)",
    ) as refused:
        await run(tools_app.connect_out, {"namespaces"}, port=listener.port)
    assert refused.value.missing == ["no network namespace (the host's network is reachable)"]
    assert isinstance(refused.value, NonRetryableError)  # the task fails at once
    assert listener.received.empty()  # it did not run
    # With the operator's opt-in: what happens there, the host's network.
    connected = await run(
        tools_app.connect_out, {"namespaces"}, allow_weak=True, port=listener.port
    )
    assert connected.result == "connected"
    async with asyncio.timeout(10):
        assert await listener.received.get() == b"hello from the sandbox\n"
    assert connected.isolation.network_isolated is False
    assert connected.isolation.pid_namespace is False
    assert connected.isolation.jail == "chroot"  # root needs no namespace to chroot
    assert connected.isolation.same_user is False  # a user of its own
    with pytest.raises(
        SandboxIsolationError,
        match=r"'must_be_isolated' was not run: the sandbox here has no network namespace .*"
        r"SandboxLimits\(require_isolation=True\) refuses it even where the operator allows "
        r"a weak sandbox",
    ):
        await run(tools_app.must_be_isolated, {"namespaces"}, allow_weak=True)
    with pytest.raises(SandboxError, match=r"'snoop' failed: FileNotFoundError"):
        await run(tools_app.snoop, {"namespaces"}, allow_weak=True, path="/etc/passwd")
    # No pid namespace: the tool's own uid is what finds its processes.
    with pytest.raises(SandboxError, match=r"'fork_bomb' hit its process limit \(8 processes\)"):
        await run(tools_app.fork_bomb, {"namespaces"}, allow_weak=True)
    assert_gone(supervisors[-1])


async def test_a_root_worker_runs_a_tool_allowed_the_network_without_namespaces(
    listener: Listener,
) -> None:
    done = await run(tools_app.connect_allowed, {"namespaces"}, port=listener.port)
    assert done.result == "connected"  # nothing missing: it declared network=True
    assert done.isolation.network_isolated is False
    assert done.isolation.gaps(tools_app.connect_allowed.limits) == []
    async with asyncio.timeout(10):
        assert await listener.received.get() == b"hello from the sandbox\n"


async def test_without_chroot_an_audit_hook_refuses_paths_outside_the_directory() -> None:
    with pytest.raises(
        SandboxIsolationError, match=r"'snoop' was not run: the sandbox here has no chroot jail"
    ):
        await run(tools_app.snoop, {"chroot"}, path="note.txt", write="mine")
    mine = await run(tools_app.snoop, {"chroot"}, allow_weak=True, path="note.txt", write="mine")
    assert mine.result == "mine"
    assert mine.isolation.jail == "audit-hook"
    for path in ("/etc/passwd", str(WORKER_SOURCE), "..", "/proc/self/environ"):
        with pytest.raises(
            SandboxError,
            match=rf"'snoop' failed: PermissionError: .*sandbox: '{re.escape(path)}' is outside "
            "the tool's working directory",
        ):
            await run(tools_app.snoop, {"chroot"}, allow_weak=True, path=path)
    with pytest.raises(SandboxIsolationError, match=r"'must_be_isolated' was not run: .*no chroot"):
        await run(tools_app.must_be_isolated, {"chroot"}, allow_weak=True)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/etc/passwd", "'/etc/passwd' is outside"),
        ("a/../../../etc/passwd", "(no '..' in a sandboxed path)"),
        ("/proc/1/environ", "'/proc/1/environ' is outside"),
    ],
)
async def test_the_audit_hook_guards_the_calls_python_does_not_audit(
    path: str, refused: str
) -> None:
    """``os.stat`` and friends raise no audit event: they are guarded too."""
    assert os.stat("/etc/passwd").st_size  # the control: the file is there
    with pytest.raises(
        SandboxError, match=rf"'look' failed: PermissionError: .*{re.escape(refused)}"
    ):
        await run(tools_app.look, {"chroot"}, allow_weak=True, path=path)
    # The jail's own files, and its ancestors (os.path.realpath climbs them), are fine.
    assert (await run(tools_app.look, {"chroot"}, allow_weak=True, path="/")).result > 0


@pytest.mark.parametrize(
    ("how", "refused"),
    [
        ("dir_fd", "is outside the tool's working directory"),
        ("symlink", "(a symbolic link may not point out)"),
    ],
)
async def test_the_audit_hook_refuses_a_directory_descriptor_that_leads_out(
    tmp_path: Path, how: str, refused: str
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "worker.key").write_text("the worker's key")
    # The hook's own words: it refused before the kernel was asked (see
    # tests/security/test_sandbox_attacks.py for keys the tool's user may read).
    with pytest.raises(
        SandboxError, match=rf"'steal_key' failed: PermissionError: .*{re.escape(refused)}"
    ) as stolen:
        await run(
            tools_app.steal_key,
            {"chroot"},
            allow_weak=True,
            directory=str(keys),
            name="worker.key",
            how=how,
        )
    assert "the worker's key" not in str(stolen.value)


async def test_an_ordinary_user_gets_a_user_namespace_with_the_same_defences(
    listener: Listener, supervisors: list[int]
) -> None:
    done = await run(tools_app.sandboxed_add, {"root"}, path="-", value=1)
    assert done.isolation == Isolation(
        jail="chroot",
        network_isolated=True,
        pid_namespace=True,
        user_namespace=True,
        uid=NOBODY,
    )
    with pytest.raises(SandboxError, match=r"'snoop' failed: FileNotFoundError"):
        await run(tools_app.snoop, {"root"}, path="/etc/passwd")
    with pytest.raises(SandboxError, match=r"'escape' failed: PermissionError: \[Errno 1\]"):
        await run(tools_app.escape, {"root"})
    with pytest.raises(SandboxError, match=r"Network is unreachable"):
        await run(tools_app.connect_out, {"root"}, port=listener.port)
    assert (await run(tools_app.forks, {"root"}, n=8)).result == 8
    with pytest.raises(SandboxError, match=r"'forks' hit its process limit \(8 processes\)"):
        await run(tools_app.forks, {"root"}, n=9)
    # Same user as its supervisor: only the pid namespace keeps it from killing that.
    assert (await run(tools_app.kill_all, {"root"})).result == "alone"
    # Its fork bomb runs as the worker's own user: only the pid namespace ends it.
    with pytest.raises(SandboxError, match=r"'fork_bomb' hit its process limit \(8 processes\)"):
        await run(tools_app.fork_bomb, {"root"})
    assert_gone(supervisors[-1])


async def test_an_ordinary_user_without_namespaces_gets_limits_and_the_audit_hook_only(
    listener: Listener, supervisors: list[int]
) -> None:
    without = {"root", "namespaces"}
    with pytest.raises(
        SandboxIsolationError,
        match=r"the sandbox here has no chroot jail \(only an audit hook guards the files\); no "
        r"network namespace \(the host's network is reachable\); no user of its own \(it runs "
        r"as the worker's user\)",
    ):
        await run(tools_app.connect_out, without, port=listener.port)
    assert listener.received.empty()
    connected = await run(tools_app.connect_out, without, allow_weak=True, port=listener.port)
    assert connected.result == "connected"
    assert connected.isolation == Isolation(jail="audit-hook", uid=NOBODY, same_user=True)
    with pytest.raises(SandboxError, match=r"sandbox: '/etc/passwd' is outside"):
        await run(tools_app.snoop, without, allow_weak=True, path="/etc/passwd")
    with pytest.raises(SandboxError, match=r"sandbox: os.kill\(-1, 9\) is not allowed"):
        await run(tools_app.kill_all, without, allow_weak=True)
    assert (await run(tools_app.forks, without, allow_weak=True, n=8)).result == 8
    with pytest.raises(SandboxError, match=r"'fork_bomb' hit its process limit \(8 processes\)"):
        await run(tools_app.fork_bomb, without, allow_weak=True)
    assert_gone(supervisors[-1])


async def test_run_sandboxed_returns_the_result_only() -> None:
    call = ToolCall(key="k", tool="sandboxed_add")
    assert await run_sandboxed(tools_app.sandboxed_add, {"path": "-", "value": 2}, call) == {
        "value": 3,
        "key": "k",
        "cwd": "/",
    }

"""Sandboxed tools that attack the worker, with and without user namespaces
(issue 20, the sandbox fails closed).

The worker is played by ``tests.support.sandbox_host``, a process that runs one
sandboxed call the way the worker does (``sandbox_run``), with its secrets in
its environment. Without namespaces means what Docker's and Kubernetes'
RuntimeDefault seccomp profile does: the host process installs a real seccomp
filter under which ``unshare`` fails with EPERM, inherited by every process of
the call. Nothing of the sandbox is mocked.

Modes (``Mode``): a worker as root, and one as an ordinary user (``nobody``:
the sandbox's supervisor drops to it), each with namespaces (real ``unshare``)
and without them but with the operator's opt-in (``allow_weak``, as
``--allow-weak-sandbox``). The key directory and a process holding the
worker's secrets belong to ``nobody`` and each has its control: a plain
process of that user reads them, so only the sandbox stands in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.transport import Bus, connected
from agenticflow.shared.ops.health import WEAK_SANDBOX_WARNING, cluster_health
from agenticflow.shared.security.seal import DATA_KEYS_FILE, init_keys
from agenticflow.shared.wire.events import EventType
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type, run, wf

pytestmark = pytest.mark.timeout(300)

NOBODY = 65534
ROOT_DIR = Path(__file__).resolve().parents[2]
SECRET = "s3cret-nats-password-do-not-leak"
WORKER_SECRETS = {
    "AGENTICFLOW_NATS_PASSWORD": SECRET,
    "AGENTICFLOW_NATS_USER": "worker",
    "AGENTICFLOW_LLM_API_KEY": SECRET,
    "NATS_CREDS": SECRET,
}
ALLOWED_ENV = {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"}
TOOLS = "tests.support.tools_app"


@dataclass(frozen=True)
class Mode:
    name: str
    without: tuple[str, ...] = ()
    no_namespaces: bool = False
    allow_weak: bool = False
    allow_unshare: bool = False
    """Under the same seccomp filter with ``unshare`` allowed: the Localhost
    profile the sandbox asks deployments for."""

    @property
    def jail(self) -> str:
        """The jail this mode gets: only an ordinary user without namespaces
        has no chroot."""
        return "audit-hook" if self.no_namespaces and "root" in self.without else "chroot"


ROOT_NAMESPACES = Mode("root worker, namespaces")
USER_NAMESPACES = Mode("ordinary worker, user namespaces", without=("root",))
ROOT_WEAK = Mode("root worker, no namespaces, opt-in", no_namespaces=True, allow_weak=True)
USER_WEAK = Mode(
    "ordinary worker, no namespaces, opt-in", without=("root",), no_namespaces=True, allow_weak=True
)
USER_PROFILE = Mode(
    "ordinary worker, RuntimeDefault filter with unshare allowed",
    without=("root",),
    allow_unshare=True,
)
MODES = [ROOT_NAMESPACES, USER_NAMESPACES, USER_PROFILE, ROOT_WEAK, USER_WEAK]


@dataclass
class Host:
    """One run of the worker stand-in."""

    pid: int
    answer: dict[str, Any]

    @property
    def message(self) -> str:
        return str(self.answer.get("message", ""))


async def host(mode: Mode, tool: str, *, env: dict[str, str] | None = None, **params: Any) -> Host:
    """Run ``tool`` in the sandbox of a worker stand-in in ``mode``; a ``pid``
    param ``"worker"`` is the stand-in's own pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.sandbox_host",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT_DIR,
        env={**os.environ, **WORKER_SECRETS, **(env or {})},
    )
    if params.get("pid") == "worker":
        params["pid"] = proc.pid
    request = {
        "target": f"{TOOLS}:{tool}",
        "params": params,
        "without": list(mode.without),
        "no_namespaces": mode.no_namespaces,
        "allow_weak": mode.allow_weak,
        "allow_unshare": mode.allow_unshare,
    }
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    answer = json.loads(out)
    if mode.no_namespaces:
        assert answer["unshare_refused"] is True  # the kernel itself refuses namespaces
    if mode.allow_unshare:
        assert answer["unshare_refused"] is False
    if answer.get("ok"):
        assert answer["isolation"]["jail"] == mode.jail
    return Host(proc.pid, answer)


@pytest.fixture(scope="module")
def namespaces_work() -> None:
    """Skip when the kernel refuses an ordinary user a user namespace."""
    probe = subprocess.run(
        [sys.executable, "-m", "tests.support.sandbox_host"],
        input=json.dumps(
            {"target": f"{TOOLS}:sandboxed_add", "params": {"path": "-"}, "without": ["root"]}
        ).encode(),
        capture_output=True,
        cwd=ROOT_DIR,
        timeout=120,
        check=False,
    )
    answer = json.loads(probe.stdout or b"{}")
    if not (answer.get("ok") and answer["isolation"]["user_namespace"]):
        pytest.skip(f"the kernel refuses user namespaces here: {answer or probe.stderr[-500:]!r}")


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> Mode:
    chosen: Mode = request.param
    if not chosen.no_namespaces:
        request.getfixturevalue("namespaces_work")
    return chosen


MODES_PARAM = pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES], indirect=True)
"""Every mode, each with the namespaces it needs (or skipped)."""


def as_nobody(*command: str) -> subprocess.CompletedProcess[bytes]:
    """A plain process of the worker's (non-root) user: the control."""
    return subprocess.run(
        command, capture_output=True, user=NOBODY, group=NOBODY, extra_groups=[], check=False
    )


@pytest.fixture
def worker_process() -> Iterator[int]:
    """A process of the worker's user with the worker's secrets in its environment."""
    proc = subprocess.Popen(
        ["/bin/sleep", "600"], env=WORKER_SECRETS, user=NOBODY, group=NOBODY, extra_groups=[]
    )
    try:
        control = as_nobody("/bin/cat", f"/proc/{proc.pid}/environ")
        assert SECRET.encode() in control.stdout  # its user reads it
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def key_dir() -> Iterator[Path]:
    """A real key directory (``agenticflow keys``), owned by the worker's user."""
    parent = Path(tempfile.mkdtemp(prefix="af-keys-"))  # not under root's 0700 tmp_path
    keys = parent / "keys"
    try:
        init_keys(keys, [("worker", "worker")])
        for path in (parent, keys, *keys.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        parent.chmod(0o755)
        for name in ("worker.key", DATA_KEYS_FILE):
            control = as_nobody("/bin/cat", str(keys / name))
            assert control.returncode == 0, control.stderr  # its user reads it
            assert control.stdout
        yield keys
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def accomplice(directory: Path) -> Iterator[str]:
    """Someone outside who hands a descriptor of ``directory`` to whoever
    connects to an abstract unix socket (reachable from the host's network
    namespace only); yields the socket's name."""
    name = f"af-accomplice-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    server.settimeout(60)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                socket.send_fds(conn, [b"x"], [fd])
                conn.recv(1)  # until the tool hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        server.close()
        thread.join(timeout=5)
        os.close(fd)


def assert_no_leak(run: Host, *secrets: str) -> None:
    """The attack failed: no result, and no secret in the error either."""
    assert run.answer["ok"] is False, run.answer
    for secret in secrets:
        assert secret not in run.message
        assert secret not in str(run.answer.get("result", ""))


# --- without namespaces and without the opt-in, the tool never runs -------------------


@pytest.mark.parametrize(
    ("without", "missing"),
    [
        ((), ["no network namespace (the host's network is reachable)"]),
        (
            ("root",),
            [
                "no chroot jail (only an audit hook guards the files)",
                "no network namespace (the host's network is reachable)",
                "no user of its own (it runs as the worker's user)",
            ],
        ),
    ],
    ids=["root worker", "ordinary worker"],
)
async def test_without_namespaces_and_without_the_opt_in_the_tool_never_runs(
    without: tuple[str, ...], missing: list[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        refused = await host(
            Mode("no namespaces", without=without, no_namespaces=True), "connect_out", port=port
        )
        assert refused.answer["error"] == "SandboxIsolationError"
        assert refused.answer["isolation_error"] is True
        assert refused.answer["retryable"] is False  # the task fails at once, cleanly
        assert refused.answer["missing"] == missing
        assert "was not run" in refused.message
        assert "--allow-weak-sandbox" in refused.message
        assert "AGENTICFLOW_ALLOW_WEAK_SANDBOX=1" in refused.message
        with pytest.raises(BlockingIOError):
            listener.accept()  # the tool never connected: it did not run
        # The control: with the operator's opt-in the same tool runs, on the host's
        # network, and its connection is queued by the time the call returns.
        allowed = await host(
            Mode("opt-in", without=without, no_namespaces=True, allow_weak=True),
            "connect_out",
            port=port,
        )
        assert allowed.answer["ok"] is True, allowed.answer
        assert allowed.answer["isolation"]["network_isolated"] is False
        conn, _ = listener.accept()
        conn.close()


async def test_a_tool_that_requires_isolation_is_refused_even_with_the_opt_in() -> None:
    refused = await host(ROOT_WEAK, "must_be_isolated")
    assert refused.answer["error"] == "SandboxIsolationError"
    assert "refuses it even where the operator allows a weak sandbox" in refused.message


@pytest.mark.parametrize("without", [(), ("root",)], ids=["root worker", "ordinary worker"])
async def test_the_seccomp_profile_the_sandbox_asks_for_gives_full_isolation(
    without: tuple[str, ...], namespaces_work: None
) -> None:
    """RuntimeDefault refuses ``unshare``; the same filter with ``unshare``
    allowed (what deployments are asked to give the worker) is enough."""
    done = await host(
        Mode("profile", without=without, allow_unshare=True), "sandboxed_add", path="-"
    )
    assert done.answer["ok"] is True, done.answer
    isolation = done.answer["isolation"]
    assert isolation["jail"] == "chroot"
    assert isolation["network_isolated"] is True
    assert isolation["pid_namespace"] is True
    assert isolation["same_user"] is False
    assert isolation["user_namespace"] is bool(without)  # root needs none


# --- the worker's secrets ----------------------------------------------------------------


@MODES_PARAM
async def test_a_tool_cannot_read_the_environment_of_a_process_of_the_workers_user(
    mode: Mode, worker_process: int
) -> None:
    run = await host(mode, "read_environ", pid=worker_process)
    assert_no_leak(run, SECRET)
    if mode.jail == "chroot":
        assert "FileNotFoundError" in run.message  # no /proc in its world
    else:
        assert f"sandbox: '/proc/{worker_process}/environ' is outside" in run.message


@MODES_PARAM
async def test_a_tool_cannot_read_its_workers_environment(mode: Mode) -> None:
    run = await host(mode, "read_environ", pid="worker")
    assert_no_leak(run, SECRET)


@MODES_PARAM
async def test_a_tool_inherits_none_of_the_workers_secrets(mode: Mode) -> None:
    run = await host(mode, "env_in_sandbox")
    assert run.answer["ok"] is True, run.answer
    assert set(run.answer["result"]["env"]) <= ALLOWED_ENV
    assert SECRET not in json.dumps(run.answer)


# --- the key directory, through directory descriptors -----------------------------------


@MODES_PARAM
@pytest.mark.parametrize("how", ["dir_fd", "symlink", "passed_fd"])
async def test_a_tool_cannot_read_a_key_file_through_a_directory_descriptor(
    mode: Mode, how: str, key_dir: Path
) -> None:
    secrets = [(key_dir / name).read_text().strip() for name in ("worker.key", DATA_KEYS_FILE)]
    name = DATA_KEYS_FILE if how == "symlink" else "worker.key"
    with accomplice(key_dir) as where:
        run = await host(
            mode, "steal_key", directory=str(key_dir), name=name, how=how, socket=where
        )
    assert_no_leak(run, *secrets)
    if mode.jail == "audit-hook":
        expected = {
            "dir_fd": f"sandbox: '{key_dir}' is outside",
            "symlink": "(a symbolic link may not point out)",
            "passed_fd": f"is '{key_dir}')",
        }[how]
        assert expected in run.message
    elif how == "passed_fd" and not mode.no_namespaces:
        assert "ConnectionRefusedError" in run.message  # its own network namespace
    elif how == "passed_fd":
        # Chrooted as a user of its own: the descriptor leads out of the
        # chroot, the file's owner and mode keep the tool out.
        assert run.answer["error"] == "SandboxError"
        assert "PermissionError" in run.message
    else:
        assert "FileNotFoundError" in run.message  # no such directory in its world


# --- the network ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [ROOT_NAMESPACES, USER_NAMESPACES], ids=lambda m: m.name, indirect=True
)
async def test_a_tool_without_network_cannot_connect_out(mode: Mode) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        run = await host(mode, "connect_out", port=listener.getsockname()[1])
        assert run.answer["ok"] is False
        assert "Network is unreachable" in run.message
        with pytest.raises(BlockingIOError):
            listener.accept()
        # The control: a tool allowed the network reaches the same listener.
        allowed = await host(mode, "connect_allowed", port=listener.getsockname()[1])
        assert allowed.answer["ok"] is True, allowed.answer
        conn, _ = listener.accept()
        conn.close()


# --- a whole worker where the kernel refuses namespaces ------------------------------------


@dataclass
class SeccompWorkers:
    """Two real workers under the seccomp filter (``agenticflow worker``), one
    per route: ``strict`` (the default) and ``weak`` (``--allow-weak-sandbox``)."""

    client: Client
    bus: Bus
    logs: Path


def _spawn_worker(
    cluster: DevCluster, logs: Path, route: str, *flags: str
) -> subprocess.Popen[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"seccomp-worker-{route}.log").open("wb") as out:
        return subprocess.Popen(  # our own entry point
            [
                sys.executable,
                "-m",
                "tests.support.sandbox_host",
                "worker",
                "--app",
                f"{TOOLS}:app",
                "--concurrency",
                "1",
                "--route",
                route,
                *flags,
            ],
            cwd=ROOT_DIR,
            env={
                **os.environ,
                "AGENTICFLOW_NATS_URL": cluster.url,
                "AGENTICFLOW_PREFIX": cluster.prefix,
                "PYTHONPATH": str(ROOT_DIR),
            },
            stdout=out,
            stderr=out,
        )


@pytest.fixture(scope="module")
async def seccomp_workers(nats_server: NatsServer, log_dir: Path) -> AsyncIterator[SeccompWorkers]:
    prefix = unique_prefix("weak")
    logs = log_dir / prefix
    async with (
        DevCluster(
            app=f"{TOOLS}:app",
            workers=0,
            nats_url=nats_server.url,
            prefix=prefix,
            log_dir=logs,
        ) as cluster,
        connected(cluster.settings, name="sandbox-attacks") as bus,
    ):
        workers = [
            _spawn_worker(cluster, logs, "strict"),
            _spawn_worker(cluster, logs, "weak", "--allow-weak-sandbox"),
        ]
        try:
            await cluster.wait_for_processes(2, timeout=90)
            yield SeccompWorkers(Client(bus=bus, node_id="sandbox-attacks"), bus, logs)
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def tool_task(task_id: str, tool: str, **args: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "capability": "use_tool",
        "params": {"tool": tool, "args": args},
        "timeout_s": 60,
        "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
    }


async def test_a_worker_without_namespaces_fails_the_task_at_once_unless_allowed_by_name(
    seccomp_workers: SeccompWorkers,
) -> None:
    client = seccomp_workers.client
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        strict = await run(
            client, wf(tool_task("net", "connect_out", port=port)), route="strict", timeout=90
        )
        assert strict.status == WorkflowStatus.FAILED
        error = strict.tasks["net"].error
        assert error is not None
        assert (error.type, error.code) == ("SandboxIsolationError", "sandbox_isolation")
        assert "was not run" in error.message
        assert "--allow-weak-sandbox" in error.message
        failures = of_type(await client.events(strict.workflow_id), EventType.TASK_FAILED)
        assert len(failures) == 1  # three attempts allowed, none repeated: non-retryable
        with pytest.raises(BlockingIOError):
            listener.accept()  # the tool did not run
        # The operator's opt-in, by name: the same tool runs there, on the host's network.
        weak = await run(
            client, wf(tool_task("net", "connect_out", port=port)), route="weak", timeout=90
        )
        assert weak.status == WorkflowStatus.COMPLETED, weak.reason
        conn, _ = listener.accept()
        conn.close()
    # ...and says so, at start-up and in its health report.
    reports = await cluster_health(seccomp_workers.bus, wait_s=10, expect=3)
    warnings = {
        (report.get("worker") or {}).get("route"): report.get("warnings")
        for report in reports
        if report.get("kind") == "worker"
    }
    assert warnings == {"strict": [], "weak": [WEAK_SANDBOX_WARNING]}
    weak_log = (seccomp_workers.logs / "seccomp-worker-weak.log").read_text(errors="replace")
    strict_log = (seccomp_workers.logs / "seccomp-worker-strict.log").read_text(errors="replace")
    assert "weak sandbox allowed" in weak_log
    assert "weak sandbox allowed" not in strict_log

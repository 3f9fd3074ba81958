"""The ``agenticflow`` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.shared.wire.codec import H_VCLOCK
from agenticflow.shared.wire.vclock import Ordering, VectorClock
from tests.integration.helpers import wf

ROOT = Path(__file__).resolve().parents[2]


def cli(cluster: DevCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``agenticflow ARGS`` against the shared cluster."""
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": cluster.url,
        "AGENTICFLOW_PREFIX": cluster.prefix,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "agenticflow", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


DIAMOND = """
name: diamond
tasks:
  - {id: a, capability: add, params: {value: 1}}
  - {id: b, capability: add, params: {value: 2}, depends_on: [a]}
  - {id: c, capability: add, params: {value: 3}, depends_on: [a]}
  - {id: d, capability: add, depends_on: [b, c]}
"""


async def test_submit_wait_status_and_events_json(cluster: DevCluster, tmp_path: Path) -> None:
    flow = write(tmp_path / "diamond.yaml", DIAMOND)
    done = cli(cluster, "submit", str(flow), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["state"] == "completed"
    assert final["tasks"]["d"]["result"] == 7
    workflow_id = final["workflow_id"]

    status = cli(cluster, "status", workflow_id, "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["workflow_id"] == workflow_id
    assert view["state"] == "completed"
    for task in view["tasks"].values():
        assert {"state", "attempts", "result", "error", "started_at", "finished_at"} <= set(task)
        assert task["started_at"] <= task["finished_at"]

    listed = cli(cluster, "events", workflow_id, "--json")
    assert listed.returncode == 0, listed.stderr
    events = [json.loads(line) for line in listed.stdout.splitlines()]
    for event in events:
        assert {"seq", "id", "type", "task_id", "source", "timestamp", "vclock"} <= set(event)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    scheduled = {e["task_id"]: e["vclock"] for e in events if e["type"] == "task.scheduled"}
    completed = [e for e in events if e["type"] == "task.completed"]
    assert len(completed) == 4
    for event in completed:
        clock = VectorClock(event["vclock"])
        assert clock.compare(scheduled[event["task_id"]]) == Ordering.AFTER, H_VCLOCK
    assert not [e for e in events if e["type"] == "agent.state_changed"]  # not stored

    with_moves = cli(cluster, "events", workflow_id, "--agents", "-o", "jsonl")
    assert with_moves.returncode == 0, with_moves.stderr
    shown = [json.loads(line) for line in with_moves.stdout.splitlines()]
    moves = [e for e in shown if e["type"] == "agent.state_changed"]
    assert len(moves) == 2 * len(completed)  # idle -> processing -> idle per task
    assert [e for e in shown if e["type"] != "agent.state_changed"] == events
    for move in moves:
        assert move["id"].rsplit(":", 2)[-2] == "derived"


async def test_submit_prints_the_id_and_status_shows_a_table(
    cluster: DevCluster, tmp_path: Path
) -> None:
    flow = write(
        tmp_path / "one.json", json.dumps({"tasks": [{"id": "u", "capability": "sync_upper"}]})
    )
    submitted = cli(cluster, "submit", str(flow), "--input", '{"text": "abc"}', "--id", "cli-one")
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == "cli-one"
    watched = cli(cluster, "watch", "cli-one")
    assert watched.returncode == 0, watched.stderr
    table = cli(cluster, "status", "cli-one")
    assert table.returncode == 0
    assert "completed" in table.stdout
    assert "ABC" in table.stdout


async def test_user_text_is_shown_as_text_never_markup(cluster: DevCluster, tmp_path: Path) -> None:
    """A result or an error holding ``[/b]`` once crashed ``status`` and
    ``submit --wait`` (rich.errors.MarkupError, exit 1), ``[high]`` vanished,
    and an escape sequence reached the terminal."""
    text = "[/b] [red]alarm[/red] [high] we are on it \x1b[2J"
    flow = write(
        tmp_path / "upper.json", json.dumps({"tasks": [{"id": "u", "capability": "sync_upper"}]})
    )
    done = cli(cluster, "submit", str(flow), "--input", json.dumps({"text": text}), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[/B] [RED]ALARM[/RED] [HIGH] WE ARE ON IT \\x1b[2J" in done.stdout
    assert "\x1b" not in done.stdout
    failing = write(
        tmp_path / "fatal.json",
        json.dumps({"tasks": [{"id": "f", "capability": "fatal", "params": {"item": text}}]}),
    )
    failed = cli(cluster, "submit", str(failing), "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "MarkupError" not in failed.stdout + failed.stderr
    workflow_id = failed.stdout.split()[0]
    status = cli(cluster, "status", workflow_id)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "cannot process [/b] [red]alarm[/red] [high]" in status.stdout
    assert "\x1b" not in status.stdout


async def test_watch_stream_prints_tokens_as_they_come_as_text(
    cluster: DevCluster, client: Client
) -> None:
    words = ["Hello ", " \x1b[31mworld[/b]"]  # an escape and markup: shown as text
    workflow_id = await client.submit(
        wf({"id": "n", "capability": "narrate", "params": {"wait": True, "words": words}})
    )
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": cluster.url,
        "AGENTICFLOW_PREFIX": cluster.prefix,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agenticflow",
        "watch",
        workflow_id,
        "--stream",
        "--timeout",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        shown = b""
        async with asyncio.timeout(60):
            while b"Hello " not in shown:  # the first token, before the task ends
                piece = await proc.stdout.read(64)
                assert piece, "watch ended before the first token"
                shown += piece
        await client.feedback(workflow_id, "there,")
        rest, errors = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
    out = (shown + rest).decode()
    assert proc.returncode == 0, errors.decode()
    assert out.startswith("Hello there, \\x1b[31mworld[/b]\n"), out
    assert "\x1b" not in out
    err = errors.decode()
    assert '[n progress] {"done": 2, "of": 2}' in err
    assert "[n log] finished" in err
    assert "[n artifact] \\x00raw" in err


async def test_failed_workflow_exits_1_with_the_error(cluster: DevCluster, tmp_path: Path) -> None:
    flow = write(
        tmp_path / "bad.yaml", "tasks:\n  - {id: x, capability: fatal, params: {item: X-9}}\n"
    )
    done = cli(cluster, "submit", str(flow), "--wait", "--json")
    assert done.returncode == 1
    view = json.loads(done.stdout)
    assert view["state"] == "failed"
    assert view["tasks"]["x"]["error"]["type"] == "NonRetryableError"
    assert "X-9" in view["tasks"]["x"]["error"]["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks:\n  - {id: a}\n", "tasks[0].capability"),
        ("tasks:\n  - {id: a, capability: x, colour: red}\n", "tasks[0].colour"),
        ("tasks: [\n", "not valid"),
        ("tasks:\n  - {id: a, capability: x, depends_on: [a]}\n", "depends on itself"),
        (
            "tasks:\n  - {id: a, capability: x, depends_on: [b]}\n"
            "  - {id: b, capability: x, depends_on: [a]}\n",
            "dependency cycle",
        ),
    ],
)
async def test_invalid_workflow_file_exits_2_naming_the_problem(
    cluster: DevCluster, tmp_path: Path, text: str, expected: str
) -> None:
    flow = write(tmp_path / "wf.yaml", text)
    done = cli(cluster, "submit", str(flow))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert expected in message
    assert "wf.yaml" in message or "cycle" in message or "itself" in message


async def test_bad_input_json_and_unknown_workflow(cluster: DevCluster, tmp_path: Path) -> None:
    flow = write(tmp_path / "ok.yaml", DIAMOND)
    bad = cli(cluster, "submit", str(flow), "--input", "{not json")
    assert bad.returncode == 2
    assert "--input is not valid JSON" in bad.stderr
    missing = cli(cluster, "status", "wf-does-not-exist")
    assert missing.returncode == 3
    assert "no workflow 'wf-does-not-exist'" in missing.stderr


async def test_agents_lists_both_workers(cluster: DevCluster) -> None:
    listed = cli(cluster, "agents", "--json")
    assert listed.returncode == 0, listed.stderr
    agents = json.loads(listed.stdout)
    workers = {a["worker"] for a in agents if a.get("role") == "worker"}
    assert len(workers) == 2
    capabilities = {c for a in agents for c in a["capabilities"]}
    assert {"add", "echo", "flaky"} <= capabilities
    assert any(a.get("role") == "coordinator" for a in agents)
    hosted = {a["agent"]: a["instances"] for a in agents if a.get("role") == "worker"}
    assert hosted["echo"] == cluster.concurrency, "instances default to --concurrency"
    assert hosted["solo"] == 1
    shown = cli(cluster, "agents")
    assert shown.returncode == 0, shown.stderr
    # One row per agent instance, with its state machine's state.
    solos = [a["agents"] for a in agents if a.get("agent") == "solo"]
    assert [len(instances) for instances in solos] == [1, 1]
    for (instance,) in solos:
        assert instance["id"] in shown.stdout
        assert instance["state"] in ("idle", "processing")
    assert "idle" in shown.stdout


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for thread in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (thread / "children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found |= {child, *_children(child)}
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find child processes")
def test_dev_runs_a_cluster_and_sigterm_leaves_no_orphans(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agenticflow", "dev", "--workers", "2",
         "--app", "tests.support.app:app", "--prefix", "devtest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url, warned = "", False
        deadline = time.monotonic() + 60
        while not warned and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "AGENTICFLOW_NATS_URL=" in line:
                url = line.strip().split("AGENTICFLOW_NATS_URL=", 1)[1]
            warned = line.startswith("warning: no keys")
        assert url.startswith("nats://127.0.0.1:"), "dev printed its URL"
        assert warned, "dev without keys says plainly what that leaves open"
        children = _children(proc.pid)
        assert len(children) >= 4  # nats-server, coordinator, 2 workers
        flow = write(tmp_path / "wf.yaml", DIAMOND)
        env = {**os.environ, "AGENTICFLOW_NATS_URL": url, "AGENTICFLOW_PREFIX": "devtest"}
        done = subprocess.run(
            [sys.executable, "-m", "agenticflow", "submit", str(flow), "--wait", "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "completed"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_version_and_short_help() -> None:
    """``--version`` (``-V``) prints the installed version; ``-h`` is ``--help``
    on every command and group."""
    from agenticflow import __version__

    for flag in ("--version", "-V"):
        shown = subprocess.run(
            [sys.executable, "-m", "agenticflow", flag],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == f"agenticflow {__version__}"
    for args in (["-h"], ["status", "-h"], ["agent", "-h"], ["keys", "-h"]):
        helped = subprocess.run(
            [sys.executable, "-m", "agenticflow", *args],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert helped.returncode == 0, (args, helped.stderr)
        assert "Usage:" in helped.stdout, args
        assert "-h" in helped.stdout, args

"""The CLI of issue 21, run as a user runs it (a separate process) against the
shared cluster: the ``workflow`` group, ``-o table|json|jsonl``, profiles and
their precedence, ``result``, cancel vs terminate, text never markup, clean
errors, and a start-up that imports no heavy module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowState

ROOT = Path(__file__).resolve().parents[2]
MARKUP = "[/b] [red]alarm[/red] [high] \x1b[2J"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``agenticflow ARGS`` with exactly this environment on top of a clean one
    (no AGENTICFLOW_* or NATS_URL but AGENTICFLOW_HOME, the session's)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("AGENTICFLOW_") and k != "NATS_URL") or k == "AGENTICFLOW_HOME"
    }
    return subprocess.run(
        [sys.executable, "-m", "agenticflow", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def on(cluster: DevCluster) -> dict[str, str]:
    """The environment that points a command at the shared cluster."""
    return {"AGENTICFLOW_NATS_URL": cluster.url, "AGENTICFLOW_PREFIX": cluster.prefix}


def flow(tmp_path: Path, tasks: list[dict[str, Any]], name: str = "cli-flow") -> Path:
    path = tmp_path / f"{name.replace('/', '_')[:20]}-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"name": name, "tasks": tasks}))
    return path


ADD = [
    {"id": "a", "capability": "add", "params": {"value": 1}},
    {"id": "b", "capability": "add", "params": {"value": 2}, "depends_on": ["a"]},
]


@pytest.fixture(scope="module")
def done_id(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A completed workflow of two tasks (output: b's result, 3)."""
    path = flow(tmp_path_factory.mktemp("flows"), ADD, name="cli-done")
    done = run_cli("submit", str(path), "--wait", "-o", "json", env=on(cluster))
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["workflow_id"])


def test_help_lists_every_verb_and_option() -> None:
    root = run_cli("-h")
    assert root.returncode == 0, root.stderr
    for word in ("workflow", "profile", "--install-completion", "--show-completion", "--profile"):
        assert word in root.stdout, word
    group = run_cli("workflow", "--help")
    for verb in ("list", "describe", "status", "result", "events", "submit", "watch", "cancel"):
        assert verb in group.stdout, verb
    for verb in ("terminate", "pause", "resume", "feedback", "modify", "approve", "reject"):
        assert verb in group.stdout, verb
    listed = run_cli("workflow", "list", "-h")
    for option in ("--state", "--name", "--since", "--limit", "--output", "-o"):
        assert option in listed.stdout, option
    for args in (["status", "-h"], ["events", "-h"], ["agents", "-h"], ["replay", "-h"]):
        shown = run_cli(*args)
        assert "--output" in shown.stdout, args
        assert "--json" not in shown.stdout, ("--json is a hidden alias", args)
    replay = run_cli("replay", "-h")
    assert "--file" in replay.stdout
    assert "--format" in replay.stdout
    profile = run_cli("profile", "-h")
    for verb in ("save", "use", "list", "show"):
        assert verb in profile.stdout, verb
    completed = run_cli(
        env={"_AGENTICFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "agenticflow workf",
             "COMP_CWORD": "1"}
    )  # fmt: skip
    assert completed.stdout.split() == ["workflow"], "shell completion is on"


def test_importing_the_cli_loads_no_heavy_module() -> None:
    """``--help`` stays fast: only typer and rich load with the CLI."""
    code = (
        "import sys, agenticflow.cli\n"
        "heavy = ('nats', 'pydantic', 'structlog', 'yaml', 'opentelemetry', 'msgpack',\n"
        "         'agenticflow.coordinator', 'agenticflow.worker', 'agenticflow.shared',\n"
        "         'agenticflow.client', 'agenticflow.cluster', 'asyncio', 'uvloop')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert found.stdout.strip() == "[]", found.stdout


def test_flat_verbs_are_the_grouped_ones(cluster: DevCluster, done_id: str) -> None:
    flat = run_cli("status", done_id, "-o", "json", env=on(cluster))
    grouped = run_cli("workflow", "describe", done_id, "-o", "json", env=on(cluster))
    assert flat.returncode == grouped.returncode == 0, flat.stderr + grouped.stderr
    assert json.loads(flat.stdout) == json.loads(grouped.stdout)
    legacy = run_cli("status", done_id, "--json", env=on(cluster))
    assert json.loads(legacy.stdout) == json.loads(flat.stdout)


def test_result_prints_only_the_output(cluster: DevCluster, done_id: str, tmp_path: Path) -> None:
    shown = run_cli("workflow", "result", done_id, env=on(cluster))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "3\n"
    assert shown.stderr == ""
    failing = flow(tmp_path, [{"id": "f", "capability": "fatal", "params": {"item": "X-7"}}])
    wid = run_cli("submit", str(failing), env=on(cluster)).stdout.strip()
    failed = run_cli("workflow", "result", wid, env=on(cluster))
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "failed" in failed.stderr
    for more in ([], ["--no-wait"]):  # an unknown workflow: exit 3 at once, no waiting
        missing = run_cli("workflow", "result", "wf-nope", *more, env=on(cluster))
        assert missing.returncode == 3, missing.stderr
        assert "no workflow 'wf-nope'" in missing.stderr


def _json_forms(args: list[str], cluster: DevCluster) -> tuple[Any, list[Any], str]:
    """The command's output with -o json, -o jsonl and -o table."""
    document = run_cli(*args, "-o", "json", env=on(cluster))
    lines = run_cli(*args, "-o", "jsonl", env=on(cluster))
    table = run_cli(*args, "-o", "table", env=on(cluster))
    for done in (document, lines, table):
        assert done.returncode == 0, (args, done.stderr)
    assert len(document.stdout.splitlines()) == 1, "one compact document"
    return (
        json.loads(document.stdout),
        [json.loads(line) for line in lines.stdout.splitlines()],
        table.stdout,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["events", "{id}"],
        ["workflow", "list", "--limit", "5"],
        ["agents"],
        ["health", "--expect", "3"],
        ["dlq"],
        ["templates"],
    ],
)
def test_output_formats_of_list_commands(
    cluster: DevCluster, done_id: str, args: list[str]
) -> None:
    args = [a.format(id=done_id) for a in args]
    document, lines, table = _json_forms(args, cluster)
    assert isinstance(document, list)
    # the same items, one per line (live values such as uptimes aside)
    assert [sorted(item) for item in lines] == [sorted(item) for item in document]
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)


@pytest.mark.parametrize("args", [["status", "{id}"], ["diff", "{id}", "{id}"]])
def test_output_formats_of_one_document(cluster: DevCluster, done_id: str, args: list[str]) -> None:
    args = [a.format(id=done_id) for a in args]
    document, lines, table = _json_forms(args, cluster)
    assert isinstance(document, dict)
    assert lines == [document]
    assert table.strip()


def test_list_filters(cluster: DevCluster, done_id: str, tmp_path: Path) -> None:
    name = f"cli-list-{os.getpid()}"
    wid = run_cli(
        "submit", str(flow(tmp_path, ADD, name=name)), "--wait", "-o", "json", env=on(cluster)
    )
    assert wid.returncode == 0, wid.stderr
    mine = json.loads(wid.stdout)["workflow_id"]
    found = run_cli("workflow", "list", "--name", name, "-o", "json", env=on(cluster))
    rows = json.loads(found.stdout)
    assert [row["id"] for row in rows] == [mine]
    row = rows[0]
    assert (row["name"], row["state"], row["tasks_done"], row["tasks_total"]) == (
        name, "completed", 2, 2,
    )  # fmt: skip
    assert row["created_at"] <= row["updated_at"]
    running = run_cli("workflow", "list", "--name", name, "--state", "running", "-o", "json",
                      env=on(cluster))  # fmt: skip
    assert json.loads(running.stdout) == []
    either = run_cli("workflow", "list", "--name", name, "--state", "running", "--state",
                     "completed", "-o", "json", env=on(cluster))  # fmt: skip
    assert [row["id"] for row in json.loads(either.stdout)] == [mine]
    recent = run_cli("workflow", "list", "--since", "1h", "--limit", "1", "-o", "json",
                     env=on(cluster))  # fmt: skip
    assert len(json.loads(recent.stdout)) == 1
    bad = run_cli("workflow", "list", "--since", "yesterday-ish", env=on(cluster))
    assert bad.returncode == 2


async def test_cancel_lets_running_tasks_finish_terminate_does_not(
    cluster: DevCluster, client: Client, tmp_path: Path
) -> None:
    ended: dict[str, WorkflowState] = {}
    # cancel waits for the running task (4 s); terminate must not (it would take 60 s)
    for verb, seconds in (("cancel", 4), ("terminate", 60)):
        tasks = [
            {"id": "s", "capability": "slow", "params": {"seconds": seconds}},
            {"id": "t", "capability": "add", "params": {"value": 1}, "depends_on": ["s"]},
        ]
        wid = f"cli-{verb}-{os.getpid()}"
        started = run_cli("submit", str(flow(tmp_path, tasks)), "--id", wid, env=on(cluster))
        assert started.returncode == 0, started.stderr
        await client.wait_for(wid, lambda s: s.tasks["s"].status.value == "running", timeout=30)
        steered = run_cli("workflow", verb, wid, "--reason", MARKUP, "-o", "json", env=on(cluster))
        assert steered.returncode == 0, steered.stderr
        assert json.loads(steered.stdout)["action"] == verb
        ended[verb] = await client.wait(wid, timeout=30)
    cancelled, terminated = ended["cancel"], ended["terminate"]
    assert cancelled.status.value == "cancelled"
    assert cancelled.tasks["s"].status.value == "completed", "a running task finishes"
    assert cancelled.tasks["t"].status.value == "cancelled", "nothing new starts"
    assert terminated.status.value == "aborted"
    assert terminated.tasks["s"].status.value == "cancelled", "a running task is stopped"
    again = run_cli("abort", terminated.workflow_id, env=on(cluster))
    assert again.returncode == 5, "abort (terminate's former name) of an ended workflow: refused"
    shown = run_cli("workflow", "list", "--state", "cancelled", "--state", "aborted",
                    "-o", "json", env=on(cluster))  # fmt: skip
    states = {row["id"]: row["state"] for row in json.loads(shown.stdout)}
    assert states[cancelled.workflow_id] == "cancelled"
    assert states[terminated.workflow_id] == "aborted"


def test_user_text_is_never_markup(cluster: DevCluster, tmp_path: Path) -> None:
    path = flow(tmp_path, [{"id": "u", "capability": "sync_upper"}], name=MARKUP)
    done = run_cli("submit", str(path), "--input", json.dumps({"text": MARKUP}), "--wait",
                   env=on(cluster))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    wid = done.stdout.split()[0]
    for args in (
        ["workflow", "list", "--limit", "200"],
        ["workflow", "describe", wid],
        ["events", wid],
    ):
        shown = run_cli(*args, env=on(cluster))
        assert shown.returncode == 0, (args, shown.stderr)
        assert "\x1b" not in shown.stdout, args
        assert "MarkupError" not in shown.stderr, args
    listed = run_cli("workflow", "list", "--limit", "200", env={**on(cluster), "COLUMNS": "400"})
    assert "[/b] [red]alarm[/red] [high] \\x1b[2J" in listed.stdout
    result = run_cli("workflow", "result", wid, env=on(cluster))
    assert json.loads(result.stdout) == MARKUP.upper()


def test_unreachable_nats_is_one_clean_line() -> None:
    down = run_cli("status", "wf-x", "--nats", "nats://127.0.0.1:1")
    assert down.returncode == 3
    assert down.stdout == ""
    lines = down.stderr.splitlines()
    assert len(lines) == 1, down.stderr
    assert lines[0].startswith("error: cannot connect to NATS at nats://127.0.0.1:1")
    assert "{" not in down.stderr, "no JSON log line"


def test_profiles_and_precedence(cluster: DevCluster, done_id: str, tmp_path: Path) -> None:
    home = {"AGENTICFLOW_HOME": str(tmp_path / "home")}
    nothing = run_cli("profile", "list", env=home)
    assert nothing.returncode == 0
    assert "no profiles" in nothing.stdout
    saved = run_cli("profile", "save", "here", "--nats", cluster.url, "--prefix", cluster.prefix,
                    "--replicas", "1", "--use", env=home)  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    run_cli("profile", "save", "nowhere", "--nats", "nats://127.0.0.1:1", env=home)
    assert (tmp_path / "home" / "profiles.json").stat().st_mode & 0o777 == 0o600
    listed = json.loads(run_cli("profile", "list", "-o", "json", env=home).stdout)
    assert {(p["name"], p["current"]) for p in listed} == {("here", True), ("nowhere", False)}

    def status(*more: str, **env: str) -> int:
        return run_cli("status", done_id, "-o", "json", *more, env={**home, **env}).returncode

    assert status() == 0, "the current profile"
    assert status("--nats", "nats://127.0.0.1:1") == 3, "a flag beats the profile"
    assert status(NATS_URL="nats://127.0.0.1:1") == 3, "NATS_URL beats the profile"
    assert status(AGENTICFLOW_NATS_URL=cluster.url, NATS_URL="nats://127.0.0.1:1") == 0, (
        "AGENTICFLOW_NATS_URL beats NATS_URL"
    )
    assert status("--nats", cluster.url, AGENTICFLOW_NATS_URL="nats://127.0.0.1:1") == 0, (
        "a flag beats the environment"
    )
    assert status(AGENTICFLOW_PROFILE="nowhere") == 3, "AGENTICFLOW_PROFILE beats the current"
    chosen = run_cli("--profile", "here", "status", done_id, env={**home,
                     "AGENTICFLOW_PROFILE": "nowhere"})  # fmt: skip
    assert chosen.returncode == 0, "--profile beats AGENTICFLOW_PROFILE"
    stale = {**home, "AGENTICFLOW_NATS_URL": "nats://127.0.0.1:1", "NATS_URL": "nats://127.0.0.1:1"}
    named = run_cli("--profile", "here", "status", done_id, env=stale)
    assert named.returncode == 0, "a named profile beats stale variables in the shell"
    assert run_cli("profile", "use", "nowhere", env=home).returncode == 0
    assert status() == 3
    unknown = run_cli("--profile", "nope", "status", done_id, env=home)
    assert unknown.returncode == 2
    assert "no profile 'nope'" in unknown.stderr
    shown = json.loads(run_cli("profile", "show", "here", "-o", "json", env=home).stdout)
    assert shown["fields"]["prefix"] == cluster.prefix


def test_replay_writes_with_file_and_the_former_o(
    cluster: DevCluster, done_id: str, tmp_path: Path
) -> None:
    for spelling in ("--file", "-o"):
        target = tmp_path / f"trace{spelling}.json"
        written = run_cli("replay", done_id, "--format", "chrome-trace", spelling, str(target),
                          env=on(cluster))  # fmt: skip
        assert written.returncode == 0, written.stderr
        assert json.loads(target.read_text())["traceEvents"]
    lines = run_cli("replay", done_id, "-o", "jsonl", env=on(cluster))
    events = [json.loads(line) for line in lines.stdout.splitlines()]
    assert events[0]["type"] == "workflow.submitted"
    document = json.loads(run_cli("replay", done_id, "-o", "json", env=on(cluster)).stdout)
    assert [e["seq"] for e in document["events"]] == [e["seq"] for e in events]


def on_a_terminal(*args: str, env: dict[str, str], timeout: float = 60) -> str:
    """``agenticflow ARGS`` with stdout and stderr on a pseudo-terminal; all it wrote."""
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agenticflow", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm", **env},
        cwd=ROOT,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            assert ready, f"no output within {timeout}s"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        proc.wait(timeout=timeout)
    return b"".join(chunks).decode("utf-8", "replace")


def test_waiting_shows_progress_on_a_terminal_only(cluster: DevCluster, tmp_path: Path) -> None:
    path = flow(tmp_path, ADD, name="cli-progress")
    shown = on_a_terminal("submit", str(path), "--wait", env=on(cluster))
    assert "2/2" in shown, shown  # the bar: tasks done of the total
    assert "b: " in shown, shown  # the latest task changes
    assert "completed" in shown
    piped = run_cli("submit", str(path), "--wait", env=on(cluster))
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "", "nothing extra when piped"

"""Attacks on what issue 21 added: cooperative cancel versus terminate, the
workflow index (``<prefix>_workflow_index``), profiles and the CLI's output.

Against real clusters (the default one and the secure one of
``tests/security/conftest.py``):

* a cancel forged in the coordinator's name (a client-signed
  ``workflow.intervention_applied``) does not reach a running handler, and a
  signed cancel moved onto another workflow's subject changes nothing;
* index records that are not a coordinator's (garbage, a client's or a
  worker's signature, a record copied under another key, a time no datetime
  holds) are left out of ``list`` and never crash it.

Pure: any interleaving of a cancel with starts, completions, retryable
failures, retries and approvals ends the workflow once, dispatches nothing
after the cancel and replays to the same state; an index record is sealed at
the attempt that stores it (a record retried across an outage longer than the
replay window is not refused as an old one put back); the CLI's consoles show
emoji codes as written; ``profile show|list`` mask a password or token in the
URL; profile names cannot traverse, and a symlink in place of the file is
replaced, not followed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agenticflow import profiles, render
from agenticflow.cli._common import err, out
from agenticflow.cli.profile import profile_app
from agenticflow.cluster.nats_auth import CLIENT, COORDINATOR
from agenticflow.coordinator import replay
from agenticflow.coordinator.index import WorkflowSummary, open_summary, seal_summary
from agenticflow.coordinator.reducer import ArmTimer, Dispatch, fold
from agenticflow.coordinator.service import Coordinator
from agenticflow.coordinator.state import TaskStatus, WorkflowStatus
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.errors import ConfigError, MalformedMessageError
from agenticflow.shared.security.seal import Seal, init_keys
from agenticflow.shared.wire.codec import encode_event, pack
from agenticflow.shared.wire.events import (
    ErrorInfo,
    EventType,
    InterventionApplied,
    InterventionRequested,
    TaskApprovalRequested,
)
from agenticflow.shared.wire.ids import new_workflow_id
from agenticflow.shared.wire.names import Names
from tests.integration.helpers import wf
from tests.integration.test_nats_auth import DENIED_S, WORKER, Secure, Watched, start_secure
from tests.security.conftest import Target, forged
from tests.unit.test_interventions import intervention
from tests.unit.test_reducer import Sim, definition

pytestmark = pytest.mark.timeout(180)

# Cancel against the real clusters -------------------------------------------------


async def _running(target: Target, seconds: float) -> str:
    """A workflow whose one task waits ``seconds`` for a cancel (then returns
    "not cancelled"), once its task runs."""
    workflow_id = await target.client.submit_workflow(
        wf({"id": "c", "capability": "cancellable", "params": {"seconds": seconds}})
    )
    await target.client.wait_for(
        workflow_id, lambda s: s.tasks["c"].status == TaskStatus.RUNNING, timeout=30
    )
    return workflow_id


async def test_a_cancel_forged_in_the_coordinators_name_does_not_reach_the_handler(
    target: Target,
) -> None:
    if not target.secure:
        pytest.skip("without keys anyone on the bus speaks for the coordinator (DESIGN §9)")
    workflow_id = await _running(target, seconds=10)
    fake = InterventionApplied(
        request_id="forged-1", action="cancel", by="coordinator", summary="cancelling"
    )
    await target.publish(
        forged(workflow_id, EventType.INTERVENTION_APPLIED, fake, source="coordinator"),
        as_="client",
    )
    # (The coordinator skips an echo of its own decisions undecoded: nothing to
    # record.) The worker refused it: the handler waited its 10 s out and returned.
    state = await target.client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["c"].result == "not cancelled"
    assert state.interventions == 0
    # The control: the coordinator's own cancel does reach it.
    honest = await _running(target, seconds=120)
    await target.client.cancel(honest, "enough")
    ended = await target.client.wait(honest, timeout=60)
    assert ended.status == WorkflowStatus.CANCELLED
    assert ended.tasks["c"].status == TaskStatus.CANCELLED


async def test_a_signed_cancel_moved_onto_another_workflow_changes_nothing(
    target: Target,
) -> None:
    if not target.secure:
        pytest.skip("without keys nothing binds a request to its workflow")
    victim = await _running(target, seconds=120)
    meant = new_workflow_id()
    request = InterventionRequested(request_id="moved-1", action="cancel", by="client")
    event = forged(meant, EventType.INTERVENTION_REQUESTED, request, source="client")
    names = target.bus.names
    subject, headers, plain = encode_event(event, names)
    signed = dict(headers)
    seal = target.seal("client")
    assert seal is not None
    body = seal.close(subject, signed, plain)
    moved = names.event_subject(victim, EventType.INTERVENTION_REQUESTED.value)
    seq, _ = await target.bus.publish_raw(moved, body, signed)
    rejected = await target.rejection(seq)
    assert rejected.code in ("forged_message", "malformed_message"), rejected
    state = await target.client.status(victim)
    assert state.status == WorkflowStatus.RUNNING
    assert not state.cancelling
    assert state.interventions == 0
    await target.client.terminate(victim, "cleanup")  # the control: a request of its own
    assert (await target.client.wait(victim, timeout=30)).status == WorkflowStatus.ABORTED


async def test_a_cancelled_workflow_replays_to_its_snapshot_and_forks_from_what_it_kept(
    target: Target,
) -> None:
    """Cancel while one task stops on ``ctx.cancelled`` and another ignores it:
    the stored events re-fold to the stored snapshot; the index says cancelled;
    a fork reuses the kept result only."""
    client = target.client
    workflow_id = await client.submit_workflow(
        wf(
            {"id": "c", "capability": "cancellable", "params": {"seconds": 120}},
            {"id": "s", "capability": "slow", "params": {"seconds": 6}},
            {"id": "after", "capability": "add", "params": {"value": 1}, "depends_on": ["s"]},
        )
    )
    await client.wait_for(
        workflow_id,
        lambda st: {st.tasks["c"].status, st.tasks["s"].status} == {TaskStatus.RUNNING},
        timeout=30,
    )
    await client.cancel(workflow_id, "review")
    state = await client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.CANCELLED
    statuses = {t: task.status for t, task in state.tasks.items()}
    assert statuses == {
        "c": TaskStatus.CANCELLED,
        "s": TaskStatus.COMPLETED,  # it finished: its result is kept
        "after": TaskStatus.CANCELLED,
    }
    assert state.tasks["s"].result == "done"
    events = await client.events(workflow_id)
    assert [e.type for e in events].count(EventType.WORKFLOW_CANCELLED) == 1
    assert replay.verify(events, state) == []
    again = fold(events)
    assert again is not None
    assert again.status == WorkflowStatus.CANCELLED
    assert again.tasks == state.tasks
    listed = await _until_listed(target, workflow_id, WorkflowStatus.CANCELLED)
    assert listed.reason == state.reason
    with pytest.raises(ConfigError, match="only a failed workflow"):
        await client.resume(workflow_id)
    forked = await client.fork(workflow_id)
    fork = await client.wait_for(
        forked, lambda st: st.tasks["c"].status == TaskStatus.RUNNING, timeout=30
    )
    assert fork.tasks["s"].status == TaskStatus.COMPLETED
    assert fork.tasks["s"].result == "done"
    await client.terminate(forked, "cleanup")
    assert (await client.wait(forked, timeout=30)).status == WorkflowStatus.ABORTED


# The workflow index against the real clusters ----------------------------------------


async def _until_listed(target: Target, workflow_id: str, state: WorkflowStatus) -> WorkflowSummary:
    """The workflow's summary once ``list`` shows it in ``state`` (the coordinator
    writes the record beside the snapshot, so it may come a moment later)."""
    index = await target.bus.kv(target.bus.names.workflow_index_bucket)

    async def find() -> WorkflowSummary | None:
        found = [s for s in await target.client.workflows(state=state, limit=None)]
        return next((s for s in found if s.id == workflow_id), None)

    watcher = await index.watch(workflow_id, inactive_threshold=5.0)
    try:
        async with asyncio.timeout(30):
            while (summary := await find()) is None:
                await watcher.updates(timeout=30)
            return summary
    finally:
        await watcher.stop()


def _record(key: str, **changes: Any) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "v": 1,
        "id": key,
        "name": "planted",
        "state": "completed",
        "created_at": now,
        "updated_at": now,
        "tasks_done": 1,
        "tasks_total": 1,
        "paused": False,
        "reason": None,
        **changes,
    }


async def test_list_leaves_out_records_that_are_not_a_coordinators_and_never_crashes(
    target: Target,
) -> None:
    honest = await target.client.submit_workflow(
        wf({"id": "a", "capability": "add", "params": {"value": 1}})
    )
    await target.client.wait(honest, timeout=30)
    bucket = target.bus.names.workflow_index_bucket
    index = await target.bus.kv(bucket)

    async def listed() -> dict[str, WorkflowSummary]:
        return {s.id: s for s in await target.client.workflows(limit=None)}

    await _until_listed(target, honest, WorkflowStatus.COMPLETED)
    stored = await index.get(honest)
    assert stored.value is not None
    tag = new_workflow_id()[-8:]
    planted: dict[str, bytes] = {
        # Not a record at all, and records whose times no datetime holds.
        f"garbage-{tag}": b"\x00\xffnot msgpack",
        f"inf-{tag}": pack(_record(f"inf-{tag}", created_at=float("inf"))),
        f"huge-{tag}": pack(_record(f"huge-{tag}", created_at=1e300)),
        f"behind-{tag}": pack(_record(f"behind-{tag}", updated_at=-1e300)),
        # The honest record, under another key (it names the honest id).
        f"copy-{tag}": stored.value,
    }
    for principal in ("client", "worker"):  # signed, but by someone who may not write it
        key = f"{principal}-{tag}"
        seal = target.seal(principal) or Seal.from_dir(None, principal)
        planted[key] = seal.seal_record(bucket, key, pack(_record(key)))
    for key, value in planted.items():
        await index.put(key, value)
    shown = await listed()  # raised OverflowError before (a time of inf or 1e300)
    assert honest in shown, "the coordinator's record is still listed"
    assert shown[honest].state == WorkflowStatus.COMPLETED
    for key in ("garbage", "inf", "huge", "behind", "copy"):
        assert f"{key}-{tag}" not in shown, key
    # Without keys a well-formed record is anyone's to write (and is listed);
    # with keys only a coordinator's signature counts.
    for principal in ("client", "worker"):
        assert (f"{principal}-{tag}" in shown) is (not target.secure), principal
    for key in planted:
        await index.delete(key)


# Pure: cancel interleaved with everything else -----------------------------------------

RETRYABLE = ErrorInfo(type="ValueError", message="boom", retryable=True)
_RETRY = {"max_attempts": 3, "initial_interval_s": 0.25, "backoff": 2.0}
WIDE = definition(
    {"id": "a", "capability": "work", "retry": _RETRY},
    {"id": "b", "capability": "work", "retry": _RETRY},
    {"id": "c", "capability": "work", "depends_on": ["a"], "retry": _RETRY},
    {"id": "d", "capability": "work", "depends_on": ["b", "c"], "retry": _RETRY},
)
OPS = ("start", "complete", "fail", "retry", "ask", "approve", "feedback", "cancel")
TERMINAL_EVENTS = {
    EventType.WORKFLOW_COMPLETED,
    EventType.WORKFLOW_FAILED,
    EventType.WORKFLOW_CANCELLED,
    EventType.WORKFLOW_ABORTED,
}


class _World:
    """The workers, the shell and the people around one simulated workflow."""

    def __init__(self) -> None:
        self.sim = Sim()
        self.queued: list[Any] = []
        self.running: list[Any] = []
        self.retries: list[ArmTimer] = []
        self.waiting: list[str] = []
        self.after_cancel: list[Any] = []
        self.cancelled = False
        self.take(self.sim.submit(WIDE))

    def take(self, commands: list[Any]) -> None:
        for command in commands:
            if isinstance(command, Dispatch):
                self.queued.append(command.task)
                if self.cancelled:
                    self.after_cancel.append(command.task)
            elif isinstance(command, ArmTimer) and command.kind == "retry":
                self.retries.append(command)

    def cancel(self) -> None:
        sim = self.sim
        running_before = sim.st.status == WorkflowStatus.RUNNING
        self.take(sim.publish(intervention(sim, "cancel", reason="stop")))
        self.cancelled = self.cancelled or (running_before and sim.st.cancelling)

    def step(self, op: str, n: int) -> None:
        sim = self.sim
        if op == "start" and self.queued:
            task = self.queued.pop(n % len(self.queued))
            sim.publish(sim.started(task))
            self.running.append(task)
        elif op == "complete" and self.running:
            task = self.running.pop(n % len(self.running))
            self.take(sim.publish(sim.completed(task, {"done": task.task_id})))
        elif op == "fail" and self.running:
            task = self.running.pop(n % len(self.running))
            self.take(sim.publish(sim.failed(task, RETRYABLE)))
        elif op == "retry" and self.retries:
            self.take(sim.publish(sim.retry_due(self.retries.pop(n % len(self.retries)))))
        elif op == "ask" and self.running:
            task = self.running.pop(n % len(self.running))
            # As a handler asks: its index counts the decisions it was given.
            asked = TaskApprovalRequested(reason="ok?", index=len(task.approvals))
            event = sim.worker_event(task, EventType.TASK_APPROVAL_REQUESTED, asked, "ask", "w1")
            sim.publish(event)
            self.waiting.append(task.task_id)
        elif op == "approve" and self.waiting:
            task_id = self.waiting.pop(n % len(self.waiting))
            self.take(sim.publish(intervention(sim, "approve", task_id=task_id)))
        elif op == "feedback":
            self.take(sim.publish(intervention(sim, "feedback", text="note")))
        elif op == "cancel":
            self.cancel()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 3)), max_size=30))
def test_a_cancel_in_any_interleaving_ends_once_dispatches_nothing_and_replays(
    ops: list[tuple[str, int]],
) -> None:
    world = _World()
    sim = world.sim
    for op, n in ops:
        world.step(op, n)
    if not sim.st.is_terminal:
        world.cancel()
    while world.running:  # what still runs finishes (a handler that ignores ctx.cancelled)
        task = world.running.pop(0)
        world.take(sim.publish(sim.completed(task, {"done": task.task_id})))
    assert world.after_cancel == [], "nothing is dispatched once the workflow is being cancelled"
    if world.cancelled:
        assert sim.st.status == WorkflowStatus.CANCELLED
        assert not [t for t in sim.st.tasks.values() if t.status == TaskStatus.RUNNING]
    assert sim.st.is_terminal
    ends = [e for e in sim.emitted if e.type in TERMINAL_EVENTS]
    assert len(ends) == 1, [e.type for e in ends]
    for task in world.queued:  # late outcomes of whatever was queued change nothing
        sim.assert_ignored(sim.started(task))
    # (The simulator's shell signs its timers with the reducer's own node id
    # without advancing it: causality reports that, not a difference in state.)
    problems = replay.verify(sim.log, sim.st)
    assert [p for p in problems if "does not advance past" not in p] == []
    again = fold(sim.log)
    assert again is not None
    assert again.model_dump() == sim.st.model_dump()


# Pure: the index record of a write retried across an outage --------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now


class _FlakyIndex:
    """A KV bucket that fails the first put; the outage lasts ``outage_s``."""

    def __init__(self, clock: _Clock, outage_s: float) -> None:
        self.clock, self.outage_ns = clock, int(outage_s * 1e9)
        self.failures = 0
        self.stored: dict[str, tuple[bytes, int]] = {}

    async def put(self, key: str, value: bytes) -> int:
        if self.failures == 0:
            self.failures += 1
            self.clock.now += self.outage_ns
            raise ConnectionError("NATS is down")
        self.stored[key] = (value, self.clock.now)
        return 1


async def test_an_index_record_written_after_a_long_outage_is_not_refused_as_a_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_keys(tmp_path, [("coordinator", "coordinator"), ("client", "client")])
    coordinator_seal = Seal.from_dir(tmp_path, "coordinator", window_s=120)
    reader = Seal.from_dir(tmp_path, "client", window_s=120)
    clock = _Clock()
    monkeypatch.setattr(time, "time_ns", clock)
    names = Names("idx")

    async def call(fn: Any, *, what: str) -> Any:
        return await fn()

    async def pause(failures: int) -> int:
        return failures + 1

    coordinator = object.__new__(Coordinator)
    coordinator.bus = SimpleNamespace(seal=coordinator_seal, call=call)  # type: ignore[assignment]
    coordinator.names = names
    coordinator._index = _FlakyIndex(clock, outage_s=300)  # type: ignore[assignment]
    coordinator._stop = asyncio.Event()
    coordinator._pause = pause  # type: ignore[method-assign]
    summary = WorkflowSummary.model_validate(
        {
            "id": "wf-outage",
            "name": "n",
            "state": "completed",
            "created_at": "2026-12-07T12:00:00Z",
            "updated_at": "2026-12-07T12:00:00Z",
        }
    )
    await coordinator._put_summary("wf-outage", summary)
    value, stored_ns = coordinator._index.stored["wf-outage"]  # type: ignore[attr-defined]
    bucket = names.workflow_index_bucket
    shown = open_summary(reader, bucket, "wf-outage", value, stored_ns=stored_ns)
    assert shown.id == "wf-outage"
    # What it did before: a record sealed once, stored after the outage, is refused.
    stale = seal_summary(coordinator_seal, bucket, summary)
    clock.now += 300 * 10**9
    with pytest.raises(MalformedMessageError, match="old value put back"):
        open_summary(reader, bucket, "wf-outage", stale, stored_ns=clock.now)


def test_an_index_record_with_a_time_no_datetime_holds_is_refused_not_raised() -> None:
    seal = Seal.from_dir(None, "client")
    for change in (
        {"created_at": float("inf")},
        {"created_at": 1e300},
        {"updated_at": -1e300},
        {"created_at": float("nan")},
    ):
        blob = pack(_record("k", **change))
        with pytest.raises(MalformedMessageError, match="not a valid summary"):
            open_summary(seal, "b", "k", blob, stored_ns=None)


# Pure: the CLI's output ----------------------------------------------------------------


def test_the_cli_consoles_show_emoji_codes_and_markup_as_written() -> None:
    text = ":warning: [/b] [red]x[/red] :white_check_mark:"
    for console in (out, err):
        with console.capture() as captured:
            render.print_workflows(
                console, [{"id": ":tada:", "name": ":warning:", "state": "running"}]
            )
            console.print(f"reason: {render.esc(text)}")
            console.print(text, markup=False, highlight=False)
        shown = captured.get()
        for emoji in ("⚠", "✅", "🎉"):
            assert emoji not in shown, shown
        assert ":tada:" in shown
        assert shown.count(":warning:") == 3, shown  # the table, the markup line, the plain one
        assert f"reason: {text}" in shown


def test_tool_states_and_health_warnings_written_by_workers_reach_no_terminal_escape() -> None:
    """A rate-limit record (in a KV bucket workers write) and a process's health
    warnings: shown with their escape sequences inert."""
    from rich.console import Console

    console = Console(width=200, emoji=False)
    with console.capture() as captured:
        render.print_tool_states(
            console,
            [{"role": "ratelimit", "key": "k\x1b[2J", "by": "w\x1b]8;;http://x\x07", "per_s": 1}],
        )
        render.print_health(
            console,
            [{"kind": "worker\x1b[31m", "node": "n\x1b[0m", "warnings": ["bad \x1b[2J"]}],
        )
    shown = captured.get()
    assert "\x1b" not in shown, repr(shown)
    assert "k\\x1b[2J" in shown
    assert "warning: worker\\x1b[31m n\\x1b[0m: bad \\x1b[2J" in shown


# Pure: profiles ------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "home"
    monkeypatch.setenv("AGENTICFLOW_HOME", str(where))
    monkeypatch.delenv("AGENTICFLOW_PROFILE", raising=False)
    for key in list(os.environ):
        if key.startswith("AGENTICFLOW_NATS") or key == "NATS_URL":
            monkeypatch.delenv(key)
    return where


def test_profile_show_and_list_mask_a_password_or_token_in_the_url(home: Path) -> None:
    urls = "nats://alice:s3cr3t@h1:4222,tls://t0k3n@h2:4222"
    profiles.save("p", {"nats_url": urls, "nats_password": "pw-secret"}, make_current=True)
    runner = CliRunner()
    for args in (
        ["show", "p"],
        ["show", "p", "-o", "json"],
        ["show", "--resolved"],
        ["list"],
        ["list", "-o", "json"],
    ):
        shown = runner.invoke(profile_app, args)
        assert shown.exit_code == 0, (args, shown.output)
        for secret in ("s3cr3t", "t0k3n", "pw-secret"):
            assert secret not in shown.output, (args, shown.output)
        assert "alice:***@h1:4222" in shown.output, (args, shown.output)
    data = json.loads(runner.invoke(profile_app, ["show", "p", "-o", "json"]).output)
    assert data["fields"]["nats_url"] == "nats://alice:***@h1:4222,tls://***@h2:4222"
    assert profiles.get("p")["nats_url"] == urls, "stored as given: only the display masks"


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "[red]x", "x\x1b[2J", "~", "a b"])
def test_a_profile_name_cannot_traverse_or_carry_markup(home: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="profile name"):
        profiles.save(name, {"nats_url": "nats://h:4222"})
    assert not (home / "profiles.json").exists()


def test_the_profiles_file_is_private_and_a_planted_symlink_is_replaced(home: Path) -> None:
    home.mkdir(mode=0o700)
    elsewhere = home.parent / "theirs.json"
    elsewhere.write_text('{"profiles": {}}')
    (home / "profiles.json").symlink_to(elsewhere)
    profiles.save("p", {"nats_url": "nats://h:4222", "nats_password": "pw"})
    assert elsewhere.read_text() == '{"profiles": {}}', "the target was not written"
    file = home / "profiles.json"
    assert not file.is_symlink()
    assert file.stat().st_mode & 0o777 == 0o600
    assert profiles.get("p")["nats_password"] == "pw"


# The index under least-privilege NATS users -------------------------------------------


@pytest.fixture(scope="module")
def least_privilege(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """A TLS nats-server with one nkey user per role (``agenticflow nats-config``)."""
    running = start_secure(tmp_path_factory.mktemp("index-users"))
    yield running
    running.server.stop()


async def test_only_a_coordinator_may_write_or_delete_an_index_record(
    least_privilege: Secure,
) -> None:
    coordinator = await Bus.connect(least_privilege.settings(COORDINATOR), name="idx-coord")
    try:
        await coordinator.ensure_topology()
        bucket = coordinator.names.workflow_index_bucket
        stream, subject = f"KV_{bucket}", f"$KV.{bucket}.wf-planted"
        index = await coordinator.kv(bucket)
        await index.put("wf-planted", b"the coordinator's")  # the control: it may
        refused = {
            f"$JS.API.STREAM.PURGE.{stream}": json.dumps({"filter": subject}).encode(),
            f"$JS.API.STREAM.MSG.DELETE.{stream}": json.dumps({"seq": 1}).encode(),
            f"$JS.API.STREAM.DELETE.{stream}": b"",
        }
        for role in (CLIENT, WORKER):
            attacker = await Watched.connect(least_privilege.settings(role))
            try:
                with pytest.raises(nats.errors.TimeoutError):  # a put, or a delete marker
                    await attacker.nc.jetstream().publish(subject, b"forged", timeout=DENIED_S)
                await attacker.told("permissions violation", "publish", subject)
                for api, body in refused.items():
                    with pytest.raises(nats.errors.TimeoutError):
                        await attacker.nc.request(api, body, timeout=DENIED_S)
                    await attacker.told("permissions violation", api)
            finally:
                await attacker.close()
        entry = await index.get("wf-planted")
        assert entry.value == b"the coordinator's"
    finally:
        await coordinator.close()


def test_a_malformed_profile_is_one_clean_error(home: Path) -> None:
    home.mkdir()
    (home / "profiles.json").write_text(
        json.dumps({"current": "x", "profiles": {"x": "nats://h:1", "y": [1, 2]}})
    )
    for name in ("x", "y"):
        with pytest.raises(ConfigError, match=f"profile '{name}' must be an object"):
            profiles.get(name)
    with pytest.raises(ConfigError, match="profile 'x' must be an object"):
        profiles.resolve()  # what every client command does first (x is current)
    shown = CliRunner().invoke(profile_app, ["show"])
    assert shown.exit_code == 2, shown.output
    assert "must be an object" in shown.output


def test_concurrent_saves_keep_each_others_profile(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dev`` saving ``dev`` while ``cluster up`` saves ``local``: each reads
    the file, adds its profile and writes it back. The second reader must wait
    for the first writer, or one profile is lost."""
    import threading

    first_storing, second_read = threading.Event(), threading.Event()
    load, store = profiles._load, profiles._store

    def loading() -> dict[str, Any]:
        if threading.current_thread().name == "second":
            second_read.set()
        return load()

    def storing(data: Any) -> None:
        if threading.current_thread().name == "first":
            first_storing.set()
            second_read.wait(timeout=1.0)  # the other save reads now, if nothing stops it
        store(data)

    monkeypatch.setattr(profiles, "_load", loading)
    monkeypatch.setattr(profiles, "_store", storing)
    first = threading.Thread(
        target=profiles.save, args=("dev", {"nats_url": "nats://a:1"}), name="first"
    )
    second = threading.Thread(
        target=profiles.save, args=("local", {"nats_url": "nats://b:1"}), name="second"
    )
    first.start()
    assert first_storing.wait(timeout=10)  # it has read the file and is about to write it
    second.start()
    first.join(timeout=30)
    second.join(timeout=30)
    assert profiles.names() == ["dev", "local"]

"""Attacks on the audit trail (issue 20, audit that cannot be silenced), against a
real nats-server running the configuration ``agenticflow nats-config`` writes
(TLS, one nkey user per role) and real signing keys.

Each attack comes with its control: a worker's user is refused the coordinator's
chain and anchors by the server, yet writes its own; junk that reaches a chain
(published with an admin's rights) never costs the chain a record; an admin who
deletes and re-creates the audit stream is reported by ``agenticflow audit
verify`` from the signed anchors alone, and one who deletes both streams by an
anchor file kept elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.errors
import pytest

from agenticflow.cluster.nats_auth import ADMIN, CLIENT, COORDINATOR
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import TransportError
from agenticflow.shared.security.audit import (
    AuditKind,
    AuditLog,
    appends,
    reader_seal,
    verify_audit,
)
from agenticflow.shared.security.auditor import Auditor
from agenticflow.shared.security.seal import init_keys
from tests.integration.helpers import agenticflow
from tests.integration.test_nats_auth import DENIED_S, WORKER, Secure, Watched, start_secure

pytestmark = pytest.mark.timeout(180)

PRINCIPALS = [("coordinator", "coordinator"), ("worker", "worker"), ("admin", "admin")]


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Secure]:
    """A TLS server with one nkey user per role, for one test (its own prefix)."""
    running = start_secure(tmp_path)
    yield running
    running.server.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    init_keys(directory, PRINCIPALS)
    return directory


@pytest.fixture
async def buses(secure: Secure, keys: Path) -> AsyncIterator[dict[str, Bus]]:
    """Signing connections of the coordinator (which creates the topology), the
    admin and the ``alpha`` worker group."""
    opened: dict[str, Bus] = {}
    try:
        for role, principal in ((COORDINATOR, "coordinator"), (ADMIN, "admin"), (WORKER, "worker")):
            settings = secure.settings(role, security_dir=keys)
            opened[role] = await Bus.connect(settings, name=f"test-{role}", role=principal)
        await opened[COORDINATOR].ensure_topology()
        yield opened
    finally:
        for bus in opened.values():
            await bus.close()


async def stored(bus: Bus, stream: str) -> int:
    return int((await bus.js.stream_info(stream)).state.messages)


def verify_cli(secure: Secure, keys: Path, *args: str) -> tuple[int, str]:
    """``agenticflow audit verify ARGS`` with the admin's env file and the trust store."""
    env = {**secure.files.env(ADMIN, url=secure.server.url), "AGENTICFLOW_SECURITY_DIR": str(keys)}
    done = agenticflow(secure.settings(ADMIN), "audit", "verify", *args, env=env)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


async def test_a_worker_cannot_write_the_coordinators_chain_or_anchor_or_list_workflows(
    secure: Secure, buses: dict[str, Bus], keys: Path
) -> None:
    coordinator = buses[COORDINATOR]
    names = coordinator.names
    log = await AuditLog.open(coordinator, coordinator.seal, "coord-1", scope=COORDINATOR)
    await log.record(AuditKind.KEYS_LOADED, role="coordinator")
    before = await stored(coordinator, names.audit_stream)

    attacker = await Watched.connect(secure.settings(WORKER))
    try:
        js = attacker.nc.jetstream()
        for subject in (names.audit_subject(log.chain), names.anchor_subject(log.chain)):
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish(subject, b"junk", timeout=DENIED_S)
            await attacker.told("permissions violation", "publish", subject)
        # Workflow ids through a stream info with a subjects filter.
        info = f"$JS.API.STREAM.INFO.{names.events_stream}"
        with pytest.raises(nats.errors.TimeoutError):
            await attacker.nc.request(info, b'{"subjects_filter": ">"}', timeout=DENIED_S)
        await attacker.told("permissions violation", info)
    finally:
        await attacker.close()
    assert await stored(coordinator, names.audit_stream) == before
    assert await stored(coordinator, names.anchor_stream) == 0

    # Controls: the worker waits for the topology without stream info, and appends
    # to and anchors its own chain; both chains verify.
    worker = buses[WORKER]
    await worker.ensure_topology()
    own = await AuditLog.open(worker, worker.seal, "w-1")
    assert own.chain == f"{WORKER}.w-1"
    await own.record(AuditKind.TOOL_CALLED, tool="echo")
    assert await own.anchor() == own.head
    await log.record(AuditKind.ACCESS_DENIED, who="mallory")
    report = await verify_audit(buses[ADMIN], reader_seal(keys))
    assert report.ok, [str(p) for p in report.problems]
    assert {c: h.n for c, h in report.chains.items()} == {log.chain: 2, own.chain: 1}
    assert report.principals == {log.chain: "coordinator", own.chain: "worker"}
    assert report.anchors == 1


async def test_no_role_but_the_admin_may_update_purge_or_delete_the_audit_streams(
    secure: Secure, buses: dict[str, Bus]
) -> None:
    names = buses[COORDINATOR].names
    audit, anchors = names.audit_stream, names.anchor_stream
    requests = [f"STREAM.DELETE.{audit}", f"STREAM.UPDATE.{audit}", f"STREAM.PURGE.{audit}"]
    requests.append(f"STREAM.DELETE.{anchors}")
    for role in (COORDINATOR, WORKER, CLIENT):
        user = await Watched.connect(secure.settings(role))
        try:
            for request in requests:
                subject = f"$JS.API.{request}"
                with pytest.raises(nats.errors.TimeoutError):
                    await user.nc.request(subject, b"{}", timeout=DENIED_S)
                await user.told("permissions violation", subject)
        finally:
            await user.close()
    for stream in (audit, anchors):
        config = (await buses[ADMIN].api(f"STREAM.INFO.{stream}"))["config"]
        assert config["deny_delete"]
        assert config["deny_purge"]
        assert config["max_msgs"] > 0
        assert config["max_msg_size"] > 0
    assert (await buses[ADMIN].api(f"STREAM.INFO.{audit}"))["config"]["max_age"] > 0
    # Control: the admin may (it deletes the anchors stream here; the coordinator
    # re-creates it, empty, at its next start).
    await buses[ADMIN].api(f"STREAM.DELETE.{anchors}")
    await buses[COORDINATOR].ensure_topology()
    assert await stored(buses[COORDINATOR], anchors) == 0


async def test_junk_on_the_coordinators_chain_never_costs_it_a_record(
    buses: dict[str, Bus], keys: Path
) -> None:
    coordinator, admin = buses[COORDINATOR], buses[ADMIN]
    log = await AuditLog.open(coordinator, coordinator.seal, "coord-1", scope=COORDINATOR)
    subject = admin.names.audit_subject(log.chain)
    lost, junk_before = appends.counts.get("lost", 0), appends.counts.get("junk", 0)
    junk: list[int] = []

    async def publish_junk(i: int) -> None:
        seq, _ = await admin.publish_raw(subject, b"junk %d" % i, {"Nats-Msg-Id": f"junk-{i}"})
        junk.append(seq)

    # Junk before every append: each one's expected last sequence is stale.
    for i in range(5):
        await publish_junk(i)
        await log.record(AuditKind.TOOL_CALLED, i=i)
    # And a flood while appending.
    stop = asyncio.Event()

    async def flood() -> None:
        i = 100
        while not stop.is_set():
            await publish_junk(i)
            i += 1

    flooding = asyncio.create_task(flood())
    try:
        for i in range(20):
            await log.record(AuditKind.TOOL_CALLED, i=5 + i)
    finally:
        stop.set()
        await flooding
    assert log.head is not None
    assert log.head.n == 25
    assert appends.counts.get("lost", 0) == lost
    assert appends.counts["junk"] > junk_before

    report = await verify_audit(admin, reader_seal(keys))
    assert report.chains[log.chain].n == 25
    # What is reported is the junk, each at its sequence, and nothing else.
    assert report.problems_total == len(junk)
    assert [p.seq for p in report.problems] == sorted(junk)[: len(report.problems)]  # a cap
    assert all("not an audit record" in p.what for p in report.problems)


async def test_deleting_and_recreating_the_audit_stream_is_reported_by_audit_verify(
    secure: Secure, buses: dict[str, Bus], keys: Path
) -> None:
    coordinator, admin = buses[COORDINATOR], buses[ADMIN]
    names = coordinator.names
    auditor = Auditor(coordinator, "coord-1")
    await auditor.start(role=COORDINATOR)  # keys.loaded, anchored
    for i in range(3):
        await auditor.note(AuditKind.INTERVENTION_APPLIED, workflow_id="wf-1", i=i)
    await auditor.close()  # anchored again: record 4
    code, out = verify_cli(secure, keys)
    assert code == 0, out
    assert "intact: 4 records in 1 chains (signatures checked; 2 anchors compared)" in out

    # The admin deletes the stream; the coordinator re-creates it at its next start.
    await admin.api(f"STREAM.DELETE.{names.audit_stream}")
    await coordinator.ensure_topology()
    code, out = verify_cli(secure, keys)
    assert code == 1, out
    chain = f"{COORDINATOR}.coord-1"
    assert f"stream {chain}: chain is gone (the anchor saw 4 records at #4)" in out
    assert "the stream was deleted and re-created" in out

    # The restarted coordinator goes on after its anchored head: the gap is now in
    # the stream itself, for anyone who verifies it.
    again = Auditor(coordinator, "coord-1")
    await again.start(role=COORDINATOR)
    await again.close()
    report = await verify_audit(admin, reader_seal(keys))
    assert report.chains[chain].n == 5
    found = [p.what for p in report.problems]
    assert "chain starts at record 5: records 1..4 are missing" in found, found


async def test_an_admin_deleting_both_streams_is_caught_by_an_anchor_file_kept_elsewhere(
    secure: Secure, buses: dict[str, Bus], keys: Path, tmp_path: Path
) -> None:
    coordinator, admin = buses[COORDINATOR], buses[ADMIN]
    names = coordinator.names
    auditor = Auditor(coordinator, "coord-1")
    await auditor.start(role=COORDINATOR)
    await auditor.note(AuditKind.APPROVAL_DECIDED, workflow_id="wf-1", approved=True)
    await auditor.close()
    kept = tmp_path / "elsewhere" / "anchor.json"
    kept.parent.mkdir()
    code, out = verify_cli(secure, keys, "--anchor", str(kept))
    assert code == 0, out

    for stream in (names.audit_stream, names.anchor_stream):
        await admin.api(f"STREAM.DELETE.{stream}")
    await coordinator.ensure_topology()
    code, out = verify_cli(secure, keys, "--anchor", str(kept))
    assert code == 1, out
    assert "chain is gone (the anchor saw 2 records at #2) (anchor: the anchor file)" in out


async def test_the_audit_stream_refuses_a_message_over_its_size_limit(
    buses: dict[str, Bus], keys: Path
) -> None:
    coordinator, admin = buses[COORDINATOR], buses[ADMIN]
    names = coordinator.names
    limit = coordinator.settings.audit_max_msg_size
    log = await AuditLog.open(coordinator, coordinator.seal, "coord-1", scope=COORDINATOR)
    subject = names.audit_subject(log.chain)
    with pytest.raises(TransportError, match="maximum"):
        await admin.publish_raw(subject, b"x" * (limit + 1), {"Nats-Msg-Id": "big-junk"})
    lost = appends.counts.get("lost", 0)
    with pytest.raises(TransportError, match="maximum"):
        await log.record(AuditKind.TOOL_CALLED, blob="y" * limit)
    assert appends.counts["lost"] == lost + 1  # counted, and raised for the caller to log
    # Control: the chain goes on, and the stream holds nothing but its records.
    await log.record(AuditKind.TOOL_CALLED, blob="y" * 100)
    report = await verify_audit(admin, reader_seal(keys))
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == 1
    assert report.chains[log.chain].n == 1


async def test_a_restarted_writer_whose_chain_ends_with_junk_follows_it_from_its_anchor(
    buses: dict[str, Bus], keys: Path
) -> None:
    coordinator, admin = buses[COORDINATOR], buses[ADMIN]
    log = await AuditLog.open(coordinator, coordinator.seal, "coord-1", scope=COORDINATOR)
    await log.record(AuditKind.KEYS_LOADED)
    assert await log.anchor() is not None  # record 1
    await log.record(AuditKind.TOOL_CALLED, i=2)
    head = await log.record(AuditKind.TOOL_CALLED, i=3)
    await log.close()
    subject = admin.names.audit_subject(log.chain)
    junk = [
        (await admin.publish_raw(subject, b"junk", {"Nats-Msg-Id": f"junk-{i}"}))[0]
        for i in range(3)
    ]
    again = await AuditLog.open(coordinator, coordinator.seal, "coord-1", scope=COORDINATOR)
    assert again.head == head  # records 2 and 3 followed from the anchor, junk stepped over
    assert (await again.record(AuditKind.TOOL_CALLED, i=4)).n == 4
    report = await verify_audit(admin, reader_seal(keys))
    assert report.chains[log.chain].n == 4
    assert [p.seq for p in report.problems] == junk

"""The audit trail on a real nats-server, with real keys (``init_keys``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.errors import ConfigError, TransportError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.audit import (
    AuditKind,
    AuditLog,
    ChainHead,
    build_record,
    iter_stored,
    read_audit,
    reader_seal,
    verify_audit,
)
from agenticflow.shared.security.seal import Identity, Seal, init_keys
from tests.integration.helpers import agenticflow

PRINCIPALS = [("coordinator", "coordinator"), ("worker-1", "worker"), ("worker-2", "worker")]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A key directory: trust store, data key, and a key per principal (no client key:
    an auditor needs none)."""
    directory = tmp_path / "keys"
    init_keys(directory, PRINCIPALS)
    return directory


@pytest.fixture
async def audit_bus(settings_for: Settings) -> AsyncIterator[Bus]:
    bus = await Bus.connect(settings_for, name="audit-tests")
    await bus.ensure_topology()
    yield bus
    await bus.close()


def sealed(keys: Path, principal: str) -> Seal:
    return Seal.from_dir(keys, principal)


def problems_at(report_json: dict[str, Any]) -> set[Any]:
    problems = report_json["problems"]
    assert isinstance(problems, list)
    return {p["seq"] for p in problems}


async def test_records_of_two_nodes_verify(audit_bus: Bus, keys: Path) -> None:
    worker = await AuditLog.open(audit_bus, sealed(keys, "worker-1"), "worker-node-1")
    coordinator = await AuditLog.open(audit_bus, sealed(keys, "coordinator"), "coord-node")
    await asyncio.gather(
        *(worker.record(AuditKind.TOOL_CALLED, workflow_id="wf-1", task_id=f"t{i}", tool="http")
          for i in range(10)),
        *(coordinator.record(AuditKind.INTERVENTION_APPLIED, workflow_id="wf-1", action="pause")
          for _ in range(5)),
    )  # fmt: skip
    await worker.record(AuditKind.TOOL_DENIED, tool="shell", reason="not permitted")
    await worker.close()
    await coordinator.close()

    report = await verify_audit(audit_bus, reader_seal(keys))
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == 16
    assert report.signatures_checked
    assert report.chains == {worker.chain: worker.head, coordinator.chain: coordinator.head}
    assert worker.head is not None
    assert worker.head.n == 11
    assert report.principals == {worker.chain: "worker-1", coordinator.chain: "coordinator"}

    # Without the data keys the bodies are unreadable, yet every hash is checked.
    keyless = await verify_audit(audit_bus, Seal(trust=reader_seal(keys).trust))
    assert keyless.ok
    assert keyless.unreadable == 16

    entries = await read_audit(audit_bus, reader_seal(keys), last=1)
    assert [(e.node, e.n, e.kind, e.signer) for e in entries] == [
        ("node.worker-node-1", 11, "tool.denied", "worker-1")
    ]
    assert entries[0].detail == {"tool": "shell", "reason": "not permitted"}
    with pytest.raises(TransportError):
        await worker.record(AuditKind.TOOL_CALLED)  # closed


async def test_a_restarted_writer_continues_its_chain(audit_bus: Bus, keys: Path) -> None:
    seal = sealed(keys, "worker-1")
    async with await AuditLog.open(audit_bus, seal, "w1") as first:
        await first.record(AuditKind.KEYS_LOADED, kid="abc")
        await first.record(AuditKind.TOOL_CALLED, tool="http")
    again = await AuditLog.open(audit_bus, seal, "w1")
    assert again.head == first.head
    head = await again.record(AuditKind.TOOL_CALLED, tool="http")
    assert head.n == 3
    assert (await verify_audit(audit_bus, reader_seal(keys))).ok


async def test_two_writers_on_one_chain_do_not_fork_it(audit_bus: Bus, keys: Path) -> None:
    seal = sealed(keys, "worker-1")
    one = await AuditLog.open(audit_bus, seal, "same-node")
    two = await AuditLog.open(audit_bus, seal, "same-node")
    for _ in range(3):
        await one.record(AuditKind.TOOL_CALLED, by="one")
        await two.record(AuditKind.TOOL_CALLED, by="two")  # refused once, then after one's
    assert two.head is not None
    assert two.head.n == 6
    report = await verify_audit(audit_bus, reader_seal(keys))
    assert report.ok, [str(p) for p in report.problems]
    assert report.chains["node.same-node"].n == 6


async def test_a_record_stored_by_an_attempt_that_seemed_to_fail_is_not_written_twice(
    audit_bus: Bus,
) -> None:
    # An unsigned, unencrypted seal and a fixed clock make the record deterministic,
    # so it can be stored ahead, as a lost acknowledgement would leave it.
    log = AuditLog(bus=audit_bus, seal=Seal(), node="w1", clock=lambda: 123)
    await log.record(AuditKind.TOOL_CALLED, call=1)
    assert log.head is not None
    subject, headers, body, _ = build_record(
        names=audit_bus.names, seal=Seal(), head=log.head, principal=log.principal,
        kind=AuditKind.TOOL_CALLED, ts_ns=123, detail={"call": 2},
    )  # fmt: skip
    await audit_bus.publish_raw(subject, body, headers)
    head = await log.record(AuditKind.TOOL_CALLED, call=2)  # refused: the chain moved
    assert head.n == 2
    report = await verify_audit(audit_bus, Seal())
    assert report.ok
    assert report.records == 2


async def test_the_server_refuses_to_delete_or_purge_audit_records(
    audit_bus: Bus, keys: Path
) -> None:
    log = await AuditLog.open(audit_bus, sealed(keys, "worker-1"), "w1")
    for _ in range(3):
        await log.record(AuditKind.TOOL_CALLED)
    stream = audit_bus.names.audit_stream
    with pytest.raises(TransportError, match="not permitted"):
        await audit_bus.delete_stored(stream, 2)
    with pytest.raises(TransportError, match="not permitted"):
        await audit_bus.api(f"STREAM.PURGE.{stream}", {})
    with pytest.raises(TransportError, match="not permitted"):
        await audit_bus.api(
            f"STREAM.PURGE.{stream}", {"filter": audit_bus.names.audit_subject(log.chain)}
        )
    config = (await audit_bus.api(f"STREAM.INFO.{stream}"))["config"]
    for flag in ("deny_delete", "deny_purge"):
        with pytest.raises(TransportError, match="can not cancel deny"):
            await audit_bus.api(f"STREAM.UPDATE.{stream}", {**config, flag: False})
    assert (await verify_audit(audit_bus, reader_seal(keys))).records == 3
    assert (await verify_audit(audit_bus, reader_seal(keys))).ok


async def test_forged_records_are_reported_with_their_sequence(audit_bus: Bus, keys: Path) -> None:
    node = "worker-node"
    log = await AuditLog.open(audit_bus, sealed(keys, "worker-1"), node)
    forged: list[int] = []

    async def forge(seal: Seal, head: ChainHead) -> None:
        subject, headers, body, _ = build_record(
            names=audit_bus.names, seal=seal, head=head, principal="worker-1",
            kind="tool.called", ts_ns=0, detail={"forged": True},
        )  # fmt: skip
        seq, _ = await audit_bus.publish_raw(subject, body, headers)
        forged.append(seq)

    def head() -> ChainHead:
        assert log.head is not None
        return log.head

    await log.record(AuditKind.TOOL_CALLED, tool="a")
    await log.record(AuditKind.TOOL_CALLED, tool="b")
    # Unsigned, though perfectly linked to the chain's head.
    await forge(Seal(), head())
    await log.record(AuditKind.TOOL_CALLED, tool="c")  # steps over it
    # Signed by a key the cluster does not trust.
    await forge(Seal(identity=Identity.generate("worker-1", "worker")), head())
    await log.record(AuditKind.TOOL_CALLED, tool="d")
    # A valid signature (the node's own key), but a wrong previous hash.
    await forge(sealed(keys, "worker-1"), ChainHead(log.chain, head().n, head().seq, "00" * 32))
    await log.record(AuditKind.TOOL_CALLED, tool="e")

    report = await verify_audit(audit_bus, reader_seal(keys))
    assert not report.ok
    assert [p.seq for p in report.problems] == forged, [str(p) for p in report.problems]
    what = [p.what for p in report.problems]
    assert "unsigned" in what[0]
    assert "unknown key" in what[1]
    assert "does not link" in what[2]


async def test_records_removed_by_the_streams_retention_are_a_note_not_a_problem(
    audit_bus: Bus, keys: Path
) -> None:
    log = await AuditLog.open(audit_bus, sealed(keys, "worker-1"), "w1")
    for _ in range(5):
        await log.record(AuditKind.TOOL_CALLED)
    stream = audit_bus.names.audit_stream
    config = (await audit_bus.api(f"STREAM.INFO.{stream}"))["config"]
    assert config["max_age"] > 0  # the documented retention
    assert config["max_msgs"] > 0  # (a count: a byte limit is reserved on the server)
    await audit_bus.api(f"STREAM.UPDATE.{stream}", {**config, "max_msgs": 2})  # an admin may
    report = await verify_audit(audit_bus, reader_seal(keys))
    assert report.ok, [str(p) for p in report.problems]
    assert report.notes == ["stream sequences 1..3 were removed by the stream's retention limits"]


async def rebuild(bus: Bus, *, drop_last: bool) -> None:
    """What an administrator can do despite deny_delete: delete the whole stream
    and re-publish copies of its records (here without the newest one)."""
    stream = bus.names.audit_stream
    last = int((await bus.api(f"STREAM.INFO.{stream}"))["state"]["last_seq"])
    records = [r async for r in iter_stored(bus, end_seq=last)]
    await bus.api(f"STREAM.DELETE.{stream}")
    await bus.ensure_topology()
    for record in records[:-1] if drop_last else records:
        headers = {k: v for k, v in record.headers.items() if not k.startswith("Nats-Expected")}
        await bus.publish_raw(record.subject, record.body, headers)


async def test_cli_verify_exits_1_on_a_tampered_trail_and_0_on_an_intact_one(
    audit_bus: Bus, keys: Path, settings_for: Settings, tmp_path: Path
) -> None:
    env = {"AGENTICFLOW_SECURITY_DIR": str(keys)}
    log = await AuditLog.open(audit_bus, sealed(keys, "worker-1"), "w1")
    await log.record(AuditKind.TOOL_CALLED, workflow_id="wf-9", task_id="t1", tool="http")
    await log.record(AuditKind.APPROVAL_DECIDED, workflow_id="wf-9", approved=True, by="alice")

    intact = agenticflow(settings_for, "audit", "verify", env=env)
    assert intact.returncode == 0, intact.stderr
    assert "intact: 2 records in 1 chains (signatures checked;" in intact.stdout
    shown = agenticflow(settings_for, "audit", "show", "--last", "1", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert (entry["kind"], entry["detail"], entry["signer"]) == (
        "approval.decided", {"approved": True, "by": "alice"}, "worker-1",
    )  # fmt: skip

    anchor = tmp_path / "anchor.json"
    first = agenticflow(settings_for, "audit", "verify", "--anchor", str(anchor), env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(anchor.read_text())["chains"]["node.w1"]["n"] == 2

    # Truncation of a rebuilt stream: invisible without the anchor, caught with it.
    await rebuild(audit_bus, drop_last=True)
    assert agenticflow(settings_for, "audit", "verify", env=env).returncode == 0
    truncated = agenticflow(settings_for, "audit", "verify", "--anchor", str(anchor), env=env)
    assert truncated.returncode == 1
    assert "newest records were removed" in truncated.stdout
    assert json.loads(anchor.read_text())["chains"]["node.w1"]["n"] == 2  # kept as it was

    unsigned = Seal()
    subject, headers, body, _ = build_record(
        names=audit_bus.names, seal=unsigned, head=ChainHead("node.w1", 1, 1, "00" * 32),
        principal="w1", kind="tool.called", ts_ns=0,
    )  # fmt: skip
    seq, _ = await audit_bus.publish_raw(subject, body, headers)
    tampered = agenticflow(settings_for, "audit", "verify", "--json", env=env)
    assert tampered.returncode == 1, tampered.stderr
    report = json.loads(tampered.stdout)
    assert report["ok"] is False
    assert problems_at(report) == {seq}
    human = agenticflow(settings_for, "audit", "verify", env=env)
    assert human.returncode == 1
    assert f"#{seq} node.w1: record 2 refused: unsigned message" in human.stdout
    assert "TAMPERED: 1 problem" in human.stdout


async def test_a_node_and_principal_are_checked(audit_bus: Bus, keys: Path) -> None:
    with pytest.raises(ConfigError):
        AuditLog(bus=audit_bus, seal=Seal(), node="a.b")
    with pytest.raises(ConfigError):
        AuditLog(bus=audit_bus, seal=sealed(keys, "worker-1"), node="n", principal="alice")
    assert AuditLog(bus=audit_bus, seal=sealed(keys, "worker-1"), node="n").principal == "worker-1"
    assert AuditLog(bus=audit_bus, seal=Seal(), node="n").principal == "n"

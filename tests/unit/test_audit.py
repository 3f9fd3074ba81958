"""The audit trail's verification, as a pure function over generated streams.

A generated stream is what the server would store for a sequence of appends by
up to three nodes (``build_record``, the writer's own code, with stream
sequences 1, 2, 3...). Each tampering an attacker could do to the stored
stream — alter, remove, reorder, insert — is applied at a generated position
and must be reported; where a check only covers part of the cases (a chain's
newest record without a signature or an anchor), the property says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.security.audit import (
    GENESIS,
    H_PREV,
    Anchor,
    AuditReport,
    AuditVerifier,
    ChainHead,
    StoredRecord,
    build_anchor,
    build_record,
    config_problems,
    genesis,
    has_retention,
    load_anchor,
    read_anchor,
    read_entry,
    record_hash,
    save_anchor,
    verify_records,
)
from agenticflow.shared.security.seal import (
    H_ENC,
    H_SIG,
    H_TS,
    DataKeys,
    Identity,
    Seal,
    TrustStore,
)
from agenticflow.shared.wire.codec import H_MSG_ID, pack, unpack
from agenticflow.shared.wire.names import Names

NAMES = Names("ut")
NODES = ("coord-1", "worker-a", "worker-b")
IDENTITIES = {
    "coord-1": Identity.generate("coordinator", "coordinator"),
    "worker-a": Identity.generate("worker-a", "worker"),
    "worker-b": Identity.generate("worker-b", "worker"),
}
INTRUDER = Identity.generate("worker-a", "worker")
"""Claims to be worker-a, but its key is not in the trust store."""
TRUST = TrustStore({i.kid: i.trusted() for i in IDENTITIES.values()})
DATA = DataKeys.generate()

PROPS = settings(
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

plans = st.lists(st.integers(0, len(NODES) - 1), min_size=1, max_size=14)
"""Which node appends each record, in stream order."""


@dataclasses.dataclass(frozen=True)
class Mode:
    signed: bool
    encrypted: bool

    def writer(self, node: str) -> Seal:
        return Seal(
            identity=IDENTITIES[node] if self.signed else None,
            data_keys=DATA if self.encrypted else None,
        )

    def verifier(self) -> Seal:
        return Seal(trust=TRUST if self.signed else None, data_keys=DATA)


modes = st.builds(Mode, signed=st.booleans(), encrypted=st.booleans())
SIGNED = st.builds(Mode, signed=st.just(True), encrypted=st.booleans())
UNSIGNED = st.builds(Mode, signed=st.just(False), encrypted=st.booleans())


def append(records: list[StoredRecord], heads: dict[str, ChainHead], node: str, seal: Seal) -> None:
    """What AuditLog.record stores: the next record of ``node``'s chain."""
    head = heads.get(node, genesis(node))
    seq = len(records) + 1
    subject, headers, body, digest = build_record(
        names=NAMES,
        seal=seal,
        head=head,
        principal=seal.signer or node,
        kind="tool.called",
        ts_ns=1_700_000_000_000_000_000 + seq,
        workflow_id="wf-1",
        task_id=f"t{seq}",
        detail={"tool": "http", "seq": seq},
    )
    stored = int(headers[H_TS]) + 1_000_000 if H_TS in headers else None
    records.append(StoredRecord(seq, subject, headers, body, stored))
    heads[node] = ChainHead(node, head.n + 1, seq, digest.hex())


def stream(plan: list[int], mode: Mode) -> tuple[list[StoredRecord], dict[str, ChainHead]]:
    """The stored records of a plan, and each chain's head."""
    records: list[StoredRecord] = []
    heads: dict[str, ChainHead] = {}
    for who in plan:
        append(records, heads, NODES[who], mode.writer(NODES[who]))
    return records, heads


def verify(
    records: list[StoredRecord],
    mode: Mode,
    *,
    last_seq: int | None = None,
    anchor: Mapping[str, ChainHead] | None = None,
) -> AuditReport:
    return verify_records(
        records, names=NAMES, seal=mode.verifier(), last_seq=last_seq, anchor=anchor
    )


def node_of(record: StoredRecord) -> str:
    node = NAMES.audit_node(record.subject)
    assert node is not None
    return node


def is_head(records: list[StoredRecord], index: int) -> bool:
    """Whether no later record belongs to the same chain."""
    node = node_of(records[index])
    return all(node_of(r) != node for r in records[index + 1 :])


def renumbered(records: list[StoredRecord]) -> list[StoredRecord]:
    """The records re-stored as a rebuilt stream: sequences 1, 2, 3..."""
    return [dataclasses.replace(r, seq=i) for i, r in enumerate(records, start=1)]


def seqs_named(report: AuditReport) -> set[int | None]:
    return {p.seq for p in report.problems}


# Intact streams -------------------------------------------------------------
@PROPS
@given(plan=plans, mode=modes)
def test_intact_streams_verify(plan: list[int], mode: Mode) -> None:
    records, heads = stream(plan, mode)
    report = verify(records, mode)
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == len(plan)
    assert dict(report.chains) == heads
    assert report.signatures_checked == mode.signed
    assert report.unreadable == 0
    if mode.signed:
        assert set(report.principals.values()) <= {"coordinator", "worker-a", "worker-b"}
    # With its heads as the anchor, the same stream verifies again.
    assert verify(records, mode, anchor=heads).ok


@PROPS
@given(plan=plans, mode=modes)
def test_without_data_keys_records_are_still_hash_checked(plan: list[int], mode: Mode) -> None:
    records, heads = stream(plan, mode)
    keyless = Seal(trust=TRUST if mode.signed else None)
    report = verify_records(records, names=NAMES, seal=keyless)
    assert report.ok, [str(p) for p in report.problems]
    assert report.unreadable == (len(plan) if mode.encrypted else 0)
    assert dict(report.chains) == heads
    tampered = list(records)
    tampered[0] = dataclasses.replace(records[0], body=flip(records[0].body, 0))
    if mode.signed or not is_head(records, 0):
        assert not verify_records(tampered, names=NAMES, seal=keyless).ok


# Altered records ------------------------------------------------------------
def flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


alterations = st.one_of(
    st.tuples(st.just("body-byte"), st.integers(0, 10_000)),
    st.tuples(
        st.just("body-field"),
        st.sampled_from(
            [
                "v",
                "n",
                "prev",
                "prev_seq",
                "ts",
                "node",
                "principal",
                "kind",
                "workflow_id",
                "task_id",
                "detail",
            ]
        ),
    ),
    st.tuples(st.just("header"), st.integers(0, 100)),
    st.tuples(st.just("drop-header"), st.integers(0, 100)),
    st.tuples(st.just("subject"), st.integers(1, 2)),
)


def changed(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return "x"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return {"altered": True}


def alter(record: StoredRecord, how: tuple[str, Any], mode: Mode) -> StoredRecord:
    what, arg = how
    headers = dict(record.headers)
    names = sorted(headers)
    if what == "body-byte" or (what == "body-field" and mode.encrypted):
        at = arg if isinstance(arg, int) else len(str(arg))
        return dataclasses.replace(record, body=flip(record.body, at))
    if what == "body-field":
        body = unpack(record.body)
        body[arg] = changed(body[arg])
        return dataclasses.replace(record, body=pack(body))
    if what == "header":
        name = names[int(arg) % len(names)]
        headers[name] = changed(headers[name])
        return dataclasses.replace(record, headers=headers)
    if what == "drop-header":
        del headers[names[int(arg) % len(names)]]
        return dataclasses.replace(record, headers=headers)
    other = NODES[(NODES.index(node_of(record)) + int(arg)) % len(NODES)]
    return dataclasses.replace(record, subject=NAMES.audit_subject(other))


@PROPS
@given(plan=plans, mode=SIGNED, pick=st.integers(0, 1000), how=alterations)
def test_any_alteration_of_a_signed_record_is_reported_at_its_sequence(
    plan: list[int], mode: Mode, pick: int, how: tuple[str, Any]
) -> None:
    records, _ = stream(plan, mode)
    index = pick % len(records)
    records[index] = alter(records[index], how, mode)
    report = verify(records, mode)
    assert not report.ok
    assert index + 1 in seqs_named(report)


@PROPS
@given(plan=plans, mode=UNSIGNED, pick=st.integers(0, 1000), how=alterations)
def test_the_hash_chain_alone_reports_any_altered_record_but_a_chain_head(
    plan: list[int], mode: Mode, pick: int, how: tuple[str, Any]
) -> None:
    records, heads = stream(plan, mode)
    index = pick % len(records)
    records[index] = alter(records[index], how, mode)
    anchored = verify(records, mode, anchor=heads)
    assert not anchored.ok
    authenticated = mode.encrypted and how[0].startswith("body")  # AES-GCM's tag
    if not is_head(records, index) or how[0] == "subject" or authenticated:
        report = verify(records, mode)
        assert not report.ok
        # Reported at the record or at its successor, which no longer links to it.
        assert seqs_named(report) - {None}


@PROPS
@given(plan=plans, pick=st.integers(0, 1000))
def test_every_header_the_record_carries_is_covered_by_its_hash(plan: list[int], pick: int) -> None:
    records, _ = stream(plan, Mode(signed=True, encrypted=True))
    record = records[pick % len(records)]
    base = record_hash(GENESIS, record.subject, record.headers, record.body)
    for name in record.headers:
        other = {**record.headers, name: record.headers[name] + "x"}
        assert record_hash(GENESIS, record.subject, other, record.body) != base, name
    assert record_hash(bytes(31) + b"\x01", record.subject, record.headers, record.body) != base
    assert record_hash(GENESIS, record.subject + "x", record.headers, record.body) != base
    assert record_hash(GENESIS, record.subject, record.headers, record.body + b"x") != base


# Removed records --------------------------------------------------------------
@PROPS
@given(plan=plans, mode=modes, pick=st.integers(0, 1000))
def test_a_removed_record_leaves_a_hole_that_is_reported(
    plan: list[int], mode: Mode, pick: int
) -> None:
    records, _ = stream(plan, mode)
    index = pick % len(records)
    del records[index]
    report = verify(records, mode, last_seq=len(plan))
    assert not report.ok
    assert f"stream sequences {index + 1} are missing (deleted)" in [
        p.what for p in report.problems
    ]


@PROPS
@given(plan=plans, mode=modes, pick=st.integers(0, 1000))
def test_a_record_removed_from_a_rebuilt_stream_is_reported_unless_nothing_names_it(
    plan: list[int], mode: Mode, pick: int
) -> None:
    records, heads = stream(plan, mode)
    index = pick % len(records)
    linked = not all(is_head(records, i) for i in range(index, len(records)))
    rebuilt = renumbered(records[:index] + records[index + 1 :])
    assert not verify(rebuilt, mode, anchor=heads).ok
    if linked:
        report = verify(rebuilt, mode)
        assert not report.ok
        if not is_head(records, index):
            n = records[index].headers[H_MSG_ID].split(":")[1]
            assert any(f"records {n} are missing" in p.what for p in report.problems)


@PROPS
@given(plan=plans, mode=modes, pick=st.integers(0, 1000))
def test_a_whole_chain_removed_is_reported(plan: list[int], mode: Mode, pick: int) -> None:
    records, heads = stream(plan, mode)
    gone = node_of(records[pick % len(records)])
    kept = [r for r in records if node_of(r) != gone]
    assert not verify(kept, mode, last_seq=len(plan)).ok  # holes
    assert not verify(renumbered(kept), mode, anchor=heads).ok


def test_records_removed_from_the_start_by_limits_are_reported() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, _ = stream([0, 1, 0, 1, 2], mode)
    report = verify_records(records[2:], names=NAMES, seal=mode.verifier(), first_seq=3)
    assert [str(p) for p in report.problems] == [
        "stream: stream sequences 1..2 are gone (purged, or removed by limits added to the stream)"
    ]


# Reordered records ----------------------------------------------------------
@PROPS
@given(plan=plans, mode=modes, picks=st.tuples(st.integers(0, 1000), st.integers(0, 1000)))
def test_swapped_records_are_reported_unless_both_end_their_chains(
    plan: list[int], mode: Mode, picks: tuple[int, int]
) -> None:
    records, heads = stream(plan, mode)
    i, j = sorted(p % len(records) for p in picks)
    if i == j:
        return
    same_chain = node_of(records[i]) == node_of(records[j])
    both_heads = is_head(records, i) and is_head(records, j)
    swapped = list(records)
    # The contents change places; the stream sequences stay where they are.
    swapped[i] = dataclasses.replace(records[j], seq=records[i].seq)
    swapped[j] = dataclasses.replace(records[i], seq=records[j].seq)
    assert not verify(swapped, mode, anchor=heads).ok
    if same_chain or not both_heads:
        assert not verify(swapped, mode).ok


# Inserted and forged records ------------------------------------------------
forgers = st.sampled_from(["unsigned", "intruder", "other-principal"])


@PROPS
@given(
    plan=plans,
    encrypted=st.booleans(),
    pick=st.integers(0, 1000),
    forger=forgers,
    at_end=st.booleans(),
)
def test_an_inserted_forged_record_is_reported_at_its_sequence(
    plan: list[int], encrypted: bool, pick: int, forger: str, at_end: bool
) -> None:
    mode = Mode(signed=True, encrypted=encrypted)
    records, heads = stream(plan, mode)
    victim = node_of(records[pick % len(records)])
    seal = {
        "unsigned": Seal(data_keys=DATA if encrypted else None),
        "intruder": Seal(identity=INTRUDER, data_keys=DATA if encrypted else None),
        # A trusted key, but not the one this chain is written with.
        "other-principal": Seal(
            identity=IDENTITIES[NODES[(NODES.index(victim) + 1) % len(NODES)]],
            data_keys=DATA if encrypted else None,
        ),
    }[forger]
    # The forger links its record perfectly to the chain's head as stored.
    forged: list[StoredRecord] = list(records)
    append(forged, dict(heads), victim, seal)
    extra = forged.pop()
    position = len(records) if at_end else pick % len(records)
    tampered = renumbered([*records[:position], extra, *records[position:]])
    report = verify(tampered, mode)
    assert not report.ok
    assert position + 1 in seqs_named(report)


def test_a_record_signed_by_another_trusted_principal_is_reported() -> None:
    # worker-b's key is trusted, but coord-1's chain is written by the coordinator.
    mode = Mode(signed=True, encrypted=False)
    records, heads = stream([0, 1, 0], mode)
    append(records, heads, "coord-1", mode.writer("worker-b"))
    report = verify(records, mode)
    assert [str(p) for p in report.problems] == [
        "#4 coord-1: record 3 is signed by worker-b, but the chain is written by coordinator"
    ]


@PROPS
@given(plan=plans, mode=UNSIGNED, pick=st.integers(0, 1000))
def test_a_copy_of_a_record_inserted_later_is_reported_as_a_repeat(
    plan: list[int], mode: Mode, pick: int
) -> None:
    records, _ = stream(plan, mode)
    index = pick % len(records)
    tampered = renumbered([*records, records[index]])
    report = verify(tampered, mode)
    assert not report.ok
    assert any(p.seq == len(tampered) and "repeated" in p.what for p in report.problems)


def test_every_alteration_of_every_signed_record_is_reported_at_its_sequence() -> None:
    # Exhaustive over a small stream, so no header depends on the generator's luck.
    for encrypted in (False, True):
        mode = Mode(signed=True, encrypted=encrypted)
        records, _ = stream([0, 1, 0, 2, 1], mode)
        for index, record in enumerate(records):
            hows: list[tuple[str, Any]] = [("body-byte", 0), ("body-byte", 40), ("subject", 1)]
            hows += [("header", i) for i in range(len(record.headers))]
            hows += [("drop-header", i) for i in range(len(record.headers))]
            for how in hows:
                tampered = list(records)
                tampered[index] = alter(record, how, mode)
                assert index + 1 in seqs_named(verify(tampered, mode)), (encrypted, index, how)


def test_a_signature_with_junk_appended_is_refused() -> None:
    # Ed25519 verifies it (the decoder skips the junk), but it is not what was stored.
    mode = Mode(signed=True, encrypted=False)
    records, _ = stream([0], mode)
    junk = {**records[0].headers, H_SIG: records[0].headers[H_SIG] + "!"}
    report = verify([dataclasses.replace(records[0], headers=junk)], mode)
    assert [(p.seq, "not canonical" in p.what) for p in report.problems] == [(1, True)]


def test_the_newest_record_of_an_unsigned_chain_is_checked_as_far_as_it_can_be() -> None:
    # Without signatures nothing follows a chain's newest record; what it says
    # about itself must still be consistent.
    mode = Mode(signed=False, encrypted=False)
    records, _ = stream([0], mode)
    record = records[0]

    def problems(**change: Any) -> list[str]:
        report = verify([dataclasses.replace(record, **change)], mode)
        return [p.what for p in report.problems if p.seq == 1]

    assert any("AF-Type" in p for p in problems(headers={**record.headers, "AF-Type": "task"}))
    moved = problems(subject=NAMES.audit_subject("worker-a"))
    assert any("is not a record id of chain worker-a" in p for p in moved)
    body = unpack(record.body)
    assert any("body says n=" in p for p in problems(body=pack({**body, "n": 2})))
    linked = {**record.headers, H_PREV: f"0:{'11' * 32}"}
    assert any("genesis" in p for p in problems(headers=linked))
    # The genesis check also holds where the body cannot be read.
    encrypted, _ = stream([0], Mode(signed=False, encrypted=True))
    keyless = verify_records(
        [
            dataclasses.replace(
                encrypted[0], headers={**encrypted[0].headers, H_PREV: linked[H_PREV]}
            )
        ],
        names=NAMES,
        seal=Seal(),
    )
    assert [("genesis" in p.what, p.seq) for p in keyless.problems] == [(True, 1)]


def test_a_validly_signed_record_must_agree_with_its_headers() -> None:
    # What a key holder (or a buggy writer) could sign: a body that contradicts
    # the chain position its headers give.
    mode = Mode(signed=True, encrypted=False)
    records, heads = stream([0], mode)
    seal = mode.writer("coord-1")
    subject, headers, plain, _ = build_record(
        names=NAMES, seal=Seal(), head=heads["coord-1"], principal="coordinator",
        kind="tool.called", ts_ns=5,
    )  # fmt: skip
    body = unpack(plain)
    body["principal"] = "worker-a"
    signed = seal.close(subject, headers, pack(body))
    report = verify([*records, StoredRecord(2, subject, headers, signed)], mode)
    assert [(p.seq, "body says principal='worker-a'" in p.what) for p in report.problems] == [
        (2, True)
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, _ = stream([0, 0, 0, 0, 0, 0], mode)
    records[1] = alter(records[1], ("body-byte", 3), mode)
    records[4] = alter(records[4], ("body-byte", 3), mode)
    report = verify(records, mode)
    assert {2, 5} <= seqs_named(report)
    assert report.problems_total == len(report.problems)


def test_problems_beyond_the_cap_are_counted() -> None:
    mode = Mode(signed=False, encrypted=False)
    records, _ = stream([0] * 6, mode)
    verifier = AuditVerifier(names=NAMES, seal=mode.verifier(), max_problems=2)
    for record in records:
        verifier.feed(dataclasses.replace(record, subject="ut.elsewhere"))
    report = verifier.finish(last_seq=6)
    assert len(report.problems) == 2
    assert report.problems_total == 6


def test_a_replayed_copy_stored_long_after_signing_is_reported() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, _ = stream([0, 1], mode)
    late = dataclasses.replace(records[1], stored_ns=(records[1].stored_ns or 0) + 10**12)
    report = verify([records[0], late], mode)
    assert [p.seq for p in report.problems] == [2]
    assert "re-published" in report.problems[0].what


# Reading, anchors and configuration -----------------------------------------------
def test_entries_read_what_the_seal_can() -> None:
    mode = Mode(signed=True, encrypted=True)
    records, _ = stream([1], mode)
    entry = read_entry(NAMES, mode.verifier(), records[0])
    assert entry.error is None
    assert (entry.node, entry.n, entry.kind, entry.signer) == (
        "worker-a",
        1,
        "tool.called",
        "worker-a",
    )
    assert entry.detail == {"tool": "http", "seq": 1}
    assert entry.to_json()["workflow_id"] == "wf-1"
    keyless = read_entry(NAMES, Seal(trust=TRUST), records[0])
    assert keyless.detail is None
    assert keyless.signer == "worker-a"
    assert keyless.error is not None
    assert "data key" in keyless.error
    forged = read_entry(NAMES, mode.verifier(), alter(records[0], ("body-byte", 0), mode))
    assert forged.error is not None
    assert "bad signature" in forged.error


def test_anchor_round_trip(tmp_path: Path) -> None:
    mode = Mode(signed=False, encrypted=False)
    records, heads = stream([0, 1, 1], mode)
    path = tmp_path / "anchor.json"
    assert load_anchor(path) == {}
    save_anchor(path, verify(records, mode))
    assert load_anchor(path) == heads
    path.write_text("{}")
    with pytest.raises(ConfigError):
        load_anchor(path)


def test_a_stream_that_allows_deletes_is_reported() -> None:
    assert config_problems({"deny_delete": True, "deny_purge": True}) == []
    assert len(config_problems({"deny_purge": True})) == 1
    assert len(config_problems({})) == 2


def test_records_carry_the_chain_link_in_headers_and_body() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, heads = stream([0, 0], mode)
    first, second = records
    assert first.headers[H_MSG_ID] == f"coord-1:1:{hashlib.sha256(first.body).hexdigest()[:16]}"
    assert first.headers[H_PREV] == f"0:{GENESIS.hex()}"
    digest = record_hash(GENESIS, first.subject, first.headers, first.body).hex()
    assert second.headers[H_PREV] == f"1:{digest}"
    body = unpack(second.body)
    assert (body["n"], body["prev"], body["prev_seq"]) == (2, digest, 1)
    assert body["principal"] == "coordinator"
    assert H_SIG in second.headers
    assert heads["coord-1"].n == 2


def test_build_record_refuses_a_bad_kind() -> None:
    with pytest.raises(ConfigError):
        build_record(
            names=NAMES, seal=Seal(), head=genesis("n1"), principal="p", kind="Tool Called",
            ts_ns=0,
        )  # fmt: skip


# Scoped chains and signed anchors (issue 20) ---------------------------------
def test_a_chain_is_named_by_its_writers_scope_and_node() -> None:
    chain = NAMES.audit_chain("worker-gpu", "n1")
    assert chain == "worker-gpu.n1"
    assert NAMES.audit_subject(chain) == "ut.audit.worker-gpu.n1"
    assert NAMES.audit_node("ut.audit.worker-gpu.n1") == chain
    assert NAMES.audit_node("ut.audit.n1") == "n1"  # an earlier version's chain
    for subject in ("ut.audit.a.b.c", "ut.audit.", "ut.audit.a..b", "ut.audit.a b", "ut.evt.x"):
        assert NAMES.audit_node(subject) is None, subject
    assert NAMES.anchor_chain(NAMES.anchor_subject(chain)) == chain
    assert NAMES.anchor_chain("ut.anchor.a.b.c") is None
    for scope, node in (("a.b", "n1"), ("", "n1"), ("s", "n>"), ("s", "")):
        with pytest.raises(ConfigError):
            NAMES.audit_chain(scope, node)


def signed_anchor(node: str, head: ChainHead, *, seq: int = 1, seal: Seal | None = None) -> Anchor:
    """``head`` anchored by ``node`` (or by ``seal``) and read back as an auditor would."""
    subject, headers, body = build_anchor(
        names=NAMES, seal=seal or Mode(True, False).writer(node), head=head, ts_ns=1
    )
    stored = int(headers[H_TS]) + 1_000_000 if H_TS in headers else None
    found = read_anchor(
        NAMES, Mode(True, True).verifier(), StoredRecord(seq, subject, headers, body, stored)
    )
    assert isinstance(found, Anchor), found
    return found


def test_an_anchor_is_signed_never_encrypted_and_read_with_the_trust_store_alone() -> None:
    head = ChainHead("coord-1", 7, 12, "ab" * 32)
    writer = Seal(identity=IDENTITIES["coord-1"], data_keys=DATA)
    subject, headers, body = build_anchor(names=NAMES, seal=writer, head=head, ts_ns=5)
    assert subject == "ut.anchor.coord-1"
    assert H_ENC not in headers
    assert unpack(body)["hash"] == head.hash
    found = read_anchor(NAMES, Seal(trust=TRUST), StoredRecord(3, subject, headers, body))
    assert found == Anchor(head, "#3 of UT_AUDIT_ANCHORS", "coordinator", 5)


def test_forged_anchors_are_refused_with_the_reason() -> None:
    head = ChainHead("worker-a.n1", 3, 9, "cd" * 32)
    trusted = Seal(trust=TRUST)

    def read(seal: Seal, **change: Any) -> Anchor | str:
        subject, headers, body = build_anchor(names=NAMES, seal=seal, head=head, ts_ns=1)
        record = StoredRecord(1, change.get("subject", subject), headers, change.get("body", body))
        return read_anchor(NAMES, trusted, record)

    own = Seal(identity=IDENTITIES["worker-a"])
    assert isinstance(read(own), Anchor)
    assert "unsigned" in str(read(Seal()))
    assert "unknown key" in str(read(Seal(identity=INTRUDER)))
    moved = read(own, subject=NAMES.anchor_subject("worker-a.n2"))
    assert "bad signature" in str(moved)  # bound to its chain's subject
    altered = pack({"v": 1, "chain": head.node, "n": 99, "seq": 9, "hash": head.hash, "ts": 1})
    assert "bad signature" in str(read(own, body=altered))
    # Validly signed, but not a chain head of its subject's chain.
    for body in (
        {"v": 1, "chain": "worker-a.n2", "n": 3, "seq": 9, "hash": head.hash, "ts": 1},
        {"v": 1, "chain": head.node, "n": 0, "seq": 9, "hash": head.hash, "ts": 1},
        {"v": 1, "chain": head.node, "n": 3, "seq": 9, "hash": "xyz", "ts": 1},
    ):
        subject = NAMES.anchor_subject(head.node)
        headers = {H_MSG_ID: "m", "AF-Type": "audit"}
        sealed = own.close(subject, headers, pack(body))
        found = read_anchor(NAMES, trusted, StoredRecord(1, subject, headers, sealed))
        assert found == "not a chain head of its subject's chain (malformed)", body


@PROPS
@given(plan=plans, mode=SIGNED, cut=st.integers(0, 1000))
def test_chains_agree_with_every_anchor_of_their_history(
    plan: list[int], mode: Mode, cut: int
) -> None:
    records, _ = stream(plan, mode)
    earlier = records[: cut % len(plan) + 1]  # the heads of a while ago
    anchors = [signed_anchor(node, head) for node, head in verify(earlier, mode).chains.items()]
    report = verify_records(records, names=NAMES, seal=mode.verifier(), anchors=anchors)
    assert report.ok, [str(p) for p in report.problems]
    assert report.anchors == len(anchors)


@PROPS
@given(plan=plans, mode=SIGNED)
def test_a_deleted_and_recreated_stream_is_reported_from_the_anchors(
    plan: list[int], mode: Mode
) -> None:
    _, heads = stream(plan, mode)
    anchors = [signed_anchor(node, head) for node, head in heads.items()]
    # The stream deleted and re-created: every chain starts again at record 1.
    again, _ = stream(sorted(set(plan)), mode)
    report = verify_records(again, names=NAMES, seal=mode.verifier(), anchors=anchors)
    for node, head in heads.items():
        found = [p.what for p in report.problems if p.chain == node]
        if head.n == 1:
            # Record 1 again, at another sequence or with another hash.
            assert found, node
            continue
        assert len(found) == 1, found
        assert f"the anchor saw {head.n}" in found[0]
        assert "newest records were removed" in found[0]
        if head.seq > len(again):
            assert "deleted and re-created" in found[0]


def test_a_chain_gone_with_the_stream_is_reported_from_its_anchor() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, heads = stream([0, 1, 0, 1], mode)
    anchor = signed_anchor("worker-a", heads["worker-a"])
    kept = [r for r in records if node_of(r) == "coord-1"]
    report = verify_records(renumbered(kept), names=NAMES, seal=mode.verifier(), anchors=[anchor])
    assert [str(p) for p in report.problems] == [
        "stream worker-a: chain is gone (the anchor saw 2 records at #4) "
        "(anchor: #1 of UT_AUDIT_ANCHORS); the anchor names #4, past the stream's last #2: "
        "the stream was deleted and re-created"
    ]


def test_an_anchor_signed_by_another_principal_is_reported_and_not_trusted() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, _ = stream([0, 1, 1], mode)
    # worker-b claims worker-a's chain went further than it did.
    claim = ChainHead("worker-a", 9, 30, "ee" * 32)
    forged = signed_anchor("worker-b", claim)
    report = verify_records(records, names=NAMES, seal=mode.verifier(), anchors=[forged])
    assert [str(p) for p in report.problems] == [
        "stream worker-a: anchor #1 of UT_AUDIT_ANCHORS is signed by worker-b, but the chain "
        "is written by worker-a: not trusted"
    ]


def test_records_removed_by_retention_are_noted_and_anchors_before_them_too() -> None:
    mode = Mode(signed=True, encrypted=False)
    records, heads = stream([0, 1, 0, 2, 0], mode)
    anchors = [signed_anchor("worker-a", heads["worker-a"])]  # record 1 at #2
    kept = records[2:]  # sequences 1..2 removed by max_age or max_bytes
    report = verify_records(
        kept, names=NAMES, seal=mode.verifier(), first_seq=3, anchors=anchors, retention=True
    )
    assert report.ok, [str(p) for p in report.problems]
    assert report.notes == [
        "stream sequences 1..2 were removed by the stream's retention limits",
        "chain worker-a: its records up to 1 (#2) were removed by the stream's retention",
    ]
    # Without retention limits the same stream is missing records.
    assert not verify_records(kept, names=NAMES, seal=mode.verifier(), first_seq=3).ok


def test_has_retention_reads_the_stream_limits() -> None:
    assert not has_retention({"max_age": 0, "max_bytes": -1, "max_msgs": -1})
    assert has_retention({"max_age": 86400 * 10**9})
    assert has_retention({"max_bytes": 1 << 30})
    assert has_retention({"max_msgs": 5})


def test_a_chains_scope_binds_the_role_of_the_key_that_may_write_and_anchor_it() -> None:
    mode = Mode(signed=True, encrypted=False)
    for chain, node, wrong in (
        ("coordinator.c1", "worker-a", "only a coordinator's key"),
        ("worker-gpu.w1", "coord-1", "only a worker's key"),
        ("worker.w1", "coord-1", "only a worker's key"),
    ):
        records: list[StoredRecord] = []
        append(records, {}, chain, mode.writer(node))
        report = verify(records, mode)
        assert [p.seq for p in report.problems] == [1], chain
        assert wrong in report.problems[0].what
        subject, headers, body = build_anchor(
            names=NAMES, seal=mode.writer(node), head=ChainHead(chain, 1, 1, "aa" * 32), ts_ns=1
        )
        refused = read_anchor(NAMES, mode.verifier(), StoredRecord(1, subject, headers, body))
        assert isinstance(refused, str)
        assert wrong in refused
    # Controls: the right role, and scopes that bind none.
    for chain, node in (
        ("coordinator.c1", "coord-1"),
        ("worker-gpu.w1", "worker-a"),
        ("node.x", "worker-b"),
    ):
        records = []
        append(records, {}, chain, mode.writer(node))
        assert verify(records, mode).ok, chain

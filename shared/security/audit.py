"""A tamper-evident audit trail: one hash chain per node in an append-only stream.

Security-relevant events (tool calls and denials, interventions, approvals,
rejected messages, key changes, refused access) are appended by the node that
saw them to the stream ``<PREFIX>_AUDIT`` on its own subject
``<prefix>.audit.<scope>.<node>``: the scope is the writer's NATS role
(``coordinator``, ``worker-GROUP``; ``Settings.audit_scope``), and each role's
NATS user may publish only on its own scope (:mod:`agenticflow.cluster.nats_auth`); the
chain is named ``<scope>.<node>``. Each chain is a **hash chain**, so writers
never contend with each other::

    log = await AuditLog.open(bus, seal, node=node_id, scope="coordinator")
    await log.record(AuditKind.TOOL_CALLED, workflow_id=wf, task_id=t, tool="http")
    await log.anchor()                             # the signed head, kept apart
    report = await verify_audit(bus, seal)        # or `agenticflow audit verify`

**Retention.** The stream keeps records ``Settings.audit_max_age_s`` (400 days
by default), at most ``audit_max_msgs`` of them (a million) and, if set,
``audit_max_bytes`` (JetStream reserves that much on the server), the oldest
going first, and refuses a record over ``audit_max_msg_size`` (64 KiB): junk
cannot fill the disk for good. Records removed by these limits are a note of the report, not a
problem. Only an admin's NATS user may update, purge or delete the stream.

**Anchors.** Every writer publishes its chain's head (chain, ``n``, stream
sequence, hash, time), signed by its key and never encrypted, to the stream
``<PREFIX>_AUDIT_ANCHORS`` (append-only, the last 16 per chain) on
``<prefix>.anchor.<chain>``: at start, at most every
``audit_anchor_interval_s`` and at stop (:class:`agenticflow.shared.security.auditor.Auditor`).
Verification compares every chain with them, so a deleted and re-created,
truncated or rebuilt audit stream is reported without any local file; an
anchor that is unsigned, forged or signed by another principal than the
chain's is reported and not trusted. A writer that finds its chain shorter
than its own last anchor appends after the anchored head, so the gap stays in
the chain. An admin may delete both streams: an anchor file kept elsewhere
(``audit verify --anchor FILE``) still catches that.

**Record.** The body is the msgpack map ``{v, n, prev, prev_seq, ts, node,
principal, kind, workflow_id, task_id, detail}`` (``n`` counts the chain's
records from 1), sealed with the node's :class:`~agenticflow.shared.security.seal.Seal`: signed,
and encrypted when data keys are configured. The headers repeat what a
verifier needs without the data keys: ``Nats-Msg-Id`` ``<node>:<n>:<digest>``
(signed; the digest of the plaintext record makes a retried publish a
duplicate, yet nobody can take a future record's id) and ``AF-Prev``
``<stream seq>:<hash>`` of the chain's previous record (``0:000…`` for the
first). The record's hash is SHA-256 over the previous hash, the subject, these
headers, the signature headers and the body **as stored** (ciphertext when
encrypted): a record whose ``AF-Enc`` key the verifier lacks is still
hash-checked and signature-checked; only reading its details needs the key.
Each record is published with ``Nats-Expected-Last-Subject-Sequence`` set to
the chain's last stored message, so a second process writing the same chain
cannot fork it (it re-reads the head and appends after it, logging a warning).
Junk on a chain's subject (whatever is not a genuine record of the chain) is
stepped over, counted and logged, and never costs the chain a record: after
two refusals caused by junk the record is appended without the sequence check,
still linked to the chain's last genuine record (see :class:`AuditLog`).

**What verify detects**, each reported with the stream sequence it concerns,
every one of them (up to a cap), not just the first:

- a record whose content or headers changed: its signature fails (with a trust
  store), and its successor's ``AF-Prev`` no longer matches its hash;
- a removed record: a hole in the stream sequences (deletes and purges are
  refused by the server, and ``deny_delete``/``deny_purge`` cannot be turned
  off again), a gap in its chain's ``n``, and, in a rebuilt stream, the
  successor's ``AF-Prev`` naming the wrong stream sequence; older records
  removed by limits added to the stream (``first_seq`` > 1);
- a reordered pair: within a chain ``n`` goes back; across chains a moved
  record sits at another stream sequence than its successor names;
- an inserted or forged record: unsigned, signed by an unknown key, signed by
  another principal than the chain's, not linked to its predecessor, a repeated
  ``n``, a ``Nats-Msg-Id`` of another chain; a signed record stored long after it
  was signed (a stream rebuilt by re-publishing copies);
- a stream recreated without ``deny_delete``/``deny_purge``;
- with the **anchors** (signed heads in the anchors stream, and those of an
  earlier verification kept in a file: ``agenticflow audit verify --anchor
  FILE``): a chain that is gone, shorter than it was (its newest records
  removed), or whose history up to the anchored record was rewritten (even by
  the holder of its key) or moved; a stream deleted and re-created (an anchor
  naming a sequence past the stream's end).

**What it cannot detect.** Without an anchor (a chain's newest records written
after its last anchor), the removal of a chain's newest
records when nothing after them in the stream names them (truncation of a
rebuilt stream), or of a whole chain whose records were all at the end. Without
a trust store (nothing signed), anyone with write access can append a
well-formed record to a chain, or rewrite a chain's newest record. Whoever holds
a node's private key can write anything into that node's chain beyond the
anchor. Two records of different chains that are both their chain's newest can
swap places unseen (nothing names their positions; the order across nodes is
otherwise only as strict as the signing time window). Records that were never
written (a node that skips :meth:`AuditLog.record`) are not in the trail.

**Cost.** An append is awaited until the server stored it, one at a time per
process (an :class:`asyncio.Lock`): one JetStream round trip plus a signature,
an encryption and a hash, about 0.35 ms on loopback (a bare publish: 0.25 ms).
Verification reads the stream a page (one ephemeral consumer) at a time and
keeps only each chain's last hash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from agenticflow.shared.bus.transport import Bus, stored_ns
from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    ConnectionLostError,
    ForgedMessageError,
    MalformedMessageError,
    NotFoundError,
    ReplayedMessageError,
    StateConflictError,
    TransportError,
    UndecryptableMessageError,
)
from agenticflow.shared.ops.metrics import Tally
from agenticflow.shared.resilience import backoff_delay
from agenticflow.shared.security.seal import (
    AUDIT_TYPE,
    DATA_KEYS_FILE,
    H_ENC,
    H_KEY,
    H_SIG,
    H_TS,
    TRUST_FILE,
    DataKeys,
    Seal,
    TrustedKey,
    TrustStore,
)
from agenticflow.shared.wire.codec import H_MSG_ID, H_SCHEMA, H_SOURCE, H_TYPE, pack, unpack
from agenticflow.shared.wire.names import Names

log = structlog.get_logger("agenticflow.audit")

H_PREV = "AF-Prev"
"""``<stream seq>:<hex hash>`` of the chain's previous record."""
H_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
SCHEMA = 1
GENESIS = bytes(32)
"""The ``prev`` hash of every chain's first record."""

_HASHED = (H_MSG_ID, H_TYPE, H_SCHEMA, H_SOURCE, H_PREV, H_ENC, H_KEY, H_TS, H_SIG)
"""Headers a record's hash covers (besides the previous hash, subject and body)."""
_DOMAIN = b"agenticflow-audit-v1\n"
_NODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
_PAGE = 1000
_APPEND_ATTEMPTS = 6
"""Tries to store one record (with backoff) before it is counted lost and raised."""
_FENCED_JUNK_CONFLICTS = 2
"""Appends refused because of junk before appending without the sequence check."""
_SCAN_LIMIT = 1000
"""Most messages read after a refused append to find what moved the chain."""
DEFAULT_SCOPE = "node"
"""The scope of a chain whose writer names none (``Settings.audit_scope`` unset)."""
_MAX_PROBLEMS = 1000


class AuditKind(StrEnum):
    """The kinds of record the framework writes (any ``word.word`` is accepted)."""

    TOOL_CALLED = "tool.called"
    TOOL_DENIED = "tool.denied"
    INTERVENTION_APPLIED = "intervention.applied"
    INTERVENTION_REFUSED = "intervention.refused"
    APPROVAL_DECIDED = "approval.decided"
    MESSAGE_REJECTED = "message.rejected"
    KEYS_LOADED = "keys.loaded"
    ACCESS_DENIED = "access.denied"


# Records ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain ends: its last record's ``n``, stream sequence and hash."""

    node: str
    n: int
    seq: int
    hash: str
    """Hex SHA-256."""

    def to_json(self) -> dict[str, Any]:
        """As stored in an anchor file and printed by ``audit verify --json``."""
        return {"n": self.n, "seq": self.seq, "hash": self.hash}


def genesis(node: str) -> ChainHead:
    """The head of a chain with no record yet."""
    return ChainHead(node, 0, 0, GENESIS.hex())


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A message as the audit stream stores it."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    body: bytes
    stored_ns: int | None = None
    """When the server stored it (ns since the epoch), if known."""


def record_hash(prev: bytes, subject: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """A record's chain hash: SHA-256 over the previous hash, the subject, the
    record's headers (:data:`_HASHED`) and the stored body, length-prefixed."""
    digest = hashlib.sha256(_DOMAIN)
    digest.update(prev)
    for part in (subject, *(headers.get(name, "") for name in _HASHED)):
        raw = part.encode()
        digest.update(len(raw).to_bytes(4, "big") + raw)
    digest.update(len(body).to_bytes(8, "big") + body)
    return digest.digest()


def build_record(
    *,
    names: Names,
    seal: Seal,
    head: ChainHead,
    principal: str,
    kind: str,
    ts_ns: int,
    workflow_id: str | None = None,
    task_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, str], bytes, bytes]:
    """The next record of ``head``'s chain, sealed: ``(subject, headers, body,
    hash)``. Raises ConfigError for a bad kind, MalformedMessageError for a
    detail msgpack cannot encode."""
    if not _KIND_RE.match(kind):
        raise ConfigError(f"audit kind {kind!r} must look like 'word.word' (lowercase)")
    node, n = head.node, head.n + 1
    subject = names.audit_subject(node)
    record = {
        "v": SCHEMA,
        "n": n,
        "prev": head.hash,
        "prev_seq": head.seq,
        "ts": ts_ns,
        "node": node,
        "principal": principal,
        "kind": str(kind),
        "workflow_id": workflow_id,
        "task_id": task_id,
        "detail": dict(detail or {}),
    }
    plain = pack(record)
    headers = {
        # Derived from the content, so that a retried publish is deduplicated but
        # nobody can take a future record's id in advance.
        H_MSG_ID: f"{node}:{n}:{hashlib.sha256(plain).hexdigest()[:16]}",
        H_TYPE: AUDIT_TYPE,
        H_SCHEMA: str(SCHEMA),
        H_SOURCE: node,
        H_PREV: f"{head.seq}:{head.hash}",
    }
    body = seal.close(subject, headers, plain)
    return subject, headers, body, record_hash(bytes.fromhex(head.hash), subject, headers, body)


def _chain_id(names: Names, record: StoredRecord) -> tuple[str, int, int, bytes] | str:
    """``(node, n, prev_seq, prev_hash)`` from the subject and headers, or why not."""
    node = names.audit_node(record.subject)
    if node is None:
        return f"subject {record.subject!r} is not an audit chain's"
    msg_id = record.headers.get(H_MSG_ID, "")
    id_node, _, number = msg_id.rpartition(":")[0].rpartition(":")
    if id_node != node or not number.isdigit() or int(number) < 1:
        return f"Nats-Msg-Id {msg_id!r} is not a record id of chain {node}"
    if record.headers.get(H_TYPE) != AUDIT_TYPE:
        return f"AF-Type {record.headers.get(H_TYPE)!r} is not {AUDIT_TYPE!r}"
    prev_seq, _, prev_hash = record.headers.get(H_PREV, "").partition(":")
    try:
        prev = bytes.fromhex(prev_hash)
    except ValueError:
        prev = b""
    if not prev_seq.isdigit() or len(prev) != len(GENESIS):
        return f"AF-Prev {record.headers.get(H_PREV)!r} is not '<seq>:<sha256 hex>'"
    return node, int(number), int(prev_seq), prev


@dataclass(frozen=True, slots=True)
class _Opened:
    """What the seal made of a record."""

    plain: bytes | None = None
    signer: TrustedKey | None = None
    refused: str | None = None
    """Why the signature check refused it (then it is not part of any chain)."""
    replayed: str | None = None
    undecryptable: str | None = None
    """Why it does not decrypt with a key we have (ciphertext altered)."""


def _open(seal: Seal, record: StoredRecord) -> _Opened:
    subject, headers, body = record.subject, record.headers, record.body
    stored = record.stored_ns if seal.trust is not None else None
    replayed = None
    signature = headers.get(H_SIG)
    if seal.trust is not None and signature is not None and not _canonical_b64(signature):
        # The seal decodes leniently (junk characters are skipped): the stored
        # header must be exactly what was signed and hashed.
        return _Opened(refused=f"{H_SIG} is not canonical base64: altered")
    try:
        try:
            plain, signer = seal.open(subject, headers, body, stored_ns=stored)
        except ReplayedMessageError as exc:
            replayed = f"{exc}: re-published (a rebuilt stream, or a replayed record)"
            plain, signer = seal.open(subject, headers, body)
    except ForgedMessageError as exc:
        return _Opened(refused=str(exc))
    except UndecryptableMessageError as exc:
        signer = seal.trust.get(headers.get(H_KEY, "")) if seal.trust is not None else None
        kid = headers.get(H_ENC)
        if kid is None:  # written without encryption: readable as it is
            return _Opened(plain=body, signer=signer, replayed=replayed)
        if seal.data_keys is None or kid not in seal.data_keys.keys:
            return _Opened(signer=signer, replayed=replayed)  # not ours to read
        return _Opened(signer=signer, replayed=replayed, undecryptable=str(exc))
    return _Opened(plain=plain, signer=signer, replayed=replayed)


def scope_role(chain: str) -> str | None:
    """The key role a chain's scope requires of its signer (``coordinator.*``:
    a coordinator's key, ``worker*.*``: a worker's), or None (any)."""
    scope, dot, _ = chain.partition(".")
    if not dot:
        return None
    if scope == "coordinator":
        return "coordinator"
    return "worker" if scope == "worker" or scope.startswith("worker-") else None


def scope_mismatch(chain: str, signer: TrustedKey) -> str | None:
    """Why ``signer`` may not write (or anchor) ``chain``, or None."""
    role = scope_role(chain)
    if role is None or signer.role == role:
        return None
    return (
        f"signed by {signer.principal} ({signer.role}), but only a {role}'s key may write "
        f"the chains of scope {chain.partition('.')[0]!r}"
    )


def _canonical_b64(text: str) -> bool:
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except (binascii.Error, ValueError):
        return False


def _decode(plain: bytes) -> dict[str, Any] | None:
    try:
        value = unpack(plain, max_depth=64)
    except MalformedMessageError:
        return None
    return value if isinstance(value, dict) else None


# Verification (pure) ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One thing wrong with the trail: the stream sequence and chain it concerns."""

    seq: int | None
    chain: str | None
    what: str

    def __str__(self) -> str:
        where = f"#{self.seq}" if self.seq is not None else "stream"
        return f"{where} {self.chain}: {self.what}" if self.chain else f"{where}: {self.what}"

    def to_json(self) -> dict[str, Any]:
        """For ``--json`` output."""
        return {"seq": self.seq, "chain": self.chain, "problem": self.what}


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of :func:`verify_audit`."""

    records: int
    chains: Mapping[str, ChainHead]
    problems: list[AuditProblem]
    problems_total: int
    """All problems found; ``problems`` keeps the first ones (a cap)."""
    first_seq: int
    last_seq: int
    signatures_checked: bool
    unreadable: int
    """Records encrypted with a data key this verifier lacks (still hash-checked)."""
    principals: Mapping[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What is not a problem but worth knowing (records removed by retention)."""
    anchors: int = 0
    """Anchors the chains were compared with (from the anchors stream and a file)."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.problems_total == 0

    def to_json(self) -> dict[str, Any]:
        """For ``agenticflow audit verify --json``."""
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "signatures_checked": self.signatures_checked,
            "unreadable": self.unreadable,
            "chains": {
                node: {**head.to_json(), "principal": self.principals.get(node)}
                for node, head in sorted(self.chains.items())
            },
            "anchors": self.anchors,
            "notes": list(self.notes),
            "problems_total": self.problems_total,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(slots=True)
class _Chain:
    head: ChainHead
    raw_hash: bytes
    principal: str | None


class AuditVerifier:
    """Checks an audit stream record by record, in stream order (pure: no I/O).

    Memory is bounded by the number of chains (each chain's last hash) and the
    problem cap. ``first_seq`` is where the stream starts now; ``anchor`` the
    chain heads of an earlier verification.
    """

    def __init__(
        self,
        *,
        names: Names,
        seal: Seal,
        first_seq: int = 1,
        anchor: Mapping[str, ChainHead] | None = None,
        anchors: Iterable[Anchor] = (),
        retention: bool = False,
        max_problems: int = _MAX_PROBLEMS,
    ) -> None:
        self._names = names
        self._seal = seal
        self._first_seq = max(first_seq, 1)
        self._anchors: dict[str, list[Anchor]] = {}
        for node, head in sorted((anchor or {}).items()):
            self._anchors.setdefault(node, []).append(Anchor(head, "the anchor file"))
        for found in anchors:
            self._anchors.setdefault(found.head.node, []).append(found)
        self._watched = {chain: {a.head.n for a in found} for chain, found in self._anchors.items()}
        self._seen: dict[str, dict[int, ChainHead]] = {}
        """Each chain's head when it reached an anchored record."""
        self._retention = retention
        self._notes: list[str] = []
        self._max_problems = max_problems
        self._chains: dict[str, _Chain] = {}
        self._problems: list[AuditProblem] = []
        self._total = 0
        self._records = 0
        self._unreadable = 0
        self._next_seq = self._first_seq

    def problem(self, what: str, *, seq: int | None = None, chain: str | None = None) -> None:
        """Note a problem (kept up to the cap, always counted)."""
        self._total += 1
        if len(self._problems) < self._max_problems:
            self._problems.append(AuditProblem(seq, chain, what))

    def feed(self, record: StoredRecord) -> None:
        """Check the next stored record (stream sequences ascending)."""
        self._records += 1
        self._check_seq(record.seq)
        seq = record.seq
        identity = _chain_id(self._names, record)
        if isinstance(identity, str):
            self.problem(f"not an audit record: {identity}", seq=seq)
            return
        node, n, _, prev = identity
        opened = _open(self._seal, record)
        if opened.refused is not None:
            self.problem(f"record {n} refused: {opened.refused}", seq=seq, chain=node)
            return
        if opened.replayed is not None:
            self.problem(f"record {n}: {opened.replayed}", seq=seq, chain=node)
        if opened.undecryptable is not None:
            self.problem(f"record {n}: {opened.undecryptable}", seq=seq, chain=node)
        elif opened.plain is None:
            self._unreadable += 1
        else:
            self._check_body(record, node, n, opened)
        if opened.signer is not None and (wrong := scope_mismatch(node, opened.signer)):
            self.problem(f"record {n}: {wrong}", seq=seq, chain=node)
        digest = record_hash(prev, record.subject, record.headers, record.body)
        signer = opened.signer.principal if opened.signer is not None else None
        self._link(record, identity, digest, signer)

    def _check_seq(self, seq: int) -> None:
        if seq > self._next_seq:
            self.problem(f"stream sequences {_span(self._next_seq, seq - 1)} are missing (deleted)")
        elif seq < self._next_seq:
            self.problem(f"stream sequence {seq} delivered out of order", seq=seq)
        self._next_seq = max(self._next_seq, seq + 1)

    def _check_body(self, record: StoredRecord, node: str, n: int, opened: _Opened) -> None:
        assert opened.plain is not None
        body = _decode(opened.plain)
        seq = record.seq
        if body is None:
            self.problem(f"record {n}: body is not a msgpack map", seq=seq, chain=node)
            return
        stated = {
            "n": n,
            "node": node,
            "prev": record.headers.get(H_PREV, "").partition(":")[2],
            "prev_seq": int(record.headers.get(H_PREV, "0").partition(":")[0] or 0),
        }
        if opened.signer is not None:
            stated["principal"] = opened.signer.principal
        for name, value in stated.items():
            if body.get(name) != value:
                self.problem(
                    f"record {n}: body says {name}={body.get(name)!r}, "
                    f"headers or signature say {value!r}",
                    seq=seq,
                    chain=node,
                )

    def _link(
        self,
        record: StoredRecord,
        identity: tuple[str, int, int, bytes],
        digest: bytes,
        signer: str | None,
    ) -> None:
        node, n, prev_seq, prev = identity
        seq = record.seq
        chain = self._chains.get(node)
        if chain is None:
            if n == 1 and (prev != GENESIS or prev_seq != 0):
                self.problem("record 1 does not start from the genesis hash", seq=seq, chain=node)
            elif n > 1 and self._first_seq <= 1:
                self.problem(
                    f"chain starts at record {n}: records {_span(1, n - 1)} are missing",
                    seq=seq,
                    chain=node,
                )
            chain = _Chain(genesis(node), GENESIS, signer)
            self._chains[node] = chain
        elif n <= chain.head.n:
            self.problem(
                f"record {n} comes after record {chain.head.n} (#{chain.head.seq}): "
                "repeated, replayed or out of order",
                seq=seq,
                chain=node,
            )
            return
        elif n > chain.head.n + 1:
            self.problem(
                f"records {_span(chain.head.n + 1, n - 1)} are missing "
                f"(after record {chain.head.n} at #{chain.head.seq})",
                seq=seq,
                chain=node,
            )
        elif prev != chain.raw_hash or prev_seq != chain.head.seq:
            self.problem(self._mislinked(chain, n, prev_seq, prev), seq=seq, chain=node)
        if signer is not None and chain.principal not in (None, signer):
            self.problem(
                f"record {n} is signed by {signer}, but the chain is written by {chain.principal}",
                seq=seq,
                chain=node,
            )
        elif signer is not None and "/" in signer and signer.rpartition("/")[2] != _node_of(node):
            # A process identity (``<group>/<node>``) writes only its own node's chain.
            self.problem(
                f"record {n} is signed by the process {signer}, not by node {_node_of(node)}",
                seq=seq,
                chain=node,
            )
        chain.head = ChainHead(node, n, seq, digest.hex())
        chain.raw_hash = digest
        chain.principal = chain.principal or signer
        if n in self._watched.get(node, ()):
            self._seen.setdefault(node, {})[n] = chain.head

    @staticmethod
    def _mislinked(chain: _Chain, n: int, prev_seq: int, prev: bytes) -> str:
        last = chain.head
        if prev != chain.raw_hash:
            return (
                f"record {n} does not link to record {last.n} (#{last.seq}): its prev hash "
                f"{prev.hex()[:12]}… is not {last.hash[:12]}… (one of them was altered, "
                "or this one was forged)"
            )
        return (
            f"record {n} names its predecessor at #{prev_seq}, but record {last.n} is at "
            f"#{last.seq}: moved (a rebuilt or reordered stream)"
        )

    def _check_anchor(self, anchor: Anchor, last_seq: int) -> None:
        want, name = anchor.head, anchor.head.node
        chain = self._chains.get(name)
        where = f"(anchor: {anchor.source})"
        if (
            anchor.signer is not None
            and chain is not None
            and chain.principal
            not in (
                None,
                anchor.signer,
            )
        ):
            self.problem(
                f"anchor {anchor.source} is signed by {anchor.signer}, but the chain is "
                f"written by {chain.principal}: not trusted",
                chain=name,
            )
            return
        seen = self._seen.get(name, {}).get(want.n)
        if seen is not None:
            if seen.hash != want.hash:
                self.problem(
                    f"record {want.n} differs from the anchor {where}: the chain's history "
                    "was rewritten",
                    seq=seen.seq,
                    chain=name,
                )
            elif seen.seq != want.seq:
                self.problem(
                    f"record {want.n} was anchored at #{want.seq} {where}: the stream was rebuilt",
                    seq=seen.seq,
                    chain=name,
                )
            return
        recreated = (
            f"; the anchor names #{want.seq}, past the stream's last #{last_seq}: the stream "
            "was deleted and re-created"
            if want.seq > last_seq
            else ""
        )
        expired = want.seq < self._first_seq and self._retention and not recreated
        if chain is None:
            if expired:
                self._notes.append(
                    f"chain {name}: its records up to {want.n} (#{want.seq}) were removed by "
                    "the stream's retention"
                )
            else:
                self.problem(
                    f"chain is gone (the anchor saw {want.n} records at #{want.seq}) "
                    f"{where}{recreated}",
                    chain=name,
                )
        elif chain.head.n < want.n:
            self.problem(
                f"chain ends at record {chain.head.n} (#{chain.head.seq}), the anchor saw "
                f"{want.n} {where}: its newest records were removed{recreated}",
                chain=name,
            )
        elif not expired:
            self.problem(
                f"anchored record {want.n} (#{want.seq}) is not in the chain {where}",
                chain=name,
            )

    def head_of(self, node: str) -> ChainHead | None:
        """The last record accepted into ``node``'s chain so far."""
        chain = self._chains.get(node)
        return chain.head if chain is not None else None

    def finish(self, *, last_seq: int) -> AuditReport:
        """The report, once every record up to ``last_seq`` was fed."""
        if self._first_seq > 1:
            gone = _span(1, self._first_seq - 1)
            if self._retention:
                self._notes.append(
                    f"stream sequences {gone} were removed by the stream's retention limits"
                )
            else:
                self.problem(
                    f"stream sequences {gone} are gone (purged, or removed by limits added "
                    "to the stream)"
                )
        if last_seq >= self._next_seq:
            self.problem(
                f"stream sequences {_span(self._next_seq, last_seq)} are missing (deleted)"
            )
        for _, anchors in sorted(self._anchors.items()):
            for anchor in anchors:
                self._check_anchor(anchor, last_seq)
        return AuditReport(
            records=self._records,
            chains={node: c.head for node, c in self._chains.items()},
            problems=list(self._problems),
            problems_total=self._total,
            first_seq=self._first_seq,
            last_seq=last_seq,
            signatures_checked=self._seal.trust is not None,
            unreadable=self._unreadable,
            principals={node: c.principal for node, c in self._chains.items() if c.principal},
            notes=list(self._notes),
            anchors=sum(len(a) for a in self._anchors.values()),
        )


def _node_of(chain: str) -> str:
    """The node a chain (``scope.node``, or a bare ``node``) belongs to."""
    return chain.rpartition(".")[2]


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def verify_records(
    records: Iterable[StoredRecord],
    *,
    names: Names,
    seal: Seal,
    first_seq: int = 1,
    last_seq: int | None = None,
    anchor: Mapping[str, ChainHead] | None = None,
    anchors: Iterable[Anchor] = (),
    retention: bool = False,
) -> AuditReport:
    """Verify stored records (in stream order) without any I/O; ``last_seq`` is
    the stream's last sequence (default: the last record's); ``retention``:
    the stream has limits, so records missing from its start are expected."""
    verifier = AuditVerifier(
        names=names,
        seal=seal,
        first_seq=first_seq,
        anchor=anchor,
        anchors=anchors,
        retention=retention,
    )
    last = 0
    for record in records:
        verifier.feed(record)
        last = record.seq
    return verifier.finish(last_seq=last if last_seq is None else last_seq)


def has_retention(config: Mapping[str, Any]) -> bool:
    """Whether the stream's configuration (as the API gives it) removes old records."""
    return any(int(config.get(limit) or 0) > 0 for limit in ("max_age", "max_bytes", "max_msgs"))


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the audit stream's configuration (as the API gives it)."""
    found = []
    if not config.get("deny_delete"):
        found.append("the stream allows deleting records (deny_delete is off: recreated?)")
    if not config.get("deny_purge"):
        found.append("the stream allows purging (deny_purge is off: recreated?)")
    return found


# The writer -----------------------------------------------------------------
appends = Tally(
    "agenticflow.audit.appends",
    "outcome",
    unit="{record}",
    description=(
        "Audit chain activity by outcome: stored, lost (not stored; logged as an error), "
        "junk (a message not of the chain, stepped over), gap (the stream lost this "
        "chain's records), anchored"
    ),
)
"""Counts of the audit writers of this process (``agenticflow_audit_appends_total``)."""


class AuditLog:
    """Appends one node's records to its chain; ``async with`` or :meth:`close`.

    The chain is ``<scope>.<node>`` on subject ``<prefix>.audit.<scope>.<node>``;
    the scope is the writer's NATS role, whose user may publish there and
    nowhere else in the audit stream. Appends are serialised and each is awaited
    until stored. Only one process should write a node's chain (node ids are
    unique); if another one does, the conflicting append re-reads the head and
    is retried after it.

    **Junk** on the chain's subject (anything that is not a genuine record of
    the chain: unsigned, forged, unparsable) is stepped over, never linked to
    and never a reason to drop a record: the append that it made fail its
    expected-sequence check reads what was stored since its last one, and
    appends again after it; if junk keeps arriving, without the sequence check
    (the record still links to the chain's last genuine one). A record that
    cannot be stored after :data:`_APPEND_ATTEMPTS` tries is counted as
    ``lost`` and raised, for the caller to log.

    **Anchors** (:meth:`anchor`): the chain's head, signed, on
    ``<prefix>.anchor.<chain>`` in its own append-only stream. When the audit
    stream has lost the chain's newest records (deleted and re-created), the
    writer goes on after its anchored head, so the gap stays in the chain for
    ``audit verify`` to report, and logs an error.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        seal: Seal,
        node: str,
        scope: str | None = None,
        principal: str | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if not _NODE_RE.match(node):
            raise ConfigError(f"audit node {node!r} must be 1-128 letters, digits, '_' or '-'")
        if principal and seal.signer and principal != seal.signer:
            raise ConfigError(
                f"audit records of {node} are signed by {seal.signer!r}, not {principal!r}: "
                "name who acted in the record's detail instead"
            )
        names = bus.names
        self._bus = bus
        self._seal = seal
        self._clock = clock
        self.node = node
        self.scope = scope or bus.settings.audit_scope or DEFAULT_SCOPE
        self.chain = names.audit_chain(self.scope, node)
        """The chain's name, ``<scope>.<node>`` (the key of reports and anchors)."""
        self.principal = seal.signer or principal or node
        self._stream = names.audit_stream
        self._subject = names.audit_subject(self.chain)
        self._lock = asyncio.Lock()
        self._head: ChainHead | None = None
        self._fence = 0
        """Stream sequence of the last message on the chain's subject, genuine or not."""
        self._anchored: ChainHead | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        bus: Bus,
        seal: Seal,
        node: str,
        principal: str | None = None,
        *,
        scope: str | None = None,
    ) -> AuditLog:
        """A log positioned after the chain's stored head (or its anchored head,
        when the stream lost records). Raises ConfigError, NotFoundError when
        the audit stream does not exist (``Bus.ensure_topology`` creates it),
        TransportError."""
        audit = cls(bus=bus, seal=seal, node=node, scope=scope, principal=principal)
        async with audit._lock:
            await audit._load_head()
        return audit

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def head(self) -> ChainHead | None:
        """The chain's last record as this log knows it (None until loaded)."""
        return self._head

    async def record(
        self,
        kind: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        **detail: Any,
    ) -> ChainHead:
        """Append a record and wait until it is stored; returns the new head.

        Raises ConfigError (bad kind), MalformedMessageError (detail not
        msgpack-able), PayloadTooLargeError, StateConflictError (another process
        keeps writing this chain), TransportError (not stored), ConnectionLostError
        after close.
        """
        async with self._lock:
            if self._closed:
                raise ConnectionLostError(f"the audit log of {self.chain} is closed")
            try:
                head = await self._append(kind, workflow_id, task_id, detail)
            except AgenticFlowError:
                appends.add("lost")
                raise
            appends.add("stored")
            return head

    async def _append(
        self,
        kind: str,
        workflow_id: str | None,
        task_id: str | None,
        detail: Mapping[str, Any],
    ) -> ChainHead:
        head = self._head or await self._load_head()
        built: tuple[ChainHead, str, dict[str, str], bytes, bytes] | None = None
        junk_conflicts = 0
        for attempt in range(_APPEND_ATTEMPTS):
            if built is None or built[0] != head:
                # Rebuilt only when the head moved: a retry of the same record keeps
                # its Msg-Id, so a stored earlier attempt is a duplicate.
                built = (
                    head,
                    *build_record(
                        names=self._bus.names,
                        seal=self._seal,
                        head=head,
                        principal=self.principal,
                        kind=kind,
                        ts_ns=self._clock(),
                        workflow_id=workflow_id,
                        task_id=task_id,
                        detail=detail,
                    ),
                )
            _, subject, headers, body, digest = built
            sent = dict(headers)
            if junk_conflicts < _FENCED_JUNK_CONFLICTS:
                sent[H_EXPECTED] = str(self._fence)
            try:
                seq, _ = await self._bus.publish_raw(subject, body, sent)
            except TransportError:
                # Refused (the chain's subject moved: another writer, or junk) or
                # unanswered, perhaps after being stored: the stored chain tells which.
                outcome = await self._catch_up(head, digest)
                if outcome == "stored":
                    assert self._head is not None
                    return self._head
                if outcome == "unchanged":
                    raise
                junk_conflicts = junk_conflicts + 1 if outcome == "junk" else 0
                head = self._head or head
                if outcome == "moved":  # contention: back off; junk is stepped over at once
                    await asyncio.sleep(
                        backoff_delay(
                            attempt + 1, initial_s=0.02, backoff=2.0, max_s=1.0, jitter=False
                        )
                    )
                continue
            stored = ChainHead(self.chain, head.n + 1, seq, digest.hex())
            self._head, self._fence = stored, seq
            return stored
        raise StateConflictError(
            f"audit record of chain {self.chain} not stored after {_APPEND_ATTEMPTS} attempts: "
            "another process keeps appending to it (node ids must be unique)"
        )

    async def _catch_up(self, head: ChainHead, digest: bytes) -> str:
        """After a refused append, read what the chain's subject got since the
        fence: ``stored`` (the record is there: an answer was lost), ``moved``
        (another writer appended: the head follows it), ``junk`` (only messages
        that are not the chain's, stepped over), ``reset`` (the chain's records
        are gone) or ``unchanged`` (nothing new: refused for another reason)."""
        last = await self._last_stored()
        if last is None:
            if self._fence == 0:
                return "unchanged"
            self._lost_records(stored=0)
            self._fence = 0
            return "reset"
        if last.seq == self._fence:
            return "unchanged"
        start = self._fence + 1
        found, stored, junk = await self._walk(head, start, last.seq, digest, limit=_SCAN_LIMIT)
        self._note_junk(junk, last.seq)
        self._head = found
        self._fence = max(last.seq, found.seq)
        if stored:
            return "stored"
        return "moved" if found != head else "junk"

    async def _walk(
        self,
        head: ChainHead,
        start_seq: int,
        end_seq: int,
        digest: bytes | None = None,
        *,
        limit: int | None = None,
    ) -> tuple[ChainHead, bool, int]:
        """Follow the chain from ``head`` through what its subject holds from
        ``start_seq`` to ``end_seq``: ``(new head, whether the record of
        ``digest`` is among them, junk stepped over)``."""
        stored, junk, scanned = False, 0, 0
        async for record in iter_stored(
            self._bus, start_seq=start_seq, end_seq=end_seq, subject=self._subject
        ):
            scanned += 1
            found = self._genuine(record)
            if found is not None and digest is not None and found.hash == digest.hex():
                head, stored = found, True
            elif found is not None and found.n == head.n + 1:
                # Signed by this chain's principal: another writer (linked to the head
                # or not: then verification reports it, and the chain goes on after it),
                # or this one's before a restart.
                if digest is not None:
                    log.warning("another writer appended to this audit chain", chain=self.chain)
                head = found
            else:
                junk += 1  # not the chain's, or not linked to its head: stepped over
            if limit is not None and scanned >= limit:
                break  # a flood: whatever else is there is stepped over as well
        return head, stored, junk

    def _note_junk(self, junk: int, last_seq: int) -> None:
        if junk:
            appends.add("junk", junk)
            log.warning(
                "messages that are not records of this audit chain were published on its "
                "subject: stepped over",
                chain=self.chain,
                count=junk,
                last_seq=last_seq,
            )

    def _genuine(self, record: StoredRecord) -> ChainHead | None:
        """The head ``record`` makes if it is a genuine record of this chain."""
        identity = _chain_id(self._bus.names, record)
        if isinstance(identity, str) or identity[0] != self.chain:
            return None
        opened = _open(self._seal, record)
        if opened.refused is not None:
            return None
        if opened.signer is not None and opened.signer.principal != self.principal:
            return None  # another principal's: not this chain's writer
        _, n, _, prev = identity
        digest = record_hash(prev, record.subject, record.headers, record.body)
        return ChainHead(self.chain, n, record.seq, digest.hex())

    async def _last_stored(self) -> StoredRecord | None:
        found = await self._bus.last_stored(self._stream, self._subject)
        if found is None:
            return None
        seq, subject, headers, body = found
        return StoredRecord(seq, subject, headers, body)

    async def _load_head(self) -> ChainHead:
        """Read the chain's head and fence from the stream, and the chain's last
        anchor: the head is the anchored one when the stream lost records."""
        last = await self._last_stored()
        anchored = await self._own_anchor()
        head = genesis(self.chain)
        self._fence = 0
        if last is not None:
            self._fence = last.seq
            genuine = self._genuine(last)
            if genuine is not None:
                head = genuine
            elif anchored is not None and anchored.seq < last.seq:
                # Junk ends the chain: follow it from its anchor, not from the start.
                head, _, junk = await self._walk(anchored, anchored.seq + 1, last.seq)
                self._note_junk(junk, last.seq)
            else:
                head = await self._genuine_head(last.seq)
        if anchored is not None and anchored.n > head.n:
            self._lost_records(stored=head.n, anchored=anchored)
            head = anchored
        self._anchored = anchored
        self._head = head
        return head

    def _lost_records(self, *, stored: int, anchored: ChainHead | None = None) -> None:
        appends.add("gap")
        log.error(
            "the audit stream has lost records of this chain (deleted and re-created, or "
            "truncated): appending after the last head this writer knows, so that the gap "
            "stays visible to `agenticflow audit verify`",
            chain=self.chain,
            stored_records=stored,
            anchored_records=anchored.n if anchored is not None else None,
        )

    async def _own_anchor(self) -> ChainHead | None:
        """The chain's last anchor, if signed by this writer's own key (with a
        trust store; without one nothing is trusted)."""
        if self._seal.trust is None or not self._seal.signer:
            return None
        names = self._bus.names
        try:
            found = await self._bus.last_stored(
                names.anchor_stream, names.anchor_subject(self.chain)
            )
        except TransportError as exc:
            log.warning("cannot read this audit chain's anchor", chain=self.chain, error=str(exc))
            return None
        if found is None:
            return None
        anchor = read_anchor(names, self._seal, StoredRecord(*found))
        if isinstance(anchor, str) or anchor.signer != self._seal.signer:
            log.warning("this audit chain's last anchor is not its own: ignored", chain=self.chain)
            return None
        return anchor.head

    async def _genuine_head(self, last_seq: int) -> ChainHead:
        """The chain's last record that is not forged (a scan of the chain: only
        when a forged message ends it)."""
        log.warning(
            "the audit chain ends with a forged message: appending after it, linked to the "
            "last genuine record",
            chain=self.chain,
            seq=last_seq,
        )
        verifier = AuditVerifier(names=self._bus.names, seal=self._seal)
        async for record in iter_stored(self._bus, end_seq=last_seq, subject=self._subject):
            verifier.feed(record)
        return verifier.head_of(self.chain) or genesis(self.chain)

    async def anchor(self) -> ChainHead | None:
        """Publish the chain's head, signed (never encrypted: an auditor checks it
        with the trust store alone), to the anchors stream; returns it, or None
        when there is nothing new to anchor. Raises TransportError."""
        async with self._lock:
            head = self._head
            if head is None or head.n == 0 or (self._anchored and self._anchored.n >= head.n):
                return None
            subject, headers, body = build_anchor(
                names=self._bus.names, seal=self._seal, head=head, ts_ns=self._clock()
            )
            await self._bus.publish_raw(subject, body, headers)
            self._anchored = head
            appends.add("anchored")
            return head

    async def close(self) -> None:
        """Wait for the append in flight, then refuse more (idempotent)."""
        async with self._lock:
            self._closed = True


# Reading ----------------------------------------------------------------------
async def stream_state(bus: Bus) -> dict[str, Any]:
    """The audit stream's info (``config`` and ``state``); raises NotFoundError."""
    return await bus.stream_info(bus.names.audit_stream)


async def iter_stored(
    bus: Bus,
    *,
    start_seq: int = 1,
    end_seq: int,
    subject: str | None = None,
    page: int = _PAGE,
    stream: str | None = None,
) -> AsyncIterator[StoredRecord]:
    """Stored audit records (of every chain, or on ``subject``) from ``start_seq``
    to ``end_seq``, in stream order, a page (one ephemeral consumer) at a time
    (of ``stream``: the anchors', with its ``subject``)."""
    names = bus.names
    seq = max(start_seq, 1)
    while seq <= end_seq:
        msgs = await bus.read_stored(
            stream or names.audit_stream,
            subject or names.audit_subjects,
            start_seq=seq,
            limit=min(page, end_seq - seq + 1),
        )
        if not msgs:
            return
        for msg in msgs:
            seq = int(msg.metadata.sequence.stream)
            if seq > end_seq:
                return
            yield StoredRecord(seq, msg.subject, dict(msg.headers or {}), msg.data, stored_ns(msg))
        seq += 1


async def verify_audit(
    bus: Bus,
    seal: Seal,
    *,
    anchor: Mapping[str, ChainHead] | None = None,
    stream_anchors: bool = True,
) -> AuditReport:
    """Verify the whole audit stream as it is now (records appended meanwhile are
    left for the next run), and compare each chain with its anchors: the signed
    heads in the anchors stream (``stream_anchors``) and ``anchor`` (a file's).
    ``seal`` needs only the trust store (signatures) and, to check record
    bodies, the data keys. Raises NotFoundError, TransportError."""
    # Anchors first: every one names a record stored before the stream is read.
    anchors, problems = await read_anchors(bus, seal) if stream_anchors else ([], [])
    info = await stream_state(bus)
    state, config = info.get("state") or {}, info.get("config") or {}
    first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
    verifier = AuditVerifier(
        names=bus.names,
        seal=seal,
        first_seq=first,
        anchor=anchor,
        anchors=anchors,
        retention=has_retention(config),
    )
    for what in config_problems(config):
        verifier.problem(what)
    for problem in problems:
        verifier.problem(problem.what, seq=problem.seq, chain=problem.chain)
    async for record in iter_stored(bus, start_seq=first, end_seq=last):
        verifier.feed(record)
    return verifier.finish(last_seq=last)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record as ``agenticflow audit show`` prints it."""

    seq: int
    node: str
    n: int
    kind: str | None
    principal: str | None
    ts: int | None
    workflow_id: str | None
    task_id: str | None
    detail: Mapping[str, Any] | None
    """None when the record cannot be read (encrypted for another key)."""
    signer: str | None
    """The principal whose signature verified (None: no trust store)."""
    error: str | None
    """Why it cannot be trusted or read, if so."""

    def to_json(self) -> dict[str, Any]:
        """For ``--json`` output."""
        return {
            "seq": self.seq,
            "node": self.node,
            "n": self.n,
            "kind": self.kind,
            "principal": self.principal,
            "ts": self.ts,
            "workflow_id": self.workflow_id,
            "task_id": self.task_id,
            "detail": dict(self.detail) if self.detail is not None else None,
            "signer": self.signer,
            "error": self.error,
        }


def read_entry(names: Names, seal: Seal, record: StoredRecord) -> AuditEntry:
    """A stored record, verified and decrypted as far as ``seal`` can."""
    identity = _chain_id(names, record)
    node, n = (record.subject, 0) if isinstance(identity, str) else identity[:2]
    opened = _open(seal, record)
    error = opened.refused or opened.replayed or opened.undecryptable
    body = _decode(opened.plain) if opened.plain is not None else None
    if isinstance(identity, str):
        error = error or identity
    if opened.plain is None and error is None:
        error = f"encrypted with data key {record.headers.get(H_ENC)!r}, which this node lacks"
    body = body or {}
    detail = body.get("detail")
    return AuditEntry(
        seq=record.seq,
        node=str(node),
        n=int(n),
        kind=_str_or_none(body.get("kind")),
        principal=_str_or_none(body.get("principal")),
        ts=body.get("ts") if isinstance(body.get("ts"), int) else None,
        workflow_id=_str_or_none(body.get("workflow_id")),
        task_id=_str_or_none(body.get("task_id")),
        detail=detail if isinstance(detail, dict) else None,
        signer=opened.signer.principal if opened.signer is not None else None,
        error=error,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def read_audit(bus: Bus, seal: Seal, *, last: int | None = None) -> list[AuditEntry]:
    """The stored records (the ``last`` ones), oldest first, each verified and
    decrypted as far as ``seal`` can. Raises NotFoundError, TransportError."""
    state = (await stream_state(bus)).get("state") or {}
    first, end = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
    start = first if last is None else max(first, end - last + 1)
    return [
        read_entry(bus.names, seal, record)
        async for record in iter_stored(bus, start_seq=start, end_seq=end)
    ]


# Anchors ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Anchor:
    """A chain head kept outside the audit stream, to compare the chain with."""

    head: ChainHead
    source: str
    """Where it was kept (``#<seq> of <anchors stream>``, ``the anchor file``)."""
    signer: str | None = None
    """The principal whose signature verified (None: no trust store, or a file)."""
    ts_ns: int | None = None
    """When it was anchored (ns since the epoch), if known."""


def build_anchor(
    *, names: Names, seal: Seal, head: ChainHead, ts_ns: int
) -> tuple[str, dict[str, str], bytes]:
    """A chain head as published to the anchors stream: ``(subject, headers,
    body)``, signed by ``seal``'s key and never encrypted (an auditor reads it
    with the trust store alone)."""
    subject = names.anchor_subject(head.node)
    plain = pack(
        {
            "v": SCHEMA,
            "chain": head.node,
            "n": head.n,
            "seq": head.seq,
            "hash": head.hash,
            "ts": ts_ns,
        }
    )
    headers = {
        H_MSG_ID: f"anchor:{head.node}:{head.n}:{head.hash[:16]}",
        H_TYPE: AUDIT_TYPE,
        H_SCHEMA: str(SCHEMA),
        H_SOURCE: head.node,
    }
    body = seal.signing_only().close(subject, headers, plain)
    return subject, headers, body


def read_anchor(names: Names, seal: Seal, record: StoredRecord) -> Anchor | str:
    """The anchor a message of the anchors stream holds, or why it is not
    trusted (unsigned or forged with a trust store, malformed, not its subject's)."""
    chain = names.anchor_chain(record.subject)
    if chain is None:
        return f"subject {record.subject!r} is not an anchor's"
    checker = Seal(trust=seal.trust, window_s=seal.window_ns / 1e9)
    stored = record.stored_ns if seal.trust is not None else None
    try:
        plain, signer = checker.open(record.subject, record.headers, record.body, stored_ns=stored)
    except (ForgedMessageError, ReplayedMessageError, UndecryptableMessageError) as exc:
        return str(exc)
    if signer is not None and (wrong := scope_mismatch(chain, signer)):
        return wrong
    body = _decode(plain) or {}
    n, seq, digest, ts = body.get("n"), body.get("seq"), body.get("hash"), body.get("ts")
    if (
        body.get("chain") != chain
        or not (isinstance(n, int) and n >= 1)
        or not (isinstance(seq, int) and seq >= 1)
        or not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest))
        or not isinstance(ts, int)
    ):
        return "not a chain head of its subject's chain (malformed)"
    return Anchor(
        ChainHead(chain, n, seq, digest),
        f"#{record.seq} of {names.anchor_stream}",
        signer.principal if signer is not None else None,
        ts,
    )


async def read_anchors(bus: Bus, seal: Seal) -> tuple[list[Anchor], list[AuditProblem]]:
    """Every anchor of the anchors stream that ``seal`` trusts, and a problem for
    each one it does not (and for a missing or loosened anchors stream).
    Raises TransportError."""
    names = bus.names
    stream = names.anchor_stream
    try:
        info = await bus.stream_info(stream)
    except NotFoundError:
        missing = f"the anchors stream {stream} is missing (deleted?): chains are not compared"
        return [], [AuditProblem(None, None, missing)]
    problems = [
        AuditProblem(None, None, f"{stream}: {what}")
        for what in config_problems(info.get("config") or {})
    ]
    state = info.get("state") or {}
    first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
    anchors: list[Anchor] = []
    async for record in iter_stored(
        bus, start_seq=first, end_seq=last, subject=names.anchor_subjects, stream=stream
    ):
        found = read_anchor(names, seal, record)
        if isinstance(found, str):
            chain = names.anchor_chain(record.subject)
            what = f"anchor #{record.seq} of {stream} refused, not trusted: {found}"
            problems.append(AuditProblem(None, chain, what))
        else:
            anchors.append(found)
    return anchors, problems


# Keys and anchors -------------------------------------------------------------
def reader_seal(directory: Path | None, *, window_s: float = 120.0) -> Seal:
    """The seal an auditor needs: the trust store (to check signatures) and the
    data keys (to read details) from a key directory, whichever exist; no
    signing key. Raises ConfigError."""
    if directory is None:
        return Seal()
    if not directory.is_dir():
        raise ConfigError(f"security directory {directory} does not exist")
    trust_path, keys_path = directory / TRUST_FILE, directory / DATA_KEYS_FILE
    return Seal(
        trust=TrustStore.load(trust_path) if trust_path.exists() else None,
        data_keys=DataKeys.load(keys_path) if keys_path.exists() else None,
        window_s=window_s,
    )


def load_anchor(path: Path) -> dict[str, ChainHead]:
    """The chain heads saved by :func:`save_anchor` (empty if the file does not
    exist); raises ConfigError for an unreadable file."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {
            str(node): ChainHead(str(node), int(h["n"]), int(h["seq"]), str(h["hash"]))
            for node, h in data["chains"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path} is not an audit anchor file: {exc}") from exc


def save_anchor(path: Path, report: AuditReport) -> None:
    """Keep the verified chain heads (to compare the next verification with)."""
    data = {
        "version": 1,
        "last_seq": report.last_seq,
        "chains": {node: head.to_json() for node, head in sorted(report.chains.items())},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


__all__ = [
    "DEFAULT_SCOPE",
    "GENESIS",
    "H_PREV",
    "Anchor",
    "AuditEntry",
    "AuditKind",
    "AuditLog",
    "AuditProblem",
    "AuditReport",
    "AuditVerifier",
    "ChainHead",
    "StoredRecord",
    "appends",
    "build_anchor",
    "build_record",
    "config_problems",
    "genesis",
    "has_retention",
    "iter_stored",
    "load_anchor",
    "read_anchor",
    "read_anchors",
    "read_audit",
    "read_entry",
    "reader_seal",
    "record_hash",
    "save_anchor",
    "scope_mismatch",
    "scope_role",
    "stream_state",
    "verify_audit",
    "verify_records",
]

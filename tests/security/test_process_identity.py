"""Per-process identities (issue 20, item 1): principals are per worker process.

Every worker process of a group holds the group's key; with it alone a
compromised process could sign as its peers. A coordinator issues each process
its own key (a certificate for ``<group>/<node>``, once per node id), and the
cluster binds claims and audit chains to that principal. These tests attack
the issuance and the certificates.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agenticflow.shared.errors import ConfigError, ForgedMessageError, ReplayedMessageError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import Seal, init_keys, revoke
from agenticflow.shared.wire.codec import encode_event
from agenticflow.shared.wire.events import EventType, TaskHeartbeat
from tests.security.conftest import forged

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(
        tmp_path,
        [
            ("coordinator", "coordinator"),
            ("worker", "worker"),
            ("other", "worker"),
            ("client", "client"),
        ],
    )
    return tmp_path


def seal(keys: Path, principal: str) -> Seal:
    return Seal.from_dir(keys, principal)


def issued(keys: Path, node: str, *, group: str = "worker") -> Seal:
    """A worker seal that took a process identity for ``node``."""
    worker = seal(keys, group)
    request, fresh = worker.identity_request(node)
    worker.adopt(fresh, seal(keys, "coordinator").issue(request))
    return worker


NAMES = Settings(prefix="pid").names


def signed_heartbeat(sender: Seal, now_ns: int | None = None) -> tuple[str, dict[str, str], bytes]:
    event = forged("wf-x", EventType.TASK_HEARTBEAT, TaskHeartbeat(worker="n"), task_id="t")
    subject, headers, plain = encode_event(event, NAMES)
    return subject, headers, sender.close(subject, headers, plain, now_ns=now_ns)


def test_a_process_signs_as_itself_and_is_verified_from_its_certificate(keys: Path) -> None:
    worker = issued(keys, "node-a")
    subject, headers, body = signed_heartbeat(worker)
    assert "AF-Cert" in headers
    _, signer = seal(keys, "client").open(subject, headers, body, stored_ns=time.time_ns())
    assert signer is not None
    assert (signer.principal, signer.role) == ("worker/node-a", "worker")
    # KV records stay signed by the group key (they carry no certificate).
    _, record_signer = seal(keys, "client").open_record(
        "b", "k", worker.seal_record("b", "k", b"v")
    )
    assert record_signer is not None
    assert record_signer.principal == "worker"


def test_a_certificate_not_issued_by_a_coordinator_is_refused(keys: Path) -> None:
    worker = seal(keys, "worker")
    request, fresh = worker.identity_request("node-a")
    genuine = seal(keys, "coordinator").issue(request)
    # Self-issued with the group key (what a compromised worker could do).
    assert worker.identity is not None
    fake = replace(genuine, issuer=worker.identity.kid, signature=b"")
    fake = replace(fake, signature=worker.identity.sign(fake.signed_part()))
    worker.adopt(fresh, fake)
    subject, headers, body = signed_heartbeat(worker)
    with pytest.raises(ForgedMessageError, match="not issued by a trusted coordinator"):
        seal(keys, "client").open(subject, headers, body)


def test_a_certificate_cannot_be_borrowed_or_altered(keys: Path) -> None:
    victim = issued(keys, "node-a")
    attacker = issued(keys, "node-b")
    subject, headers, body = signed_heartbeat(attacker)
    assert victim.certificate is not None
    # The victim's certificate on the attacker's key: it certifies another key.
    borrowed = {**headers, "AF-Cert": victim.certificate.encode()}
    with pytest.raises(ForgedMessageError, match="does not certify"):
        seal(keys, "client").open(subject, borrowed, body)
    # A certificate renamed to another node: the issuer's signature breaks.
    cert = attacker.certificate
    assert cert is not None
    renamed = replace(cert, principal="worker/node-a", node="node-a")
    with pytest.raises(ForgedMessageError, match="bad signature"):
        seal(keys, "client").open(subject, {**headers, "AF-Cert": renamed.encode()}, body)
    with pytest.raises(ForgedMessageError, match="malformed"):
        seal(keys, "client").open(subject, {**headers, "AF-Cert": "e30="}, body)


def test_revoking_the_group_key_revokes_its_processes(keys: Path) -> None:
    worker = issued(keys, "node-a")
    reader = seal(keys, "client")
    subject, headers, body = signed_heartbeat(worker)
    reader.open(subject, headers, body)
    revoke(keys, "worker")
    reader.trust = Seal.from_dir(keys, "client").trust  # what follow() reloads
    with pytest.raises(ForgedMessageError, match="revoked"):
        reader.open(subject, headers, body)


def test_a_message_signed_outside_the_certificates_life_is_refused(keys: Path) -> None:
    worker = issued(keys, "node-a")
    cert = worker.certificate
    assert cert is not None
    subject, headers, body = signed_heartbeat(worker, now_ns=cert.expires_ns + 1)
    with pytest.raises(ForgedMessageError, match="not valid when"):
        seal(keys, "client").open(subject, headers, body)


def test_only_a_coordinator_issues_and_only_fresh_trusted_requests(keys: Path) -> None:
    worker = seal(keys, "worker")
    request, _ = worker.identity_request("node-a")
    with pytest.raises(ConfigError, match="only a coordinator"):
        seal(keys, "other").issue(request)
    coordinator = seal(keys, "coordinator")
    stale, _ = worker.identity_request("node-a", now_ns=time.time_ns() - 10**12)
    with pytest.raises(ReplayedMessageError):
        coordinator.issue(stale)
    body, _, sig = request.partition(b"\n")
    node, public, stamp, parent = json.loads(body)
    altered = json.dumps([node + "x", public, stamp, parent], separators=(",", ":")).encode()
    with pytest.raises(ForgedMessageError, match="not signed by a trusted key"):
        coordinator.issue(altered + b"\n" + sig)
    with pytest.raises(ForgedMessageError, match="invalid node"):
        coordinator.issue(worker.identity_request("a b")[0])
    with pytest.raises(ForgedMessageError, match="malformed"):
        coordinator.issue(b"junk")
    with pytest.raises(ForgedMessageError, match="may not ask"):
        coordinator.issue(coordinator.identity_request("c1")[0])

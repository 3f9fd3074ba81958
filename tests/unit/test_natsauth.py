"""The NATS configuration generator: files, modes, keys, permissions (no server
runs here, except ``nats-server -t`` checking the file it parses)."""

from __future__ import annotations

import importlib
import ipaddress
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agenticflow.cluster.nats_auth import (
    ADMIN,
    CLIENT,
    CONFIG_FILE,
    COORDINATOR,
    Permissions,
    WorkerGroup,
    admin_permissions,
    client_permissions,
    coordinator_permissions,
    generate,
    make_test_ca,
    new_user_nkey,
    parse_worker_group,
    read_env_file,
    worker_permissions,
)
from agenticflow.cluster.nats_server import nats_server_binary
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.credentials import connect_options, tls_context
from agenticflow.shared.wire.names import Names

NAMES = Names("af")
GPU = WorkerGroup("gpu", ("summarize", "translate"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def nkey_public(seed: str) -> str:
    nkeys: Any = importlib.import_module("nkeys")  # what nats-py signs with
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nats_server_binary(), "-c", str(path), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# Files ----------------------------------------------------------------------


def test_generate_writes_a_config_nats_server_accepts_and_secrets_0600(tmp_path: Path) -> None:
    files = generate(tmp_path / "auth", prefix="demo", workers=[GPU], port=4333)
    checked = check_config(files.config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert set(files.roles) == {COORDINATOR, CLIENT, ADMIN, "worker-gpu"}
    assert mode(files.directory) == 0o700
    for role in files.roles:
        assert mode(files.directory / f"{role}.nk") == 0o600
        assert mode(files.env_file(role)) == 0o600
    assert mode(files.directory / "ca-key.pem") == 0o600
    assert mode(files.directory / "server-key.pem") == 0o600
    text = files.config.read_text()
    assert "tls {" in text
    assert '"127.0.0.1:4333"' in text
    # With nkeys the server's file names public keys only.
    for role in files.roles:
        seed = (files.directory / f"{role}.nk").read_text().strip()
        assert seed not in text
        assert f'nkey: "{nkey_public(seed)}"' in text
    assert files.url == "tls://127.0.0.1:4333"


def test_password_auth_keeps_the_config_private_and_parses(tmp_path: Path) -> None:
    files = generate(tmp_path, workers=[GPU], tls=False, auth="password")
    assert check_config(files.config).returncode == 0
    assert mode(files.config) == 0o600
    env = read_env_file(files.env_file(CLIENT))
    assert env["AGENTICFLOW_NATS_USER"] == CLIENT
    assert env["AGENTICFLOW_NATS_PASSWORD"] in files.config.read_text()
    assert "AGENTICFLOW_NATS_TLS_CA_FILE" not in env
    assert files.url.startswith("nats://")
    assert not list(tmp_path.glob("*.pem"))


def test_env_files_carry_what_each_role_needs(tmp_path: Path) -> None:
    files = generate(tmp_path, prefix="demo", workers=[GPU], port=4400)
    worker = files.settings("worker-gpu")
    assert worker.nats_url == "tls://127.0.0.1:4400"
    assert worker.prefix == "demo"
    assert worker.manage_topology is False
    assert worker.nats_inbox_prefix == "_INBOX_demo_worker_gpu"
    assert worker.nats_tls_ca_file == tmp_path.resolve() / "ca.pem"
    assert worker.nats_nkey_seed_file == tmp_path.resolve() / "worker-gpu.nk"
    assert files.settings(COORDINATOR).manage_topology is True
    assert files.settings(ADMIN).manage_topology is True
    client = files.settings(CLIENT)
    assert client.manage_topology is False
    assert client.topology_wait_s < worker.topology_wait_s
    # The env file is what a shell sources; rewriting it with the real URL.
    files.write_env(url="tls://127.0.0.1:5000")
    assert read_env_file(files.env_file(CLIENT))["AGENTICFLOW_NATS_URL"] == ("tls://127.0.0.1:5000")
    options = connect_options(client)
    assert options["inbox_prefix"] == "_INBOX_demo_client"
    assert isinstance(options["tls"], ssl.SSLContext)
    assert options["nkeys_seed"] == str(tmp_path.resolve() / "client.nk")


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path) -> None:
    first = generate(tmp_path, workers=[GPU])
    seed = (tmp_path / "client.nk").read_text()
    with pytest.raises(ConfigError, match="--force"):
        generate(tmp_path, workers=[GPU])
    assert (tmp_path / "client.nk").read_text() == seed
    generate(tmp_path, workers=[GPU], force=True)
    assert (tmp_path / "client.nk").read_text() != seed
    assert first.config.exists()


def test_a_directory_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create"):
        generate(blocker / "auth", workers=[GPU])


# Keys and certificates --------------------------------------------------------


def test_nkeys_are_what_the_nkeys_package_reads() -> None:
    seed, public = new_user_nkey()
    assert seed.startswith("SU")
    assert public.startswith("U")
    assert nkey_public(seed) == public
    assert new_user_nkey() != (seed, public)


def test_the_test_ca_signs_a_server_certificate_for_loopback(tmp_path: Path) -> None:
    ca_path, cert_path, key_path = make_test_ca(tmp_path, ["127.0.0.1", "localhost", "af.lan"])
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "af.lan"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # A client context trusting only this CA loads it, and the pair matches.
    ssl.create_default_context(cafile=str(ca_path))
    ssl.create_default_context().load_cert_chain(str(cert_path), str(key_path))


def test_a_client_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    _, cert, _ = make_test_ca(tmp_path, ["127.0.0.1"])
    with pytest.raises(ConfigError, match="go together"):
        tls_context(Settings(nats_tls_cert_file=cert))
    with pytest.raises(ConfigError, match="cannot load"):
        tls_context(Settings(nats_tls_ca_file=tmp_path / "missing.pem"))
    assert tls_context(Settings(nats_url="nats://127.0.0.1:4222")) is None


def test_a_missing_seed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no nkey seed file"):
        connect_options(Settings(nats_nkey_seed_file=tmp_path / "nope.nk"))


# Permissions ----------------------------------------------------------------


def test_a_worker_pulls_only_its_own_queues() -> None:
    perms = worker_permissions(NAMES, GPU)
    publish = set(perms.publish)
    for cap in GPU.queues:
        assert f"$JS.API.CONSUMER.MSG.NEXT.AF_TASKS.task_{cap}" in publish
        assert f"$JS.ACK.AF_TASKS.task_{cap}.>" in publish
        # Created only with its filter pinned in the subject.
        assert f"$JS.API.CONSUMER.CREATE.AF_TASKS.task_{cap}.af.task.{cap}" in publish
        # Its direct consumers (auctions won): of its queues, any (per-process) name.
        assert f"$JS.API.CONSUMER.CREATE.AF_DIRECT.*.af.direct.{cap}.*" in publish
    direct = [s for s in publish if "AF_DIRECT" in s]
    assert all(
        any(f".af.direct.{cap}.*" in s for cap in GPU.queues) or s == "$JS.ACK.AF_DIRECT.*.>"
        for s in direct
    )
    assert not [s for s in publish if "MSG.NEXT.AF_DIRECT" in s or s.startswith("af.direct")]
    tasks = [s for s in publish if "AF_TASKS" in s]
    assert all(any(f"task_{cap}" in s for cap in GPU.queues) or "STREAM.INFO" in s for s in tasks)
    assert not [s for s in publish if s.startswith("af.task")]
    assert not [s for s in publish if "STREAM.CREATE" in s or "STREAM.*" in s]
    assert not [s for s in publish if "CONSUMER.DELETE" in s]  # no routed queue
    assert "af.evt.*.workflow.submitted" not in publish
    assert set(perms.subscribe) == {
        "_INBOX_af_worker_gpu.>",
        "af.evt.*.workflow.aborted",
        "af.evt.*.workflow.intervention_applied",
        "af.evt.*.task.auction_opened",
        "af.health.*",
        "$SRV.*",
        "$SRV.*.agenticflow-worker",
        "$SRV.*.agenticflow-worker.*",
    }
    assert "$KV.af_control.>" not in publish  # reads operators' commands, never writes them
    assert "$KV.af_workflows.>" not in publish


def test_a_routed_queue_and_the_every_capability_group() -> None:
    routed = worker_permissions(NAMES, parse_worker_group("fix=summarize~fork-1"))
    assert "$JS.API.CONSUMER.DELETE.AF_TASKS.task_summarize~fork-1" in routed.publish
    every = worker_permissions(NAMES, parse_worker_group("all=*"))
    assert "$JS.API.CONSUMER.MSG.NEXT.AF_TASKS.*" in every.publish
    assert "$JS.API.CONSUMER.CREATE.AF_TASKS.*.af.task.*" in every.publish
    assert not [s for s in every.publish if s.startswith("af.task")]


def test_a_client_submits_and_reads_but_never_dispatches() -> None:
    perms = client_permissions(NAMES)
    publish = set(perms.publish)
    assert {
        "af.evt.*.workflow.submitted",
        "af.evt.*.workflow.resume_requested",
        "af.evt.*.workflow.intervention_requested",
    } <= publish
    assert not [s for s in publish if s.startswith("af.task") or s == "af.evt.>"]
    # An unnamed create lets the body name (and redefine) the coordinator's consumer.
    assert "$JS.API.CONSUMER.CREATE.AF_EVENTS" not in publish
    assert "$JS.API.CONSUMER.MSG.NEXT.AF_EVENTS.coordinator" in perms.publish_deny
    for partition in (0, 63):  # every partition's consumer, whatever the count
        assert f"$JS.API.CONSUMER.MSG.NEXT.AF_EVENTS.coordinator_p{partition}" in perms.publish_deny
        assert f"$JS.API.CONSUMER.CREATE.AF_EVENTS.coordinator_p{partition}.>" in perms.publish_deny
    assert not perms.allow_responses


def test_the_coordinator_owns_the_prefix_and_nothing_beyond() -> None:
    perms = coordinator_permissions(NAMES)
    assert "af.task.>" in perms.publish
    assert "$JS.API.STREAM.*.AF_TASKS" in perms.publish
    assert "$KV.af_leases.>" in perms.publish
    assert not [s for s in perms.publish if s in (">", "$JS.API.>", "$JS.API.STREAM.>")]
    other = coordinator_permissions(Names("other"))
    assert not set(perms.publish) & {s for s in other.publish if "OTHER" in s or "other" in s}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("gpu", "NAME=cap1,cap2"),
        ("=echo", "NAME=cap1,cap2"),
        ("GPU=echo", "lowercase"),
        ("gpu=", "serves no capability"),
        ("gpu=a.b", "capability 'a.b'"),
        ("gpu=a>", "capability 'a>'"),
        ("gpu=echo~bad route", "capability"),
        ("gpu=*,echo", "already means every"),
    ],
)
def test_bad_worker_groups_are_config_errors(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_worker_group(spec)


def test_no_group_or_a_duplicate_group_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one worker group"):
        generate(tmp_path, workers=[])
    with pytest.raises(ConfigError, match="given twice"):
        generate(tmp_path, workers=[GPU, WorkerGroup("gpu", ("other",))])
    with pytest.raises(ConfigError, match="prefix"):
        generate(tmp_path, prefix="Bad.Prefix", workers=[GPU])
    assert not (tmp_path / CONFIG_FILE).exists()


# The audit streams (issue 20: audit that cannot be silenced) ----------------


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


def may_publish(perms: Permissions, subject: str) -> bool:
    allowed = any(matches(p, subject) for p in perms.publish)
    return allowed and not any(matches(d, subject) for d in perms.publish_deny)


def all_roles() -> dict[str, Permissions]:
    return {
        COORDINATOR: coordinator_permissions(NAMES),
        CLIENT: client_permissions(NAMES),
        ADMIN: admin_permissions(NAMES),
        GPU.role: worker_permissions(NAMES, GPU),
    }


def test_the_matcher_follows_nats_wildcards() -> None:
    assert matches("af.audit.*.*", "af.audit.coordinator.c1")
    assert not matches("af.audit.*.*", "af.audit.c1")
    assert matches("af.audit.>", "af.audit.c1")
    assert not matches("af.audit.>", "af.audit")
    assert not matches("af.audit.worker-gpu.*", "af.audit.worker-gpu.n1.x")


def test_each_role_appends_only_to_its_own_audit_chains_and_anchors() -> None:
    roles = all_roles()
    own = {COORDINATOR: COORDINATOR, GPU.role: GPU.role}
    for role, perms in roles.items():
        for scope in (COORDINATOR, GPU.role, "worker-cpu", "node", CLIENT):
            for subject in (f"af.audit.{scope}.n1", f"af.anchor.{scope}.n1"):
                expected = role == ADMIN or own.get(role) == scope
                assert may_publish(perms, subject) is expected, (role, subject)
        # The one-token chains of earlier versions are no one's to extend but the admin's.
        assert may_publish(perms, "af.audit.c1") is (role == ADMIN), role


@pytest.mark.parametrize("stream", ["AF_AUDIT", "AF_AUDIT_ANCHORS"])
def test_only_an_admin_may_update_purge_or_delete_the_audit_streams(stream: str) -> None:
    assert stream in (NAMES.audit_stream, NAMES.anchor_stream)
    for role, perms in all_roles().items():
        for op in ("STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE"):
            subject = f"$JS.API.{op}.{stream}"
            assert may_publish(perms, subject) is (role == ADMIN), (role, subject)
    coordinator = coordinator_permissions(NAMES)
    for op in ("STREAM.CREATE", "STREAM.INFO", "STREAM.MSG.GET"):
        assert may_publish(coordinator, f"$JS.API.{op}.{stream}")


def test_a_worker_reads_back_only_its_own_chains_and_lists_no_stored_subjects() -> None:
    perms = worker_permissions(NAMES, GPU)
    mine, theirs = "af.audit.worker-gpu.n1", "af.audit.coordinator.c1"
    assert may_publish(perms, f"$JS.API.DIRECT.GET.AF_AUDIT.{mine}")
    assert not may_publish(perms, f"$JS.API.DIRECT.GET.AF_AUDIT.{theirs}")
    assert not may_publish(perms, "$JS.API.DIRECT.GET.AF_AUDIT")  # by sequence: any message
    assert may_publish(perms, "$JS.API.DIRECT.GET.AF_AUDIT_ANCHORS.af.anchor.worker-gpu.n1")
    assert not may_publish(perms, "$JS.API.DIRECT.GET.AF_AUDIT_ANCHORS.af.anchor.coordinator.c1")
    assert may_publish(perms, f"$JS.API.CONSUMER.CREATE.AF_AUDIT.x1.{mine}")
    assert not may_publish(perms, f"$JS.API.CONSUMER.CREATE.AF_AUDIT.x1.{theirs}")
    assert not may_publish(perms, "$JS.API.CONSUMER.CREATE.AF_AUDIT.x1.af.audit.*.*")
    assert not may_publish(perms, "$JS.API.CONSUMER.CREATE.AF_AUDIT")
    # No STREAM.INFO on the events or task streams (a subjects filter lists workflow
    # ids and queues), nor a message by sequence; stream names are enough to wait.
    for stream in ("AF_EVENTS", "AF_TASKS", "AF_AUDIT", "AF_AUDIT_ANCHORS"):
        assert not may_publish(perms, f"$JS.API.STREAM.INFO.{stream}"), stream
        assert not may_publish(perms, f"$JS.API.STREAM.MSG.GET.{stream}"), stream
    assert may_publish(perms, "$JS.API.STREAM.NAMES")


def test_a_workers_env_names_its_audit_scope(tmp_path: Path) -> None:
    files = generate(tmp_path / "auth", workers=[GPU], tls=False, auth="password")
    assert files.settings(GPU.role).audit_scope == GPU.role
    assert files.settings(COORDINATOR).audit_scope == ""  # its role: coordinator
    assert files.settings(CLIENT).audit_scope == ""

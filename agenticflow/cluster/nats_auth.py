"""Least-privilege NATS credentials, TLS files and a server configuration.

``agenticflow nats-config DIR`` (and ``agenticflow dev --secure``) write, for
one subject prefix:

- ``nats-server.conf``: JetStream, the client port, TLS (with ``--tls``) and
  one user per role with its ``permissions``;
- per role, its credentials (an nkey seed ``ROLE.nk``, or a password inside
  the env file with ``--auth password``) and ``ROLE.env``: the
  ``AGENTICFLOW_*`` variables a process of that role runs with;
- with TLS, a test CA (``ca.pem``, ``ca-key.pem``) and a server certificate
  signed by it (``server.pem``, ``server-key.pem``) for 127.0.0.1, localhost
  and the host given.

Files holding a secret are written mode 0600 in a 0700 directory.

The roles (``Names`` gives every subject, stream and bucket):

- ``coordinator``: owns the topology: manages the prefix's streams, their
  consumers and KV buckets; publishes tasks and events; holds the lease; it
  creates and reads the audit and anchors streams but may not update, purge or
  delete them, and appends only to its own audit chains
  (``<prefix>.audit.coordinator.*``);
- ``worker-GROUP``, one per ``--worker GROUP=cap1,cap2``: pulls from and acks
  only its capabilities' task consumers (it may create exactly those, with
  their filter pinned by the API subject), publishes task and agent events,
  writes the agent registry and the tools' buckets, watches the control
  bucket; appends to and anchors its own group's audit chains
  (``<prefix>.audit.worker-GROUP.*``, ``AGENTICFLOW_AUDIT_SCOPE`` in its env
  file) and reads back only those; it cannot publish a task, read another
  capability's queue, create a stream, or ask for a stream's info (with a
  subjects filter that lists workflow ids): it waits for the streams by name;
- ``client``: submits workflows and steers them (the submission, resume and
  intervention events only), reads events and workflow state;
- ``admin``: what the coordinator may do, plus the operator commands
  (``agenticflow health``, ``top``, ``agent suspend``...) and everything on the
  audit streams (an admin who deletes them is reported by ``audit verify``: from
  the anchors, or from an anchor file kept elsewhere when both are deleted).

Every role reads its replies on an inbox prefix of its own, so no role sees
another's replies. Workers and clients run with
``AGENTICFLOW_MANAGE_TOPOLOGY=false``: they wait for the streams the
coordinator creates instead of creating them.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.health import SERVICE_PREFIX
from agenticflow.shared.wire.ids import ID_RE
from agenticflow.shared.wire.names import (
    MAX_PARTITIONS,
    ROUTE_RE,
    ROUTE_SEPARATOR,
    SCHEDULE_SPEC_PREFIX,
    Names,
)

Auth = Literal["nkey", "password"]

CONFIG_FILE = "nats-server.conf"
CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
SERVER_CERT_FILE, SERVER_KEY_FILE = "server.pem", "server-key.pem"

COORDINATOR, CLIENT, ADMIN = "coordinator", "client", "admin"
WORKER_ROLE_PREFIX = "worker-"

ALL_CAPABILITIES = "*"
"""A worker group's capability list meaning every capability (and route)."""

_GROUP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
_PRIVATE = 0o600
_ENV = "AGENTICFLOW_"
_CLIENT_WAIT_S = 10
"""How long a client command waits for the coordinator to create the streams."""


# Permissions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Permissions:
    """The subjects a NATS user may publish to and subscribe to."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    allow_responses: bool = False
    """May answer the requests it receives (micro services: health, STATS)."""


def _api(*subjects: str) -> list[str]:
    return [f"$JS.API.{s}" for s in subjects]


def _stream_admin(stream: str) -> list[str]:
    """Everything on one stream: create, update, purge, read, consumers, acks."""
    return [
        *_api(
            f"STREAM.*.{stream}",  # CREATE UPDATE INFO DELETE PURGE
            f"STREAM.MSG.*.{stream}",  # GET DELETE
            f"DIRECT.GET.{stream}",
            f"DIRECT.GET.{stream}.>",
            f"CONSUMER.*.{stream}",  # CREATE (unnamed), LIST, NAMES
            f"CONSUMER.*.{stream}.>",  # CREATE (named), INFO, DELETE, PAUSE
            f"CONSUMER.DURABLE.CREATE.{stream}.*",
            f"CONSUMER.MSG.NEXT.{stream}.*",
        ),
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _append_only(stream: str) -> list[str]:
    """An audit stream as the coordinator owns it: create it, read it, read
    through consumers, but never update, purge or delete it (nor its messages:
    an update could set limits that wipe it, a delete lets it be re-created)."""
    return [
        *_api(
            f"STREAM.CREATE.{stream}",
            f"STREAM.INFO.{stream}",
            f"STREAM.MSG.GET.{stream}",
            f"DIRECT.GET.{stream}",
            f"DIRECT.GET.{stream}.>",
            f"CONSUMER.CREATE.{stream}",
            f"CONSUMER.CREATE.{stream}.*.>",
            f"CONSUMER.INFO.{stream}.*",
            f"CONSUMER.DELETE.{stream}.*",
            f"CONSUMER.MSG.NEXT.{stream}.*",
        ),
        f"$JS.FC.{stream}.>",
    ]


def _own_chains(names: Names, scope: str) -> list[str]:
    """Append to the audit chains of one scope (a role's), anchor their heads, and
    read back only those: the last message of a chain (direct get, pinned to the
    subject) and a scan of them (a consumer whose filter the subject pins)."""
    audit, anchors = names.audit_stream, names.anchor_stream
    chains = names.audit_scope_subjects(scope)
    return [
        chains,
        names.anchor_scope_subjects(scope),
        *_api(
            f"DIRECT.GET.{audit}.{chains}",
            f"DIRECT.GET.{anchors}.{names.anchor_scope_subjects(scope)}",
            f"CONSUMER.CREATE.{audit}.*.{chains}",
            f"CONSUMER.INFO.{audit}.*",
            f"CONSUMER.MSG.NEXT.{audit}.*",
        ),
    ]


def _stream_read(stream: str, *, watch: bool) -> list[str]:
    """Read a stream: info, single messages, and consumers of one's own.

    Only name-pinned consumer creation (``CONSUMER.CREATE.S.NAME.FILTER``, as
    ``pull_subscribe`` sends it), unless ``watch``: an unnamed create (what an
    ordered push consumer, a KV watch, sends) lets the request body name any
    consumer of the stream, durable ones included, so it is granted only on
    streams without durable consumers (the KV buckets).
    """
    subjects = [
        *_api(
            f"STREAM.INFO.{stream}",
            f"STREAM.MSG.GET.{stream}",
            f"DIRECT.GET.{stream}",
            f"DIRECT.GET.{stream}.>",
            f"CONSUMER.CREATE.{stream}.*.>",
            f"CONSUMER.INFO.{stream}.*",
            f"CONSUMER.MSG.NEXT.{stream}.*",
        ),
        f"$JS.FC.{stream}.>",
    ]
    if watch:
        subjects.append(f"$JS.API.CONSUMER.CREATE.{stream}")
    return subjects


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _kv_read(bucket: str) -> list[str]:
    return _stream_read(_kv_stream(bucket), watch=True)


def _kv_write(bucket: str) -> list[str]:
    return [f"$KV.{bucket}.>"]


def _kv_buckets(names: Names) -> list[str]:
    return [
        names.workflows_bucket,
        names.workflow_index_bucket,
        names.leases_bucket,
        names.agents_bucket,
        names.memory_bucket,
        names.control_bucket,
        names.breakers_bucket,
        names.ratelimits_bucket,
        names.tool_results_bucket,
        names.identities_bucket,
        names.schedules_bucket,
        names.schedule_state_bucket,
        names.definitions_bucket,
    ]


def inbox_prefix(names: Names, role: str) -> str:
    """The inbox prefix of a role's connections (its replies arrive there)."""
    return f"_INBOX_{names.prefix}_{role.replace('-', '_')}"


def _micro(kind: str) -> list[str]:
    """What a micro service named ``agenticflow-KIND`` subscribes to."""
    service = f"{SERVICE_PREFIX}{kind}"
    return ["$SRV.*", f"$SRV.*.{service}", f"$SRV.*.{service}.*"]


def coordinator_permissions(names: Names) -> Permissions:
    """The coordinator owns the topology of its prefix."""
    streams = [
        names.tasks_stream,
        names.direct_stream,
        names.events_stream,
        names.advisories_stream,
    ]
    buckets = _kv_buckets(names)
    return Permissions(
        publish=(
            f"{names.prefix}.task.>",
            f"{names.prefix}.direct.>",
            names.event_subjects,
            # Its own audit chains; it reads the others' (verify) but cannot loosen,
            # purge or delete the audit streams (admin only).
            names.audit_scope_subjects(COORDINATOR),
            names.anchor_scope_subjects(COORDINATOR),
            *(
                s
                for stream in (names.audit_stream, names.anchor_stream)
                for s in _append_only(stream)
            ),
            *(s for stream in streams for s in _stream_admin(stream)),
            *(s for b in buckets for s in [*_stream_admin(_kv_stream(b)), *_kv_write(b)]),
            *_api("INFO", "STREAM.NAMES", "STREAM.LIST"),
        ),
        subscribe=(
            f"{inbox_prefix(names, COORDINATOR)}.>",
            f"{names.prefix}.health.*",
            names.identity_subject,  # issues process identities (answers, nothing else)
            *_micro("coordinator"),
        ),
        allow_responses=True,
    )


def _queue_subjects(names: Names, queue: str) -> list[str]:
    """What a worker serving one queue (or ``*``: every queue) publishes to."""
    stream = names.tasks_stream
    if queue == ALL_CAPABILITIES:
        consumer, filter_subject = "*", names.task_subjects
    else:
        consumer, filter_subject = names.task_consumer(queue), names.task_subject(queue)
    publish = [
        # Create (or find) exactly this consumer: the server refuses a body
        # whose filter differs from the subject's.
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter_subject}",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]
    if queue == ALL_CAPABILITIES or ROUTE_SEPARATOR in queue:
        # A routed queue's consumer is deleted by its worker when it stops.
        publish.append(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}")
    # Its direct consumers (auctions won): of this queue only, pushing to its own
    # inbox; the name carries the worker's node id, so any name (same credentials).
    direct = names.direct_subject("*" if queue == ALL_CAPABILITIES else queue, "*")
    publish.append(f"$JS.API.CONSUMER.CREATE.{names.direct_stream}.*.{direct}")
    return publish


def worker_permissions(names: Names, group: WorkerGroup) -> Permissions:
    """A worker serving ``group``'s capabilities, and nothing else."""
    role = group.role
    publish: list[str] = []
    for queue in group.queues:
        publish.extend(_queue_subjects(names, queue))
    prefix = names.prefix
    control, agents = names.control_bucket, names.agents_bucket
    kv_buckets = [
        names.breakers_bucket,
        names.ratelimits_bucket,
        names.tool_results_bucket,
        names.memory_bucket,  # agents' memory (values sealed by the worker)
    ]
    publish += [
        # Events about tasks and agent instances, never workflow-level ones.
        f"{prefix}.evt.*.task.>",
        f"{prefix}.evt.*.agent.>",
        f"{prefix}.evt.*.message.rejected",
        # Acks of the direct tasks it won (consumer names are per process: not narrower).
        f"$JS.ACK.{names.direct_stream}.*.>",
        # Whether the streams exist (no STREAM.INFO: with a subjects filter it lists
        # every stored subject, the events stream's workflow ids among them).
        "$JS.API.STREAM.NAMES",
        # The registry: write its own entries (keys are per process: not narrower).
        f"$JS.API.STREAM.INFO.{_kv_stream(agents)}",
        *_kv_write(agents),
        *_kv_read(control),  # suspend/resume commands: read and watch only
        *(s for b in kv_buckets for s in [*_kv_read(b), *_kv_write(b)]),
        # Its group's audit chains and their anchors, nobody else's (node ids are per
        # process: not narrower; records and anchors are signed).
        *_own_chains(names, role),
        # Asks a coordinator for its process identity at start-up.
        names.identity_subject,
    ]
    return Permissions(
        publish=tuple(publish),
        subscribe=(
            f"{inbox_prefix(names, role)}.>",
            # Abort and feedback reach running handlers.
            names.event_subject("*", "workflow.aborted"),
            names.event_subject("*", "workflow.intervention_applied"),
            # Auction calls (it bids on those of its queues).
            names.event_subject("*", "task.auction_opened"),
            f"{prefix}.health.*",
            *_micro("worker"),
        ),
        allow_responses=True,
    )


def client_permissions(names: Names) -> Permissions:
    """Submit and steer workflows; read events and workflow state."""
    events = names.events_stream
    # Every coordinator consumer there can be, whatever the partition count.
    coordinators = [names.coordinator_consumer, *names.coordinator_consumers(MAX_PARTITIONS)]
    return Permissions(
        publish=(
            names.event_subject("*", "workflow.submitted"),
            names.event_subject("*", "workflow.resume_requested"),
            names.event_subject("*", "workflow.intervention_requested"),
            *_api(f"STREAM.INFO.{names.tasks_stream}", "STREAM.NAMES"),
            *_stream_read(events, watch=False),
            *_kv_read(names.workflows_bucket),
            *_kv_read(names.workflow_index_bucket),
            # Schedules: read and write the specs; read the firing state (only
            # coordinators write it, in a bucket of its own: a rollup purge of
            # the specs bucket cannot reach it).
            *_kv_read(names.schedules_bucket),
            f"$KV.{names.schedules_bucket}.{SCHEDULE_SPEC_PREFIX}>",
            *_kv_read(names.schedule_state_bucket),
            # The agent registry (read-only): which agent versions live workers
            # serve, to pin a workflow to them when it starts.
            *_kv_read(names.agents_bucket),
            # Registered workflow definitions: read and register.
            *_kv_read(names.definitions_bucket),
            *_kv_write(names.definitions_bucket),
            # Delete the consumers it made to read a workflow's output (their
            # names cannot be matched: every name but the coordinators' below).
            f"$JS.API.CONSUMER.DELETE.{events}.*",
        ),
        publish_deny=(
            # Read events, but never through (or by redefining, or deleting) a
            # coordinator's consumer.
            *(f"$JS.API.CONSUMER.CREATE.{events}.{name}.>" for name in coordinators),
            *(f"$JS.API.CONSUMER.MSG.NEXT.{events}.{name}" for name in coordinators),
            *(f"$JS.API.CONSUMER.DELETE.{events}.{name}" for name in coordinators),
        ),
        subscribe=(
            f"{inbox_prefix(names, CLIENT)}.>",
            names.event_subject("*", "workflow.intervention_applied"),
            names.event_subject("*", "workflow.intervention_refused"),
        ),
    )


def admin_permissions(names: Names) -> Permissions:
    """The coordinator's rights plus the operator commands' (health, top...)."""
    base = coordinator_permissions(names)
    return Permissions(
        publish=(
            *base.publish,
            "$SRV.>",
            f"{names.prefix}.health.*",
            # Everything on the audit streams, including what the coordinator may not
            # (update, delete): detected by the anchors, or by an anchor file kept
            # elsewhere when both streams are deleted.
            f"{names.prefix}.audit.>",
            f"{names.prefix}.anchor.>",
            *_stream_admin(names.audit_stream),
            *_stream_admin(names.anchor_stream),
        ),
        subscribe=(f"{inbox_prefix(names, ADMIN)}.>", names.event_subjects),
        allow_responses=True,
    )


def parse_auth(text: str) -> Auth:
    """``nkey`` or ``password``; raises ConfigError for anything else."""
    if text == "nkey":
        return "nkey"
    if text == "password":
        return "password"
    raise ConfigError(f"--auth must be nkey or password, not {text!r}")


# Worker groups ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """Workers sharing one set of credentials and the capabilities they serve."""

    name: str
    queues: tuple[str, ...]
    """Capabilities, routed queues (``cap~route``), or ``("*",)`` for all."""

    def __post_init__(self) -> None:
        if not _GROUP_RE.match(self.name):
            raise ConfigError(
                f"worker group {self.name!r} must be 1-32 lowercase letters, digits, '_' or '-' "
                "and start with a letter"
            )
        if not self.queues:
            raise ConfigError(f"worker group {self.name!r} serves no capability")
        for queue in self.queues:
            if queue == ALL_CAPABILITIES:
                continue
            capability, _, route = queue.partition(ROUTE_SEPARATOR)
            if not ID_RE.match(capability) or (route and not ROUTE_RE.match(route)):
                raise ConfigError(
                    f"capability {queue!r} of worker group {self.name!r} must be 1-64 letters, "
                    f"digits, '_' or '-' (optionally {ROUTE_SEPARATOR}ROUTE), or '*'"
                )
        if ALL_CAPABILITIES in self.queues and len(self.queues) > 1:
            raise ConfigError(f"worker group {self.name!r}: '*' already means every capability")

    @property
    def role(self) -> str:
        """The role (user, file names) of this group."""
        return f"{WORKER_ROLE_PREFIX}{self.name}"


def parse_worker_group(spec: str) -> WorkerGroup:
    """``NAME=cap1,cap2`` (or ``NAME=*``) as a :class:`WorkerGroup`; raises ConfigError."""
    name, sep, caps = spec.partition("=")
    queues = tuple(c.strip() for c in caps.split(",") if c.strip())
    if not sep or not name.strip():
        raise ConfigError(f"worker group {spec!r} must read NAME=cap1,cap2 (or NAME=*)")
    return WorkerGroup(name=name.strip(), queues=queues)


# Key material -------------------------------------------------------------

_NKEY_SEED = 18 << 3
_NKEY_USER = 20 << 3


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum of NATS nkeys."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    body = raw + _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(body).decode().rstrip("=")


def new_user_nkey() -> tuple[str, str]:
    """A fresh NATS user nkey: ``(seed, public_key)`` (``SU...``, ``U...``)."""
    private = ed25519.Ed25519PrivateKey.generate()
    raw_seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    seed = _b32(bytes([_NKEY_SEED | _NKEY_USER >> 5, (_NKEY_USER & 31) << 3]) + raw_seed)
    return seed, _b32(bytes([_NKEY_USER]) + public)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_test_ca(
    directory: Path, hosts: Sequence[str], *, days: int = 825
) -> tuple[Path, Path, Path]:
    """Write a test CA and a server certificate for ``hosts`` signed by it;
    returns ``(ca.pem, server.pem, server-key.pem)``. Raises ConfigError when
    the files cannot be written."""
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AgenticFlow test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(directory / CA_KEY_FILE, _pem_key(ca_key), secret=True)
    _write(directory / SERVER_KEY_FILE, _pem_key(key), secret=True)
    ca_path = _write(directory / CA_FILE, ca.public_bytes(pem))
    cert_path = _write(directory / SERVER_CERT_FILE, server.public_bytes(pem))
    return ca_path, cert_path, directory / SERVER_KEY_FILE


# Files --------------------------------------------------------------------


def _write(path: Path, data: bytes | str, *, secret: bool = False) -> Path:
    """Write a file (mode 0600 when it holds a secret, even if it existed)."""
    body = data.encode() if isinstance(data, str) else data
    mode = _PRIVATE if secret else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, body)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of an env file (as written here: shell-quoted);
    raises ConfigError when it cannot be read."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}: not a KEY=value line: {line!r}")
        words = shlex.split(value) or [""]
        env[key.strip()] = words[0]
    return env


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Settings from ``AGENTICFLOW_*`` variables (an env file's content)."""
    fields: dict[str, Any] = {
        k[len(_ENV) :].lower(): v for k, v in env.items() if k.startswith(_ENV)
    }
    try:
        return Settings(**fields)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Role:
    """One NATS user: a role and its permissions."""

    name: str
    permissions: Permissions
    manage_topology: bool
    comment: str
    queues: tuple[str, ...] = ()
    """A worker group's capabilities (or ``*``)."""


@dataclass(slots=True)
class NatsAuthFiles:
    """What :func:`generate` wrote, and how to use it."""

    directory: Path
    prefix: str
    roles: dict[str, Role]
    auth: Auth
    tls: bool
    url: str
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per role, its credential variables (seed file, or user and password)."""

    @property
    def config(self) -> Path:
        """The nats-server configuration file."""
        return self.directory / CONFIG_FILE

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients verify the server with (None without TLS)."""
        return self.directory / CA_FILE if self.tls else None

    def env_file(self, role: str) -> Path:
        """The env file of a role."""
        self._check(role)
        return self.directory / f"{role}.env"

    def env(self, role: str, *, url: str | None = None) -> dict[str, str]:
        """The ``AGENTICFLOW_*`` variables of a role's processes."""
        self._check(role)
        names = Names(self.prefix)
        env = {
            f"{_ENV}NATS_URL": url or self.url,
            f"{_ENV}PREFIX": self.prefix,
            **self.credentials[role],
            f"{_ENV}NATS_INBOX_PREFIX": inbox_prefix(names, role),
        }
        if role.startswith(WORKER_ROLE_PREFIX):
            env[f"{_ENV}AUDIT_SCOPE"] = role  # the only audit chains it may write
        if self.ca_file is not None:
            env[f"{_ENV}NATS_TLS_CA_FILE"] = str(self.ca_file)
        if not self.roles[role].manage_topology:
            env[f"{_ENV}MANAGE_TOPOLOGY"] = "false"
            if role == CLIENT:
                env[f"{_ENV}TOPOLOGY_WAIT_S"] = str(_CLIENT_WAIT_S)
        return env

    def worker_queues(self, role: str) -> tuple[str, ...]:
        """The capabilities a worker role may serve (``("*",)``: every one)."""
        self._check(role)
        return self.roles[role].queues

    def settings(self, role: str, *, url: str | None = None) -> Settings:
        """Settings of a role's process (in-process clients, tests)."""
        return settings_from_env(self.env(role, url=url))

    def write_env(self, *, url: str | None = None) -> None:
        """(Re)write every role's env file, e.g. once the server's port is known."""
        if url is not None:
            self.url = url
        for role in self.roles:
            lines = [f"# AgenticFlow {role} ({self.roles[role].comment})"]
            lines += [f"{k}={shlex.quote(v)}" for k, v in self.env(role).items()]
            _write(self.env_file(role), "\n".join(lines) + "\n", secret=True)

    def _check(self, role: str) -> None:
        if role not in self.roles:
            raise ConfigError(f"no role {role!r} (one of {', '.join(self.roles)})")


def roles_for(names: Names, groups: Sequence[WorkerGroup]) -> dict[str, Role]:
    """Every role of a deployment with these worker groups; raises ConfigError
    for none or a duplicate group."""
    if not groups:
        raise ConfigError(
            "name at least one worker group: --worker NAME=cap1,cap2 (or NAME='*' for every "
            "capability)"
        )
    roles = {
        COORDINATOR: Role(COORDINATOR, coordinator_permissions(names), True, "owns the topology"),
        CLIENT: Role(CLIENT, client_permissions(names), False, "submits and reads workflows"),
        ADMIN: Role(ADMIN, admin_permissions(names), True, "operator commands"),
    }
    for group in groups:
        if group.role in roles:
            raise ConfigError(f"worker group {group.name!r} is given twice")
        what = ", ".join(group.queues) if ALL_CAPABILITIES not in group.queues else "every"
        roles[group.role] = Role(
            group.role,
            worker_permissions(names, group),
            False,
            f"worker serving {what}",
            queues=group.queues,
        )
    return roles


def _quote(value: str) -> str:
    return json.dumps(value)


def _list(items: Sequence[str], indent: str) -> str:
    inner = "".join(f"{indent}  {_quote(item)},\n" for item in items)
    return f"[\n{inner}{indent}]"


def _permissions_block(p: Permissions, indent: str) -> str:
    def rule(kind: str, allow: Sequence[str], deny: Sequence[str]) -> str:
        body = f"{indent}    allow: {_list(allow, indent + '    ')}\n"
        if deny:
            body += f"{indent}    deny: {_list(deny, indent + '    ')}\n"
        return f"{indent}  {kind}: {{\n{body}{indent}  }}\n"

    text = f"{indent}permissions: {{\n"
    text += rule("publish", p.publish, p.publish_deny)
    text += rule("subscribe", p.subscribe, p.subscribe_deny)
    if p.allow_responses:
        text += f"{indent}  allow_responses: true\n"
    return text + f"{indent}}}\n"


def render_config(
    roles: Mapping[str, Role],
    identities: Mapping[str, str],
    *,
    host: str,
    port: int,
    store_dir: Path,
    tls: tuple[Path, Path] | None,
) -> str:
    """The nats-server configuration; ``identities`` holds each role's user line
    (``nkey: "U..."`` or ``user: ..., password: ...``); ``tls`` is
    ``(server cert, server key)``."""
    lines = [
        "# AgenticFlow: nats-server with JetStream and one least-privilege user per role.",
        "# Written by `agenticflow nats-config`; check it with `nats-server -c FILE -t`.",
        "",
        f"listen: {_quote(f'{host}:{port}')}",
        "max_payload: 1MB",
        "",
        "jetstream {",
        f"  store_dir: {_quote(str(store_dir))}",
        "}",
        "",
    ]
    if tls is not None:
        cert, key = tls
        lines += [
            "# Clients connect with tls://; they verify the server with ca.pem.",
            "tls {",
            f"  cert_file: {_quote(str(cert))}",
            f"  key_file: {_quote(str(key))}",
            "  timeout: 2",
            "}",
            "",
        ]
    lines += ["authorization {", "  users: ["]
    for name, role in roles.items():
        lines += [f"    # {name}: {role.comment}", "    {", f"      {identities[name]}"]
        lines.append(_permissions_block(role.permissions, "      ").rstrip("\n"))
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def generate(
    directory: Path,
    *,
    prefix: str = "af",
    workers: Sequence[WorkerGroup],
    tls: bool = True,
    host: str = "127.0.0.1",
    port: int = 4222,
    auth: Auth = "nkey",
    store_dir: Path | None = None,
    force: bool = False,
) -> NatsAuthFiles:
    """Write the server configuration, credentials, env files and (with
    ``tls``) a test CA and server certificate into ``directory``.

    Raises ConfigError for a bad prefix, group or capability, a directory
    that cannot be written, or one that already holds a configuration
    (unless ``force``).
    """
    names = Names(prefix)
    roles = roles_for(names, workers)
    auth = parse_auth(auth)
    directory = directory.expanduser().resolve()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    if (directory / CONFIG_FILE).exists() and not force:
        raise ConfigError(
            f"{directory / CONFIG_FILE} exists; pass --force to replace it and every key"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write into {directory}: permission denied")
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a URL, not a bind
    files = NatsAuthFiles(
        directory=directory,
        prefix=prefix,
        roles=roles,
        auth=auth,
        tls=tls,
        url=f"{'tls' if tls else 'nats'}://{url_host}:{port}",
    )
    identities: dict[str, str] = {}
    for name in roles:
        if auth == "nkey":
            seed, public = new_user_nkey()
            seed_file = _write(directory / f"{name}.nk", seed + "\n", secret=True)
            identities[name] = f"nkey: {_quote(public)}"
            files.credentials[name] = {f"{_ENV}NATS_NKEY_SEED_FILE": str(seed_file)}
        else:
            password = secrets.token_urlsafe(24)
            identities[name] = f"user: {_quote(name)}, password: {_quote(password)}"
            files.credentials[name] = {
                f"{_ENV}NATS_USER": name,
                f"{_ENV}NATS_PASSWORD": password,
            }
    server_tls: tuple[Path, Path] | None = None
    if tls:
        _, cert, key = make_test_ca(directory, [url_host, "127.0.0.1", "localhost", host])
        server_tls = (cert, key)
    text = render_config(
        roles,
        identities,
        host=host,
        port=port,
        store_dir=store_dir or directory / "jetstream",
        tls=server_tls,
    )
    # With passwords the configuration itself holds secrets.
    _write(directory / CONFIG_FILE, text, secret=auth == "password")
    files.write_env()
    return files


__all__ = [
    "ADMIN",
    "ALL_CAPABILITIES",
    "CLIENT",
    "CONFIG_FILE",
    "COORDINATOR",
    "NatsAuthFiles",
    "Permissions",
    "Role",
    "WorkerGroup",
    "admin_permissions",
    "client_permissions",
    "coordinator_permissions",
    "generate",
    "inbox_prefix",
    "make_test_ca",
    "new_user_nkey",
    "parse_auth",
    "parse_worker_group",
    "read_env_file",
    "render_config",
    "roles_for",
    "settings_from_env",
    "worker_permissions",
]

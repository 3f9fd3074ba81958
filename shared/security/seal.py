"""Signed and encrypted envelopes, and the key files behind them.

Every node signs what it publishes with its own Ed25519 key and names the key in
``AF-Key``; receivers verify against a **trust store** (public keys with the
principal and role that own them) and refuse a message that is unsigned, wrongly
signed, signed by an unknown key, or signed by a role that may not send it (only
a coordinator sends tasks; a worker cannot submit a workflow). The signature
covers the subject, the identifying headers and the (encrypted) body, so nothing
a reader relies on can be changed in flight or on disk.

Bodies are encrypted with AES-256-GCM under the **current data key** (its id in
``AF-Enc``); the subject and message id are the associated data, so a
ciphertext cannot be moved to another message. Rotation adds a key and makes it
current; old keys stay for reading what they wrote. Stream files and replays
without the keys reveal nothing of the payloads.

**Replays.** The signature covers ``AF-TS``, the signing time. JetStream drops a
re-published message whose ``Nats-Msg-Id`` it has seen within its dedupe window;
past the window, the server's stored time of the copy is far from its signed
time, and :meth:`Seal.open` refuses it (:class:`~agenticflow.shared.errors.ReplayedMessageError`).

Key files live in one directory (``agenticflow keys init DIR``)::

    trust.json        public keys: kid, principal, role (give to every node)
    data-keys.json    AES keys and which one is current (secret, 0600)
    <principal>.key   one node identity's Ed25519 private key (secret, 0600)
    policy.toml       RBAC roles and principals (optional, see agenticflow.shared.security.rbac)

A process reads the directory named by ``AGENTICFLOW_SECURITY_DIR`` and signs as
``AGENTICFLOW_PRINCIPAL`` (by default its role: ``coordinator``, ``worker``,
``client``). Each part is optional: without ``trust.json`` nothing is verified,
without ``data-keys.json`` nothing is encrypted, without a key nothing is signed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agenticflow.shared.errors import (
    ConfigError,
    ForgedMessageError,
    MalformedMessageError,
    ReplayedMessageError,
    UndecryptableMessageError,
)

log = structlog.get_logger("agenticflow.security")

H_KEY = "AF-Key"
H_SIG = "AF-Sig"
H_TS = "AF-TS"
H_ENC = "AF-Enc"
H_CERT = "AF-Cert"
"""A process identity's certificate (see :class:`Certificate`), on what it signs."""

ROLES = ("coordinator", "worker", "client", "admin")
TASK_TYPE = "task"
AUDIT_TYPE = "audit"

WORKER_SENDS = frozenset(
    {
        "task.started",
        "task.completed",
        "task.failed",
        "task.heartbeat",
        "task.effect_recorded",
        "task.approval_requested",
        "task.tool_called",
        "task.output",
        "task.bid",
        "agent.state_changed",
        "message.rejected",
        AUDIT_TYPE,
    }
)
CLIENT_SENDS = frozenset(
    {
        "workflow.submitted",
        "workflow.intervention_requested",
        "workflow.resume_requested",
        "message.rejected",
        AUDIT_TYPE,
    }
)
_MAY_SEND: dict[str, frozenset[str] | None] = {
    "coordinator": None,  # anything
    "worker": WORKER_SENDS,
    "client": CLIENT_SENDS,
    "admin": CLIENT_SENDS,
}

_SIGNED = (
    "Nats-Msg-Id",
    "AF-Type",
    "AF-Schema",
    "AF-VClock",
    "AF-Source",
    "AF-Workflow",
    "AF-Task",
    "AF-Attempt",
    H_ENC,
    H_KEY,
    H_TS,
)
"""Headers the signature covers (besides the subject and the body). Headers
JetStream adds on the way out (``Nats-Sequence``…) and the trace context are not."""

TRUST_FILE = "trust.json"
DATA_KEYS_FILE = "data-keys.json"
POLICY_FILE = "policy.toml"
_VALUE_MAGIC = b"AFE1"
_RECORD_MAGIC = b"AFR1"
_SIGNED_FLAG, _ENCRYPTED = 1, 2
_NONCE = 12
_CERTIFIED_KEPT = 65_536
"""Process keys remembered as verified (oldest forgotten first)."""
_TRUST_CHECK_S = 1.0
"""How often, at most, a seal looks whether its trust store file changed."""


def key_id(public: Ed25519PublicKey | bytes) -> str:
    """A key's id: the first 16 hex digits of the SHA-256 of its raw public key."""
    if not isinstance(public, bytes):
        public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(public).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{what} is not valid base64") from exc


def write_secret(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (created 0600, never world-readable)."""
    _write_atomic(path, data, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with a new file holding ``data``: written to a temporary
    file of a fresh random name, created exclusively (O_EXCL, so no file or
    symlink someone planted beside it is reused or followed) with ``mode``, synced,
    then renamed over ``path`` (a symlink there is replaced, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


# Identities and the trust store -------------------------------------------
@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the cluster trusts, and who holds its private half."""

    kid: str
    principal: str
    role: str
    public: Ed25519PublicKey = field(repr=False, compare=False)
    _verifier: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "_verifier", nacl.signing.VerifyKey(raw))

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``data``
        (libsodium: twice as fast as OpenSSL's through cryptography here)."""
        try:
            self._verifier.verify(data, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    def may_send(self, message_type: str) -> bool:
        """Whether this key's role may publish a message of this type."""
        allowed = _MAY_SEND.get(self.role, frozenset())
        return allowed is None or message_type in allowed


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's signing key."""

    principal: str
    role: str
    private: Ed25519PrivateKey = field(repr=False, compare=False)
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(seed))

    @property
    def kid(self) -> str:
        """The key id receivers look up in their trust store."""
        return key_id(self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data``."""
        return self._signer.sign(data).signature

    @classmethod
    def generate(cls, principal: str, role: str) -> Identity:
        """A fresh identity (a new key pair)."""
        _check_name(principal, role)
        return cls(principal, role, Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        """The private key as PKCS#8 PEM, with the principal and role as comments."""
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return f"# principal: {self.principal}\n# role: {self.role}\n".encode() + pem

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key file written by :meth:`private_pem`; raises ConfigError."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read signing key {path}: {exc.strerror}") from exc
        meta: dict[str, str] = {}
        for line in data.splitlines():
            if line.startswith(b"# ") and b":" in line:
                name, _, value = line[2:].decode(errors="replace").partition(":")
                meta[name.strip()] = value.strip()
        try:
            key = serialization.load_pem_private_key(
                data[data.index(b"-----BEGIN") :], password=None
            )
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        return cls(meta.get("principal", path.stem), meta.get("role", "worker"), key)

    def trusted(self) -> TrustedKey:
        """The public half, as a trust store entry."""
        return TrustedKey(self.kid, self.principal, self.role, self.private.public_key())


def _check_name(principal: str, role: str) -> None:
    if not principal or not all(c.isalnum() or c in "-_.:" for c in principal):
        raise ConfigError(f"principal {principal!r} must be letters, digits, '-', '_', '.' or ':'")
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")


@dataclass(frozen=True, slots=True)
class TrustStore:
    """Public keys by id."""

    keys: Mapping[str, TrustedKey]

    def get(self, kid: str) -> TrustedKey | None:
        """The trusted key with this id, or None."""
        return self.keys.get(kid)

    def to_json(self) -> str:
        """The ``trust.json`` text."""
        return json.dumps(
            {
                "version": 1,
                "keys": [
                    {
                        "kid": k.kid,
                        "principal": k.principal,
                        "role": k.role,
                        "public": _b64(
                            k.public.public_bytes(
                                serialization.Encoding.Raw, serialization.PublicFormat.Raw
                            )
                        ),
                    }
                    for k in sorted(self.keys.values(), key=lambda k: (k.principal, k.kid))
                ],
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """Read ``trust.json``; raises ConfigError naming the bad entry."""
        keys: dict[str, TrustedKey] = {}
        for index, entry in enumerate(_read_json(path).get("keys") or []):
            try:
                public = Ed25519PublicKey.from_public_bytes(
                    _unb64(str(entry["public"]), f"{path} key {index}")
                )
                principal, role = str(entry["principal"]), str(entry["role"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: key {index} is invalid: {exc}") from exc
            _check_name(principal, role)
            kid = key_id(public)
            if entry.get("kid") not in (None, kid):
                raise ConfigError(f"{path}: key {index} has kid {entry['kid']!r}, expected {kid}")
            keys[kid] = TrustedKey(kid, principal, role, public)
        return cls(keys)


# Data keys ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DataKeys:
    """AES-256-GCM keys by id; ``current`` encrypts, every key decrypts."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ConfigError(f"current data key {self.current!r} is not among the keys")
        for kid, key in self.keys.items():
            if len(key) != 32:
                raise ConfigError(f"data key {kid!r} must be 32 bytes, not {len(key)}")

    @classmethod
    def generate(cls) -> DataKeys:
        """One fresh key, current."""
        kid = f"d{int(time.time())}"
        return cls(kid, {kid: AESGCM.generate_key(bit_length=256)})

    def rotated(self) -> DataKeys:
        """A new current key; the old ones stay for reading."""
        kid = f"d{int(time.time())}"
        while kid in self.keys:
            kid += "x"
        return DataKeys(kid, {**self.keys, kid: AESGCM.generate_key(bit_length=256)})

    def to_json(self) -> str:
        """The ``data-keys.json`` text (secret)."""
        return json.dumps(
            {
                "version": 1,
                "current": self.current,
                "keys": [{"kid": kid, "key": _b64(key)} for kid, key in self.keys.items()],
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path) -> DataKeys:
        """Read ``data-keys.json``; raises ConfigError."""
        data = _read_json(path)
        try:
            keys = {
                str(e["kid"]): _unb64(str(e["key"]), f"{path} key {e['kid']}") for e in data["keys"]
            }
            return cls(str(data["current"]), keys)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is missing {exc}") from exc


# The envelope -----------------------------------------------------------------
def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a changed file: modification time and size (None: gone)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _record_aad(bucket: str, key: str) -> bytes:
    return f"{bucket}/{key}".encode()


@dataclass(frozen=True, slots=True)
class _StoredRecord:
    """The parts of a value written by :meth:`Seal.seal_record`:
    ``AFR1 | flags | [kid len, kid, time (8), signature (64)] | [kid len, kid,
    nonce] | body``."""

    flags: int
    head: bytes
    """Signing key length, key id, signing time (empty: unsigned)."""
    signature: bytes
    enc: bytes
    """Data key length, data key id, nonce (empty: not encrypted)."""
    body: bytes

    @classmethod
    def parse(cls, where: str, blob: bytes) -> _StoredRecord:
        """Raises MalformedMessageError for a truncated record."""
        flags, at = blob[4:5], 5
        head = signature = enc = b""
        if flags and flags[0] & _SIGNED_FLAG and len(blob) > at:
            size = 1 + blob[at] + 8
            head, signature = blob[at : at + size], blob[at + size : at + size + 64]
            at += size + 64
        if flags and flags[0] & _ENCRYPTED and len(blob) > at:
            size = 1 + blob[at] + _NONCE
            enc = blob[at : at + size]
            at += size
        if (
            not flags
            or flags[0] & ~(_SIGNED_FLAG | _ENCRYPTED)
            or bool(flags[0] & _SIGNED_FLAG) != bool(head)
            or bool(flags[0] & _ENCRYPTED) != bool(enc)
            or at > len(blob)
        ):
            raise MalformedMessageError(f"{where} is a truncated or unknown record")
        return cls(flags[0], head, signature, enc, blob[at:])

    def signed(self, bucket: str, key: str) -> bytes:
        """What the signature covers: bucket, key, and everything but itself."""
        return _record_signed(bucket, key, self.flags, self.head, self.enc, self.body)


def _record_signed(bucket: str, key: str, flags: int, *parts: bytes) -> bytes:
    return b"".join((_RECORD_MAGIC, f"{bucket}\n{key}\n".encode(), bytes([flags]), *parts))


def _canonical(subject: str, headers: Mapping[str, str], body: bytes) -> bytes:
    parts = [subject, *(f"{name}:{headers.get(name, '')}" for name in _SIGNED)]
    return "\n".join(parts).encode() + b"\n\n" + body


CERT_TTL_S = 30 * 86400
"""How long a process identity issued by a coordinator is valid."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """A process identity, issued by a coordinator: the process's own key pair,
    named ``<principal>/<node>`` after the key that asked for it (the group's
    key, its ``parent``), with that key's role.

    A worker asks for one at start-up with its group key
    (:meth:`Seal.identity_request`); a coordinator issues it once per node id
    (:meth:`Seal.issue`). The worker then signs events with the process key
    and sends the certificate with them (``AF-Cert``), so receivers verify it
    without a lookup: issued by a trusted coordinator key, for this key, not
    expired, and its parent still trusted (revoking the group key revokes
    every process identity it asked for). So principals are per process: a
    compromised worker holds its group key and its own process key, not its
    peers' process keys, and cannot settle their tasks or write their chains.
    """

    kid: str
    public: bytes
    principal: str
    role: str
    node: str
    parent: str
    issuer: str
    issued_ns: int
    expires_ns: int
    signature: bytes = b""

    def signed_part(self) -> bytes:
        """What the issuer's signature covers."""
        return b"\n".join(
            (
                b"agenticflow process identity",
                self.kid.encode(),
                self.public,
                self.principal.encode(),
                self.role.encode(),
                self.node.encode(),
                self.parent.encode(),
                self.issuer.encode(),
                str(self.issued_ns).encode(),
                str(self.expires_ns).encode(),
            )
        )

    def encode(self) -> str:
        """The ``AF-Cert`` header value."""
        return _b64(
            json.dumps(
                [
                    self.kid,
                    _b64(self.public),
                    self.principal,
                    self.role,
                    self.node,
                    self.parent,
                    self.issuer,
                    self.issued_ns,
                    self.expires_ns,
                    _b64(self.signature),
                ],
                separators=(",", ":"),
            ).encode()
        )

    @classmethod
    def decode(cls, text: str) -> Certificate:
        """Raises ForgedMessageError for anything but a well-formed certificate."""
        if len(text) > _MAX_CERT:
            raise ForgedMessageError(f"{H_CERT} header is too long")
        try:
            fields = json.loads(base64.b64decode(text, validate=True))
            kid, public, principal, role, node, parent, issuer, issued, expires, sig = fields
            cert = cls(
                str(kid),
                base64.b64decode(str(public), validate=True),
                str(principal),
                str(role),
                str(node),
                str(parent),
                str(issuer),
                int(issued),
                int(expires),
                base64.b64decode(str(sig), validate=True),
            )
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ForgedMessageError(f"malformed {H_CERT} header: {exc}") from None
        return cert


_MAX_CERT = 2048
_NODE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class Seal:
    """Signs, verifies, encrypts and decrypts messages for one process.

    ``Seal()`` with nothing configured passes messages through untouched.
    """

    def __init__(
        self,
        *,
        identity: Identity | None = None,
        trust: TrustStore | None = None,
        data_keys: DataKeys | None = None,
        window_s: float = 120.0,
    ) -> None:
        self.identity = identity
        self.trust = trust
        self.data_keys = data_keys
        self.window_ns = int(window_s * 1e9)
        self.trust_file: Path | None = None
        """Where ``trust`` was read from: re-read when it changes (see :meth:`follow`)."""
        self._trust_stamp: tuple[int, int] | None = None
        self._trust_checked = 0.0
        self._kid = identity.kid if identity else ""
        self.record_identity = identity
        """Signs KV records: the key from the key directory (records carry no
        certificate), also after :meth:`adopt` gave messages a process key."""
        self.certificate: Certificate | None = None
        self._cert_header = ""
        self._certified: dict[str, TrustedKey] = {}
        """Process keys whose certificates verified, by key id."""
        self._cert_terms: dict[str, tuple[str, int, int]] = {}
        """Their group key, issue and expiry times, checked on every use."""
        self._ciphers = {
            kid: AESGCM(key) for kid, key in (data_keys.keys if data_keys else {}).items()
        }
        self._id_key = (
            hashlib.blake2b(
                b"agenticflow message ids", key=data_keys.keys[data_keys.current]
            ).digest()
            if data_keys is not None
            else None
        )

    def follow(self, path: Path) -> None:
        """Re-read the trust store from ``path`` whenever it changes (checked at
        most once a second, when a message or record is verified): a key revoked
        with ``agenticflow keys revoke`` is refused from then on, without a restart."""
        self.trust_file = path
        self._trust_stamp = _stamp(path)
        self._trust_checked = time.monotonic()

    def _fresh_trust(self) -> TrustStore | None:
        if self.trust_file is not None:
            now = time.monotonic()
            if now - self._trust_checked >= _TRUST_CHECK_S:
                self._trust_checked = now
                stamp = _stamp(self.trust_file)
                if stamp != self._trust_stamp:
                    self._reload_trust(stamp)
        return self.trust

    def _reload_trust(self, stamp: tuple[int, int] | None) -> None:
        assert self.trust_file is not None
        try:
            trust = TrustStore.load(self.trust_file)
        except ConfigError as exc:  # keep what we have; say so each time it changes
            log.error("trust store not reloaded", path=str(self.trust_file), error=str(exc))
            self._trust_stamp = stamp
            return
        dropped = sorted(
            f"{k.principal} ({kid})"
            for kid, k in (self.trust.keys if self.trust else {}).items()
            if kid not in trust.keys
        )
        self.trust, self._trust_stamp = trust, stamp
        log.warning(
            "trust store reloaded", path=str(self.trust_file), keys=len(trust.keys), revoked=dropped
        )

    def signing_only(self) -> Seal:
        """A seal that signs as this one does (its process identity included)
        and neither encrypts nor verifies (for what is stored in the clear)."""
        seal = Seal(identity=self.identity, window_s=self.window_ns / 1e9)
        seal._kid, seal._cert_header = self._kid, self._cert_header
        seal.certificate = self.certificate
        seal.record_identity = self.record_identity
        return seal

    @property
    def active(self) -> bool:
        """Whether this seal changes or checks anything."""
        return bool(self.identity or self.trust or self.data_keys)

    @property
    def signer(self) -> str:
        """The principal this process signs as ('' when it does not sign)."""
        return self.identity.principal if self.identity else ""

    # Messages ---------------------------------------------------------------
    def message_id(self, derived: str) -> str:
        """The ``Nats-Msg-Id`` to publish a derived id under: with a data key, the
        id followed by a digest keyed by it. Every holder of the key computes the
        same id (so a re-sent or re-issued message is still deduplicated), and
        nobody without it can store a message under that id first and have
        JetStream drop the genuine one as a duplicate."""
        if self._id_key is None:
            return derived
        digest = hashlib.blake2b(derived.encode(), key=self._id_key, digest_size=8).hexdigest()
        return f"{derived}:{digest}"

    def close(
        self,
        subject: str,
        headers: MutableMapping[str, str],
        body: bytes,
        *,
        now_ns: int | None = None,
    ) -> bytes:
        """Encrypt ``body`` and sign the message; sets the headers, returns the body.
        ``now_ns`` overrides the signing time (tests of the replay check)."""
        if self.data_keys is not None:
            kid = self.data_keys.current
            nonce = os.urandom(_NONCE)
            aad = f"{subject}\n{headers.get('Nats-Msg-Id', '')}".encode()
            body = nonce + self._ciphers[kid].encrypt(nonce, body, aad)
            headers[H_ENC] = kid
        if self.identity is not None:
            headers[H_KEY] = self._kid
            headers[H_TS] = str(now_ns if now_ns is not None else time.time_ns())
            if self._cert_header:
                headers[H_CERT] = self._cert_header
            headers[H_SIG] = _b64(self.identity.sign(_canonical(subject, headers, body)))
        return body

    def open(
        self,
        subject: str,
        headers: Mapping[str, str] | None,
        body: bytes,
        *,
        stored_ns: int | None = None,
    ) -> tuple[bytes, TrustedKey | None]:
        """Verify and decrypt a received message: ``(plain body, signer)``.

        ``stored_ns`` is the server's time of storing it (for the replay check).
        Raises ForgedMessageError, ReplayedMessageError or UndecryptableMessageError.
        """
        headers = headers or {}
        signer: TrustedKey | None = None
        if self._fresh_trust() is not None:
            signer = self._verify(subject, headers, body, stored_ns)
        kid = headers.get(H_ENC)
        if kid is None:
            if self.data_keys is not None:
                raise UndecryptableMessageError(
                    f"message on {subject} is not encrypted, and this cluster requires encryption"
                )
            return body, signer
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UndecryptableMessageError(
                f"message on {subject} is encrypted with data key {kid!r}, which this node "
                "does not have"
            )
        aad = f"{subject}\n{headers.get('Nats-Msg-Id', '')}".encode()
        try:
            return cipher.decrypt(body[:_NONCE], body[_NONCE:], aad), signer
        except (InvalidTag, ValueError) as exc:
            raise UndecryptableMessageError(
                f"message on {subject} does not decrypt with data key {kid!r}: altered, or "
                "encrypted for another subject"
            ) from exc

    def _verify(
        self, subject: str, headers: Mapping[str, str], body: bytes, stored_ns: int | None
    ) -> TrustedKey:
        assert self.trust is not None
        kid, signature = headers.get(H_KEY), headers.get(H_SIG)
        if not kid or not signature:
            raise ForgedMessageError(f"unsigned message on {subject} refused")
        signer = self.trust.get(kid)
        if signer is None:
            signer = self._process_key(kid, headers.get(H_CERT), headers.get(H_TS, ""))
        if signer is None:
            raise ForgedMessageError(f"message on {subject} is signed by unknown key {kid!r}")
        try:
            valid = signer.verify(
                _canonical(subject, headers, body), base64.b64decode(signature, validate=True)
            )
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ForgedMessageError(
                f"message on {subject} has a bad signature for key {kid!r} "
                f"({signer.principal}): altered or forged"
            )
        message_type = headers.get("AF-Type", "")
        if not signer.may_send(message_type):
            raise ForgedMessageError(
                f"{signer.principal} ({signer.role}) may not send {message_type!r} messages"
            )
        if stored_ns is not None:
            text = headers.get(H_TS, "")
            if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
                raise ForgedMessageError(f"message on {subject} has no valid {H_TS}")
            signed_ns = int(text)
            if abs(stored_ns - signed_ns) > self.window_ns:
                raise ReplayedMessageError(
                    f"message on {subject} signed by {signer.principal} was stored "
                    f"{(stored_ns - signed_ns) / 1e9:.0f}s after it was signed (window "
                    f"{self.window_ns / 1e9:g}s): a replay"
                )
        return signer

    # Process identities ---------------------------------------------------
    def identity_request(self, node: str, *, now_ns: int | None = None) -> tuple[bytes, Identity]:
        """A request for a process identity for ``node``, signed with this
        seal's key, and the new key pair it asks to certify."""
        if self.identity is None:
            raise ConfigError("only a node with a signing key can ask for a process identity")
        fresh = Identity(self.identity.principal, self.identity.role, Ed25519PrivateKey.generate())
        public = fresh.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        stamp = now_ns if now_ns is not None else time.time_ns()
        body = json.dumps([node, _b64(public), stamp, self._kid], separators=(",", ":")).encode()
        return body + b"\n" + _b64(self.identity.sign(b"identity request\n" + body)).encode(), fresh

    def issue(self, request: bytes, *, now_ns: int | None = None) -> Certificate:
        """A coordinator certifies a process key asked for by a trusted key
        (:meth:`identity_request`); raises ForgedMessageError. Uniqueness of
        the node id is the caller's to enforce (one certificate per node)."""
        if self.identity is None or self.identity.role != "coordinator":
            raise ConfigError("only a coordinator with its signing key issues process identities")
        if self.trust is None:
            raise ConfigError("issuing process identities needs a trust store")
        try:
            body, _, sig = request.partition(b"\n")
            node, public_b64, stamp, parent = json.loads(body)
            public = base64.b64decode(str(public_b64), validate=True)
            signature = base64.b64decode(sig, validate=True)
            node, parent, stamp = str(node), str(parent), int(stamp)
            Ed25519PublicKey.from_public_bytes(public)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ForgedMessageError(f"malformed identity request: {exc}") from None
        trust = self._fresh_trust()
        requester = trust.get(parent) if trust is not None else None
        if requester is None or not requester.verify(b"identity request\n" + body, signature):
            raise ForgedMessageError(
                f"identity request for {node!r} is not signed by a trusted key"
            )
        if requester.role not in ("worker", "client"):
            raise ForgedMessageError(
                f"{requester.principal} ({requester.role}) may not ask for process identities"
            )
        if not (0 < len(node) <= 128 and set(node) <= _NODE):
            raise ForgedMessageError(f"identity request names an invalid node {node[:64]!r}")
        now = now_ns if now_ns is not None else time.time_ns()
        if abs(now - stamp) > self.window_ns:
            raise ReplayedMessageError(f"identity request for {node!r} is stale: a replay")
        cert = Certificate(
            kid=key_id(public),
            public=public,
            principal=f"{requester.principal}/{node}",
            role=requester.role,
            node=node,
            parent=parent,
            issuer=self._kid,
            issued_ns=now,
            expires_ns=now + CERT_TTL_S * 10**9,
        )
        return replace(cert, signature=self.identity.sign(cert.signed_part()))

    def adopt(self, identity: Identity, certificate: Certificate) -> None:
        """Sign messages with a process key from now on (records stay signed by
        the key directory's key); raises ConfigError for a certificate of
        another key."""
        if certificate.kid != identity.kid:
            raise ConfigError("the certificate is for another key")
        self.identity = Identity(certificate.principal, certificate.role, identity.private)
        self._kid = identity.kid
        self.certificate = certificate
        self._cert_header = certificate.encode()

    def _process_key(self, kid: str, header: str | None, signed: str) -> TrustedKey | None:
        """The process key ``kid`` if ``header`` holds a valid certificate for it,
        its group key is still trusted and the message was signed (``AF-TS``,
        which the signature covers) while the certificate was valid."""
        known = self._certified.get(kid)
        if known is None:
            if not header:
                return None
            cert = Certificate.decode(header)
            known = self.verify_certificate(kid, cert)
            if len(self._certified) >= _CERTIFIED_KEPT:
                oldest = next(iter(self._certified))
                self._certified.pop(oldest)
                self._cert_terms.pop(oldest, None)
            self._certified[kid] = known
        parent, issued, expires = self._cert_terms[kid]
        signed_ns = int(signed) if 0 < len(signed) <= 19 and signed.isdigit() else -1
        trust = self.trust
        if trust is None or trust.get(parent) is None:
            raise ForgedMessageError(
                f"the process identity {known.principal} ({kid}): its group key was revoked"
            )
        if not issued - self.window_ns <= signed_ns <= expires:
            raise ForgedMessageError(
                f"the process identity {known.principal} ({kid}) was not valid when this was signed"
            )
        return known

    def verify_certificate(self, kid: str, cert: Certificate) -> TrustedKey:
        """The trusted key a certificate makes of ``kid``; raises ForgedMessageError
        (not issued by a trusted coordinator, forged, for another key, its group
        key not trusted, naming another principal)."""
        trust = self.trust
        assert trust is not None
        issuer = trust.get(cert.issuer)
        if issuer is None or issuer.role != "coordinator":
            raise ForgedMessageError(f"certificate of {kid} is not issued by a trusted coordinator")
        if not issuer.verify(cert.signed_part(), cert.signature):
            raise ForgedMessageError(f"certificate of {kid} has a bad signature: forged")
        if cert.kid != kid or key_id(cert.public) != kid:
            raise ForgedMessageError(f"certificate of {cert.kid} does not certify key {kid}")
        parent = trust.get(cert.parent)
        if parent is None or parent.role != cert.role:
            raise ForgedMessageError(f"certificate of {kid}: its group key is not trusted")
        if cert.principal != f"{parent.principal}/{cert.node}":
            raise ForgedMessageError(f"certificate of {kid} names another principal")
        self._cert_terms[kid] = (cert.parent, cert.issued_ns, cert.expires_ns)
        try:
            public = Ed25519PublicKey.from_public_bytes(cert.public)
        except ValueError as exc:
            raise ForgedMessageError(f"certificate of {kid}: invalid key") from exc
        return TrustedKey(kid, cert.principal, cert.role, public)

    # KV records -----------------------------------------------------------
    def seal_record(
        self, bucket: str, key: str, plain: bytes, *, now_ns: int | None = None
    ) -> bytes:
        """A KV value as stored: encrypted with the current data key (associated
        data: bucket and key) and signed by this node over bucket, key, signing
        time and body, so a value moved to another key, altered, written by
        someone without a trusted key, or put back after the replay window
        (:meth:`open_record` with ``stored_ns``) is refused. Plain ``plain``
        when nothing is configured."""
        if self.record_identity is None and self.data_keys is None:
            return plain
        flags, enc, body = 0, b"", plain
        if self.data_keys is not None:
            kid = self.data_keys.current.encode()
            nonce = os.urandom(_NONCE)
            body = self._ciphers[self.data_keys.current].encrypt(
                nonce, plain, _record_aad(bucket, key)
            )
            enc = bytes([len(kid)]) + kid + nonce
            flags |= _ENCRYPTED
        signed = b""
        if self.record_identity is not None:
            flags |= _SIGNED_FLAG
            kid = self.record_identity.kid.encode()
            stamp = now_ns if now_ns is not None else time.time_ns()
            head = bytes([len(kid)]) + kid + stamp.to_bytes(8, "big")
            signature = self.record_identity.sign(
                _record_signed(bucket, key, flags, head, enc, body)
            )
            signed = head + signature
        return _RECORD_MAGIC + bytes([flags]) + signed + enc + body

    def open_record(
        self,
        bucket: str,
        key: str,
        blob: bytes,
        *,
        roles: Collection[str] | None = None,
        stored_ns: int | None = None,
    ) -> tuple[bytes, TrustedKey | None]:
        """``(plain value, signer)`` of a value written by :meth:`seal_record`.

        With a trust store the value must be signed by a trusted key whose role
        is one of ``roles`` (None: any), bound to this bucket and key, and, when
        ``stored_ns`` (the server's time of storing it) is given, signed within
        the replay window of it: an old value put back later is refused. With
        data keys it must be encrypted. Raises ForgedMessageError,
        ReplayedMessageError, UndecryptableMessageError or MalformedMessageError.
        """
        where = f"{bucket}/{key}"
        self._fresh_trust()
        if not blob.startswith(_RECORD_MAGIC):
            if self.trust is not None:
                raise ForgedMessageError(f"{where} is not signed: refused")
            if blob.startswith(_VALUE_MAGIC):  # written before records were signed
                return self.open_value(where, blob), None
            if self.data_keys is not None:
                raise UndecryptableMessageError(
                    f"{where} is not encrypted, and this cluster requires encryption"
                )
            return blob, None
        record = _StoredRecord.parse(where, blob)
        signer = None
        if self.trust is not None:
            signer = self._record_signer(bucket, key, record, roles, stored_ns)
        if not record.enc:
            if self.data_keys is not None:
                raise UndecryptableMessageError(
                    f"{where} is not encrypted, and this cluster requires encryption"
                )
            return record.body, signer
        size = record.enc[0]
        data_kid = record.enc[1 : 1 + size].decode("ascii", errors="replace")
        cipher = self._ciphers.get(data_kid)
        if cipher is None:
            raise UndecryptableMessageError(
                f"{where} is encrypted with unknown data key {data_kid!r}"
            )
        try:
            plain = cipher.decrypt(record.enc[1 + size :], record.body, _record_aad(bucket, key))
        except (InvalidTag, ValueError) as exc:
            raise UndecryptableMessageError(f"{where} does not decrypt: altered or moved") from exc
        return plain, signer

    def _record_signer(
        self,
        bucket: str,
        key: str,
        record: _StoredRecord,
        roles: Collection[str] | None,
        stored_ns: int | None,
    ) -> TrustedKey:
        assert self.trust is not None
        where = f"{bucket}/{key}"
        if not record.head:
            raise ForgedMessageError(f"{where} is not signed: refused")
        kid = record.head[1:-8].decode("ascii", errors="replace")
        signer = self.trust.get(kid)
        if signer is None:
            raise ForgedMessageError(f"{where} is signed by unknown key {kid!r}")
        if not signer.verify(record.signed(bucket, key), record.signature):
            raise ForgedMessageError(
                f"{where} has a bad signature for key {kid!r} ({signer.principal}): "
                "altered, forged, or moved from another key"
            )
        if roles is not None and signer.role not in roles:
            raise ForgedMessageError(
                f"{where} was written by {signer.principal} ({signer.role}), which "
                f"may not write it (only {', '.join(sorted(roles))})"
            )
        signed_ns = int.from_bytes(record.head[-8:], "big")
        if stored_ns is not None and abs(stored_ns - signed_ns) > self.window_ns:
            raise ReplayedMessageError(
                f"{where} signed by {signer.principal} was stored "
                f"{(stored_ns - signed_ns) / 1e9:.0f}s after it was signed (window "
                f"{self.window_ns / 1e9:g}s): an old value put back"
            )
        return signer

    # KV values (before signed records) ------------------------------------
    def seal_value(self, context: str, plain: bytes) -> bytes:
        """Encrypt a stored value bound to ``context`` (the format read back for
        values written before :meth:`seal_record`; new values use records)."""
        if self.data_keys is None:
            return plain
        kid = self.data_keys.current.encode()
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.data_keys.current].encrypt(nonce, plain, context.encode())
        return _VALUE_MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def open_value(self, context: str, blob: bytes) -> bytes:
        """Decrypt a value written by :meth:`seal_value`; raises UndecryptableMessageError."""
        if not blob.startswith(_VALUE_MAGIC):
            if self.data_keys is not None:
                raise UndecryptableMessageError(
                    f"{context} is not encrypted, and this cluster requires encryption"
                )
            return blob
        size = blob[len(_VALUE_MAGIC)]
        start = len(_VALUE_MAGIC) + 1
        kid = blob[start : start + size].decode(errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UndecryptableMessageError(f"{context} is encrypted with unknown data key {kid!r}")
        rest = blob[start + size :]
        try:
            return cipher.decrypt(rest[:_NONCE], rest[_NONCE:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise UndecryptableMessageError(
                f"{context} does not decrypt: altered or moved"
            ) from exc

    # Loading ----------------------------------------------------------------
    @classmethod
    def from_dir(cls, directory: Path | None, principal: str, *, window_s: float = 120.0) -> Seal:
        """The seal a process configured with this key directory uses (see the
        module docstring); an empty seal without a directory. Raises ConfigError."""
        if directory is None:
            return cls()
        if not directory.is_dir():
            raise ConfigError(f"security directory {directory} does not exist")
        trust_path, keys_path = directory / TRUST_FILE, directory / DATA_KEYS_FILE
        key_path = directory / f"{principal}.key"
        identity = Identity.load(key_path) if key_path.exists() else None
        trust = TrustStore.load(trust_path) if trust_path.exists() else None
        if identity is not None and trust is not None and trust.get(identity.kid) is None:
            raise ConfigError(
                f"the key of {principal!r} ({identity.kid}) is not in {trust_path}: "
                f"add it with `agenticflow keys add {principal} --role {identity.role}`"
            )
        if trust is not None and identity is None:
            raise ConfigError(
                f"{directory} has a trust store but no key for principal {principal!r} "
                f"({key_path.name}): nodes must sign what they publish"
            )
        data_keys = DataKeys.load(keys_path) if keys_path.exists() else None
        seal = cls(identity=identity, trust=trust, data_keys=data_keys, window_s=window_s)
        if trust is not None:
            seal.follow(trust_path)
        return seal


# Key directory management -----------------------------------------------------
def init_keys(directory: Path, identities: Iterable[tuple[str, str]]) -> list[Identity]:
    """Create a key directory: a data key, and an identity per ``(principal, role)``,
    all trusted. Refuses to overwrite an existing trust store (ConfigError)."""
    if (directory / TRUST_FILE).exists():
        raise ConfigError(f"{directory / TRUST_FILE} exists: use `agenticflow keys add`")
    directory.mkdir(parents=True, exist_ok=True)
    write_secret(directory / DATA_KEYS_FILE, DataKeys.generate().to_json().encode())
    _write_atomic(directory / TRUST_FILE, TrustStore({}).to_json().encode(), 0o644)
    return [add_identity(directory, principal, role) for principal, role in identities]


def add_identity(directory: Path, principal: str, role: str) -> Identity:
    """A new identity in the directory, added to its trust store."""
    identity = Identity.generate(principal, role)
    key_path = directory / f"{principal}.key"
    if os.path.lexists(key_path):  # a symlink too, even one that leads nowhere
        raise ConfigError(f"{key_path} exists: remove it (and its trust entry) first")
    trust_path = directory / TRUST_FILE
    trust = TrustStore.load(trust_path) if trust_path.exists() else TrustStore({})
    write_secret(key_path, identity.private_pem())
    keys = {**trust.keys, identity.kid: identity.trusted()}
    _write_atomic(trust_path, TrustStore(keys).to_json().encode(), 0o644)
    return identity


def revoke(directory: Path, principal: str) -> list[str]:
    """Drop every trusted key of ``principal``; returns their ids."""
    trust_path = directory / TRUST_FILE
    trust = TrustStore.load(trust_path)
    dropped = [k.kid for k in trust.keys.values() if k.principal == principal]
    if not dropped:
        raise ConfigError(f"no trusted key belongs to {principal!r}")
    keys = {kid: k for kid, k in trust.keys.items() if kid not in dropped}
    _write_atomic(trust_path, TrustStore(keys).to_json().encode(), 0o644)
    return dropped


def rotate_data_key(directory: Path) -> DataKeys:
    """Add a new current data key; old keys stay for reading."""
    path = directory / DATA_KEYS_FILE
    rotated = DataKeys.load(path).rotated()
    write_secret(path, rotated.to_json().encode())
    return rotated


__all__ = [
    "AUDIT_TYPE",
    "CERT_TTL_S",
    "CLIENT_SENDS",
    "DATA_KEYS_FILE",
    "H_CERT",
    "H_ENC",
    "H_KEY",
    "H_SIG",
    "H_TS",
    "POLICY_FILE",
    "ROLES",
    "TRUST_FILE",
    "WORKER_SENDS",
    "Certificate",
    "DataKeys",
    "Identity",
    "Seal",
    "TrustStore",
    "TrustedKey",
    "add_identity",
    "init_keys",
    "key_id",
    "revoke",
    "rotate_data_key",
    "write_secret",
]
